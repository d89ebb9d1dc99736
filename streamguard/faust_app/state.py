"""Snapshots of stage state on a compacted Kafka topic.

Each stage writes its state for one input partition under the key ``"<stage>/<partition>"``
(``stage1``, ``stage1-progress``, ``stage2``, ``stage3``, ``leakage``). The key decides the state
partition, so a worker that is assigned input partition ``p`` reads one state partition to find it.
Writes wait for the broker's acknowledgement: a snapshot is only ever trusted once stored.

The parts of a state that never change (stage 2's closed windows, and the complete blocks of
the shadow guard's onset series: :class:`Part`) are written
once each, under ``"<stage>/<partition>/part/<writer>/<name>"`` on the same state partition and
before the first snapshot that names them; a snapshot holds only their names (content hashes).
Once a stored snapshot no longer names a part, the part gets a tombstone, so compaction
removes it. A busy stage 2 thus writes its changing state every few seconds, not every window
it still holds.

``<writer>`` is a random id drawn anew at every load of a key (every restore). Without
transactions a worker that lost its partitions but does not know it yet (a *zombie*) may still
write, and content names alone would let its tombstones delete a part the new owner's snapshot
names: the same closed window has the same name on both. So a store writes its own copy of
every part it names, once after each restore, and tombstones only its own copies, or copies
it found at load (its own earlier ones included: a zombie may have found them too) whose
names its stored snapshot no longer holds. A restore takes any writer's copy of a name.
"""

import asyncio
import logging
import threading
import time
import uuid
import zlib
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.errors import KafkaError
from aiokafka.structs import TopicPartition

from streamguard.contracts import TopicSpec, partition_for
from streamguard.core.snapshot import SnapshotError, split, unpack
from streamguard.faust_app.metrics import Metrics
from streamguard.faust_app.outbox import send_all_reliably, send_reliably

__all__ = ["StateStore", "message_stamp"]

log = logging.getLogger("streamguard.worker")

_STALL_S = 30.0
_PARTS = "/part/"


def _owner(key: str) -> str:
    """``"<stage>/<partition>"`` of a snapshot key or of one of its parts' keys."""
    return "/".join(key.split("/", 2)[:2])


def _new_writer() -> str:
    return uuid.uuid4().hex[:12]


def _writer_and_name(key: str) -> tuple[str, str]:
    """``(writer, name)`` of a part's key; writer ``""`` for keys written before writers.

    >>> _writer_and_name("stage2/3/part/5f0c2a/9b1d"), _writer_and_name("stage2/3/part/9b1d")
    (('5f0c2a', '9b1d'), ('', '9b1d'))
    """
    writer, _, name = key.split(_PARTS, 1)[1].rpartition("/")
    return writer, name


class StateStore:
    """Reads and writes stage snapshots; see the module docstring."""

    def __init__(self, bootstrap: str, spec: TopicSpec, topic: Any, metrics: Metrics) -> None:
        self.bootstrap = bootstrap
        self.spec = spec
        self.topic = topic  # the Faust topic, for writes through the app's producer
        self.metrics = metrics
        # Per snapshot key, this store's writer id since the key's last load.
        self._writers: dict[str, str] = {}
        # Per snapshot key, the names of this store's own copies on the topic (not tombstoned).
        self._parts: dict[str, set[str]] = {}
        # Per snapshot key, copies of other writers found at load: name -> writers.
        self._foreign: dict[str, dict[str, set[str]]] = {}

    def _partition(self, key: str) -> int:
        # A snapshot's parts live on its partition: one partition read restores it whole.
        return partition_for(_owner(key).encode(), self.spec.partitions)

    async def save(
        self, stage: str, partition: int, offset: int, state: Any, stamp: list[int] | None = None
    ) -> bool:
        """Store a snapshot (its new parts first); True once the broker has it.

        ``stamp`` is :func:`message_stamp` of the input message at ``offset``, when the caller
        has it: a restore then checks that the partition still holds that very message.
        """
        key = f"{stage}/{partition}"
        record = {"stage": stage, "partition": partition, "offset": offset, "state": state}
        if stamp is not None:
            record["stamp"] = stamp
        value, parts = split(record)
        writer = self._writers.setdefault(key, _new_writer())
        stored = self._parts.setdefault(key, set())
        foreign = self._foreign.setdefault(key, {})
        where = self._partition(key)  # the snapshot's partition, which its parts share

        def part(by: str, name: str, blob: bytes | None) -> tuple[bytes, bytes | None, int]:
            path = f"{by}/{name}" if by else name  # no writer: a key from before writers
            return (key + _PARTS + path).encode(), blob, where

        started = time.monotonic()
        new = [part(writer, name, p.packed()) for name, p in parts.items() if name not in stored]
        if new and not await send_all_reliably(self.metrics, self.topic, new):
            return False  # a snapshot naming a part the broker refused could not be restored
        stored.update(parts)
        ok = await send_reliably(
            self.metrics, self.topic, value, key=key.encode(), partition=where, wait=True
        )
        stale = sorted(stored - parts.keys()) if ok else []
        gone = sorted(name for name in foreign if name not in parts) if ok else []
        tombstones = [part(writer, name, None) for name in stale]
        tombstones += [part(w, name, None) for name in gone for w in sorted(foreign[name])]
        if tombstones and await send_all_reliably(self.metrics, self.topic, tombstones):
            stored.difference_update(stale)
            for name in gone:
                del foreign[name]
        self.metrics.snapshot_seconds.labels(stage).observe(time.monotonic() - started)
        self.metrics.snapshot_bytes.labels(stage).set(
            len(value) + sum(len(v or b"") for _, v, _ in new)
        )
        return ok

    def save_now(
        self,
        key: str,
        offset: int,
        state: Any,
        stamp: list[int] | None = None,
        *,
        timeout_s: float = 10.0,
    ) -> bool:
        """Store a small record (no parts) before returning, blocking the event loop meanwhile.

        For a worker about to exit on half-changed state (``faust_app.halt``): no other
        coroutine may run, flush or snapshot that state while the record is sent, so it goes
        through a producer of its own in a thread. False if the broker did not have it within
        ``timeout_s`` (logged); the caller exits anyway. ``key`` is ``"<stage>/<partition>"``,
        or ``"<stage>/<partition>/<name>"`` for a record beside that snapshot, on its state
        partition.
        """
        stage, partition = key.split("/")[:2]
        record = {"stage": stage, "partition": int(partition), "offset": offset, "state": state}
        if stamp is not None:
            record["stamp"] = stamp
        value, parts = split(record)
        if parts:
            raise ValueError(f"{key}: save_now takes records without parts")
        stored: list[bool] = []

        async def send() -> None:
            producer = AIOKafkaProducer(bootstrap_servers=self.bootstrap, acks="all")
            try:
                await producer.start()
                await producer.send_and_wait(
                    self.spec.name, value, key=key.encode(), partition=self._partition(key)
                )
                stored.append(True)
            finally:
                await producer.stop()

        def run() -> None:
            try:
                asyncio.run(asyncio.wait_for(send(), timeout_s))
            except Exception as exc:  # reported below; the worker is stopping either way
                log.error("could not store %s: %s", key, exc)

        thread = threading.Thread(target=run, name=f"save-{key}", daemon=True)
        thread.start()
        thread.join(timeout_s + 5.0)
        return bool(stored)

    async def load(
        self, keys: list[str], inputs: dict[str, tuple[str, int]] | None = None
    ) -> dict[str, dict[str, Any]]:
        """Latest snapshot of each key, with its parts (absent keys are missing from the result).

        ``inputs`` names, per key, the input partition (topic, partition) whose offsets the
        snapshot's ``offset`` counts. A snapshot that claims an offset the partition does not
        hold, or whose stamp differs from the message the partition holds there, refers to a
        log the broker lost (see :func:`_outlived`): it is left out, counted as ``log_lost``
        and logged, and the stage starts that partition afresh.

        Retries with capped back-off while the broker is unreachable: a stage must not start
        from nothing because the broker was briefly away, and the agent must not die either.
        """
        delay = 0.5
        while True:
            try:
                return await self._load(keys, inputs or {})
            except (KafkaError, OSError, TimeoutError) as exc:
                self.metrics.broker_ok.set(0)
                log.warning("reading snapshots failed (%s); retrying in %.1fs", exc, delay)
                await asyncio.sleep(delay)
                delay = min(10.0, delay * 2)

    async def _load(
        self, keys: list[str], inputs: dict[str, tuple[str, int]]
    ) -> dict[str, dict[str, Any]]:
        consumer = AIOKafkaConsumer(
            bootstrap_servers=self.bootstrap, enable_auto_commit=False, request_timeout_ms=10_000
        )
        try:
            await consumer.start()
            latest, copies = await self._read(consumer, keys)
            found = self._unpack(latest, copies)
            logs = {key: TopicPartition(*inputs[key]) for key in found if key in inputs}
            if logs:
                await self._drop_outlived(consumer, found, logs)
            return found
        finally:
            await consumer.stop()

    async def _read(
        self, consumer: AIOKafkaConsumer, keys: list[str]
    ) -> tuple[dict[str, bytes], dict[str, dict[tuple[str, str], bytes]]]:
        """The newest record of each key, and every copy of its parts not tombstoned."""
        wanted = set(keys)
        latest: dict[str, bytes] = {}  # only the newest value of a key is decoded
        copies: dict[str, dict[tuple[str, str], bytes]] = {key: {} for key in keys}
        tps = [TopicPartition(self.spec.name, p) for p in sorted({*map(self._partition, wanted)})]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        ends = await consumer.end_offsets(tps)
        remaining = {tp for tp in tps if ends[tp] > 0}
        stalled_at = time.monotonic()
        while remaining:
            if time.monotonic() - stalled_at > _STALL_S:  # the broker went away mid-read
                raise TimeoutError(f"no snapshot data for {_STALL_S:.0f}s")
            batches = await consumer.getmany(*remaining, timeout_ms=1000)
            if any(batches.values()):
                stalled_at = time.monotonic()
            for tp, records in batches.items():
                for record in records:
                    key = record.key.decode() if record.key else ""
                    if key in wanted and record.value is not None:
                        latest[key] = record.value
                    elif _PARTS in key and _owner(key) in wanted:
                        copy = _writer_and_name(key)
                        if record.value is None:  # a tombstone
                            copies[_owner(key)].pop(copy, None)
                        else:
                            copies[_owner(key)][copy] = record.value
                if records and records[-1].offset + 1 >= ends[tp]:
                    remaining.discard(tp)
            for tp in list(remaining):
                if await consumer.position(tp) >= ends[tp]:
                    remaining.discard(tp)
        return latest, copies

    def _unpack(
        self, latest: dict[str, bytes], copies: dict[str, dict[tuple[str, str], bytes]]
    ) -> dict[str, dict[str, Any]]:
        found: dict[str, dict[str, Any]] = {}
        parts: dict[str, dict[str, bytes]] = {}
        for key, held in copies.items():
            # Every copy found counts as another writer's (those the next stored snapshot does
            # not name get a tombstone then), this store's earlier ones too, under a new id: a
            # zombie that loaded after it knows them and tombstones them as its state moves on.
            self._writers[key] = _new_writer()
            self._parts[key] = set()
            foreign: dict[str, set[str]] = {}
            for writer, name in held:
                foreign.setdefault(name, set()).add(writer)
            self._foreign[key] = foreign
            parts[key] = {name: blob for (_, name), blob in held.items()}  # any copy will do
        for key, value in latest.items():
            try:
                found[key] = unpack(value, parts[key])
            except SnapshotError as exc:
                # Counted and logged: a lost snapshot must be visible, never silent.
                self.metrics.internal_errors.labels("state").inc()
                log.error("ignoring unreadable snapshot %s: %s", key, exc)
        return found

    async def _drop_outlived(
        self,
        consumer: AIOKafkaConsumer,
        found: dict[str, dict[str, Any]],
        logs: dict[str, TopicPartition],
    ) -> None:
        """Leave out snapshots of input logs the broker lost (:func:`_outlived`)."""
        # Asked after the snapshots were read: a log can only have grown since.
        ends = await consumer.end_offsets(sorted(set(logs.values())))
        held = await _stamps_held(consumer, found, logs, ends)
        for key, tp in logs.items():
            if why := _outlived(found[key], ends[tp], held.get(key)):
                self.metrics.internal_errors.labels("log_lost").inc()
                log.error(
                    "ignoring snapshot %s: it covers %s:%d up to offset %s, but %s (the broker "
                    "lost its log); the partition starts afresh",
                    key,
                    tp.topic,
                    tp.partition,
                    found[key].get("offset"),
                    why,
                )
                del found[key]


def message_stamp(timestamp_ms: int | None, value: bytes | None) -> list[int]:
    """What tells one message from another at the same offset: its timestamp and a CRC-32.

    >>> message_stamp(1_700_000_000_000, b"{}") == message_stamp(1_700_000_000_000, b"{}")
    True
    >>> message_stamp(1_700_000_000_000, b"{}") == message_stamp(1_700_000_000_001, b"{}")
    False
    """
    return [-1 if timestamp_ms is None else int(timestamp_ms), zlib.crc32(value or b"")]


async def _stamps_held(
    consumer: AIOKafkaConsumer,
    found: dict[str, dict[str, Any]],
    logs: dict[str, TopicPartition],
    ends: dict[TopicPartition, int],
) -> dict[str, list[int]]:
    """Per stamped snapshot, the stamp of the message its input partition holds at its offset.

    Messages retention already deleted cannot be checked and are left out.
    """
    wanted: dict[str, tuple[TopicPartition, int]] = {}
    for key, tp in logs.items():
        offset = int(found[key].get("offset", -1))
        if found[key].get("stamp") is not None and 0 <= offset < ends[tp]:
            wanted[key] = (tp, offset)
    if not wanted:
        return {}
    tps = sorted({tp for tp, _ in wanted.values()})
    starts = await consumer.beginning_offsets(tps)
    # One fetch round per stamped key a partition has, all partitions at once.
    rounds: list[dict[TopicPartition, tuple[str, int]]] = []
    for key, (tp, offset) in wanted.items():
        if offset >= starts[tp]:
            free = next((r for r in rounds if tp not in r), None)
            if free is None:
                rounds.append(free := {})
            free[tp] = (key, offset)
    held: dict[str, list[int]] = {}
    for pending in rounds:
        consumer.assign(list(pending))
        for tp, (_, offset) in pending.items():
            consumer.seek(tp, offset)
        stalled_at = time.monotonic()
        while pending:
            if time.monotonic() - stalled_at > _STALL_S:
                raise TimeoutError(f"no input message for {_STALL_S:.0f}s")
            batches = await consumer.getmany(*pending, timeout_ms=1000)
            for tp, records in batches.items():
                if tp in pending and records:
                    key, offset = pending.pop(tp)
                    first = records[0]  # the fetch starts at the offset sought
                    if first.offset == offset:
                        held[key] = message_stamp(first.timestamp, first.value)
    return held


def _outlived(snapshot: dict[str, Any], end: int, stamp: list[int] | None) -> str:
    """Why a snapshot covers messages its input partition does not hold; "" if it does not.

    A log's end offset never goes back while the broker keeps its data (retention moves the
    start, not the end), and a snapshot's ``offset`` is the last input offset it covers, -1 for
    none. So ``offset >= end`` means the log was lost after the snapshot's messages were read:
    the embedded broker restarted, or Kafka truncated it in an unclean leader election. A
    worker still running on the old state may even write the snapshot after the loss, and the
    new log may have grown past its offset by the restore: then the message held at the offset
    is another one than the snapshot's stamp names. Restoring such a snapshot would skip the
    new log's first messages as redeliveries and judge new events against the old windows.
    """
    offset = int(snapshot.get("offset", -1))
    if offset >= end:
        return f"the partition ends at {end}"
    if stamp is not None and list(snapshot["stamp"]) != stamp:  # only stamped ones are read
        return (
            f"the message held at {offset} is another one (stamps {stamp}, not {snapshot['stamp']})"
        )
    return ""
