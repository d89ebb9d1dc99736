"""Late and out-of-order events: within the allowed lateness they count, later ones are late."""

import time
from pathlib import Path

import orjson
import pytest

from streamguard.broker import EmbeddedBroker
from streamguard.engine import Pipeline
from streamguard.guards import Verdict
from streamguard.policy import parse_policy
from streamguard.testing import WorkerProcess
from tests.faults.helpers import SPECS, read
from tests.integration.conftest import produce

pytestmark = pytest.mark.faults

POLICY_TEXT = """
[defaults]
window_s = 10
horizon_s = 10
allowed_lateness_s = 5
[defaults.guards.shadow]
min_pairs = 1
"""
POLICY = parse_policy(POLICY_TEXT)


def pair(request: str, ts: float, score: float = 0.5) -> bytes:
    events = [
        {
            "schema_version": 1,
            "kind": "prediction",
            "event_id": f"{request}-{role}",
            "request_id": request,
            "ts": ts,
            "deployment": "d",
            "model_version": f"v-{role}",
            "role": role,
            "slice": {"platform": "ios"},
            "score": score,
        }
        for role in ("primary", "shadow")
    ]
    return orjson.dumps({"schema_version": 1, "events": events})


def run(messages: list[bytes]) -> tuple[Pipeline, dict[float, int]]:
    verdicts: list[Verdict] = []
    pipeline = Pipeline(POLICY, partitions=1, on_verdict=verdicts.append)
    for message in messages:
        pipeline.feed(message)
    pipeline.finish()
    sizes: dict[float, int] = {}
    for verdict in verdicts:
        for s in verdict.slices:
            if s.slice == "*":
                sizes[verdict.window_start] = s.n
    return pipeline, sizes


def test_out_of_order_events_within_the_lateness_land_in_their_window() -> None:
    base = 1_790_000_000.0
    # Window [base, base+10): 3 pairs, one of them arriving after events of the next window.
    messages = [
        pair("a", base + 1),
        pair("b", base + 12),
        pair("c", base + 3),
        pair("d", base + 14),
        pair("e", base + 9),
    ]
    pipeline, sizes = run(messages)
    assert sizes[base] == 3
    assert sizes[base + 10] == 2
    assert pipeline.stats.late == 0
    assert pipeline.stats.late_pairs == 0


def test_events_later_than_the_lateness_are_counted_late_not_in_a_window() -> None:
    base = 1_790_000_000.0
    # The watermark reaches base+16 >= window end (base+10) + lateness (5) before "late" comes.
    messages = [
        pair("a", base + 1),
        pair("b", base + 16),
        pair("late", base + 2),
        pair("c", base + 17),
    ]
    pipeline, sizes = run(messages)
    assert sizes[base] == 1
    assert pipeline.stats.late_pairs == 1
    assert pipeline.stats.late == 2  # its primary and shadow predictions


@pytest.mark.integration
def test_the_worker_counts_in_order_late_and_too_late_events_as_replay_does(
    broker_with_topics: EmbeddedBroker, tmp_path: Path
) -> None:
    base = float(int(time.time()) // 10 * 10 - 3600)
    order = [("a", 1), ("b", 12), ("c", 3), ("d", 16), ("late", 2), ("e", 17), ("f", 40)]
    # b and d move the watermark: c (3 s) is out of order but within the 5 s lateness of
    # window [0, 10); after d (16 s) that window is closed and "late" (2 s) is too late.
    policy = tmp_path / "policy.toml"
    policy.write_text(POLICY_TEXT)
    worker = WorkerProcess(
        broker_with_topics.url,
        tmp_path / "w.log",
        ["--policy", str(policy)],
        env={"STREAMGUARD_IDLE_SOURCE_TIMEOUT_S": "2"},  # the other partitions carry nothing
    ).start()
    try:
        worker.wait_ready(sources=8)
        messages = [(0, name.encode(), pair(name, base + at)) for name, at in order]
        produce(broker_with_topics.bootstrap, messages, SPECS["predictions"].name)
        verdicts = read(
            broker_with_topics,
            "verdicts",
            60,
            until=lambda v: any(x["window_start"] == base + 10 for x in v),
        )
        sizes = {
            v["window_start"]: next(s["n"] for s in v["slices"] if s["slice"] == "*")
            for v in verdicts
        }
        assert sizes[base] == 2  # a and c
        assert sizes[base + 10] == 3  # b, d and e
        text = worker.metrics()
        assert 'streamguard_late_events_total{stage="source_pairs"} 1.0' in text
        assert 'streamguard_late_events_total{stage="source"} 2.0' in text
    finally:
        worker.stop()
    pipeline, replayed = run([value for _, _, value in messages])
    assert {k: replayed[k] for k in (base, base + 10)} == {base: 2, base + 10: 3}
    assert pipeline.stats.late_pairs == 1
