"""The worker's fetch loop delivers inline what does not wait, and abandons on a rebalance
what does, as Faust's own loop does (``streamguard.faust_app.drain``)."""

import asyncio
from collections.abc import AsyncIterator, Awaitable
from types import SimpleNamespace
from typing import Any

import pytest
from faust.types import TP

from streamguard.faust_app.drain import deliver, drain
from streamguard.faust_app.transport import App


def test_a_callback_that_does_not_wait_is_delivered_without_a_task() -> None:
    seen: list[int] = []

    async def callback(value: int) -> None:
        seen.append(value)

    async def scenario() -> tuple[Awaitable[Any] | None, int]:
        before = len(asyncio.all_tasks())
        rest = deliver(callback(7))
        return rest, len(asyncio.all_tasks()) - before

    assert asyncio.run(scenario()) == (None, 0)
    assert seen == [7]


def test_a_callback_that_waits_finishes_in_the_awaitable_it_returns() -> None:
    steps: list[str] = []

    async def callback(gate: asyncio.Future[int]) -> int:
        steps.append("before")
        await asyncio.sleep(0)  # a bare yield
        value = await gate
        steps.append("after")
        return value * 2

    async def scenario() -> int:
        gate: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        rest = deliver(callback(gate))
        assert rest is not None
        task = asyncio.ensure_future(rest)
        await asyncio.sleep(0.01)
        assert steps == ["before"]
        assert not task.done()
        gate.set_result(21)
        return await task

    assert asyncio.run(scenario()) == 42
    assert steps == ["before", "after"]


def test_cancelling_the_rest_cancels_the_callback_where_it_waits() -> None:
    seen: list[str] = []

    async def callback(gate: asyncio.Future[None], swallow: bool) -> str:
        try:
            await gate
        except asyncio.CancelledError:
            seen.append("cancelled")
            if not swallow:
                raise
            return "swallowed"
        return "done"

    async def scenario(swallow: bool) -> str:
        gate: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        rest = deliver(callback(gate, swallow))
        assert rest is not None
        task = asyncio.ensure_future(rest)
        await asyncio.sleep(0)
        task.cancel()
        try:
            return await task
        except asyncio.CancelledError:
            return "task cancelled"

    assert asyncio.run(scenario(swallow=False)) == "task cancelled"
    assert asyncio.run(scenario(swallow=True)) == "swallowed"
    assert seen == ["cancelled", "cancelled"]


def test_errors_come_out_where_the_callback_raises_them() -> None:
    async def at_once() -> None:
        raise ValueError("first step")

    async def later(gate: asyncio.Future[None]) -> None:
        await gate
        raise KeyError("after the wait")

    async def scenario() -> None:
        with pytest.raises(ValueError, match="first step"):
            deliver(at_once())
        gate: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        rest = deliver(later(gate))
        assert rest is not None
        gate.set_result(None)
        with pytest.raises(KeyError, match="after the wait"):
            await rest

    asyncio.run(scenario())


def _message(offset: int, partition: int = 0) -> SimpleNamespace:
    return SimpleNamespace(topic="t", partition=partition, offset=offset)


def test_the_loop_delivers_in_order_skips_refetched_offsets_and_abandons_on_a_rebalance() -> None:
    """A real Faust consumer of the worker's app, fed by a scripted ``getmany``."""
    tp, other = TP("t", 0), TP("t", 1)
    delivered: list[tuple[int, int]] = []
    abandoned: list[int] = []

    async def scenario() -> dict[TP, int | None]:
        app = App("sg-drain-test", broker="kafka://127.0.0.1:1", autodiscover=False)
        consumer = app.consumer
        fetcher = SimpleNamespace(_stopped=asyncio.Event())
        blocked = asyncio.Event()

        async def callback(message: Any) -> None:
            if message.offset == 5:  # e.g. its stream's buffer is full: waits until abandoned
                blocked.set()
                try:
                    await asyncio.Event().wait()
                except asyncio.CancelledError:
                    abandoned.append(message.offset)
                    raise
            delivered.append((message.partition, message.offset))

        batches = [
            # offset 1 again after a seek back to 2: already delivered, skipped
            [(tp, _message(0)), (tp, _message(1)), (other, _message(0, 1)), (tp, _message(2))],
            [(tp, _message(1)), (tp, _message(3)), (tp, _message(5)), (tp, _message(6))],
        ]

        # Faust's signature: drain calls getmany(timeout=1.0)
        async def getmany(timeout: float) -> AsyncIterator[tuple[TP, Any]]:  # noqa: ASYNC109
            if not batches:
                fetcher._stopped.set()
                return
            for item in batches.pop(0):
                yield item

        async def rebalance() -> None:
            await blocked.wait()
            consumer.stop_flow()  # what Faust does on a rebalance: sets suspend_flow

        consumer.callback = callback
        consumer.getmany = getmany
        flow = asyncio.ensure_future(rebalance())
        await asyncio.wait_for(drain(consumer, fetcher), timeout=10)
        await flow
        return dict(consumer._read_offset)

    read = asyncio.run(scenario())
    assert delivered == [(0, 0), (0, 1), (1, 0), (0, 2), (0, 3), (0, 6)]
    assert abandoned == [5]
    assert read == {tp: 6, other: 0}
