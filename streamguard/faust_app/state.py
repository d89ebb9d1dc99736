"""Snapshots of stage state on a compacted Kafka topic.

Each stage writes its state for one input partition under the key ``"<stage>/<partition>"``
(``stage1``, ``stage1-progress``, ``stage2``, ``stage3``, ``leakage``). The key decides the state
partition, so a worker that is assigned input partition ``p`` reads one state partition to find it.
Writes wait for the broker's acknowledgement: a snapshot is only ever trusted once stored.

The parts of a state that never change (stage 2's closed windows: :class:`Part`) are written
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
import time
import uuid
from typing import Any

from aiokafka import AIOKafkaConsumer
from aiokafka.errors import KafkaError
from aiokafka.structs import TopicPartition

from streamguard.contracts import TopicSpec, partition_for
from streamguard.core.snapshot import SnapshotError, split, unpack
from streamguard.faust_app.metrics import Metrics
from streamguard.faust_app.outbox import send_all_reliably, send_reliably

__all__ = ["StateStore"]

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

    async def save(self, stage: str, partition: int, offset: int, state: Any) -> bool:
        """Store a snapshot (its new parts first); True once the broker has it."""
        key = f"{stage}/{partition}"
        value, parts = split(
            {"stage": stage, "partition": partition, "offset": offset, "state": state}
        )
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

    async def load(self, keys: list[str]) -> dict[str, dict[str, Any]]:
        """Latest snapshot of each key, with its parts (absent keys are missing from the result).

        Retries with capped back-off while the broker is unreachable: a stage must not start
        from nothing because the broker was briefly away, and the agent must not die either.
        """
        delay = 0.5
        while True:
            try:
                return await self._load(keys)
            except (KafkaError, OSError, TimeoutError) as exc:
                self.metrics.broker_ok.set(0)
                log.warning("reading snapshots failed (%s); retrying in %.1fs", exc, delay)
                await asyncio.sleep(delay)
                delay = min(10.0, delay * 2)

    async def _load(self, keys: list[str]) -> dict[str, dict[str, Any]]:
        wanted = set(keys)
        partitions = sorted({self._partition(key) for key in keys})
        consumer = AIOKafkaConsumer(
            bootstrap_servers=self.bootstrap, enable_auto_commit=False, request_timeout_ms=10_000
        )
        latest: dict[str, bytes] = {}  # only the newest value of a key is decoded
        copies: dict[str, dict[tuple[str, str], bytes]] = {key: {} for key in keys}
        try:
            await consumer.start()
            tps = [TopicPartition(self.spec.name, p) for p in partitions]
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
        finally:
            await consumer.stop()
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
