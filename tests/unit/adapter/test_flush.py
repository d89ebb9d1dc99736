"""The stage-1 flush: snapshots spread over flushes, so no flush holds everything up."""

import asyncio
import time
from dataclasses import replace
from typing import Any

import orjson
from aiokafka.structs import TopicPartition
from prometheus_client import generate_latest

from streamguard.faust_app.runtime import Runtime, Topics
from streamguard.testing import metric
from tests.unit.adapter.test_counts import Event
from tests.unit.adapter.test_outbox import Topic
from tests.unit.adapter.test_recovery import SPECS, Store, runtime
from tests.unit.core._events import envelope, pair

PARTITIONS = SPECS["predictions"].partitions


class SavingStore(Store):
    """Restores nothing and records every save (as acknowledged)."""

    def __init__(self) -> None:
        super().__init__()
        self.release.set()
        self.saved: list[tuple[str, int]] = []

    async def save(
        self, stage: str, partition: int, offset: int, state: Any, stamp: Any = None
    ) -> bool:
        self.saved.append((stage, partition))
        return True


async def flushing(store: Store, restored: range) -> tuple[Runtime, Topic]:
    """A runtime writing partials to a recording topic, with ``restored`` stage-1 partitions."""
    rt, _ = runtime(store)
    partials = Topic(fail=set())
    rt.topics = Topics(partials, None, None, None, None, None)
    for p in restored:
        await rt._restored("stage1", p)
    return rt, partials


def test_a_flush_takes_at_most_two_stage1_snapshots_the_most_overdue_first() -> None:
    async def scenario() -> list[list[int]]:
        store = SavingStore()
        rt, _ = await flushing(store, range(PARTITIONS))
        for p in range(PARTITIONS):
            rt.stage1[p].snapshot_at = -1000.0 - p  # all overdue, the last partition the most
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

    async def save(
        self, stage: str, partition: int, offset: int, state: Any, stamp: Any = None
    ) -> bool:
        await super().save(stage, partition, offset, state)
        return not (stage == "stage1" and partition in self.refused)


def test_partitions_whose_snapshots_are_refused_do_not_hold_the_slots() -> None:
    async def scenario() -> list[list[int]]:
        store = RefusingStore(refused={6, 7})
        rt, _ = await flushing(store, range(PARTITIONS))
        for p in range(PARTITIONS):
            rt.stage1[p].snapshot_at = -1000.0 - p
        rounds = []
        for _ in range(PARTITIONS // 2):
            store.saved.clear()
            await rt.flush(list(range(PARTITIONS)), 1)
            rounds.append(sorted(p for stage, p in store.saved if stage == "stage1"))
        return rounds

    # The refused pair is tried once, then waits its interval while the others get their turn.
    assert asyncio.run(scenario()) == [[6, 7], [4, 5], [2, 3], [0, 1]]


async def feed_and_flush(rt: Runtime, offset: int, ts: float) -> None:
    """One primary + shadow pair on partition 0, then a flush with partition 0's snapshot due."""
    await rt.on_prediction(Event(offset, envelope(pair(f"r{offset}", ts))))
    rt.stage1[0].snapshot_at = -1000.0
    await rt.flush([0], 1)


def test_flush_boundaries_are_forgotten_only_once_a_snapshot_is_stored() -> None:
    async def scenario() -> list[list[int]]:
        store = RefusingStore(refused={0})
        rt, _ = await flushing(store, range(1))
        seen = []
        for offset in range(3):
            if offset == 2:
                store.refused.clear()  # the third snapshot is stored
            await feed_and_flush(rt, offset, 1000.0 + offset)
            seen.append(rt.engine.stage1.progress(0)["boundaries"])
        return seen

    # A restart from the older snapshot needs every boundary after it, until one is stored.
    assert asyncio.run(scenario()) == [[0], [0, 1], []]


class ProgressRefusingStore(SavingStore):
    """Refuses stage-1 progress records while ``refusing`` (too large for the state topic)."""

    refusing = True

    async def save(
        self, stage: str, partition: int, offset: int, state: Any, stamp: Any = None
    ) -> bool:
        await super().save(stage, partition, offset, state)
        return not (stage == "stage1-progress" and self.refusing)


def test_partials_wait_for_their_progress_record_and_the_watermark_for_them() -> None:
    async def scenario() -> dict[str, Any]:
        store = ProgressRefusingStore()
        rt, partials = await flushing(store, range(1))
        requeued: list[bytes] = []
        requeue = rt.engine.stage1.requeue

        def record(partition: int, values: list[tuple[str, bytes]]) -> None:
            requeued.extend(value for _, value in values)
            requeue(partition, values)

        rt.engine.stage1.requeue = record  # type: ignore[method-assign]
        await feed_and_flush(rt, 0, 1000.0)
        first = {
            "held": list(partials.delivered),
            "saved": list(store.saved),
            "requeued": list(requeued),
        }
        partials.delivered.clear()
        store.refusing = False
        await rt.flush([0], 1)
        return {
            **first,
            "sent": list(partials.delivered),
            "text": generate_latest(rt.metrics.registry).decode(),
        }

    out = asyncio.run(scenario())
    # Refused: no partial went out, the heartbeat did not carry partition 0, and no snapshot
    # (stored, it would release offsets whose partials were never sent).
    held = [orjson.loads(m) for m in out["held"]]
    assert [m.get("kind") for m in held] == ["heartbeat"]
    assert [s["partition"] for s in held[0]["sources"]] == []
    assert ("stage1", 0) not in out["saved"]
    assert out["requeued"]
    assert metric(out["text"], 'streamguard_internal_errors_total{stage="state"}') == 1
    # Stored at the next flush: exactly the held partials, once, then the heartbeat.
    *data, beat = out["sent"]
    assert data == out["requeued"]
    assert [s["partition"] for s in orjson.loads(beat)["sources"]] == [0]


class SlowProgressStore(SavingStore):
    """Progress records take a round trip; those of ``refused`` partitions are refused."""

    def __init__(self, refused: set[int]) -> None:
        super().__init__()
        self.refused = refused
        self.in_flight = 0
        self.most_in_flight = 0

    async def save(
        self, stage: str, partition: int, offset: int, state: Any, stamp: Any = None
    ) -> bool:
        await super().save(stage, partition, offset, state)
        if stage != "stage1-progress":
            return True
        self.in_flight += 1
        self.most_in_flight = max(self.most_in_flight, self.in_flight)
        await asyncio.sleep(0.01)
        self.in_flight -= 1
        return partition not in self.refused


def test_progress_records_of_one_flush_overlap_and_a_refused_one_holds_its_partition() -> None:
    """Progress records overlap; a refused one holds only its own partition's partials."""

    async def scenario() -> tuple[SlowProgressStore, list[bytes], set[int]]:
        store = SlowProgressStore(refused={1})
        rt, partials = await flushing(store, range(3))
        for p in range(3):
            await rt.on_prediction(Event(0, envelope(pair(f"r{p}", 1000.0)), partition=p))
            # Past the end of the first one's window: its data is not held for later.
            await rt.on_prediction(Event(1, envelope(pair(f"s{p}", 1010.0)), partition=p))
        requeued: set[int] = set()
        requeue = rt.engine.stage1.requeue

        def record(partition: int, values: list[tuple[str, bytes]]) -> None:
            requeued.add(partition)
            requeue(partition, values)

        rt.engine.stage1.requeue = record  # type: ignore[method-assign]
        await rt.flush([0, 1, 2], 1)
        return store, list(partials.delivered), requeued

    store, sent, requeued = asyncio.run(scenario())
    assert store.most_in_flight == 3
    assert requeued == {1}
    *data, beat = [orjson.loads(m) for m in sent]
    assert sorted(d["source"]["partition"] for d in data) == [0, 2]
    assert [s["partition"] for s in beat["sources"]] == [0, 2]


def test_a_close_heartbeat_waits_for_the_flush_in_progress() -> None:
    """A flush still sending data for a window must not be overtaken by a heartbeat that
    lets stage 2 close it."""

    async def scenario() -> list[dict[str, Any]]:
        store = SlowProgressStore(refused=set())
        rt, partials = await flushing(store, range(1))
        await rt.on_prediction(Event(0, envelope(pair("a", 1000.0))))
        await rt.flush([0], 1)  # the timer's first flush: held, [1000, 1010) is open
        partials.delivered.clear()
        await rt.on_prediction(Event(1, envelope(pair("b", 1011.0))))  # [1000, 1010) ended
        sending = asyncio.create_task(rt.flush([0], 1))  # cuts both pairs, then awaits
        await asyncio.sleep(0.001)
        rt.record_lag(0, highwater=3)
        await rt.on_prediction(Event(2, envelope(pair("c", 1016.0))))  # past its close
        assert rt.engine.stage1.announceable(0)  # nothing of it is pending any more
        await rt.flush_closing([0], 1)
        await sending
        return [orjson.loads(m) for m in partials.delivered]

    sent = asyncio.run(scenario())
    kinds = [(m["kind"], [s["watermark"] for s in m.get("sources", [])]) for m in sent]
    assert kinds == [("partial", []), ("heartbeat", [1011.01]), ("heartbeat", [1016.01])]
    assert {g["window"] for g in sent[0]["groups"]} == {100, 101}


def test_the_timer_holds_data_of_open_windows_and_sends_it_in_one_partial_once_they_end() -> None:
    async def scenario() -> tuple[list[list[dict[str, Any]]], SavingStore, str]:
        store = SavingStore()
        rt, partials = await flushing(store, range(1))
        ticks = []
        for offset, ts in enumerate((1000.0, 1005.0, 1010.5)):
            await rt.on_prediction(Event(offset, envelope(pair(f"r{offset}", ts))))
            partials.delivered.clear()
            await rt.flush([0], 1)
            ticks.append([orjson.loads(m) for m in partials.delivered])
        return ticks, store, generate_latest(rt.metrics.registry).decode()

    ticks, store, text = asyncio.run(scenario())
    beats = [[(m["kind"], m.get("sources")) for m in tick] for tick in ticks[:2]]
    live = [
        [{"partition": 0, "watermark": w, "offset": o, "caught_up": False}]
        for w, o in ((1000.01, 0), (1005.01, 1))
    ]
    assert beats == [[("heartbeat", live[0])], [("heartbeat", live[1])]]
    assert metric(text, "streamguard_held_flushes_total") == 2
    assert ("stage1-progress", 0) in store.saved  # only for the flush that sent data
    assert len([s for s in store.saved if s[0] == "stage1-progress"]) == 1
    *data, beat = ticks[2]
    assert [(d["source"]["offset_lo"], d["source"]["offset_hi"]) for d in data] == [(-1, 2)]
    pair_windows = {g["window"] for g in data[0]["groups"] if g["stream"] == "pair"}
    assert pair_windows == {100, 101}
    assert beat["sources"][0]["watermark"] == 1010.51


def test_a_partition_due_for_a_snapshot_is_flushed_even_if_it_could_hold() -> None:
    async def scenario() -> tuple[list[dict[str, Any]], list[tuple[str, int]]]:
        store = SavingStore()
        rt, partials = await flushing(store, range(1))
        await feed_and_flush(rt, 0, 1000.0)  # [1000, 1010) is open, the snapshot is due
        return [orjson.loads(m) for m in partials.delivered], store.saved

    sent, saved = asyncio.run(scenario())
    assert [m["kind"] for m in sent] == ["partial", "heartbeat"]
    assert ("stage1", 0) in saved


def test_a_window_end_with_its_data_waiting_is_flushed_at_once_not_at_the_next_tick() -> None:
    async def scenario() -> tuple[set[int], set[int], list[dict[str, Any]]]:
        rt, partials = await flushing(SavingStore(), range(1))
        rt.record_lag(0, highwater=0)  # caught up throughout
        for offset, ts in enumerate((1000.0, 1011.0)):
            await rt.on_prediction(Event(offset, envelope(pair(f"r{offset}", ts))))
        await rt.flush([0], 1)  # [1000, 1010) ended: the timer sends both pairs
        await rt.on_prediction(Event(2, envelope(pair("c", 1016.0))))  # its close passed
        await rt.flush_closing([0], 1)  # a heartbeat: c's window is open
        at_close = set(rt._closing)
        partials.delivered.clear()
        await rt.on_prediction(Event(3, envelope(pair("d", 1021.0))))  # [1010, 1020) ended
        at_end = set(rt._closing)
        await rt.flush_closing([0], 1)
        return at_close, at_end, [orjson.loads(m) for m in partials.delivered]

    at_close, at_end, sent = asyncio.run(scenario())
    assert at_close == set()
    assert at_end == {0}  # no close passed here; the end did it
    *data, beat = sent
    assert [(d["source"]["offset_lo"], d["source"]["offset_hi"]) for d in data] == [(1, 3)]
    assert {g["window"] for g in data[0]["groups"] if g["stream"] == "pair"} == {101, 102}
    assert beat["sources"][0]["watermark"] == 1021.01


class GatedSnapshotStore(SavingStore):
    """Stage-1 snapshots wait for ``gate``; everything else is stored at once."""

    def __init__(self) -> None:
        super().__init__()
        self.gate = asyncio.Event()
        self.storing = asyncio.Event()

    async def save(
        self, stage: str, partition: int, offset: int, state: Any, stamp: Any = None
    ) -> bool:
        if stage == "stage1":
            self.storing.set()
            await self.gate.wait()
        return await super().save(stage, partition, offset, state)


def test_a_close_heartbeat_does_not_wait_for_a_flushs_snapshots_but_a_revocation_does() -> None:
    async def scenario() -> tuple[list[str], list[tuple[str, int]], bool]:
        store = GatedSnapshotStore()
        rt, partials = await flushing(store, range(1))
        rt.record_lag(0, highwater=0)
        await rt.on_prediction(Event(0, envelope(pair("a", 1000.0))))
        rt.stage1[0].snapshot_at = -1000.0
        flushing_task = asyncio.create_task(rt.flush([0], 1))  # sends, then stores a snapshot
        await store.storing.wait()
        partials.delivered.clear()
        await rt.on_prediction(Event(1, envelope(pair("b", 1016.0))))  # [1000, 1010) closes
        await asyncio.wait_for(rt.flush_closing([0], 1), 1.0)  # not behind the snapshot
        kinds = [orjson.loads(m)["kind"] for m in partials.delivered]
        revoking = asyncio.create_task(
            rt.on_revoked({TopicPartition(SPECS["predictions"].name, 0)})
        )
        await asyncio.sleep(0.01)
        waited = not revoking.done()  # the partition's snapshot is still being stored
        store.gate.set()
        await asyncio.gather(flushing_task, revoking)
        return kinds, store.saved, waited

    kinds, saved, waited = asyncio.run(scenario())
    assert kinds == ["heartbeat"]
    assert ("stage1", 0) in saved
    assert waited


class AckedEvent(Event):
    """An event that records its acknowledgement."""

    acked = False

    def ack(self) -> None:
        self.acked = True


def test_held_events_keep_no_payload_and_are_acknowledged_once_a_snapshot_covers_them() -> None:
    async def scenario() -> tuple[list[tuple[Any, Any]], list[bool], list[bool]]:
        rt, _ = await flushing(SavingStore(), range(1))
        events = [AckedEvent(o, envelope(pair(f"r{o}", 1000.0 + o))) for o in range(3)]
        for event in events:
            await rt.on_prediction(event)
        held = [(e.value, e.message.value) for e in rt.stage1[0].held]
        before = [e.acked for e in events]
        rt.stage1[0].snapshot_at = -1000.0
        await rt.flush([0], 1)
        return held, before, [e.acked for e in events]

    held, before, after = asyncio.run(scenario())
    # Parsed payloads are let go at once: held until a snapshot, they would pile up in memory.
    assert held == [(None, None)] * 3
    assert before == [False] * 3
    assert after == [True] * 3


def test_a_partition_holding_many_messages_is_due_for_a_snapshot_before_its_interval() -> None:
    """Reading a backlog of one-event messages, 10 s of held events were ~80 MB of RSS."""

    async def scenario() -> tuple[list[int], int, list[bool]]:
        store = SavingStore()
        rt, _ = await flushing(store, range(2))
        rt.settings = replace(rt.settings, snapshot_held_messages=3)
        events = [AckedEvent(o, envelope(pair(f"r{o}", 1000.0 + o))) for o in range(3)]
        for event in events:
            await rt.on_prediction(event)
        await rt.on_prediction(AckedEvent(0, envelope(pair("q0", 1000.0)), partition=1))
        for p in (0, 1):
            rt.stage1[p].snapshot_at = time.monotonic()  # neither is overdue by time
        await rt.flush([0, 1], 1)
        return (
            [p for stage, p in store.saved if stage == "stage1"],
            len(rt.stage1[1].held),
            [e.acked for e in events],
        )

    snapshotted, still_held, acked = asyncio.run(scenario())
    assert snapshotted == [0]  # three held messages: due; partition 1 holds one, not due
    assert still_held == 1
    assert acked == [True] * 3
