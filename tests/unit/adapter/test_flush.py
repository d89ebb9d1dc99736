"""The stage-1 flush: snapshots spread over flushes, so no flush holds everything up."""

import asyncio
from typing import Any

from streamguard.faust_app.runtime import Topics
from tests.unit.adapter.test_outbox import Topic
from tests.unit.adapter.test_recovery import SPECS, Store, runtime

PARTITIONS = SPECS["predictions"].partitions


class SavingStore(Store):
    """Restores nothing and records every save (as acknowledged)."""

    def __init__(self) -> None:
        super().__init__()
        self.release.set()
        self.saved: list[tuple[str, int]] = []

    async def save(self, stage: str, partition: int, offset: int, state: Any) -> bool:
        self.saved.append((stage, partition))
        return True


def test_a_flush_takes_at_most_two_stage1_snapshots_the_most_overdue_first() -> None:
    async def scenario() -> list[list[int]]:
        store = SavingStore()
        rt, _ = runtime(store)
        partials = Topic(fail=set())
        rt.topics = Topics(partials, None, None, None, None, None)
        for p in range(PARTITIONS):
            state = await rt._restored("stage1", p)
            state.snapshot_at = -1000.0 - p  # all overdue, the last partition the most
        rounds = []
        for _ in range(PARTITIONS // 2 + 1):
            store.saved.clear()
            await rt.flush(list(range(PARTITIONS)), 1)
            rounds.append([p for stage, p in store.saved if stage == "stage1"])
        await rt.flush(list(range(PARTITIONS)), 1, force_snapshot=True)
        rounds.append([p for stage, p in store.saved if stage == "stage1"][-PARTITIONS:])
        return rounds

    rounds = asyncio.run(scenario())
    top = PARTITIONS - 1
    expected = [[top - 2 * i - 1, top - 2 * i] for i in range(PARTITIONS // 2)]
    assert [sorted(r) for r in rounds[: PARTITIONS // 2]] == expected
    assert rounds[PARTITIONS // 2] == []  # every partition snapshotted, none due again yet
    assert sorted(rounds[-1]) == list(range(PARTITIONS))  # shutdown: all at once


class RefusingStore(SavingStore):
    """Refuses the stage-1 snapshots of some partitions (too large for the state topic)."""

    def __init__(self, refused: set[int]) -> None:
        super().__init__()
        self.refused = refused

    async def save(self, stage: str, partition: int, offset: int, state: Any) -> bool:
        await super().save(stage, partition, offset, state)
        return not (stage == "stage1" and partition in self.refused)


def test_partitions_whose_snapshots_are_refused_do_not_hold_the_slots() -> None:
    async def scenario() -> list[list[int]]:
        store = RefusingStore(refused={6, 7})
        rt, _ = runtime(store)
        rt.topics = Topics(Topic(fail=set()), None, None, None, None, None)
        for p in range(PARTITIONS):
            state = await rt._restored("stage1", p)
            state.snapshot_at = -1000.0 - p
        rounds = []
        for _ in range(PARTITIONS // 2):
            store.saved.clear()
            await rt.flush(list(range(PARTITIONS)), 1)
            rounds.append(sorted(p for stage, p in store.saved if stage == "stage1"))
        return rounds

    # The refused pair is tried once, then waits its interval while the others get their turn.
    assert asyncio.run(scenario()) == [[6, 7], [4, 5], [2, 3], [0, 1]]
