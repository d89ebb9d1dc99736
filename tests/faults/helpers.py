"""Shared pieces of the fault tests: scenario traffic, replay expectations, comparisons."""

import asyncio
import os
import signal
import subprocess
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from streamguard.contracts import load_topic_specs
from streamguard.engine import Pipeline
from streamguard.guards import Verdict
from streamguard.policy import Policy
from streamguard.sim import ShadowDeviation, TrafficGenerator
from streamguard.testing import WorkerProcess, envelopes, read_topic
from tests.integration.conftest import produce

SPECS = load_topic_specs()
PARTITIONS = SPECS["predictions"].partitions
# Snapshots every 2 s: a worker stopped mid-stream has stored some, and its successor uses them.
FAST_SNAPSHOTS = {"STREAMGUARD_SNAPSHOT_INTERVAL_S": "2"}
Message = tuple[int | None, bytes | None, bytes]
INJECT = Path(__file__).parent / "inject"


def raising(where: str) -> dict[str, str]:
    """Environment that makes a worker (or replay) raise at ``where``: see
    ``tests/faults/inject/sitecustomize.py`` for the points."""
    path = os.pathsep.join(filter(None, [str(INJECT), os.environ.get("PYTHONPATH")]))
    return {"STREAMGUARD_TEST_RAISE_IN": where, "PYTHONPATH": path}


def shadow_scenario(seconds: int = 480, seed: int = 11) -> list[Message]:
    """Traffic with a shadow deviation in android/free from t=120 s (pause, then rollback)."""
    start = float(int(time.time()) // 10 * 10 - 3600)
    deviation = ShadowDeviation({"platform": "android", "tier": "free"}, after_s=120, shift=0.15)
    gen = TrafficGenerator(rate=300, seed=seed, start_ts=start, deviation=deviation)
    return [m for events in gen.seconds(seconds) for m in envelopes(events, PARTITIONS)]


def replay(
    messages: list[Message],
) -> tuple[list[dict[str, Any]], dict[tuple[str, float], dict[str, int]]]:
    """Commands and per-window slice sizes the worker must produce (only windows it can close)."""
    verdicts: list[Verdict] = []
    pipeline = Pipeline(Policy(), PARTITIONS, on_verdict=verdicts.append)
    for _, _, value in messages:
        pipeline.feed(value)
    pipeline.flush()
    sizes = {(v.guard, v.window_end): {s.slice: s.n for s in v.slices} for v in verdicts}
    return [c.to_dict() for c in pipeline.commands], sizes


def produce_behind(broker: Any, worker: WorkerProcess, messages: list[Message]) -> None:
    """Write ``messages`` while ``worker`` is frozen, so it resumes behind and reads a backlog.

    The freeze lasts as long as the writing (~1.5 s for a few thousand envelopes), well within
    the 10 s session timeout, so the worker keeps its partitions.
    """
    assert worker.pid is not None
    os.kill(worker.pid, signal.SIGSTOP)
    try:
        produce(broker.bootstrap, messages, SPECS["predictions"].name)
    finally:
        os.kill(worker.pid, signal.SIGCONT)


def wait_exit(worker: WorkerProcess, timeout_s: float = 120) -> tuple[int | None, str]:
    """The exit status of ``worker`` (None if it still runs after ``timeout_s``), and its log."""
    assert worker.process is not None
    try:
        status: int | None = worker.process.wait(timeout_s)
    except subprocess.TimeoutExpired:
        status = None
    return status, worker.log_tail(400)


def read(broker: Any, role: str, timeout_s: float, until: Any = None) -> list[dict[str, Any]]:
    return asyncio.run(read_topic(broker.bootstrap, SPECS[role].name, timeout_s, until=until))


def window_sizes(verdicts: list[dict[str, Any]]) -> dict[tuple[str, float], dict[str, int]]:
    """Slice sizes of every judged window; a window judged twice (after a restore) must agree."""
    seen: dict[tuple[str, float], dict[str, int]] = {}
    for v in verdicts:
        key = (v["guard"], v["window_end"])
        sizes = {s["slice"]: s["n"] for s in v["slices"]}
        assert seen.setdefault(key, sizes) == sizes, f"window {key} judged twice, differently"
    return seen


def assert_same_statistics(
    worker: dict[tuple[str, float], dict[str, int]],
    replayed: dict[tuple[str, float], dict[str, int]],
) -> None:
    """Every window replay judged, the worker judged with the same pairs: none lost or doubled.

    The worker may judge more: once every source has been idle for ``idle_timeout_s`` it closes
    the last windows, which replay (``flush``, not ``finish``) leaves open. Those can only come
    after replay's last window of the guard; any other window only one side judged is a defect.
    """
    assert replayed, "replay judged no window"
    missing = sorted(set(replayed) - set(worker))
    assert not missing, f"windows replay judged that the worker did not: {missing}"
    for key in sorted(replayed):
        got, want = worker[key], replayed[key]
        diff = {
            s: (got.get(s), want.get(s)) for s in set(got) | set(want) if got.get(s) != want.get(s)
        }
        assert not diff, f"window {key} differs (slice: worker, replay): {diff}"
    last: dict[str, float] = {}
    for guard, end in replayed:
        last[guard] = max(end, last.get(guard, end))
    early = sorted(k for k in set(worker) - set(replayed) if k[1] <= last.get(k[0], -1.0))
    assert not early, f"windows only the worker judged, before replay's last: {early}"


def last_window(sizes: dict[tuple[str, float], dict[str, int]], guard: str) -> float:
    """End of the last window ``guard`` judged in replay (the worker must reach it too)."""
    return max(end for g, end in sizes if g == guard)


def judged_until(guard: str, end: float) -> Any:
    """``until`` for :func:`read`: ``guard`` judged the window ending at ``end``."""
    return lambda values: any(v["guard"] == guard and v["window_end"] >= end for v in values)


def assert_same_commands(published: list[dict[str, Any]], expected: list[dict[str, Any]]) -> None:
    """Each published command (copies included) is replay's: same fields, same evidence.

    Counts and times must be equal; statistics up to float rounding, since partials merge in
    another order in the worker (sums differ by ~1e-16 before the evidence's rounding).
    """
    want = {c["command_id"]: c for c in expected}
    for got in published:
        other = want[got["command_id"]]
        fields = {k: v for k, v in got.items() if k != "evidence"}
        assert fields == {k: v for k, v in other.items() if k != "evidence"}
        _same(got["evidence"], other["evidence"], got["command_id"])


def _same(got: Any, want: Any, path: str) -> None:
    if isinstance(want, dict):
        assert isinstance(got, dict), path
        assert sorted(got) == sorted(want), path
        for key in want:
            _same(got[key], want[key], f"{path}.{key}")
    elif isinstance(want, list):
        assert isinstance(got, list), path
        assert len(got) == len(want), path
        for i, (a, b) in enumerate(zip(got, want, strict=True)):
            _same(a, b, f"{path}[{i}]")
    elif isinstance(want, float) and not isinstance(got, bool):
        assert got == pytest.approx(want, rel=1e-9), path
    else:
        assert got == want, path


def samples(text: str, name: str, label: str) -> dict[str, float]:
    """Values of the samples called ``name`` in /metrics ``text``, by the value of ``label``.

    Parsed rather than searched: prometheus_client prints a family's HELP and TYPE lines even
    when it has no sample, so finding the name proves nothing.
    """
    return {
        sample.labels[label]: sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == name
    }


def assert_one_id_per_decision(commands: list[dict[str, Any]]) -> None:
    ids: dict[tuple[Any, ...], set[str]] = defaultdict(set)
    for c in commands:
        ids[(c["deployment"], c["model_version"], c["guard"], str(c["slice"]), c["action"])].add(
            c["command_id"]
        )
    assert all(len(v) == 1 for v in ids.values()), ids


def start_workers(broker: Any, tmp_path: Path, count: int, **env: str) -> list[WorkerProcess]:
    workers = [
        WorkerProcess(broker.url, tmp_path / f"worker{i}.log", env=dict(env)).start()
        for i in range(count)
    ]
    wait_assigned(workers)
    return workers


def wait_assigned(workers: list[WorkerProcess], timeout_s: float = 120) -> None:
    """Until the workers together own every predictions partition, and the split is stable."""
    deadline = time.monotonic() + timeout_s
    stable_since = None
    last: list[list[int]] = []
    while time.monotonic() < deadline:
        owned = [(w.health() or {}).get("sources", []) for w in workers]
        complete = sorted(p for o in owned for p in o) == list(range(PARTITIONS)) and all(owned)
        if complete and owned == last:
            stable_since = stable_since or time.monotonic()
            if time.monotonic() - stable_since > 3:
                return
        else:
            stable_since = None
        last = owned
        time.sleep(0.5)
    raise TimeoutError(f"partitions never settled: {last}")


def check(
    broker: Any,
    expected: list[dict[str, Any]],
    sizes: dict[tuple[str, float], dict[str, int]],
    worker: WorkerProcess,
) -> None:
    """The worker's commands and judged windows are replay's (``replay(messages)``)."""
    commands = read(
        broker, "control", 120, until=lambda v: len({c["command_id"] for c in v}) >= len(expected)
    )
    # Until the worker judged replay's last window: every window replay judged is compared.
    verdicts = read(
        broker, "verdicts", 90, until=judged_until("shadow", last_window(sizes, "shadow"))
    )
    try:
        # Statistics first: a lost or doubled pair explains a missing command; equal
        # statistics with a missing command point at timing instead.
        assert_same_statistics(
            window_sizes([v for v in verdicts if v["guard"] == "shadow"]),
            {k: v for k, v in sizes.items() if k[0] == "shadow"},
        )
        assert_one_id_per_decision(commands)
        got = sorted({c["command_id"] for c in commands})
        assert got == sorted(c["command_id"] for c in expected)
        assert_same_commands(commands, expected)
    except AssertionError:
        print(f"--- last lines of {worker.log_path}:\n{worker.log_tail()}")
        raise


def valid_events(count: int) -> list[dict[str, Any]]:
    """About ``count`` valid prediction events of an hour ago (two seconds of traffic)."""
    gen = TrafficGenerator(rate=count / 2, seed=3, start_ts=float(int(time.time()) - 3600))
    return [e for second in gen.seconds(2) for e in second]
