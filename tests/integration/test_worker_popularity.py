"""Popularity guard end to end through Kafka, and replay = worker on the same events."""

import asyncio
import time
from pathlib import Path

import pytest

from streamguard.broker import EmbeddedBroker
from streamguard.contracts import load_topic_specs
from streamguard.engine import Pipeline
from streamguard.policy import Policy
from streamguard.sim import Canary, Items, TrafficGenerator
from streamguard.testing import WorkerProcess, envelopes, read_topic
from tests.integration.conftest import produce

pytestmark = [pytest.mark.integration, pytest.mark.slow]

SPECS = load_topic_specs()
PARTITIONS = SPECS["predictions"].partitions
Messages = list[tuple[int | None, bytes | None, bytes]]


def scenario(items: Items, seconds: int, seed: int = 1) -> Messages:
    start = float(int(time.time()) // 10 * 10 - 7200)
    gen = TrafficGenerator(
        rate=200, seed=seed, start_ts=start, shadow=False, canary=Canary(share=0.5), items=items
    )
    messages: Messages = []
    for events in gen.seconds(seconds):
        messages.extend(envelopes(events, PARTITIONS))
    return messages


def replay(messages: Messages) -> tuple[list[dict], float]:
    """Commands of the replay, and the end of the last popularity window it judged."""
    judged: list[float] = []
    pipeline = Pipeline(
        Policy(),
        PARTITIONS,
        on_verdict=lambda v: judged.append(v.window_end) if v.guard == "popularity" else None,
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
) -> list[dict]:
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
                        x["guard"] == "popularity" and x["window_end"] >= judged_until for x in v
                    ),
                )
            )
            assert any(
                v["guard"] == "popularity" and v["window_end"] >= judged_until for v in verdicts
            )
        return asyncio.run(
            read_topic(
                broker.bootstrap,
                SPECS["control"].name,
                wait_s if expect else 3,
                until=lambda v: expect > 0 and len(v) >= expect,
            )
        )


def test_a_canary_sharpening_its_popularity_is_paused(
    broker_with_topics: EmbeddedBroker, tmp_path: Path
) -> None:
    items = Items(exponent=1.0, canary_exponent=2.0, after_s=20, ramp_s=100)
    messages = scenario(items, 150)
    expected, _ = replay(messages)
    assert [(c["action"], c["guard"], c["slice"]) for c in expected] == [
        ("pause", "popularity", None)
    ]
    published = through_worker(broker_with_topics, tmp_path, messages, expect=1)
    assert published == expected
    evidence = published[0]["evidence"]
    assert evidence["statistic"] == "gini_slope_gap"
    assert evidence["stats"]["gini.canary"] > evidence["stats"]["gini.baseline"]
    assert evidence["trend"]["canary"]["gini_slope"] > evidence["trend"]["baseline"]["gini_slope"]
    assert evidence["gainers"]


def test_a_canary_with_the_baseline_item_distribution_gets_no_command(
    broker_with_topics: EmbeddedBroker, tmp_path: Path
) -> None:
    messages = scenario(Items(exponent=1.0), 150, seed=3)
    commands, last_judged = replay(messages)
    assert commands == []
    assert last_judged > 0
    published = through_worker(
        broker_with_topics, tmp_path, messages, expect=0, judged_until=last_judged
    )
    assert published == []
