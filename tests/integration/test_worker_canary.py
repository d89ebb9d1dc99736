"""Canary guards end to end through Kafka, and replay = worker on the same events."""

import asyncio
import time
from pathlib import Path

import pytest

from streamguard.broker import EmbeddedBroker
from streamguard.contracts import load_topic_specs
from streamguard.engine import Pipeline
from streamguard.policy import Policy
from streamguard.sim import Canary, TrafficGenerator
from streamguard.testing import WorkerProcess, envelopes, read_topic
from tests.integration.conftest import produce

pytestmark = [pytest.mark.integration, pytest.mark.slow]

SPECS = load_topic_specs()
PARTITIONS = SPECS["predictions"].partitions


def scenario(
    canary: Canary, seconds: int, seed: int = 1
) -> list[tuple[int | None, bytes | None, bytes]]:
    start = float(int(time.time()) // 10 * 10 - 7200)
    gen = TrafficGenerator(
        rate=800,
        seed=seed,
        start_ts=start,
        shadow=False,
        outcomes=True,
        error_rate=0.01,
        canary=canary,
    )
    messages: list[tuple[int | None, bytes | None, bytes]] = []
    for events in gen.seconds(seconds):
        messages.extend(envelopes(events, PARTITIONS))
    return messages


def replayed(messages: list[tuple[int | None, bytes | None, bytes]]) -> list[dict]:
    return replay(messages)[0]


def replay(messages: list[tuple[int | None, bytes | None, bytes]]) -> tuple[list[dict], float]:
    """Commands of the replay, and the end of the last canary window it judged."""
    judged: list[float] = []
    pipeline = Pipeline(
        Policy(),
        PARTITIONS,
        on_verdict=lambda v: judged.append(v.window_end) if v.guard == "canary" else None,
    )
    for _, _, value in messages:
        pipeline.feed(value)
    # Only what the worker can publish: its last windows stay open until more data comes.
    pipeline.flush()
    return [c.to_dict() for c in pipeline.commands], max(judged, default=0.0)


def through_worker(
    broker: EmbeddedBroker,
    tmp_path: Path,
    messages: list,
    *,
    expect: int,
    wait_s: float = 90,
    judged_until: float | None = None,
) -> list[dict]:
    with WorkerProcess(broker.url, tmp_path / "worker.log") as worker:
        worker.wait_ready(sources=PARTITIONS)
        produce(broker.bootstrap, messages, SPECS["predictions"].name)
        if judged_until is not None:
            # Nothing may be expected: first see the worker judge the windows the replay judged.
            verdicts = asyncio.run(
                read_topic(
                    broker.bootstrap,
                    SPECS["verdicts"].name,
                    wait_s,
                    until=lambda v: any(
                        x["guard"] == "canary" and x["window_end"] >= judged_until for x in v
                    ),
                )
            )
            assert any(v["guard"] == "canary" and v["window_end"] >= judged_until for v in verdicts)
        return asyncio.run(
            read_topic(
                broker.bootstrap,
                SPECS["control"].name,
                wait_s if expect else 3,
                until=lambda v: expect > 0 and len(v) >= expect,
            )
        )


def test_contaminated_canary_is_paused_by_the_stratification_guard(
    broker_with_topics: EmbeddedBroker, tmp_path: Path
) -> None:
    messages = scenario(Canary(share=0.1, only={"platform": "ios", "region": "na"}), 150)
    expected = replayed(messages)
    assert [(c["action"], c["guard"]) for c in expected] == [("pause", "stratification")]
    published = through_worker(broker_with_topics, tmp_path, messages, expect=1)
    assert [c["command_id"] for c in published] == [c["command_id"] for c in expected]
    evidence = published[0]["evidence"]
    assert published[0]["slice"] is None
    assert evidence["uncovered_weight"] > 0.8
    assert "allocation is fixed" in evidence["message"]


def test_slice_regression_is_rolled_back_naming_the_slice(
    broker_with_topics: EmbeddedBroker, tmp_path: Path
) -> None:
    messages = scenario(Canary(share=0.25, ctr={"platform=web": 0.6}), 900)
    expected = replayed(messages)
    assert [(c["action"], c["guard"], c["slice"]) for c in expected] == [
        ("rollback", "canary", {"platform": "web"})
    ]
    published = through_worker(broker_with_topics, tmp_path, messages, expect=1, wait_s=180)
    assert [c["command_id"] for c in published] == [c["command_id"] for c in expected]
    got, want = published[0]["evidence"], expected[0]["evidence"]
    assert (got["n_canary"], got["n_baseline"]) == (want["n_canary"], want["n_baseline"])
    assert got["effect"] == pytest.approx(want["effect"], rel=1e-6)


def test_an_abrupt_failure_is_paused_by_the_change_look_as_in_replay(
    broker_with_topics: EmbeddedBroker, tmp_path: Path
) -> None:
    # Four times the errors after five healthy minutes: the change look pauses at once, the
    # cumulative test rolls back later; the worker publishes what replay makes.
    messages = scenario(Canary(share=0.25, error={"*": 4.0}, after_s=300.0), 400)
    expected = replayed(messages)
    assert [(c["action"], c["guard"]) for c in expected][:2] == [
        ("pause", "canary"),
        ("rollback", "canary"),
    ]
    assert expected[0]["evidence"]["look"] == "change"
    published = through_worker(
        broker_with_topics, tmp_path, messages, expect=len(expected), wait_s=180
    )
    assert [c["command_id"] for c in published] == [c["command_id"] for c in expected]
    assert published[0]["evidence"]["log_stat"] == pytest.approx(
        expected[0]["evidence"]["log_stat"], rel=1e-9
    )


def test_healthy_stratified_canary_gets_no_command(
    broker_with_topics: EmbeddedBroker, tmp_path: Path
) -> None:
    messages = scenario(Canary(share=0.2), 400, seed=3)
    commands, last_judged = replay(messages)
    assert commands == []
    assert last_judged > 0
    published = through_worker(
        broker_with_topics, tmp_path, messages, expect=0, wait_s=90, judged_until=last_judged
    )
    assert published == []
