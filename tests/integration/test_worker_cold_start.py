"""Cold-start guard end to end through Kafka, and replay = worker on the same events."""

import asyncio
import time
from pathlib import Path

import pytest

from streamguard.broker import EmbeddedBroker
from streamguard.contracts import load_topic_specs
from streamguard.engine import Pipeline
from streamguard.policy import Policy
from streamguard.sim import Replicas, TrafficGenerator
from streamguard.testing import WorkerProcess, envelopes, read_topic
from tests.integration.conftest import produce

pytestmark = [pytest.mark.integration, pytest.mark.slow]

SPECS = load_topic_specs()
PARTITIONS = SPECS["predictions"].partitions
Messages = list[tuple[int | None, bytes | None, bytes]]


def scenario(replicas: Replicas, seconds: int, seed: int = 1) -> Messages:
    start = float(int(time.time()) // 10 * 10 - 7200)
    gen = TrafficGenerator(rate=200, seed=seed, start_ts=start, shadow=False, replicas=replicas)
    messages: Messages = []
    for events in gen.seconds(seconds):
        messages.extend(envelopes(events, PARTITIONS))
    return messages


def replay(messages: Messages) -> tuple[list[dict], float]:
    """Commands of the replay, and the end of the last cold-start window it judged."""
    judged: list[float] = []
    pipeline = Pipeline(
        Policy(),
        PARTITIONS,
        on_verdict=lambda v: judged.append(v.window_end) if v.guard == "cold_start" else None,
    )
    for _, _, value in messages:
        pipeline.feed(value)
    pipeline.flush()  # only what the worker can publish: its last windows stay open
    return [c.to_dict() for c in pipeline.commands], max(judged, default=0.0)


def through_worker(
    broker: EmbeddedBroker,
    tmp_path: Path,
    messages: Messages,
    *,
    expect: int,
    wait_s: float = 60,
    judged_until: float | None = None,
) -> tuple[list[dict], list[dict]]:
    with WorkerProcess(broker.url, tmp_path / "worker.log") as worker:
        worker.wait_ready(sources=PARTITIONS)
        produce(broker.bootstrap, messages, SPECS["predictions"].name)
        if judged_until is not None:
            verdicts = asyncio.run(
                read_topic(
                    broker.bootstrap,
                    SPECS["verdicts"].name,
                    wait_s,
                    until=lambda v: any(
                        x["guard"] == "cold_start" and x["window_end"] >= judged_until for x in v
                    ),
                )
            )
            assert any(
                v["guard"] == "cold_start" and v["window_end"] >= judged_until for v in verdicts
            )
        commands = asyncio.run(
            read_topic(
                broker.bootstrap,
                SPECS["control"].name,
                wait_s if expect else 3,
                until=lambda v: expect > 0 and len(v) >= expect,
            )
        )
        alerts = asyncio.run(
            read_topic(
                broker.bootstrap,
                SPECS["alerts"].name,
                wait_s if expect else 3,
                until=lambda v: expect > 0 and len(v) >= expect,
            )
        )
        return commands, alerts


def test_replicas_serving_before_ready_are_drained_and_scaling_held(
    broker_with_topics: EmbeddedBroker, tmp_path: Path
) -> None:
    """2 -> 20 replicas at t=60 s, each loading for 45 s while taking traffic."""
    incident = Replicas(initial=2, scale_to=20, scale_at_s=60, load_s=45, route_unready=True)
    messages = scenario(incident, 130)
    expected, _ = replay(messages)
    actions = sorted({c["action"] for c in expected})
    assert actions == ["drain", "hold_scaling"]
    drained = sorted(c["slice"]["replica"] for c in expected if c["action"] == "drain")
    assert drained == sorted(f"pod-{i}" for i in range(2, 20))
    published, alerts = through_worker(broker_with_topics, tmp_path, messages, expect=len(expected))
    assert sorted(c["command_id"] for c in published) == sorted(c["command_id"] for c in expected)
    hold = next(c for c in published if c["action"] == "hold_scaling")
    assert hold["evidence"]["stats"]["p99_ratio"] >= 2
    assert hold["evidence"]["replicas"]
    assert all(a["guard"] == "cold_start" for a in alerts)
    assert all(c["action"] not in ("pause", "rollback") for c in published)


def test_replicas_that_take_traffic_only_when_ready_get_no_command(
    broker_with_topics: EmbeddedBroker, tmp_path: Path
) -> None:
    healthy = Replicas(initial=2, scale_to=20, scale_at_s=60, load_s=45, route_unready=False)
    messages = scenario(healthy, 130, seed=3)
    commands, last_judged = replay(messages)
    assert commands == []
    assert last_judged > 0
    published, _ = through_worker(
        broker_with_topics, tmp_path, messages, expect=0, judged_until=last_judged
    )
    assert published == []
