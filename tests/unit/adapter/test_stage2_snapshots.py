"""Stage-2 snapshots skip channels that only heartbeats changed, for a while.

A heartbeat that closes nothing only moves watermarks and offsets, which a replay from the last
snapshot's offset rebuilds; so such a channel is saved at most every ``HEARTBEATS_SNAPSHOT_S``.
Partials applied and windows closed are saved at the next round, and shutdown saves everything.
"""

import asyncio
from types import SimpleNamespace
from typing import Any

import orjson
import pytest

from streamguard.core.partials import dumps
from streamguard.core.snapshot import pack, unpack
from streamguard.engine import Pipeline
from streamguard.faust_app.runtime import Runtime, Topics
from streamguard.faust_app.runtime.partials import HEARTBEATS_SNAPSHOT_S
from streamguard.policy import Policy
from tests.unit.adapter.test_flush import PARTITIONS, SavingStore
from tests.unit.adapter.test_outbox import Topic
from tests.unit.adapter.test_recovery import SPECS, runtime
from tests.unit.core._events import envelope, pair, partition_of

T0 = 1_790_000_000.0  # a window boundary (60 s windows or shorter)


class Partial:
    """What the stage-2 agent hands the runtime: a partials message and its value."""

    def __init__(self, offset: int, value: bytes) -> None:
        self.message = SimpleNamespace(
            partition=0, offset=offset, topic=SPECS["partials"].name, value=value, timestamp=None
        )
        self.value = value
        self.acked = False

    def ack(self) -> None:
        self.acked = True


def partial_and_heartbeat() -> tuple[bytes, Any]:
    """A partial of one pair at T0 + 1 s, and heartbeats of every source at a given watermark."""
    pipe = Pipeline(Policy(), partitions=PARTITIONS)
    message = envelope(pair("r1", T0 + 1.0))
    pipe.feed(message)
    partition = partition_of(message, PARTITIONS)
    pipe.stage1.cut(partition, float("inf"))
    [(_, partial)] = pipe.stage1.flush(partition)
    beat = pipe.stage1.heartbeat(list(range(PARTITIONS)))

    def heartbeat(watermark: float) -> bytes:
        return dumps({**beat, "sources": [{**s, "watermark": watermark} for s in beat["sources"]]})

    return partial, heartbeat


class Verdicts(Topic):
    """A verdicts topic that records what it is sent (with the close time as timestamp)."""

    async def send(self, *, key: Any, value: bytes, partition: Any, timestamp: Any = None) -> Any:
        return await super().send(key=key, value=value, partition=partition)


async def channel_0() -> tuple[SavingStore, Runtime, Verdicts]:
    store = SavingStore()
    rt, _ = runtime(store)
    verdicts = Verdicts(fail=set())
    rt.topics = Topics(None, verdicts, None, None, None, None)
    await rt._restored("stage2", 0)
    return store, rt, verdicts


def saves(store: SavingStore) -> int:
    return sum(stage == "stage2" for stage, _ in store.saved)


def test_revision_counts_applied_partials_and_closes_not_heartbeats() -> None:
    partial, heartbeat = partial_and_heartbeat()
    stage2 = Pipeline(Policy(), partitions=PARTITIONS).stage2
    seen = [stage2.revision(0)]
    # A redelivered partial; a first heartbeat from every source (windows before T0 close);
    # another within the pair's window; one past its close.
    for value in (partial, partial, heartbeat(T0 + 2), heartbeat(T0 + 3), heartbeat(T0 + 3600)):
        stage2.apply(orjson.loads(value), now=0.0, channel=0)
        stage2.advance(now=0.0)
        seen.append(stage2.revision(0))
    assert seen == [0, 1, 1, 2, 2, 3]
    assert stage2.revision(1) == 0  # another channel's count


def test_heartbeats_alone_are_saved_only_after_a_while_partials_and_closes_at_once() -> None:
    partial, heartbeat = partial_and_heartbeat()

    async def scenario() -> None:
        store, rt, verdicts = await channel_0()
        state = rt.stage2[0]
        await rt.on_partial(Partial(0, partial))
        await rt.on_partial(Partial(1, heartbeat(T0 + 2)))
        await rt.snapshot_stage2()
        assert saves(store) == 1  # a partial and a close: saved at the next round

        beat = Partial(2, heartbeat(T0 + 3))
        await rt.on_partial(beat)
        await rt.snapshot_stage2()
        assert saves(store) == 1  # only a heartbeat since: not saved yet
        assert state.held == [beat]  # unacknowledged until a snapshot covers it
        assert not beat.acked
        state.snapshot_at -= HEARTBEATS_SNAPSHOT_S
        await rt.snapshot_stage2()
        assert saves(store) == 2  # ... until its time is up
        assert beat.acked
        assert not state.held

        await rt.on_partial(Partial(3, heartbeat(T0 + 4)))
        await rt.snapshot_stage2(force=True)
        assert saves(store) == 3  # shutdown saves it at once

        await rt.on_partial(Partial(4, heartbeat(T0 + 3600)))  # closes the pair's window
        await rt.snapshot_stage2()
        assert saves(store) == 4
        assert verdicts.delivered  # that close judged the pair's window

    asyncio.run(scenario())


def test_a_close_without_a_message_on_the_channel_is_saved_at_the_next_round() -> None:
    partial, heartbeat = partial_and_heartbeat()

    async def scenario() -> None:
        store, rt, verdicts = await channel_0()
        await rt.on_partial(Partial(0, partial))
        await rt.on_partial(Partial(1, heartbeat(T0 + 2)))
        await rt.snapshot_stage2()
        assert saves(store) == 1
        # Watermarks reach stage 2 without a message read on this channel (as idle sources'
        # do), and the idle-windows timer closes the pair's window.
        rt.engine.stage2.apply(orjson.loads(heartbeat(T0 + 3600)), now=0.0, channel=0)
        await rt.close_idle()
        await rt.verdicts_delivered()
        assert verdicts.delivered
        await rt.snapshot_stage2()
        assert saves(store) == 2  # not left to be judged again after a restart
        await rt.snapshot_stage2()
        assert saves(store) == 2  # and saved once

    asyncio.run(scenario())


def test_a_restore_from_the_older_snapshot_replays_the_heartbeats_to_the_same_state() -> None:
    partial, heartbeat = partial_and_heartbeat()
    before = [partial, heartbeat(T0 + 2)]  # what the last snapshot covers
    after = [heartbeat(T0 + 3), heartbeat(T0 + 4)]  # heartbeats alone: not saved

    def apply(stage2: Any, values: list[bytes]) -> None:
        for value in values:
            stage2.apply(orjson.loads(value), now=0.0, channel=0)
            stage2.advance(now=0.0)

    straight = Pipeline(Policy(), partitions=PARTITIONS).stage2
    apply(straight, before)
    saved = unpack(pack(straight.snapshot(0)))
    apply(straight, after)
    replayed = Pipeline(Policy(), partitions=PARTITIONS).stage2
    replayed.restore(0, saved)
    apply(replayed, after)
    assert pack(replayed.snapshot(0)) == pack(straight.snapshot(0))
    assert replayed.revision(0) == 0  # a restore is no change to save again


class BrokenVerdicts(Verdicts):
    """A verdicts topic whose send has a bug (not a broker error, which is retried)."""

    async def send(self, *, key: Any, value: bytes, partition: Any, timestamp: Any = None) -> Any:
        raise RuntimeError("a bug in sending")


def test_a_verdict_send_that_fails_stops_the_worker_once() -> None:
    # The windows are closed in stage 2: going on would let a snapshot store them without
    # their verdicts. Before, the failure was logged by the send, by every later close's send
    # and by the snapshot that awaited it, which alone stopped the worker.
    partial, heartbeat = partial_and_heartbeat()
    crashed: list[str] = []
    exits: list[int] = []

    def exit_(status: int) -> None:
        exits.append(status)
        raise SystemExit(status)  # as os._exit, nothing after it runs

    async def scenario() -> None:
        _, rt, _ = await channel_0()
        rt.topics = Topics(None, BrokenVerdicts(fail=set()), None, None, None, None)
        rt.agent_crashed = lambda agent, exc: crashed.append(agent)  # a recorder
        rt.exit_ = exit_
        await rt.on_partial(Partial(0, partial))
        await rt.on_partial(Partial(1, heartbeat(T0 + 2)))
        rt.engine.stage2.apply(orjson.loads(heartbeat(T0 + 3600)), now=0.0, channel=0)
        await rt.close_idle()  # closes the pair's window: its verdicts go out in a task
        await asyncio.sleep(0.1)
        await rt.snapshot_stage2()  # never reached: the send stopped the worker

    with pytest.raises(SystemExit):
        asyncio.run(scenario())
    assert (crashed, exits) == (["stage2_verdicts"], [70])
