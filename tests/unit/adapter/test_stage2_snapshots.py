"""Stage-2 snapshots take stage 2's lock one channel at a time, so closes are not held long."""

import asyncio
from typing import Any

from aiokafka.structs import TopicPartition

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


def test_a_window_close_gets_in_between_two_channels_snapshots() -> None:
    async def scenario() -> None:
        store = GatedSaves()
        rt, _ = runtime(store)
        await rt._restore2_locked([0, 1])
        rt.stage2[0].dirty = rt.stage2[1].dirty = True
        seen_by_close: list[list[int]] = []
        publish = rt._publish_verdicts

        async def recording(now: float) -> None:
            seen_by_close.append(list(store.saves))
            await publish(now)

        rt._publish_verdicts = recording  # type: ignore[method-assign]
        snapshots = asyncio.create_task(rt.snapshot_stage2())
        await store.saving.wait()
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
        store = GatedSaves()
        rt, _ = runtime(store)
        await rt._restore2_locked([0, 1])
        rt.stage2[0].dirty = rt.stage2[1].dirty = True
        snapshots = asyncio.create_task(rt.snapshot_stage2())
        await store.saving.wait()
        revoked = asyncio.create_task(rt.on_revoked({TopicPartition(SPECS["partials"].name, 1)}))
        await asyncio.sleep(0.01)
        store.gate.set()
        await asyncio.gather(snapshots, revoked)
        assert store.saves == [0]
        assert 1 not in rt.stage2

    asyncio.run(scenario())
