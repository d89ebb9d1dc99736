"""Publishing that survives a broker hiccup: retry with capped back-off, never crash the worker.

An exception escaping a Faust timer or agent stops the whole worker, so every send goes through
:func:`send_reliably`. A transient failure is retried (in order: the caller waits); only a
message the broker can never take (too large) is dropped, and counted.
"""

import asyncio
import logging
from collections.abc import Sequence
from typing import Any

from aiokafka.errors import KafkaError, MessageSizeTooLargeError
from faust.exceptions import ProducerSendError

from streamguard.faust_app.metrics import Metrics

__all__ = ["send_all_reliably", "send_reliably"]

log = logging.getLogger("streamguard.worker")

_MAX_DELAY_S = 5.0


def _permanent(exc: BaseException) -> bool:
    cause = exc.__cause__ or exc
    return isinstance(cause, MessageSizeTooLargeError)


async def send_reliably(
    metrics: Metrics,
    topic: Any,
    value: bytes | None,
    *,
    key: bytes | None = None,
    partition: int | None = None,
    wait: bool = False,
) -> bool:
    """Send one message, retrying transient errors; False if it had to be dropped.

    With ``wait`` it returns only once the broker acknowledged the message (Faust's ``send``
    otherwise returns when the message is queued in the producer).
    """
    delay = 0.1
    while True:
        try:
            pending = await topic.send(key=key, value=value, partition=partition)
            if wait:
                await pending
        except (ProducerSendError, KafkaError, OSError) as exc:
            if _permanent(exc):
                metrics.send_failures.labels(topic.get_topic_name(), "too_large").inc()
                log.error(
                    "dropped a %d-byte message to %s: too large",
                    len(value or b""),
                    topic.get_topic_name(),
                )
                return False
            metrics.send_failures.labels(topic.get_topic_name(), "retried").inc()
            metrics.broker_ok.set(0)
            log.warning(
                "send to %s failed (%s); retrying in %.1fs", topic.get_topic_name(), exc, delay
            )
            await asyncio.sleep(delay)
            delay = min(_MAX_DELAY_S, delay * 2)
        else:
            metrics.broker_ok.set(1)
            return True


async def send_all_reliably(
    metrics: Metrics,
    topic: Any,
    messages: Sequence[tuple[bytes | None, bytes | None, int | None]],
) -> bool:
    """Send ``(key, value, partition)`` messages in order; return once the broker has them all.

    False if one had to be dropped (too large for the topic); ``None`` values are tombstones.

    All are queued at once and acknowledged together (one round trip instead of one per
    message; the producer keeps a partition's messages in order). If any send fails, the
    messages from the first failure on are sent again one by one with :func:`send_reliably`:
    receivers of these topics drop what they already applied, so a repeat is harmless.
    """
    pending: list[Any] = []
    try:
        for key, value, partition in messages:
            pending.append(await topic.send(key=key, value=value, partition=partition))
    except (ProducerSendError, KafkaError, OSError):
        pass  # what was not queued is sent below, one by one
    results = await asyncio.gather(*pending, return_exceptions=True)
    failed = next((i for i, r in enumerate(results) if isinstance(r, BaseException)), len(pending))
    if failed == len(messages):
        if messages:
            metrics.broker_ok.set(1)
        return True
    sent = True
    for key, value, partition in messages[failed:]:
        ok = await send_reliably(metrics, topic, value, key=key, partition=partition, wait=True)
        sent = sent and ok
    return sent
