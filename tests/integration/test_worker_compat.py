"""Rollback compatibility through the broker: a rollback into a crash is flagged and alerted,
and subscribers learn which request schemas each version accepts."""

import asyncio
import time
from pathlib import Path
from typing import Any

import pytest

from streamguard.broker import EmbeddedBroker
from streamguard.client import ControlSubscriber
from streamguard.contracts import Command, load_topic_specs
from streamguard.engine import Pipeline
from streamguard.policy import Policy
from streamguard.sim import Canary, FeatureSchemas, TrafficGenerator
from streamguard.testing import WorkerProcess, envelopes, read_topic
from tests.integration.conftest import produce

pytestmark = [pytest.mark.integration, pytest.mark.slow]

SPECS = load_topic_specs()
PARTITIONS = SPECS["predictions"].partitions
FAST_GROUP = {"session_timeout_ms": 4000, "heartbeat_interval_ms": 500}


def scenario() -> list[tuple[int | None, bytes | None, bytes]]:
    """The canary gets request schema "2", the primary only "1"; the canary's errors jump."""
    gen = TrafficGenerator(
        rate=400,
        seed=1,
        start_ts=float(int(time.time()) // 10 * 10 - 3600),
        shadow=False,
        outcomes=True,
        error_rate=0.01,
        canary=Canary(share=0.25, error={"*": 10.0}, after_s=60),
        feature_schemas=FeatureSchemas(),
    )
    messages: list[tuple[int | None, bytes | None, bytes]] = []
    for events in gen.seconds(120):
        messages.extend(envelopes(events, PARTITIONS))
    return messages


def replayed(messages: list[tuple[int | None, bytes | None, bytes]]) -> list[dict[str, Any]]:
    pipeline = Pipeline(Policy(), PARTITIONS)
    for _, _, value in messages:
        pipeline.feed(value)
    pipeline.flush()  # what the worker can publish: its last windows stay open
    return [c.to_dict() for c in pipeline.commands]


async def subscribe(
    bootstrap: str, handled: list[Command], group: str, **kwargs: Any
) -> tuple[ControlSubscriber, asyncio.Event]:
    """A started subscriber, and an event set once its handler got a command."""
    got = asyncio.Event()

    async def handler(command: Command) -> None:
        handled.append(command)
        got.set()

    subscriber = ControlSubscriber(
        bootstrap, handler, group, retry_backoff_s=0.05, consumer_config=FAST_GROUP, **kwargs
    )
    await subscriber.start()
    return subscriber, got


def test_rollback_into_an_unserved_schema_is_flagged_alerted_and_schemas_reach_subscribers(
    broker_with_topics: EmbeddedBroker, tmp_path: Path
) -> None:
    messages = scenario()
    expected = replayed(messages)
    assert [c["action"] for c in expected if c["action"] != "schemas"] == ["rollback"]
    bootstrap = broker_with_topics.bootstrap
    with WorkerProcess(broker_with_topics.url, tmp_path / "worker.log") as worker:
        worker.wait_ready(sources=PARTITIONS)
        produce(bootstrap, messages, SPECS["predictions"].name)
        published = asyncio.run(
            read_topic(
                bootstrap, SPECS["control"].name, 120, until=lambda v: len(v) >= len(expected)
            )
        )
        alerts = asyncio.run(
            read_topic(
                bootstrap,
                SPECS["alerts"].name,
                30,
                until=lambda v: len(v) >= 1,
            )
        )
    assert sorted(c["command_id"] for c in published) == sorted(c["command_id"] for c in expected)
    (rollback,) = [c for c in published if c["action"] == "rollback"]
    assert rollback["evidence"]["compat"]["compatible"] is False
    assert rollback["evidence"]["compat"]["missing"] == ["2"]
    (alert,) = [a for a in alerts if a["command_id"] == rollback["command_id"]]
    assert "ROLLBACK MAY CRASH SERVING" in alert["summary"]
    notices = {c["command_id"] for c in published if c["action"] == "schemas"}
    assert notices  # the worker said which schemas each version accepts ...
    assert not {a["command_id"] for a in alerts} & notices  # ... and paged nobody about it

    async def subscribers() -> tuple[ControlSubscriber, ControlSubscriber, list, list]:
        handled: list[Command] = []
        member, got = await subscribe(bootstrap, handled, "serving-a")
        # A member of a group whose offsets are past the notices learns them by preloading.
        late: list[Command] = []
        preloaded, _ = await subscribe(
            bootstrap, late, "serving-b", auto_offset_reset="latest", preload_schemas=True
        )
        await asyncio.wait_for(got.wait(), 30)
        await asyncio.sleep(1.0)  # anything else the handler would (wrongly) get
        await member.stop()
        await preloaded.stop()
        return member, preloaded, handled, late

    member, preloaded, handled, late = asyncio.run(subscribers())
    assert [c.action for c in handled] == ["rollback"]  # notices never reach the handler
    assert late == []
    for subscriber in (member, preloaded):
        assert subscriber.accepted_schemas("home-ranker", "ranker-v41") == frozenset({"1"})
        assert subscriber.accepted_schemas("home-ranker", "ranker-v99") is None
    assert member.stats()["notices"] >= 1
