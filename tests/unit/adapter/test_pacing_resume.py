"""A partition paused for running ahead of stage 2 resumes as soon as stage 2 catches up.

The flush timer pauses and resumes partitions once a tick (:mod:`streamguard.core.pacing`);
stage 2 also looks after every partials message it applies while something is paused, so a
backlog read with pauses does not idle until the next tick (2026-11-25: 148-159k events/s
against 175-192k with this, 209-233k unpaced, at ``STREAMGUARD_MAX_AHEAD_S=60``).
"""

import asyncio

from streamguard.core.pacing import Pacer
from streamguard.faust_app.runtime import Runtime
from tests.unit.adapter.test_counts import Event
from tests.unit.adapter.test_stage2_snapshots import Partial, channel_0, partial_and_heartbeat
from tests.unit.core._events import envelope, pair

T0 = 1_790_000_000.0


async def hear(rt: Runtime, offset: int, value: bytes) -> None:
    """A heartbeat on every partials channel, as stage 1 sends them."""
    for channel in sorted(rt.stage2):
        message = Partial(offset, value)
        message.message.partition = channel
        await rt.on_partial(message)


def test_stage2_resumes_a_paused_partition_once_its_low_watermark_catches_up() -> None:
    async def scenario() -> tuple[set[int], list[set[int]], list[set[int]], set[int], int]:
        _, rt, _ = await channel_0()
        rt.pacer = Pacer(max_ahead_s=60.0)
        calls: list[set[int]] = []

        async def pause(wanted: set[int]) -> int:
            calls.append(set(wanted))
            return 0

        rt.pause = pause
        _, heartbeat = partial_and_heartbeat()
        await rt.on_prediction(Event(0, envelope(pair("slow", T0 + 10.0)), partition=0))
        await rt.on_prediction(Event(0, envelope(pair("fast", T0 + 200.0)), partition=1))
        # Nothing paused: stage 2 does not look (the hook is not called per partial).
        await hear(rt, 0, heartbeat(T0 + 10.0))
        before = list(calls)
        paused = rt.pacing()  # the flush timer's look: partition 1 is 190 s ahead
        # Stage 2 hears 150 s more: partition 1 is 40 s ahead, not yet within 30.
        await hear(rt, 1, heartbeat(T0 + 160.0))
        await hear(rt, 2, heartbeat(T0 + 180.0))  # 20 s ahead: resumed at once
        return paused, before, calls, rt.pacer.paused, len(rt.stage2)

    paused, before, calls, after, channels = asyncio.run(scenario())
    assert paused == {1}
    assert before == []
    # Stage 2's low watermark is the lowest of its channels': it moves with the last one heard.
    assert calls == [{1}] * (2 * channels - 1) + [set()]
    assert after == set()
