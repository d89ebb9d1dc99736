"""Stage 2 waits little between closes: snapshots take its lock one channel at a time, and a
close's verdicts go to the broker without the next close waiting for them."""

import asyncio
from dataclasses import dataclass
from typing import Any

from aiokafka.structs import TopicPartition

from streamguard.faust_app.runtime import Runtime, Topics
from tests.unit.adapter.test_recovery import SPECS, Store, runtime


class GatedSaves(Store):
    """Empty snapshot reads; the first save waits for ``gate``; saves are recorded."""

    def __init__(self) -> None:
        super().__init__()
        self.release.set()
        self.gate = asyncio.Event()
        self.saving = asyncio.Event()
        self.saves: list[int] = []

    async def load(self, keys: list[str], inputs: Any = None) -> dict[str, Any]:
        return {}

    async def save(
        self, stage: str, partition: int, offset: int, state: Any, stamp: Any = None
    ) -> bool:
        self.saves.append(partition)
        self.saving.set()
        if len(self.saves) == 1:
            await self.gate.wait()
        return True


async def two_channels_snapshotting() -> tuple[GatedSaves, Runtime, asyncio.Task[None]]:
    """Two changed stage-2 channels; a snapshot round started, held in channel 0's save."""
    store = GatedSaves()
    rt, _ = runtime(store)
    await rt._restore2_locked([0, 1])
    rt.stage2[0].dirty = rt.stage2[1].dirty = True
    snapshots = asyncio.create_task(rt.snapshot_stage2())
    await store.saving.wait()
    return store, rt, snapshots


def test_a_window_close_gets_in_between_two_channels_snapshots() -> None:
    async def scenario() -> None:
        store, rt, snapshots = await two_channels_snapshotting()
        seen_by_close: list[list[int]] = []
        publish = rt._publish_verdicts

        async def recording(now: float) -> None:
            seen_by_close.append(list(store.saves))
            await publish(now)

        rt._publish_verdicts = recording  # type: ignore[method-assign]
        closes = asyncio.create_task(rt.close_idle())
        await asyncio.sleep(0.01)
        assert not closes.done()  # channel 0's snapshot and save hold the lock
        store.gate.set()
        await asyncio.gather(closes, snapshots)
        assert seen_by_close == [[0]]  # the close ran before channel 1's snapshot
        assert store.saves == [0, 1]
        assert not rt.stage2[0].dirty
        assert not rt.stage2[1].dirty

    asyncio.run(scenario())


def test_a_channel_revoked_between_two_snapshots_is_not_saved() -> None:
    async def scenario() -> None:
        store, rt, snapshots = await two_channels_snapshotting()
        revoked = asyncio.create_task(rt.on_revoked({TopicPartition(SPECS["partials"].name, 1)}))
        await asyncio.sleep(0.01)
        store.gate.set()
        await asyncio.gather(snapshots, revoked)
        assert store.saves == [0]
        assert 1 not in rt.stage2

    asyncio.run(scenario())


@dataclass
class FakeVerdict:
    """What stage 2's publishing reads of a verdict."""

    deployment: str
    guard: str = "shadow"

    def to_dict(self) -> dict[str, Any]:
        return {"deployment": self.deployment, "guard": self.guard, "slices": []}


class AckedLater:
    """A verdicts topic: records each message as the producer takes it; acks on ``ack()``."""

    def __init__(self) -> None:
        self.taken: list[bytes] = []
        self.acks: list[asyncio.Future[None]] = []

    def get_topic_name(self) -> str:
        return "verdicts"

    async def send(self, *, key: Any, value: bytes, partition: Any, timestamp: Any) -> Any:
        self.taken.append(key)
        self.acks.append(asyncio.get_running_loop().create_future())
        return self.acks[-1]

    def ack(self) -> None:
        for future in self.acks:
            if not future.done():
                future.set_result(None)


def test_verdicts_go_out_in_order_without_holding_stage2_and_before_its_snapshot() -> None:
    async def scenario() -> None:
        store = GatedSaves()
        store.gate.set()
        rt, _ = runtime(store)
        topic = AckedLater()
        rt.topics = Topics(None, topic, None, None, None, None)
        await rt._restore2_locked([0])
        closes = [[FakeVerdict("a"), FakeVerdict("b")], [FakeVerdict("c")]]
        rt.engine.stage2.advance = lambda now=None, final=False: closes.pop(0) if closes else []  # type: ignore[method-assign]
        # The first close's verdicts are handed to the producer; stage 2 does not wait for the
        # broker's acknowledgement (it used to, in the agent, before judging the next channel).
        await asyncio.wait_for(rt.close_idle(), 1.0)
        await asyncio.sleep(0.01)
        assert topic.taken == [b"a", b"b"]
        # The second close's wait for the first's: they reach the broker in order.
        await asyncio.wait_for(rt.close_idle(), 1.0)
        await asyncio.sleep(0.01)
        assert topic.taken == [b"a", b"b"]
        # A snapshot covers these closes, so it is not stored before the broker has them.
        rt.stage2[0].dirty = True
        snapshot = asyncio.create_task(rt.snapshot_stage2())
        await asyncio.sleep(0.01)
        assert store.saves == []
        topic.ack()
        await asyncio.sleep(0.01)
        assert topic.taken == [b"a", b"b", b"c"]
        assert store.saves == []
        topic.ack()
        await asyncio.wait_for(snapshot, 1.0)
        assert store.saves == [0]

    asyncio.run(scenario())
