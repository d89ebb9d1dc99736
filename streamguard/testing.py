"""Helpers for testing code that uses streamguard, shipped for users (like structlog.testing).

- :class:`WorkerProcess` starts a ``streamguard worker`` subprocess against a broker, waits until
  it owns partitions, and stops it by pid (SIGTERM, then SIGKILL).
- :func:`envelopes` groups events into batch envelopes per partition, as the emitter does.
- :func:`read_topic` reads a topic from the beginning, without a consumer group.
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
from collections import defaultdict
from collections.abc import Callable, Iterable
from pathlib import Path
from types import TracebackType
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer

from streamguard.broker.embedded import free_port
from streamguard.contracts import partition_for

__all__ = ["WorkerProcess", "envelopes", "read_topic"]


def envelopes(
    events: Iterable[dict[str, Any]], partitions: int, key: str = "request_id"
) -> list[tuple[int, bytes, bytes]]:
    """(partition, key, value) of one batch envelope per partition, keyed by the first event.

    ``key`` is the routing field: ``request_id`` (predictions), ``pipeline`` (training examples).
    """
    by_partition: dict[int, list[dict[str, Any]]] = defaultdict(list)
    for event in events:
        by_partition[partition_for(event[key].encode(), partitions)].append(event)
    return [
        (
            partition,
            evs[0][key].encode(),
            orjson.dumps({"schema_version": 1, "events": evs}),
        )
        for partition, evs in sorted(by_partition.items())
    ]


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

    def wait_ready(self, timeout_s: float = 90.0, sources: int = 1) -> dict[str, Any]:
        """Wait until the worker owns at least ``sources`` predictions partitions."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process is None or self.process.poll() is not None:
                raise RuntimeError(f"worker exited early; see {self.log_path}")
            document = self.health()
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
