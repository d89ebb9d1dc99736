"""Send messages to one partition, retrying the failed ones with capped exponential back-off.

All messages are handed to the producer before any ack is awaited (one round trip for a
batch), and only the failed ones are sent again. A permanent error (too large, not
authorized, unsupported codec: :data:`~streamguard.client._kafka.PERMANENT_SEND_ERRORS`)
stops retrying at once; the caller counts what was never acknowledged.
"""

import asyncio
import logging
from collections.abc import Callable
from typing import Any

from streamguard.client._kafka import PERMANENT_SEND_ERRORS

__all__ = ["send_once", "send_with_retries"]

log = logging.getLogger("streamguard.client.emitter")


async def send_with_retries(
    producer: Any,
    topic: str,
    partition: int,
    messages: list[tuple[bytes, bytes]],
    *,
    attempts: int,
    backoff_s: float,
    max_backoff_s: float,
    on_errors: Callable[[int], None] = lambda n: None,
) -> int:
    """Send ``(key, value)`` messages; return how many were acked.

    ``on_errors(n)`` is told of each attempt's ``n`` failed sends as they happen (the
    emitter's ``send_errors`` counter moves while it retries, not after).
    """
    pending, acked = messages, 0
    for attempt in range(1, attempts + 1):
        results = await send_once(producer, topic, partition, pending)
        failed = [m for m, exc in zip(pending, results, strict=True) if exc is not None]
        acked += len(pending) - len(failed)
        if not failed:
            return acked
        errors = [exc for exc in results if exc is not None]
        on_errors(len(errors))
        permanent = any(isinstance(exc, PERMANENT_SEND_ERRORS) for exc in errors)
        if permanent or attempt == attempts:
            log.error("send to partition %d failed (attempt %d): %r", partition, attempt, errors[0])
            break
        delay = min(backoff_s * 2 ** (attempt - 1), max_backoff_s)
        log.warning(
            "send to partition %d failed (attempt %d, retry in %.2fs): %r",
            partition,
            attempt,
            delay,
            errors[0],
        )
        await asyncio.sleep(delay)
        pending = failed
    return acked


async def send_once(
    producer: Any, topic: str, partition: int, messages: list[tuple[bytes, bytes]]
) -> list[BaseException | None]:
    """Hand all messages to the producer, then wait for all acks; one error slot each."""
    results: list[BaseException | None] = [None] * len(messages)
    futures: list[tuple[int, asyncio.Future[Any]]] = []
    for i, (key, value) in enumerate(messages):
        try:
            futures.append((i, await producer.send(topic, value, key, partition)))
        except Exception as exc:
            results[i] = exc
    for i, future in futures:
        try:
            await future
        except Exception as exc:
            results[i] = exc
    return results
