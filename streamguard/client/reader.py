"""Read the whole control topic without a consumer group (tests, the demo, tooling)."""

import logging
import time
from collections.abc import Callable, Collection
from typing import Any

from streamguard.client._kafka import AIOKafkaConsumer, KafkaError, TopicPartition
from streamguard.client.validate import DecodeError
from streamguard.client.verification import (
    Verifier,
    accept_all,
    control_topic,
    decode_command,
    signature_policy,
)
from streamguard.contracts import Command
from streamguard.security import CommandVerifier, KeyRing

__all__ = ["read_all", "read_commands"]

log = logging.getLogger(__name__)


async def _caught_up(consumer: Any, ends: dict[TopicPartition, int]) -> bool:
    for tp, end in ends.items():
        if await consumer.position(tp) < end:
            return False
    return True


async def read_commands(
    bootstrap: str,
    timeout_s: float,
    expected: int | None = None,
    topic: str | None = None,
    *,
    verify: Verifier = accept_all,
    keyring: KeyRing | None = None,
    audiences: Collection[str] | None = None,
    require_signature: bool | None = None,
    clock_skew_s: float = 30.0,
    issuers: Collection[str] | None = None,
    clock: Callable[[], float] = time.time,
) -> list[Command]:
    """Read the control topic from the beginning, without a consumer group.

    Parameters
    ----------
    bootstrap
        Kafka bootstrap servers.
    timeout_s
        Longest time to read.
    expected
        Stop once this many commands were read. None: stop at the end of every partition as
        it was when reading started.
    topic
        Control topic; the ``control`` topic of the specs when omitted.
    verify, keyring, audiences, require_signature, clock_skew_s, issuers, clock
        As for :class:`ControlSubscriber`; refused and invalid messages are logged and skipped.

    Returns
    -------
    list[Command]
        In per-partition order (partitions interleave arbitrarily), duplicates included.
    """
    signatures = signature_policy(
        keyring,
        audiences=audiences,
        require_signature=require_signature,
        clock_skew_s=clock_skew_s,
        issuers=issuers,
        clock=clock,
    )
    name = control_topic(topic)
    return await read_all(
        bootstrap, timeout_s, expected, name, signatures=signatures, verify=verify
    )


async def read_all(
    bootstrap: str,
    timeout_s: float,
    expected: int | None,
    name: str,
    *,
    signatures: CommandVerifier,
    verify: Verifier,
) -> list[Command]:
    """:func:`read_commands` once the topic is named and the signature policy built.

    The subscriber's ``preload_schemas`` reads the topic this way too.
    """
    deadline = time.monotonic() + timeout_s
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap, enable_auto_commit=False, auto_offset_reset="earliest"
    )
    await consumer.start()
    commands: list[Command] = []
    try:
        await consumer.topics()  # loads metadata, so partitions_for_topic knows the topic
        tps = [TopicPartition(name, p) for p in sorted(consumer.partitions_for_topic(name) or ())]
        if not tps:
            raise KafkaError(f"topic {name} does not exist")
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        ends: dict[TopicPartition, int] = await consumer.end_offsets(tps)
        while expected is None or len(commands) < expected:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            if expected is None and await _caught_up(consumer, ends):
                break
            batches = await consumer.getmany(timeout_ms=int(min(remaining, 0.2) * 1000) + 1)
            for records in batches.values():
                for record in records:
                    try:
                        commands.append(decode_command(record.value, signatures, verify))
                    except DecodeError as exc:
                        log.warning("read_commands skipped offset %d: %s", record.offset, exc)
    finally:
        await consumer.stop()
    return commands
