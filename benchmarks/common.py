"""What the broker benchmarks share: the machine's state, traffic, brokers, polling workers.

Every result carries :func:`environment` (date, git commit, CPU count, load average), because
on a shared machine absolute figures mean little without it; the ratios measured in one run
are what carry over.
"""

import asyncio
import contextlib
import math
import os
import platform
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson

from streamguard.broker import EmbeddedBroker
from streamguard.broker.admin import apply_topics
from streamguard.contracts import load_topic_specs, partition_for
from streamguard.contracts.columns import encode_columns
from streamguard.sim import TrafficGenerator
from streamguard.testing import WorkerProcess, envelopes, metric

__all__ = [
    "PREDICTIONS",
    "ROOT",
    "SPECS",
    "Message",
    "Samples",
    "as_envelopes",
    "as_singles",
    "cpu_seconds",
    "environment",
    "past_start",
    "poll_until",
    "running_broker",
    "traffic",
    "worker_events",
]

SPECS = load_topic_specs()
PREDICTIONS = SPECS["predictions"]

#: (partition, key, value), as :func:`streamguard.testing.produce` takes them.
Message = tuple[int | None, bytes | None, bytes]

#: Events the worker counts once stage 1 has processed them (predictions and outcomes).
_EVENTS = "streamguard_events_total"

ROOT = Path(__file__).resolve().parent.parent


def _git(*args: str) -> str:
    try:
        out = subprocess.run(
            ["git", *args], cwd=ROOT, capture_output=True, text=True, check=True, timeout=10
        )
    except (OSError, subprocess.SubprocessError):
        return ""
    return out.stdout.strip()


def environment() -> dict[str, Any]:
    """Date (UTC), git commit (``-dirty`` with uncommitted changes), CPUs and load average."""
    commit = _git("rev-parse", "--short", "HEAD") or "unknown"
    if _git("status", "--porcelain", "--untracked-files=no"):
        commit += "-dirty"
    return {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "commit": commit,
        "cpus": os.cpu_count(),
        "loadavg": [round(x, 2) for x in os.getloadavg()],
        "python": platform.python_version(),
    }


def cpu_seconds(pid: int | None) -> float:
    """User + system CPU time process ``pid`` has used, from ``/proc/PID/stat`` (Linux).

    NaN when the process is gone or unknown, so a lost figure shows rather than reads as 0.
    """
    if pid is None:
        return math.nan
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return math.nan
    # Fields after the command name (which may hold spaces and parentheses): utime, stime
    # are fields 14 and 15 of the whole line, in clock ticks.
    fields = stat.rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def past_start(seconds: float, margin_s: float = 120.0) -> float:
    """An event time, aligned to the 10 s windows, ``seconds`` + ``margin_s`` before now.

    Traffic starting there ends in the past: the worker rejects events more than
    ``max_future_s`` ahead of its clock, never old ones.
    """
    return float(math.floor((time.time() - seconds - margin_s) / 10) * 10)


def as_envelopes(seconds: list[list[dict[str, Any]]], partitions: int) -> list[Message]:
    """One batch envelope per partition and second of traffic, as the emitter sends them."""
    return [m for events in seconds for m in envelopes(events, partitions)]


def as_columns(envelope: bytes) -> bytes:
    """A batch envelope's events as one columnar batch, as ``Emitter(columnar=True)`` sends."""
    columns = encode_columns(orjson.loads(envelope)["events"])
    if columns is None:  # pragma: no cover - the simulator sends predictions only
        raise RuntimeError("simulated traffic that columns cannot carry")
    return columns


def as_singles(seconds: list[list[dict[str, Any]]], partitions: int) -> list[Message]:
    """One message per event, keyed and routed by request id (Kafka's default partitioner)."""
    out: list[Message] = []
    for events in seconds:
        for event in events:
            key = event["request_id"].encode()
            out.append((partition_for(key, partitions), key, orjson.dumps(event)))
    return out


def traffic(gen: TrafficGenerator, seconds: int) -> list[list[dict[str, Any]]]:
    """``seconds`` seconds of ``gen``'s events, one list per second."""
    return list(gen.seconds(seconds))


@contextlib.contextmanager
def running_broker(log_path: Path) -> Iterator[EmbeddedBroker]:
    """A fresh embedded broker with every topic of ``topics/``; stopped by pid on exit."""
    with EmbeddedBroker(log_path=log_path) as broker:
        asyncio.run(apply_topics(broker.bootstrap))
        yield broker


def worker_events(workers: list[WorkerProcess]) -> float:
    """Events (predictions and outcomes) the workers' stage 1 has processed, summed."""
    total = 0.0
    for worker in workers:
        with contextlib.suppress(OSError, ValueError):
            total += metric(worker.metrics(), _EVENTS)
    return total


@dataclass
class Samples:
    """(monotonic time, count) polls of a counter on its way to a target.

    :meth:`rate` uses only the polls *strictly between* 0 and the target, so neither the
    moment the first event was counted nor the moment the last one was is guessed: the rate
    is the exact count difference over the exact time difference between two polls, and its
    error is only that it leaves out up to one poll interval at each end.
    """

    target: float
    points: list[tuple[float, float]]

    def rate(self) -> float | None:
        """Counts per second between the first and the last interior poll, or None (fewer
        than two interior polls, or no count between them)."""
        inner = [(t, c) for t, c in self.points if 0 < c < self.target]
        # Two polls of the same count measure nothing: stage 1 counts a run of one-event
        # messages when it is accounted (at a flush), so a short run may move in one step.
        if len(inner) < 2 or inner[-1][0] <= inner[0][0] or inner[-1][1] <= inner[0][1]:
            return None
        (t0, c0), (t1, c1) = inner[0], inner[-1]
        return (c1 - c0) / (t1 - t0)

    def span_s(self) -> float | None:
        """Seconds from the last poll at 0 to the first poll at the target (an upper bound)."""
        zero = [t for t, c in self.points if c <= 0]
        done = [t for t, c in self.points if c >= self.target]
        if not zero or not done:
            return None
        return done[0] - zero[-1]

    def rate_or_bound(self) -> float:
        """:meth:`rate`, or, for runs too short for two interior polls, the target over
        :meth:`span_s` (a lower bound on the rate).

        Raises
        ------
        ValueError
            If neither can be computed (the counter was never seen at 0).
        """
        rate = self.rate()
        if rate is not None:
            return rate
        span = self.span_s()
        if not span:
            raise ValueError("no poll saw the counter at 0; the rate cannot be bounded")
        return self.target / span


def poll_until(
    read: Callable[[], float], target: float, timeout_s: float, interval_s: float = 0.2
) -> Samples:
    """Poll ``read()`` every ``interval_s`` until it reaches ``target``.

    Raises
    ------
    TimeoutError
        If the target is not reached in ``timeout_s``.
    """
    points: list[tuple[float, float]] = []
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = read()
        points.append((time.monotonic(), value))
        if value >= target:
            return Samples(target, points)
        time.sleep(interval_s)
    last = points[-1][1] if points else 0
    raise TimeoutError(f"counter at {last} of {target} after {timeout_s}s")
