"""The shadow-deviation guard end to end: serving traffic in, commands out, through Kafka."""

import asyncio
import time

import orjson
import pytest

from streamguard.broker import EmbeddedBroker
from streamguard.contracts import load_topic_specs
from streamguard.sim import ShadowDeviation, TrafficGenerator
from streamguard.testing import WorkerProcess, envelopes, metric, read_topic
from tests.integration.conftest import produce

pytestmark = pytest.mark.integration

SPECS = load_topic_specs()
PREDICTIONS = SPECS["predictions"]
TARGET = {"platform": "android", "region": "eu", "tier": "free"}


def start_ts() -> float:
    """An event time an hour ago, aligned to the 10 s windows."""
    return float(int(time.time()) // 10 * 10 - 3600)


def traffic(
    deviation: ShadowDeviation | None, seconds: int = 400, seed: int = 1, start: float | None = None
) -> list[tuple[int | None, bytes | None, bytes]]:
    """Envelopes of simulated traffic starting at ``start`` (default: an hour ago)."""
    gen = TrafficGenerator(rate=300, seed=seed, start_ts=start or start_ts(), deviation=deviation)
    messages: list[tuple[int | None, bytes | None, bytes]] = []
    for events in gen.seconds(seconds):
        messages.extend(envelopes(events, PREDICTIONS.partitions))
    return messages


def commands(broker: EmbeddedBroker, timeout_s: float, expect: int) -> list[dict]:
    return asyncio.run(
        read_topic(
            broker.bootstrap, SPECS["control"].name, timeout_s, until=lambda v: len(v) >= expect
        )
    )


def test_shadow_deviation_in_one_slice_yields_one_command_naming_it(
    broker_with_topics: EmbeddedBroker, worker: WorkerProcess
) -> None:
    start = start_ts()
    deviation = ShadowDeviation(TARGET, after_s=150, shift=0.08)
    produce(broker_with_topics.bootstrap, traffic(deviation, start=start), PREDICTIONS.name)
    found = commands(broker_with_topics, 60, expect=1)
    # Give a second command (there must be none) time to appear.
    found = commands(broker_with_topics, 8, expect=2)
    assert len(found) == 1, found
    command = found[0]
    assert command["action"] == "pause"
    assert command["guard"] == "shadow"
    assert command["slice"] == TARGET
    assert command["model_version"] == "ranker-v42"
    evidence = command["evidence"]
    assert evidence["statistic"] in evidence["stats"]
    assert evidence["value"] >= evidence["threshold"]
    assert evidence["n"] >= 500
    assert evidence["window"]["end"] == command["ts"]
    assert evidence["horizon"]["end"] - evidence["horizon"]["start"] == 300
    # The onset of the shift is dated by the change detector to the window where it began.
    assert evidence["onset"] == start + 150
    alerts = asyncio.run(
        read_topic(broker_with_topics.bootstrap, SPECS["alerts"].name, 10, until=bool)
    )
    assert [a["command_id"] for a in alerts] == [command["command_id"]]
    metrics = worker.metrics()
    assert 'streamguard_commands_total{action="pause",guard="shadow"} 1.0' in metrics


def test_healthy_traffic_yields_no_command(
    broker_with_topics: EmbeddedBroker, worker: WorkerProcess
) -> None:
    produce(broker_with_topics.bootstrap, traffic(None, seconds=400, seed=2), PREDICTIONS.name)
    # Wait until the worker has judged most of the run, then check nothing was published.
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        verdicts = asyncio.run(read_topic(broker_with_topics.bootstrap, SPECS["verdicts"].name, 2))
        if len(verdicts) >= 30:
            break
    assert len(verdicts) >= 30
    assert any(s["state"] == "ok" for v in verdicts for s in v["slices"])
    assert commands(broker_with_topics, 3, expect=1) == []


def test_malformed_message_goes_to_dead_letters_and_worker_goes_on(
    broker_with_topics: EmbeddedBroker, worker: WorkerProcess
) -> None:
    good = traffic(None, seconds=2, seed=3)
    bad_event = {
        "schema_version": 1,
        "kind": "prediction",
        "event_id": "x",
        "request_id": "r",
        "ts": time.time(),
        "deployment": "home-ranker",
        "model_version": "v",
        "role": "judge",
        "slice": {},
        "score": 0.5,
    }
    mixed = orjson.dumps(
        {"schema_version": 1, "events": [bad_event, orjson.loads(good[0][2])["events"][0]]}
    )
    produce(
        broker_with_topics.bootstrap,
        [(0, b"k", b"{not json"), (1, b"k", mixed), (2, b"k", b"[1, 2]"), *good],
        PREDICTIONS.name,
    )
    letters = asyncio.run(
        read_topic(
            broker_with_topics.bootstrap, SPECS["deadletters"].name, 30, until=lambda v: len(v) >= 3
        )
    )
    reasons = sorted(letter["reason"] for letter in letters)
    assert reasons == ["bad_value", "invalid_json", "not_an_object"]
    by_reason = {letter["reason"]: letter for letter in letters}
    assert "role" in by_reason["bad_value"]["detail"]
    assert by_reason["bad_value"]["source"]["event_index"] == 0
    # The worker is still alive and counted the good events after the bad ones.
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        text = worker.metrics()
        if (
            'streamguard_decode_failures_total{reason="invalid_json"} 1.0' in text
            and "streamguard_pairs_total" in text
        ):
            pairs = [
                line for line in text.splitlines() if line.startswith("streamguard_pairs_total")
            ]
            if pairs and float(pairs[0].split()[-1]) > 0:
                break
        time.sleep(0.5)
    assert worker.health() is not None
    assert float(pairs[0].split()[-1]) > 0


def test_junk_on_internal_topics_is_dead_lettered_and_the_worker_still_judges(
    broker_with_topics: EmbeddedBroker, worker: WorkerProcess
) -> None:
    """A foreign writer on the partials, verdicts or control topic: skipped, never a stop.

    A stage that raises stops the worker (faust_app/halt), and each restart would stop at the
    same message again; what a stage cannot use must be refused before it changes anything.
    """
    partial = {
        "schema_version": 1,
        "kind": "partial",
        "deployment": "home-ranker",
        "source": {"partition": 0, "offset_lo": -1, "offset_hi": 0, "part": 0, "parts": 1},
        "watermark": None,
        "late": 0,
    }
    group = {"stream": "pair", "version": "v", "window": 1, "slices": ["*"], "fields": {}}
    bad_partials = [
        b"{not json",
        b"[1, 2]",
        orjson.dumps(partial | {"schema_version": 2, "groups": []}),
        orjson.dumps(partial | {"groups": [group]}),  # lacks its fields
    ]
    bad_verdicts = [b"{", orjson.dumps({"schema_version": 1, "kind": "verdict"})]
    bootstrap = broker_with_topics.bootstrap
    produce(bootstrap, [(0, b"home-ranker", v) for v in bad_partials], SPECS["partials"].name)
    produce(bootstrap, [(0, b"home-ranker", v) for v in bad_verdicts], SPECS["verdicts"].name)
    approval = {"schema_version": 1, "action": "resume", "deployment": "home-ranker"}
    produce(bootstrap, [(0, b"home-ranker", orjson.dumps(approval))], SPECS["control"].name)
    start = start_ts()
    produce(
        bootstrap,
        traffic(ShadowDeviation(TARGET, after_s=150, shift=0.08), start=start),
        PREDICTIONS.name,
    )
    found = [c for c in commands(broker_with_topics, 60, expect=2) if c.get("guard")]
    assert [(c["action"], c["slice"]) for c in found] == [("pause", TARGET)]
    letters = asyncio.run(
        read_topic(bootstrap, SPECS["deadletters"].name, 30, until=lambda v: len(v) >= 6)
    )
    by_source = sorted(
        (letter["source"]["topic"], letter["source"]["offset"], letter["reason"])
        for letter in letters
    )
    assert by_source == sorted(
        [(SPECS["partials"].name, offset, "bad_partial") for offset in range(4)]
        + [(SPECS["verdicts"].name, offset, "bad_verdict") for offset in range(2)]
    )
    details = " ".join(letter["detail"] for letter in letters)
    assert "schema_version 2" in details
    assert "lacks field" in details
    assert "deployment is missing" in details
    text = worker.metrics()
    assert metric(text, 'streamguard_internal_errors_total{stage="stage2"}') == 4
    assert metric(text, 'streamguard_internal_errors_total{stage="stage3"}') == 2
    assert metric(text, 'streamguard_control_rejected_total{reason="malformed"}') == 1
    assert worker.health() is not None  # still serving its endpoints
