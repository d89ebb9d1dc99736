"""Shared pieces of the fault tests: scenario traffic, replay expectations, comparisons."""

import asyncio
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

from streamguard.contracts import load_topic_specs
from streamguard.engine import Pipeline
from streamguard.guards import Verdict
from streamguard.policy import Policy
from streamguard.sim import ShadowDeviation, TrafficGenerator
from streamguard.testing import WorkerProcess, envelopes, read_topic

SPECS = load_topic_specs()
PARTITIONS = SPECS["predictions"].partitions
Message = tuple[int | None, bytes | None, bytes]


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
    """Every window the worker judged holds the pairs replay counted: none lost or doubled."""
    assert worker, "the worker judged no window"
    common = set(worker) & set(replayed)
    assert len(common) >= 0.9 * len(worker)
    for key in sorted(common):
        assert worker[key] == replayed[key], f"window {key} differs"


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
