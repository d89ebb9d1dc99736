"""Signed commands through a real embedded broker: what reaches serving's handler, and what not.

Commands are produced to the control topic the way the worker publishes them (keyed by
deployment); a ControlSubscriber with a keyring consumes them in a consumer group.
"""

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any

import orjson
import pytest
from aiokafka import AIOKafkaProducer

from streamguard.broker import EmbeddedBroker
from streamguard.client import ControlSubscriber
from streamguard.contracts import Command, load_topic_specs
from streamguard.security import KeyRing, SigningKey, generate_key, sign, sign_command

pytestmark = pytest.mark.integration

TOPIC = load_topic_specs()["control"].name
# Tansu answers a JoinGroup after half the session timeout: a short session keeps tests fast.
FAST_GROUP = {
    "session_timeout_ms": 4000,
    "heartbeat_interval_ms": 500,
    "rebalance_timeout_ms": 2000,
}
TTL = 600.0

CURRENT = generate_key("streamguard-prod")
PREVIOUS = generate_key("streamguard-prod")  # rotated out of the signer, still in the keyring
ATTACKER = generate_key("streamguard-prod")
RING = KeyRing([PREVIOUS.verifying_key(), CURRENT.verifying_key()])


def command(deployment: str, ts: float, action: str = "pause") -> Command:
    return Command(action, deployment, "v2", "shadow", {"platform": "ios"}, {"p": 0.001}, ts)


def signed(cmd: Command, key: SigningKey = CURRENT, **kwargs: Any) -> bytes:
    args: dict[str, Any] = {"ttl_s": TTL, "now": time.time()} | kwargs
    return orjson.dumps(sign_command(cmd, key, **args))


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
    """Handler that records commands and fails the first calls for the commands in ``failing``.

    ``failing`` maps a command id to the number of calls that fail before one succeeds.
    """

    def __init__(self, failing: dict[str, int] | None = None) -> None:
        self.failing = failing or {}
        self.calls: dict[str, int] = {}
        self.handled: list[Command] = []

    async def __call__(self, cmd: Command) -> None:
        self.calls[cmd.command_id] = self.calls.get(cmd.command_id, 0) + 1
        if self.calls[cmd.command_id] <= self.failing.get(cmd.command_id, 0):
            raise RuntimeError("serving endpoint unavailable")
        self.handled.append(cmd)


def subscriber(bootstrap: str, handler: Any, group: str, **kwargs: Any) -> ControlSubscriber:
    args: dict[str, Any] = {"keyring": RING} | kwargs
    return ControlSubscriber(
        bootstrap, handler, group, retry_backoff_s=0.05, consumer_config=FAST_GROUP, **args
    )


def test_signed_commands_reach_the_handler_once_and_bad_ones_never(
    broker_with_topics: EmbeddedBroker,
) -> None:
    bootstrap = broker_with_topics.bootstrap
    deployments = ["home-ranker", "search-ranker", "ads-ranker"]
    good = [command(deployments[i % 3], 1_790_000_000.0 + i) for i in range(12)]
    # Key rotation: the first half was signed before the worker switched keys.
    values = [(c.deployment, signed(c, PREVIOUS if i < 6 else CURRENT)) for i, c in enumerate(good)]
    values.insert(4, values[1])  # redelivered: same bytes
    values.insert(9, (good[7].deployment, signed(good[7], now=time.time() + 1)))  # re-signed
    now = time.time()
    impostor = SigningKey(ATTACKER.private_key, CURRENT.key_id, CURRENT.issuer)
    tampered = orjson.loads(signed(command("home-ranker", 2.0))) | {"action": "rollback"}
    bad = {
        "bad_signature": [signed(command("home-ranker", 1.0), impostor), orjson.dumps(tampered)],
        "expired": [signed(command("home-ranker", 3.0), now=now - 2 * TTL)],
        "wrong_audience": [signed(command("home-ranker", 4.0), audience="fleet-us")],
        "unknown_key": [signed(command("search-ranker", 5.0), ATTACKER)],
        "unsigned": [command("ads-ranker", 6.0).to_json()],
    }
    for i, messages in enumerate(bad.values()):
        for message in messages:
            values.insert(2 * i + 1, (orjson.loads(message)["deployment"], message))
    recorder = Recorder()

    async def scenario() -> dict[str, Any]:
        await produce(bootstrap, values)
        async with subscriber(bootstrap, recorder, "serving") as sub:
            await until(lambda: sub.commands_handled == 12 and sub.stats()["rejected_total"] == 6)
            await asyncio.sleep(0.3)  # nothing else shows up
            return sub.stats()

    stats = asyncio.run(scenario())
    assert sorted(c.command_id for c in recorder.handled) == sorted(c.command_id for c in good)
    assert all(n == 1 for n in recorder.calls.values())
    for deployment in deployments:  # in order per deployment
        assert [c for c in recorder.handled if c.deployment == deployment] == [
            c for c in good if c.deployment == deployment
        ]
    assert stats["rejected"] == {reason: len(messages) for reason, messages in bad.items()}
    assert stats["duplicates"] == 2


def test_v1_unsigned_is_accepted_only_when_signatures_are_not_required(
    broker_with_topics: EmbeddedBroker, caplog: pytest.LogCaptureFixture
) -> None:
    bootstrap = broker_with_topics.bootstrap
    v1 = command("home-ranker", 1.0)
    v2 = command("home-ranker", 2.0)
    strict_handler, lenient_handler = Recorder(), Recorder()

    async def scenario() -> tuple[dict[str, Any], dict[str, Any]]:
        await produce(bootstrap, [(v1.deployment, v1.to_json()), (v2.deployment, signed(v2))])
        strict = subscriber(bootstrap, strict_handler, "strict")
        lenient = subscriber(bootstrap, lenient_handler, "lenient", require_signature=False)
        async with strict, lenient:
            await until(lambda: strict.commands_handled == 1 and lenient.commands_handled == 2)
            await until(lambda: strict.stats()["rejected_total"] == 1)
            return strict.stats(), lenient.stats()

    with caplog.at_level(logging.WARNING, logger="streamguard.client"):
        strict_stats, lenient_stats = asyncio.run(scenario())
    assert strict_handler.handled == [v2]
    assert strict_stats["rejected"] == {"unsigned": 1}
    assert lenient_handler.handled == [v1, v2]  # the signed one is still verified, and passes
    assert lenient_stats["rejected"] == {}
    insecure = [r.getMessage() for r in caplog.records if "INSECURE" in r.getMessage()]
    assert len(insecure) == 1
    assert "lenient" in insecure[0]


def test_a_future_version_with_extra_fields_and_a_valid_signature_is_accepted(
    broker_with_topics: EmbeddedBroker,
) -> None:
    bootstrap = broker_with_topics.bootstrap
    base = command("home-ranker", 1.0)
    # What a later streamguard might publish: version 3, with fields this reader does not know.
    future = base.to_dict() | {
        "schema_version": 3,
        "priority": "urgent",
        "rollout": {"step": 3, "of": 10, "traffic": 0.25},
    }
    message = sign(future, CURRENT, "home-ranker", TTL, time.time())
    altered = command("home-ranker", 2.0).to_dict() | {"schema_version": 3, "priority": "low"}
    altered = sign(altered, CURRENT, "home-ranker", TTL, time.time()) | {"priority": "urgent"}
    recorder = Recorder()

    async def scenario() -> dict[str, Any]:
        await produce(bootstrap, [("home-ranker", orjson.dumps(m)) for m in (message, altered)])
        async with subscriber(bootstrap, recorder, "serving") as sub:
            await until(lambda: sub.commands_handled == 1 and sub.stats()["rejected_total"] == 1)
            return sub.stats()

    stats = asyncio.run(scenario())
    assert recorder.handled == [base]
    assert stats["rejected"] == {"bad_signature": 1}  # extra fields are signed like the rest


def test_a_failing_handler_is_retried_not_skipped_and_committed_only_after_success(
    broker_with_topics: EmbeddedBroker,
) -> None:
    bootstrap = broker_with_topics.bootstrap
    flaky, later, marker = (
        command("home-ranker", 1.0, "rollback"),
        command("home-ranker", 2.0),
        command("home-ranker", 3.0, "resume"),
    )
    first, second = Recorder({flaky.command_id: 3}), Recorder()

    async def scenario() -> tuple[dict[str, Any], dict[str, Any]]:
        await produce(bootstrap, [(c.deployment, signed(c)) for c in (flaky, later)])
        async with subscriber(bootstrap, first, "rollback") as sub:
            # Idle partitions: the worker has committed after the handler, and left.
            await until(lambda: sub.commands_handled == 2 and sub.stats()["busy_partitions"] == 0)
            stats_first = sub.stats()
        # Same group again: both were committed after success, so only the marker comes.
        async with subscriber(bootstrap, second, "rollback") as sub:
            await produce(bootstrap, [(marker.deployment, signed(marker))])
            await until(lambda: sub.commands_handled == 1)
            await asyncio.sleep(0.3)
            return stats_first, sub.stats()

    stats_first, stats_second = asyncio.run(scenario())
    assert first.calls == {flaky.command_id: 4, later.command_id: 1}
    assert first.handled == [flaky, later]  # the later command waited, the flaky one was kept
    assert stats_first["handler_errors"] == 3
    assert stats_first["rejected"] == {}
    assert second.handled == [marker]
    assert stats_second["commands_handled"] == 1
