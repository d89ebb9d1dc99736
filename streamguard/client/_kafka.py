"""The one place the client imports aiokafka, so its missing type information is handled once.

aiokafka ships no ``py.typed``; its names are ``Any`` to mypy. The file-level switches below
(instead of per-line ``type: ignore`` comments) stay valid whether or not the project's mypy
configuration later adds an ``ignore_missing_imports`` override for aiokafka.
"""

# mypy: disable-error-code="import-untyped"
# mypy: allow-subclassing-any

from collections.abc import Awaitable, Callable
from typing import Any

from aiokafka import (
    AIOKafkaConsumer,
    AIOKafkaProducer,
    ConsumerRebalanceListener,
    ConsumerRecord,
    TopicPartition,
)
from aiokafka.errors import (
    CommitFailedError,
    KafkaError,
    MessageSizeTooLargeError,
    TopicAuthorizationFailedError,
    UnsupportedCodecError,
)

__all__ = [
    "GROUP_TIMINGS",
    "PERMANENT_SEND_ERRORS",
    "AIOKafkaConsumer",
    "AIOKafkaProducer",
    "CallbackListener",
    "CommitFailedError",
    "ConsumerRecord",
    "KafkaError",
    "TopicPartition",
    "leave_group_on_stop",
]

#: Consumer-group timings that keep joins and hand-overs short (the first join on the embedded
#: broker takes a few seconds) and are harmless on Apache Kafka; ``consumer_config`` overrides
#: them (the control subscriber and the alert relay).
GROUP_TIMINGS: dict[str, int] = {
    "session_timeout_ms": 10_000,
    "heartbeat_interval_ms": 1_000,
    "rebalance_timeout_ms": 3_000,
}

#: Produce errors that the same request would hit again; every other failure (timeouts while
#: the broker is away, leader changes, lost connections) is worth a bounded retry.
PERMANENT_SEND_ERRORS: tuple[type[BaseException], ...] = (
    MessageSizeTooLargeError,
    TopicAuthorizationFailedError,
    UnsupportedCodecError,
)


class CallbackListener(ConsumerRebalanceListener):
    """Rebalance listener that forwards to coroutines (aiokafka accepts only its ABC's subclasses).

    aiokafka awaits ``on_partitions_revoked`` before the partitions move, which is where the
    subscriber stops its work on them so nothing is committed for a partition it no longer owns.
    """

    def __init__(
        self,
        revoked: Callable[[set[TopicPartition]], Awaitable[None]],
        assigned: Callable[[set[TopicPartition]], Awaitable[None]],
    ) -> None:
        self._revoked = revoked
        self._assigned = assigned

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        await self._revoked(revoked)

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        await self._assigned(assigned)


def leave_group_on_stop(consumer: Any) -> None:
    """Make the next ``consumer.stop()`` send LeaveGroup even in generation 0.

    aiokafka leaves a group only when its generation is above 0, because Kafka numbers
    generations from 1. Tansu numbers the first one 0, so a member that stops in it is not
    removed until its session times out, and a successor in the same group waits about two
    session timeouts for its partitions. Marking the generation as 1 only changes that check
    (offsets are not auto-committed here). This touches aiokafka internals: if they change, it
    does nothing and hand-over is merely slower. Call it right before ``consumer.stop()``.
    """
    coordinator = getattr(consumer, "_coordinator", None)
    if coordinator is not None and getattr(coordinator, "generation", None) == 0:
        coordinator.generation = 1
