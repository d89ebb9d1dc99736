"""Helpers for testing code that uses streamguard, shipped for users (like structlog.testing).

- :class:`WorkerProcess` starts a ``streamguard worker`` subprocess against a broker, waits until
  it owns partitions, and stops it by pid (SIGTERM, then SIGKILL).
- :func:`envelopes` groups events into batch envelopes per partition, as the emitter does.
- :func:`read_topic` reads a topic from the beginning, without a consumer group.
- :func:`produce` writes (partition, key, value) messages and waits until the broker has them.
- :func:`metric` reads one sample (or the sum of a labelled family) from ``/metrics`` text.
- :func:`rss_bytes` is a process's resident memory, from ``/proc`` (Linux).
"""

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from streamguard.broker.embedded import free_port, listens
from streamguard.contracts.partitioning import envelopes

__all__ = ["WorkerProcess", "envelopes", "metric", "produce", "read_topic", "rss_bytes"]


async def read_topic(
    bootstrap: str,
    topic: str,
    timeout_s: float,
    until: Callable[[list[Any]], bool] | None = None,
) -> list[Any]:
    """JSON values of ``topic`` from the beginning until ``until(values)`` or the timeout."""
    consumer = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest")
    await consumer.start()
    values: list[Any] = []
    try:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            batches = await consumer.getmany(timeout_ms=200)
            for messages in batches.values():
                values.extend(orjson.loads(m.value) for m in messages)
            if until is not None and until(values):
                break
    finally:
        await consumer.stop()
    return values


def produce(
    bootstrap: str, messages: list[tuple[int | None, bytes | None, bytes]], topic: str
) -> None:
    """Produce (partition, key, value) messages and wait until the broker has them.

    A ``None`` partition lets the producer choose (Kafka's default partitioner on the key).
    """

    async def send() -> None:
        producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=5)
        await producer.start()
        try:
            for partition, key, value in messages:
                await producer.send(topic, value, key=key, partition=partition)
            await producer.flush()
        finally:
            await producer.stop()

    asyncio.run(send())


def metric(text: str, name: str) -> float:
    r"""Value of ``name`` in Prometheus exposition ``text``; 0.0 when absent.

    ``name`` is either a full sample (``streamguard_events_total{kind="prediction"}``), whose
    first match is returned, or a bare metric name, whose samples are summed over all labels.

    Examples
    --------
    >>> text = "\n".join(['a_total{k="x"} 2.0', 'a_total{k="y"} 3.0', "b 1.0"])
    >>> metric(text, "a_total"), metric(text, 'a_total{k="y"}'), metric(text, "c")
    (5.0, 3.0, 0.0)
    """
    labelled = "{" in name
    total = 0.0
    for line in text.splitlines():
        if labelled:
            if line.startswith(name + " "):
                return float(line.rsplit(" ", 1)[1])
        elif line.startswith((name + " ", name + "{")):
            total += float(line.rsplit(" ", 1)[1])
    return total


def rss_bytes(pid: int, field: str = "VmRSS") -> int:
    """Resident memory of process ``pid`` in bytes, from ``/proc/PID/status`` (Linux).

    ``field`` may also be ``VmHWM``, the peak resident memory since the process started.
    """
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    raise ValueError(f"/proc/{pid}/status has no {field}")


class WorkerProcess:
    """A ``streamguard worker`` subprocess, stopped by pid.

    Parameters
    ----------
    broker_url
        ``kafka://host:port`` of the broker.
    log_path
        File receiving the worker's output.
    extra_args
        More command-line arguments (``--policy FILE``, ...).
    env
        Extra environment variables.
    signing_key
        Key file the worker signs with; without one the worker runs with ``--insecure``
        (unsigned commands), which is what most tests of other behaviour want.
    """

    def __init__(
        self,
        broker_url: str,
        log_path: Path,
        extra_args: list[str] | None = None,
        env: dict[str, str] | None = None,
        signing_key: Path | None = None,
    ) -> None:
        self.broker_url = broker_url
        self.signing_key = signing_key
        self.log_path = log_path
        self.web_port = free_port()
        self.extra_args = extra_args or []
        self.env = env or {}
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int | None:
        """Pid of the worker process."""
        return self.process.pid if self.process else None

    def start(self) -> "WorkerProcess":
        """Start the worker (returns at once; see :meth:`wait_ready`)."""
        args = [sys.executable, "-m", "streamguard", "worker", "--broker", self.broker_url]
        args += ["--web-port", str(self.web_port), *self.extra_args]
        if self.signing_key is None:
            args.append("--insecure")
        else:
            args += ["--signing-key", str(self.signing_key)]
        env = {**os.environ, "PYTHONUNBUFFERED": "1", **self.env}
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(  # noqa: S603 - fixed argv
                args, stdout=log, stderr=subprocess.STDOUT, env=env
            )
        return self

    def health(self) -> dict[str, Any] | None:
        """The /health document (also when unhealthy, with 503), or None if no answer."""
        url = f"http://127.0.0.1:{self.web_port}/health"
        try:
            with urllib.request.urlopen(url, timeout=1.0) as response:
                document: dict[str, Any] = json.loads(response.read())
                return document
        except urllib.error.HTTPError as exc:  # 503 carries the document that says why
            try:
                body: dict[str, Any] = json.loads(exc.read())
            except ValueError:
                return None
            return body
        except (OSError, ValueError):
            return None

    def metrics(self) -> str:
        """The worker's /metrics text."""
        url = f"http://127.0.0.1:{self.web_port}/metrics"
        with urllib.request.urlopen(url, timeout=2.0) as response:
            text: str = response.read().decode()
            return text

    def log_tail(self, lines: int = 60) -> str:
        """The last ``lines`` lines of the worker's output (for failure reports)."""
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError as exc:
            return f"(no log: {exc})"
        return "\n".join(text.splitlines()[-lines:])

    def wait_ready(self, timeout_s: float = 90.0, sources: int = 1) -> dict[str, Any]:
        """Wait until the worker owns at least ``sources`` predictions partitions."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process is None or self.process.poll() is not None:
                raise RuntimeError(f"worker exited early; see {self.log_path}")
            # Only once this worker listens on the port: a test running beside this one may
            # have been given the same free port, and its worker would answer.
            document = (
                self.health() if listens(self.process.pid, self.web_port) is not False else None
            )
            if document is not None and len(document.get("sources", [])) >= sources:
                return document
            time.sleep(0.3)
        raise TimeoutError(f"worker not ready after {timeout_s}s; see {self.log_path}")

    def stop(self, timeout_s: float = 20.0) -> int | None:
        """SIGTERM, then SIGKILL after ``timeout_s``; returns the exit code."""
        process, self.process = self.process, None
        if process is None:
            return None
        if process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(process.pid, signal.SIGTERM)
            try:
                process.wait(timeout_s)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(process.pid, signal.SIGKILL)
                process.wait(timeout_s)
        return process.returncode

    def kill(self) -> None:
        """SIGKILL at once (fault injection)."""
        process, self.process = self.process, None
        if process is not None and process.poll() is None:
            os.kill(process.pid, signal.SIGKILL)
            process.wait()

    def __enter__(self) -> "WorkerProcess":
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def run(coroutine: Any) -> Any:
    """Run a coroutine to completion from synchronous test code."""
    return asyncio.run(coroutine)
