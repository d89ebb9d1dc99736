"""The control subscriber on a real embedded broker: once, in order, committed after success."""

import asyncio
import time
from collections.abc import Callable
from typing import Any

import orjson
import pytest
from aiokafka import AIOKafkaProducer

from streamguard.broker import EmbeddedBroker
from streamguard.client import ControlSubscriber, read_commands
from streamguard.contracts import Command, load_topic_specs, partition_for

pytestmark = pytest.mark.integration

TOPIC = load_topic_specs()["control"].name
# Tansu answers a JoinGroup after half the session timeout: a short session keeps tests fast.
FAST_GROUP = {
    "session_timeout_ms": 4000,
    "heartbeat_interval_ms": 500,
    "rebalance_timeout_ms": 2000,
}


def command(deployment: str, ts: float, action: str = "pause") -> Command:
    return Command(action, deployment, "v2", "shadow", {"platform": "ios"}, {"p": 0.001}, ts)


async def produce(bootstrap: str, values: list[tuple[str, bytes]]) -> None:
    """Publish (deployment, value) pairs keyed by deployment, as the worker does."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap)
    await producer.start()
    try:
        for deployment, value in values:
            await producer.send_and_wait(TOPIC, value, key=deployment.encode())
    finally:
        await producer.stop()


async def until(condition: Callable[[], bool], timeout_s: float = 15.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError("condition not met in time")
        await asyncio.sleep(0.02)


class Recorder:
    """Handler that records commands and fails the first ``failures`` calls per command."""

    def __init__(self, failures: int = 0) -> None:
        self.failures = failures
        self.calls: dict[str, int] = {}
        self.handled: list[Command] = []

    async def __call__(self, cmd: Command) -> None:
        self.calls[cmd.command_id] = self.calls.get(cmd.command_id, 0) + 1
        if self.calls[cmd.command_id] <= self.failures:
            raise RuntimeError("serving endpoint unavailable")
        self.handled.append(cmd)


def subscriber(bootstrap: str, handler: Any, group: str, **kwargs: Any) -> ControlSubscriber:
    return ControlSubscriber(
        bootstrap, handler, group, retry_backoff_s=0.05, consumer_config=FAST_GROUP, **kwargs
    )


def test_each_command_reaches_the_handler_once_in_order_and_bad_messages_do_not(
    broker_with_topics: EmbeddedBroker,
) -> None:
    bootstrap = broker_with_topics.bootstrap
    deployments = ["home-ranker", "search-ranker", "ads-ranker"]
    commands = [command(deployments[i % 3], 1_790_000_000.0 + i) for i in range(30)]
    values = [(c.deployment, c.to_json()) for c in commands]
    values.insert(5, (commands[2].deployment, commands[2].to_json()))  # re-published decision
    values.insert(9, ("home-ranker", b"{not json"))
    values.insert(12, ("home-ranker", b'{"schema_version": 1, "action": "pause"}'))
    bad_action = commands[1].to_dict() | {"action": "explode"}
    values.insert(15, (commands[1].deployment, orjson.dumps(bad_action)))
    values.append(("other", command("other", 1.0).to_json()))  # filtered out below
    recorder = Recorder()

    async def scenario() -> dict[str, Any]:
        await produce(bootstrap, values)
        async with subscriber(bootstrap, recorder, "serving", deployments=set(deployments)) as sub:
            await until(lambda: sub.commands_handled == 30 and sub.stats()["rejected_total"] == 3)
            await asyncio.sleep(0.3)  # nothing else shows up
            return sub.stats()

    stats = asyncio.run(scenario())
    assert sorted(c.command_id for c in recorder.handled) == sorted(c.command_id for c in commands)
    assert all(n == 1 for n in recorder.calls.values())
    for deployment in deployments:
        assert [c for c in recorder.handled if c.deployment == deployment] == [
            c for c in commands if c.deployment == deployment
        ]
    assert stats["duplicates"] == 1
    assert stats["filtered"] == 1
    assert stats["rejected"] == {"invalid_json": 1, "missing_field": 1, "bad_value": 1}


def test_failing_handler_is_retried_and_offsets_commit_only_after_success(
    broker_with_topics: EmbeddedBroker,
) -> None:
    bootstrap = broker_with_topics.bootstrap
    flaky, marker = command("home-ranker", 1.0), command("home-ranker", 2.0, "resume")
    first, second = Recorder(failures=2), Recorder()

    async def scenario() -> tuple[dict[str, Any], dict[str, Any]]:
        await produce(bootstrap, [(flaky.deployment, flaky.to_json())])
        async with subscriber(bootstrap, first, "rollback") as sub:
            await until(lambda: sub.commands_handled == 1)
            stats_first = sub.stats()
        # Same group again: the flaky command was committed, so only the marker comes.
        async with subscriber(bootstrap, second, "rollback") as sub:
            await produce(bootstrap, [(marker.deployment, marker.to_json())])
            await until(lambda: sub.commands_handled == 1)
            await asyncio.sleep(0.3)
            return stats_first, sub.stats()

    stats_first, stats_second = asyncio.run(scenario())
    assert first.calls == {flaky.command_id: 3}  # failed twice, then succeeded
    assert first.handled == [flaky]
    assert stats_first["handler_errors"] == 2
    assert second.handled == [marker]
    assert stats_second["commands_handled"] == 1


def test_command_not_handled_before_stop_is_redelivered_to_the_next_subscriber(
    broker_with_topics: EmbeddedBroker,
) -> None:
    bootstrap = broker_with_topics.bootstrap
    stuck = command("home-ranker", 1.0, "rollback")
    failing, healthy = Recorder(failures=1_000_000), Recorder()

    async def scenario() -> None:
        await produce(bootstrap, [(stuck.deployment, stuck.to_json())])
        async with subscriber(bootstrap, failing, "rollback") as sub:
            await until(lambda: sub.handler_errors >= 3)  # retried, never skipped
            assert sub.commands_handled == 0
        async with subscriber(bootstrap, healthy, "rollback") as sub:
            await until(lambda: sub.commands_handled == 1)

    asyncio.run(scenario())
    assert healthy.handled == [stuck]


def test_a_blocked_deployment_does_not_hold_up_another_partition(
    broker_with_topics: EmbeddedBroker,
) -> None:
    bootstrap = broker_with_topics.bootstrap
    partitions = load_topic_specs()["control"].partitions
    blocked = "home-ranker"
    other = next(
        f"ranker-{i}"
        for i in range(100)
        if partition_for(f"ranker-{i}".encode(), partitions)
        != partition_for(blocked.encode(), partitions)
    )
    stuck, free = command(blocked, 1.0), command(other, 2.0)
    handled: list[Command] = []

    async def handler(cmd: Command) -> None:
        if cmd.deployment == blocked:
            raise RuntimeError("down")
        handled.append(cmd)

    async def scenario() -> None:
        sub = subscriber(bootstrap, handler, "serving")
        running = asyncio.create_task(sub.run())
        await produce(bootstrap, [(blocked, stuck.to_json())])
        await until(lambda: sub.handler_errors >= 1)
        await produce(bootstrap, [(other, free.to_json())])
        await until(lambda: handled == [free])
        # The free partition is busy until its offset is committed after the handler; once
        # it settles, only the blocked one (still retrying) is busy.
        await until(lambda: sub.stats()["busy_partitions"] == 1, timeout_s=5.0)
        assert handled == [free]
        assert sub.handler_errors >= 1
        await sub.stop()
        await asyncio.wait_for(running, 5)  # run() returns once stopped

    asyncio.run(scenario())


def test_read_commands_returns_commands_in_partition_order(
    broker_with_topics: EmbeddedBroker,
) -> None:
    bootstrap = broker_with_topics.bootstrap
    deployments = [f"ranker-{i}" for i in range(6)]
    commands = [command(deployments[i % 6], float(1000 - i)) for i in range(60)]

    async def scenario() -> tuple[list[Command], list[Command]]:
        await produce(bootstrap, [(c.deployment, c.to_json()) for c in commands])
        await produce(bootstrap, [("ranker-0", b"garbage")])
        expected = await read_commands(bootstrap, timeout_s=10, expected=60)
        to_end = await read_commands(bootstrap, timeout_s=10)
        return expected, to_end

    expected, to_end = asyncio.run(scenario())
    partitions = load_topic_specs()["control"].partitions
    for got in (expected, to_end):
        assert sorted(c.command_id for c in got) == sorted(c.command_id for c in commands)
        for p in range(partitions):
            in_partition = [
                c for c in commands if partition_for(c.deployment.encode(), partitions) == p
            ]
            assert [
                c for c in got if partition_for(c.deployment.encode(), partitions) == p
            ] == in_partition
