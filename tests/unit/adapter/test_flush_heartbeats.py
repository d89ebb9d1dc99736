"""A flush's heartbeat says what its partials carry, whatever is read while they are sent.

The agent keeps reading predictions while a flush awaits its progress records and sends. A
heartbeat built after those awaits told stage 2 of messages read meanwhile: a replaying
partition's next recorded boundary (whose partial still waited in its outbox), or a held
partition's live watermark past a close its unsent data belonged to. Stage 2 then closed the
window without that data (found by the kill -9 fault test: 2,286 measurements late at merge).
"""

import asyncio
from typing import Any

import orjson

from tests.unit.adapter.test_counts import Event
from tests.unit.adapter.test_flush import SlowProgressStore, flushing
from tests.unit.core._events import envelope, pair


def told(sent: list[bytes]) -> list[tuple[str, Any]]:
    """Each sent message: a partial's (partition, offset_lo, offset_hi), a heartbeat's
    (partition, offset, watermark) per source."""
    out: list[tuple[str, Any]] = []
    for message in map(orjson.loads, sent):
        if message["kind"] == "partial":
            s = message["source"]
            out.append(("partial", (s["partition"], s["offset_lo"], s["offset_hi"])))
        else:
            beats = [(e["partition"], e["offset"], e["watermark"]) for e in message["sources"]]
            out.append(("heartbeat", beats))
    return out


def test_a_replayed_boundary_reached_during_a_flush_waits_for_the_next_heartbeat() -> None:
    async def scenario() -> list[tuple[str, Any]]:
        rt, partials = await flushing(SlowProgressStore(refused=set()), range(1))
        # Restored with nothing but a progress record: it flushes again at offsets 0 and 1.
        rt.engine.stage1.restore(0, None, {"boundaries": [0, 1]})
        await rt.on_prediction(Event(0, envelope(pair("a", 1000.0))))  # boundary 0: outbox
        sending = asyncio.create_task(rt.flush([0], 1))  # takes it, awaits its progress record
        await asyncio.sleep(0.001)
        await rt.on_prediction(Event(1, envelope(pair("b", 1020.0))))  # boundary 1: outbox
        await sending
        await rt.flush([0], 1)
        return told(partials.delivered)

    assert asyncio.run(scenario()) == [
        ("partial", (0, -1, 0)),
        ("heartbeat", [(0, 0, 1000.01)]),  # not (0, 1, 1020.01): that partial is not out yet
        ("partial", (0, 0, 1)),
        ("heartbeat", [(0, 1, 1020.01)]),
    ]


def test_a_held_partition_read_past_a_close_during_a_flush_is_not_announced_past_it() -> None:
    async def scenario() -> list[tuple[str, Any]]:
        rt, partials = await flushing(SlowProgressStore(refused=set()), range(2))
        await rt.on_prediction(Event(0, envelope(pair("a", 1000.0)), partition=0))
        await rt.on_prediction(Event(1, envelope(pair("b", 1011.0)), partition=0))  # ended
        await rt.on_prediction(Event(0, envelope(pair("c", 1005.0)), partition=1))  # held
        sending = asyncio.create_task(rt.flush([0, 1], 1))  # awaits partition 0's record
        await asyncio.sleep(0.001)
        # [1000, 1010) closes at 1015; c, unsent, belongs to it.
        await rt.on_prediction(Event(1, envelope(pair("d", 1016.0)), partition=1))
        await sending
        await rt.flush([0, 1], 1)
        return told(partials.delivered)

    assert asyncio.run(scenario()) == [
        ("partial", (0, -1, 1)),
        ("heartbeat", [(0, 1, 1011.01), (1, 0, 1005.01)]),  # not 1016.01: c is not out yet
        ("partial", (1, -1, 1)),
        ("heartbeat", [(0, 1, 1011.01), (1, 1, 1016.01)]),
    ]
