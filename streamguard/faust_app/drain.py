"""The consumer's fetch loop without four asyncio tasks per message.

Faust's ``Consumer._drain_messages`` hands every fetched message to the conductor through
``Service.wait_first(callback(message), suspend_flow.wait())``, so that a rebalance (which
sets ``suspend_flow``) can abandon a delivery that is blocked. That wraps the callback, the
suspend event, and the service's stopped and crashed events in four tasks and an
``asyncio.wait`` for every message: with one event per message, about a quarter of a bare
agent's CPU (py-spy, 2026-11-25: ``wait_first`` 20 % of the bare agent's samples, 14 % of the
worker's, against 8 % for the conductor's callback itself).

Almost every delivery completes without waiting: the conductor puts the event into the
stream's queue with ``put_nowait`` unless the queue is full, flow control is held (during a
rebalance) or the producer's buffer is full. :func:`drain` therefore runs the callback's
first step inline. When that finishes it, the message is delivered and no task is made; when
the callback has to wait, the rest of it runs in a task under the same
``wait_first(..., suspend_flow.wait())`` as Faust's loop, so a blocked delivery is abandoned
on a rebalance exactly as before. Everything else the loop does (read offsets, gaps,
``broker_commit_every``, yielding to the event loop every 100 messages, stopping) is Faust's
behaviour, written for this loop.
"""

import asyncio
from collections.abc import Awaitable, Coroutine, Generator
from typing import Any

from faust.transport.consumer import CONSUMER_FETCHING

__all__ = ["deliver", "drain"]

# Faust's loop yields to the event loop after this many messages (as this one does).
YIELD_EVERY = 100


class _Rest:
    """The remainder of a coroutine whose first step yielded ``waiting``, as an awaitable.

    A task awaiting this waits on what the coroutine waits on, then drives the coroutine on;
    a cancellation (or any exception thrown in) goes into the coroutine, as it would had the
    coroutine been the task's own.
    """

    __slots__ = ("coro", "waiting")

    def __init__(self, coro: Coroutine[Any, Any, Any], waiting: Any) -> None:
        self.coro = coro
        self.waiting = waiting

    def __await__(self) -> Generator[Any, None, Any]:
        coro, waiting = self.coro, self.waiting
        while True:
            try:
                yield waiting
            except GeneratorExit:
                coro.close()
                raise
            except BaseException as exc:  # every exception belongs to the coroutine
                try:
                    waiting = coro.throw(exc)
                except StopIteration as stop:
                    return stop.value
                continue
            try:
                waiting = coro.send(None)
            except StopIteration as stop:
                return stop.value


def deliver(coro: Coroutine[Any, Any, Any]) -> Awaitable[Any] | None:
    """Run ``coro``'s first step now: None if that finished it, else an awaitable of the rest.

    An exception raised in the first step propagates, as it would from ``await coro``.
    """
    try:
        waiting = coro.send(None)
    except StopIteration:
        return None
    return _Rest(coro, waiting)  # an awaitable: wait_first and ensure_future wrap it in a task


async def drain(consumer: Any, fetcher: Any) -> None:
    """Faust's fetch loop (``Consumer._drain_messages``) with inline delivery (module doc)."""
    callback = consumer.callback
    getmany = consumer.getmany
    consumer_stopped = consumer._stopped.is_set
    fetcher_stopped = fetcher._stopped.is_set
    read_offsets = consumer._read_offset
    suspend_flow = consumer.suspend_flow
    acks_enabled_for = consumer.app.topics.acks_enabled_for
    commit_every = consumer._commit_every
    diag = consumer.diag
    fetching = CONSUMER_FETCHING  # the flag Faust's diagnostics read while it fetches
    since_yield = 0
    try:
        while not (consumer_stopped() or fetcher_stopped()):
            diag.set_flag(fetching)
            records = getmany(timeout=1.0)
            await consumer.sleep(0)  # getmany may return at once, again and again
            if not consumer.should_stop:
                async for tp, message in records:
                    since_yield += 1
                    if since_yield > YIELD_EVERY:
                        await asyncio.sleep(0)
                        since_yield = 0
                    offset = message.offset
                    read = read_offsets[tp]
                    if read is not None and offset < read:
                        continue  # re-fetched after a seek: already delivered
                    if read and offset - read > 1 and acks_enabled_for(message.topic):
                        await consumer._add_gap(tp, read + 1, offset)  # e.g. compacted away
                    if commit_every is not None and consumer._n_acked >= commit_every:
                        consumer._n_acked = 0
                        await consumer.commit()
                    if suspend_flow.is_set():
                        rest: Awaitable[Any] | None = callback(message)
                    else:
                        rest = deliver(callback(message))
                    if rest is not None:
                        await consumer.wait_first(rest, suspend_flow.wait())
                    read_offsets[tp] = offset
            diag.unset_flag(fetching)
    except consumer.consumer_stopped_errors:
        if consumer.transport.app.should_stop:
            consumer.log.info("Broker stopped consumer, shutting down...")
            return
        raise
    except asyncio.CancelledError:
        if consumer.transport.app.should_stop:
            consumer.log.info("Consumer shutting down for user cancel.")
            return
        raise
    except Exception as exc:
        consumer.log.exception("Drain messages raised: %r", exc)
        raise
    finally:
        diag.unset_flag(fetching)
