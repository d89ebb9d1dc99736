"""Stage 2 never closes a window before its data, however the agent and the flushes interleave.

The agent reads predictions while the timer's flushes and the eager flusher await the state
store. Hypothesis draws the order: which partition's next message is read, when a flush or a
close round starts, and how long each store round trip takes (in event-loop turns). Whatever
the order, the partials topic fed to stage 2 in order must never carry data for a window an
earlier heartbeat let it close (``late_at_merge``).
"""

import asyncio
from typing import Any

import orjson
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from streamguard.engine import Engine
from streamguard.policy import Policy
from tests.unit.adapter.test_counts import Event
from tests.unit.adapter.test_flush import SavingStore, flushing
from tests.unit.core._events import envelope, pair

PARTITIONS = 2


class TurnsStore(SavingStore):
    """Every save takes the next drawn number of event-loop turns."""

    def __init__(self, turns: list[int]) -> None:
        super().__init__()
        self.turns = turns
        self.calls = 0

    async def save(
        self, stage: str, partition: int, offset: int, state: Any, stamp: Any = None
    ) -> bool:
        n = self.turns[self.calls % len(self.turns)]
        self.calls += 1
        for _ in range(n):
            await asyncio.sleep(0)
        return await super().save(stage, partition, offset, state)


actions = st.lists(
    st.one_of(
        st.tuples(st.just("read"), st.integers(0, PARTITIONS - 1), st.floats(0.0, 12.0)),
        st.tuples(st.just("flush"), st.just(0), st.just(0.0)),
        st.tuples(st.just("close"), st.just(0), st.just(0.0)),
        st.tuples(st.just("turns"), st.integers(1, 6), st.just(0.0)),
    ),
    min_size=10,
    max_size=60,
)


async def run(schedule: list[tuple[str, int, float]], turns: list[int]) -> list[bytes]:
    rt, partials = await flushing(TurnsStore(turns), range(PARTITIONS))
    owned = list(range(PARTITIONS))
    for p in owned:
        rt.record_lag(p, highwater=0)  # caught up: closes and ends go to the eager flusher
    ts = [1000.0] * PARTITIONS
    offsets = [0] * PARTITIONS
    tasks: list[asyncio.Task[Any]] = []
    for kind, n, step in schedule:
        if kind == "read":
            ts[n] += step  # in order within a partition: nothing is late at the source
            value = envelope(pair(f"r{n}-{offsets[n]}", ts[n]))
            await rt.on_prediction(Event(offsets[n], value, partition=n))
            offsets[n] += 1
        elif kind == "flush":
            tasks.append(asyncio.create_task(rt.flush(owned, 1)))
        elif kind == "close":
            tasks.append(asyncio.create_task(rt.flush_closing(owned, 1)))
        else:
            for _ in range(n):
                await asyncio.sleep(0)
    await asyncio.gather(*tasks)
    await rt.flush(owned, 1)
    return list(partials.delivered)


# The order the kill -9 fault test found (tests/unit/adapter/test_flush_heartbeats.py): a flush
# cuts partition 0 and holds partition 1, and while it awaits the store, partition 1 is read
# past the close of the window its held data belongs to.
HELD_READ_PAST_A_CLOSE = [
    ("read", 0, 0.0),
    ("read", 0, 16.0),
    ("read", 1, 5.0),
    ("flush", 0, 0.0),
    ("turns", 1, 0.0),
    ("read", 1, 11.0),
    ("turns", 6, 0.0),
]


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(schedule=actions, turns=st.lists(st.integers(0, 4), min_size=1, max_size=8))
@example(schedule=HELD_READ_PAST_A_CLOSE, turns=[3])
def test_no_interleaving_lets_stage2_close_a_window_before_its_data(
    schedule: list[tuple[str, int, float]], turns: list[int]
) -> None:
    sent = asyncio.run(run(schedule, turns))
    stage2 = Engine.create(Policy(), PARTITIONS).stage2
    late = 0
    for value in sent:
        late += stage2.apply(orjson.loads(value), channel=0).late_at_merge
        stage2.advance()
    assert late == 0
