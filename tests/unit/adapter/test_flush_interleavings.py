"""Stage 2 never closes a window before its data, however the agent and the flushes interleave.

The agent reads predictions while the timer's flushes and the eager flusher await the state
store. Hypothesis draws the order: which partition's next message is read, when a flush or a
close round starts, and how long each store round trip takes (in event-loop turns). Whatever
the order, the partials topic fed to stage 2 in order must never carry data for a window an
earlier heartbeat let it close (``late_at_merge``).

The second property adds ``kill -9`` at any step: the tasks in flight stop where they await,
the store keeps only the saves that completed, and a new worker restores from it and reads
every partition again from the start. Stage 2 must then judge every window with exactly the
pairs it gets from a worker that was never killed. Each property keeps, as an explicit
example, an order that fails on the flush before 2026-11-24 (hypothesis alone rarely draws
one: 2,500 random orders per property pass with the fix).
"""

import asyncio
import copy
from typing import Any

import orjson
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from streamguard.engine import Engine
from streamguard.faust_app.runtime import Runtime, Topics
from streamguard.policy import Policy
from tests.unit.adapter.test_counts import Event
from tests.unit.adapter.test_flush import SavingStore
from tests.unit.adapter.test_outbox import Topic
from tests.unit.adapter.test_recovery import runtime
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


# A step: (kind, n, x). read: partition n's next message, x seconds of event time later;
# flush: the timer's flush (n = 1: with every snapshot); close: an eager round; turns: n
# event-loop turns; crash: kill -9.
STEPS = (
    st.tuples(st.just("read"), st.integers(0, PARTITIONS - 1), st.floats(0.0, 12.0)),
    st.tuples(st.just("flush"), st.integers(0, 1), st.just(0.0)),
    st.tuples(st.just("close"), st.just(0), st.just(0.0)),
    st.tuples(st.just("turns"), st.integers(1, 6), st.just(0.0)),
)
actions = st.lists(st.one_of(*STEPS), min_size=10, max_size=60)


class LogStore(TurnsStore):
    """A state topic: keeps the last record stored per key; a save cut short stores nothing."""

    def __init__(self, turns: list[int]) -> None:
        super().__init__(turns)
        self.records: dict[str, dict[str, Any]] = {}

    async def save(
        self, stage: str, partition: int, offset: int, state: Any, stamp: Any = None
    ) -> bool:
        await super().save(stage, partition, offset, state)
        self.records[f"{stage}/{partition}"] = {
            "offset": offset,
            "state": copy.deepcopy(state),
        }
        return True

    async def load(self, keys: list[str], inputs: Any = None) -> dict[str, Any]:
        return {key: self.records[key] for key in keys if key in self.records}


async def started(store: LogStore, partials: Topic) -> Runtime:
    """A worker restored from ``store``, writing to ``partials``, caught up on every partition."""
    rt, _ = runtime(store)
    rt.topics = Topics(partials, None, None, None, None, None)
    for p in range(PARTITIONS):
        await rt._restored("stage1", p)
        rt.record_lag(p, highwater=0)
    return rt


crashing = st.lists(
    st.one_of(*STEPS, st.tuples(st.just("crash"), st.just(0), st.just(0.0))),
    min_size=10,
    max_size=80,
)


async def run_crashing(
    schedule: list[tuple[str, int, float]], turns: list[int]
) -> tuple[list[bytes], list[list[bytes]]]:
    """What a worker killed at the ``crash`` steps (if any) sends, and the messages it read."""
    store, partials = LogStore(turns), Topic(fail=set())
    rt = await started(store, partials)
    owned = list(range(PARTITIONS))
    logs: list[list[bytes]] = [[] for _ in owned]
    read = [0] * PARTITIONS  # the consumer's position; a restart reads from the start again
    ts = [1000.0] * PARTITIONS
    tasks: list[asyncio.Task[Any]] = []

    async def next_message(p: int, step: float) -> None:
        if read[p] == len(logs[p]):
            ts[p] += step
            logs[p].append(envelope(pair(f"r{p}-{len(logs[p])}", ts[p])))
        await rt.on_prediction(Event(read[p], logs[p][read[p]], partition=p))
        read[p] += 1

    for kind, n, step in schedule:
        if kind == "read":
            await next_message(n, step)
        elif kind == "flush":
            tasks.append(asyncio.create_task(rt.flush(owned, 1, force_snapshot=bool(n))))
        elif kind == "close":
            tasks.append(asyncio.create_task(rt.flush_closing(owned, 1)))
        elif kind == "turns":
            for _ in range(n):
                await asyncio.sleep(0)
        else:  # kill -9: whatever was awaiting stops there
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            tasks = []
            rt = await started(store, partials)
            read = [0] * PARTITIONS
    await asyncio.gather(*tasks)
    for p in owned:
        while read[p] < len(logs[p]):
            await next_message(p, 0.0)
    await rt.flush(owned, 1, force_snapshot=True)  # everything out, as at shutdown
    return list(partials.delivered), logs


async def run_straight(logs: list[list[bytes]]) -> list[bytes]:
    """What one worker that is never killed sends for the same messages."""
    partials = Topic(fail=set())
    rt = await started(LogStore([0]), partials)
    for p, log in enumerate(logs):
        for offset, value in enumerate(log):
            await rt.on_prediction(Event(offset, value, partition=p))
    await rt.flush(list(range(PARTITIONS)), 1, force_snapshot=True)
    return list(partials.delivered)


def judged(sent: list[bytes]) -> tuple[int, list[tuple[float, dict[str, int]]]]:
    """Measurements late at merge, and each shadow verdict's window and slice sizes, when
    stage 2 reads ``sent`` in order and then closes everything."""
    stage2 = Engine.create(Policy(), PARTITIONS).stage2
    late, verdicts = 0, []
    for value in sent:
        late += stage2.apply(orjson.loads(value), channel=0).late_at_merge
        verdicts += stage2.advance()
    verdicts += stage2.advance(final=True)
    sizes = [
        (v.window_end, {s.slice: s.n for s in v.slices}) for v in verdicts if v.guard == "shadow"
    ]
    return late, sizes


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
    sent, _ = asyncio.run(run_crashing(schedule, turns))
    late, _ = judged(sent)
    assert late == 0


# A restarted worker replaying partition 1 reaches its next recorded boundary while a flush
# awaits the store: the heartbeat must not tell stage 2 of it before its partial is out.
REPLAY_READ_PAST_A_BOUNDARY = [
    ("read", 1, 0.0),
    ("read", 1, 12.0),
    ("read", 1, 9.0),
    ("flush", 1, 0.0),
    ("turns", 3, 0.0),
    ("turns", 4, 0.0),
    ("crash", 0, 0.0),
    ("read", 0, 7.0),
    ("read", 0, 9.0),
    ("flush", 0, 0.0),
    ("turns", 1, 0.0),
    ("read", 1, 11.0),
    ("read", 1, 10.0),
    ("read", 1, 2.0),
]


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(schedule=crashing, turns=st.lists(st.integers(0, 4), min_size=1, max_size=8))
@example(schedule=REPLAY_READ_PAST_A_BOUNDARY, turns=[4, 4, 3])
def test_a_worker_killed_anywhere_sends_what_one_never_killed_does(
    schedule: list[tuple[str, int, float]], turns: list[int]
) -> None:
    sent, logs = asyncio.run(run_crashing(schedule, turns))
    late, sizes = judged(sent)
    assert late == 0
    assert sizes == judged(asyncio.run(run_straight(logs)))[1]
