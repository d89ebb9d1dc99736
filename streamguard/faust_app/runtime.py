"""What the worker's agents and timers do: the engine's stages with state that survives crashes.

Exactness rests on three rules, the same for every stage:

1. a stage's state for an input partition is written to the state topic (a *snapshot*) with the
   last input offset it includes, and input messages are acknowledged to Faust, which commits
   the consumer offset, only once a snapshot covering them is stored. A restarted or newly
   assigned worker restores the snapshot and skips the messages it already includes;
2. stage 1 also writes, after every flush, a *progress* record with the last offset whose
   measurements were sent. After a restore, messages up to it rebuild state but their
   measurements are not sent again;
3. outputs are written (and acknowledged by the broker) before the snapshot or progress record
   that says they were. What a crash can repeat is then only output with the same content and
   identity: partials with the same offset stamps (stage 2 drops them), verdicts for windows
   already judged (the decider drops them), commands with the same ids (subscribers drop them).

Snapshots are restored as soon as partitions are assigned (and, should that not have happened
yet, on a partition's first message). The worker is *ready* (``/ready``) once every assigned
partition's state is restored and stage 1 has read each predictions partition to its end once.
"""

import asyncio
import logging
import math
import time
from collections import defaultdict
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import orjson

from streamguard.contracts import (
    Alert,
    Command,
    Rejected,
    TopicSpec,
    dead_letter,
    decode_message,
    parse_message,
)
from streamguard.core import PartialError
from streamguard.core.partials import dumps
from streamguard.core.stage1 import Stage1Report, Unit
from streamguard.engine import Engine
from streamguard.faust_app.health import health_document, readiness_document
from streamguard.faust_app.metrics import Metrics
from streamguard.faust_app.outbox import send_all_reliably, send_reliably
from streamguard.faust_app.state import StateStore, message_stamp
from streamguard.security import Publisher
from streamguard.settings import Settings

__all__ = ["Runtime", "Topics"]

log = logging.getLogger("streamguard.worker")
#: Stage-1 snapshots taken in one flush at most (the most overdue first); the rest wait a flush.
_SNAPSHOTS_PER_FLUSH = 2


@dataclass
class Topics:
    """The Faust topic objects the runtime writes to."""

    partials: Any
    verdicts: Any
    control: Any
    alerts: Any
    deadletters: Any
    state: Any


@dataclass
class _Input:
    """Per input partition: where to resume, events held until a snapshot covers them."""

    resume: int = 0
    held: list[Any] = field(default_factory=list)
    last_offset: int = -1
    snapshot_at: float = 0.0
    dirty: bool = False
    highwater: int | None = None  # end of the partition at the last fetch (stage 1)
    caught_up_once: bool = False  # read to the partition's end since the restore (stage 1)
    last_message: Any = None  # the one at last_offset (stages 2, 3, leakage), for its stamp

    def last_stamp(self) -> list[int] | None:
        """Stamp of the message at ``last_offset``; None if none was read since the restore.

        Taken when a snapshot is saved, not per message: a CRC of every training batch read
        would cost the hot path what only a snapshot needs.
        """
        return None if self.last_message is None else _stamp(self.last_message)


class _Stamped:
    """A topic whose sends carry ``timestamp`` (seconds) as the Kafka message timestamp.

    Verdicts carry their window's close time this way, out of band: stage 3, maybe on another
    worker, measures close-to-command latency from it, and the verdict messages stay equal to
    replay's.
    """

    def __init__(self, topic: Any, timestamp: float) -> None:
        self.topic = topic
        self.timestamp = timestamp

    def get_topic_name(self) -> str:
        name: str = self.topic.get_topic_name()
        return name

    async def send(self, *, key: bytes | None, value: bytes, partition: int | None) -> Any:
        return await self.topic.send(
            key=key, value=value, partition=partition, timestamp=self.timestamp
        )


def _release(held: list[Any], upto: int) -> list[Any]:
    """Acknowledge held events with offsets up to ``upto``; return the others."""
    keep = []
    for event in held:
        if event.message.offset <= upto:
            event.ack()
        else:
            keep.append(event)
    return keep


def _stamp(message: Any) -> list[int]:
    """:func:`message_stamp` of a Faust message (its timestamp is the record's ms / 1000).

    Snapshots carry the stamp of the last input message they cover, so that a restore can tell
    it from another message at the same offset of a log the broker lost and refilled.
    """
    ms = None if message.timestamp is None else round(message.timestamp * 1000)
    return message_stamp(ms, message.value)


class Runtime:
    """The three stages of one worker, their snapshots, and its health."""

    def __init__(
        self,
        settings: Settings,
        engine: Engine,
        metrics: Metrics,
        *,
        specs: dict[str, TopicSpec],
        topics: Topics,
        store: StateStore,
        owned: Callable[[str], list[int]] = lambda topic: [],
        publisher: Publisher,
        rewind: Callable[[set[tuple[str, int]]], Awaitable[Any]] | None = None,
    ) -> None:
        self.settings = settings
        self.publisher = publisher
        self.engine = engine
        self.metrics = metrics
        self.specs = specs
        self.topics = topics
        self.store = store
        # Partitions of a topic this worker owns now: restores load all of them in one pass.
        self.owned = owned
        # Run on an assignment before its restores: reads lost logs from their start
        # (:func:`streamguard.faust_app.rewind.rewinder`).
        self.rewind = rewind
        self.stage1: dict[int, _Input] = {}
        self.stage2: dict[int, _Input] = {}
        self.stage3: dict[int, _Input] = {}
        self.leakage: dict[int, _Input] = {}
        self.control_offsets: dict[int, int] = {}
        self.stage3_deployments: dict[int, set[str]] = defaultdict(set)
        self.lock1 = asyncio.Lock()
        self.lock2 = asyncio.Lock()
        self.lock3 = asyncio.Lock()
        self.lock_leakage = asyncio.Lock()
        self.evicted_recently: dict[str, float] = {}
        self.crashed: dict[str, tuple[float, str]] = {}  # agent -> (when, why)
        # One restore at a time per stage: the eager one after an assignment and an agent's
        # on a first message must not both rebuild a partition (the second would reset it).
        self.restoring = {
            stage: asyncio.Lock() for stage in ("stage1", "stage2", "stage3", "leakage")
        }
        # (topic, partition) assigned now; None while joining the group or rebalancing.
        self.assignment: set[tuple[str, int]] | None = None
        self._recovery: asyncio.Task[None] | None = None
        # Caught-up partitions whose watermark passed a window's close since the last eager
        # flush; the eager flusher (:meth:`eager_flushes`) takes them all at once.
        self._closing: set[int] = set()
        self._closing_wake = asyncio.Event()
        self._lag_at = -math.inf  # when the window-lag gauges were last updated (monotonic)
        # Looked up on every message: built once.
        self._stage_of = {stage[1]: stage for stage in self._stages()}

    def _stages(
        self,
    ) -> tuple[tuple[str, str, dict[int, _Input], Callable[[Iterable[int]], Awaitable[None]]], ...]:
        """(input topic role, stage, its partitions' state, its restore) for every stage."""
        return (
            ("predictions", "stage1", self.stage1, self._restore1_locked),
            ("partials", "stage2", self.stage2, self._restore2_locked),
            ("verdicts", "stage3", self.stage3, self._restore3_locked),
            ("training_examples", "leakage", self.leakage, self._restore_leakage_locked),
        )

    async def _restored(self, stage: str, partition: int) -> _Input:
        """A partition's state, restored from its snapshot first when it is new here.

        Restores of one stage take turns (``restoring``), so an agent's first message waits
        for an eager restore in progress instead of running a second one.
        """
        _, _, inputs, restore = self._stage_of[stage]
        state = inputs.get(partition)
        if state is None:
            async with self.restoring[stage]:
                await restore([partition])
            state = inputs[partition]
        return state

    # -- stage 1 -------------------------------------------------------------------------------

    def _to_restore(self, role: str, wanted: Iterable[int], loaded: dict[int, _Input]) -> list[int]:
        owned = set(self.owned(self.specs[role].name)) | set(wanted)
        return sorted(p for p in owned if p not in loaded)

    def _inputs(self, role: str, keys: list[str]) -> dict[str, tuple[str, int]]:
        """Per snapshot key ``"<stage>/<p>"``, the input partition its offsets count."""
        return {key: (self.specs[role].name, int(key.rsplit("/", 1)[1])) for key in keys}

    async def _restore1_locked(self, wanted: Iterable[int]) -> None:
        partitions = self._to_restore("predictions", wanted, self.stage1)
        if not partitions:
            return
        keys = [f"{kind}/{p}" for p in partitions for kind in ("stage1", "stage1-progress")]
        found = await self.store.load(keys, self._inputs("predictions", keys))
        for p in partitions:
            snapshot = found.get(f"stage1/{p}")
            progress = found.get(f"stage1-progress/{p}")
            resume = self.engine.stage1.restore(
                p, snapshot["state"] if snapshot else None, progress["state"] if progress else None
            )
            if snapshot or progress:
                self.metrics.restores.labels("stage1").inc()
                log.warning("stage 1 partition %d restored; resuming at offset %d", p, resume)
            self.stage1[p] = _Input(resume=resume, snapshot_at=time.monotonic())

    async def on_prediction(self, event: Any) -> None:
        """One message of the predictions topic (one-event messages are processed in runs:
        :meth:`streamguard.core.Stage1.feed`)."""
        message = event.message
        partition, offset = message.partition, message.offset
        # Every message comes here: no coroutine for the restore check once restored.
        state = self.stage1.get(partition) or await self._restored("stage1", partition)
        if offset < state.resume:
            event.ack()  # already in the restored snapshot
            return
        self.metrics.messages.inc()
        max_ts = time.time() + self.settings.max_future_s
        value = event.value
        parsed = parse_message(value, max_ts)
        units = self.engine.stage1.feed(partition, offset, value, parsed, max_ts)
        # The payload is parsed; keeping it until the snapshot would only cost memory. (So stage
        # 1's snapshots are not stamped: a restore checks them against the log's end alone.)
        message.value = None
        state.held.append(event)
        state.last_offset = offset
        if units:  # most one-event messages only join their partition's run
            await self._dead_letters(self._units(units, value), message.topic, partition)
        if self.engine.stage1.closing(partition) and self.caught_up(partition):
            # A window's close passed here: stage 2 hears of it with this partition's next
            # flush, so flush it now rather than at the timer's next tick. Not while reading a
            # backlog, where closes pass every few messages and the timer's flush is as early.
            # Not here either: the other partitions' closing messages wait behind this agent,
            # so the eager flusher takes every partition that closed meanwhile in one flush.
            self.flush_soon(partition)

    def _units(self, units: list[Unit], value: bytes | None = None) -> list[tuple[int, Rejected]]:
        """Count what the units did; return their rejections with their messages' offsets.

        ``value`` is the message just read: the only unit that can hold training examples
        is that message decoded alone.
        """
        letters = []
        for unit in units:
            self._count(unit.report)
            letters += unit.letters()
            training = unit.decoded.training
            if len(training):  # only a message decoded alone can hold training examples
                letters.append(
                    (
                        unit.last,
                        Rejected(
                            "wrong_topic",
                            f"{len(training)} training examples on the predictions topic "
                            "(they belong on the training examples topic); not counted",
                            value or b"",
                        ),
                    )
                )
        return letters

    def _count(self, report: Stage1Report) -> None:
        m = self.metrics
        m.events.labels("prediction").inc(report.predictions)
        m.events.labels("outcome").inc(report.outcomes)
        m.pairs.inc(report.pairs)
        m.unpaired.inc(report.unpaired)
        if report.one_by_one:
            m.one_by_one.inc(report.one_by_one)
        m.duplicate_halves.inc(report.duplicates)
        m.late.labels("source").inc(report.late)
        m.late.labels("source_pairs").inc(report.late_pairs)
        m.outcomes_unmatched.inc(report.unmatched_outcomes)
        for buffer, count in (
            ("pairing", report.evicted_halves),
            ("exposures", report.evicted_exposures),
        ):
            if count:
                m.evicted.labels(buffer).inc(count)
                self.evicted_recently[buffer] = time.monotonic()

    def flush_soon(self, partition: int) -> None:
        """Have the eager flusher flush ``partition`` with the others that close meanwhile."""
        self._closing.add(partition)
        self._closing_wake.set()

    async def flush_closing(self, owned: list[int], n_channels: int) -> list[int]:
        """Tell stage 2 of every owned partition that passed a window's close since the last
        call; returns them (a partition revoked meanwhile is left to its next owner).

        A heartbeat alone tells it when nothing pending belongs to a window the watermark
        closes (:meth:`streamguard.core.Stage1.announceable`); the others are flushed together.
        """
        partitions = sorted(self._closing.intersection(owned))
        self._closing.clear()
        if partitions:
            rest = await self._announce(partitions, n_channels)
            if rest:
                self.metrics.eager_flushes.inc(len(rest))
                await self.flush(rest, n_channels)
        return partitions

    async def _announce(self, partitions: list[int], n_channels: int) -> list[int]:
        """Send one heartbeat for the announceable ``partitions``; return the others."""
        # Under the flush lock: a flush in progress may be sending data for a window this
        # watermark closes (pending when it was cut), which must reach stage 2 first.
        async with self.lock1:
            stage1 = self.engine.stage1
            heard = [p for p in partitions if p in self.stage1 and stage1.announceable(p)]
            if heard:
                caught_up = {p: self.caught_up(p) for p in heard}
                await self._beat(stage1.announce(heard, caught_up), n_channels)
                self.metrics.close_heartbeats.inc(len(heard))
        return [p for p in partitions if p not in heard]

    async def eager_flushes(self, owned: Callable[[], list[int]], n_channels: int) -> None:
        """Run :meth:`flush_closing` whenever a partition passes a window's close, forever.

        At 20 deployments one partition's flush takes ~50 ms (settling its groups, the
        progress record's and the partials' round trips). Flushed one by one from the agent,
        the 8 partitions that pass a close together held the window ~0.4 s; partitions that
        close while a flush runs go in the next one, so a close costs about two flushes.
        """
        while True:
            await self._closing_wake.wait()
            self._closing_wake.clear()
            try:
                await self.flush_closing(owned(), n_channels)
            except Exception as exc:  # the timer's flush still runs; say it
                self.agent_crashed("eager_flush", exc)
                await asyncio.sleep(self.settings.flush_interval_s)

    async def checkpoint(self, owned: list[int], n_channels: int, timeout_s: float = 10.0) -> None:
        """Flush and snapshot every stage now (graceful shutdown); bounded in time."""

        async def everything() -> None:
            await self.stop_recovery()
            await self.flush(owned, n_channels, force_snapshot=True)
            for state in self.stage2.values():
                state.dirty = True
            await self.snapshot_stage2()
            await self.snapshot_stage3()
            for state in self.leakage.values():
                state.dirty = state.dirty or state.last_offset >= 0
            await self.snapshot_leakage()

        try:
            await asyncio.wait_for(everything(), timeout_s)
        except TimeoutError:
            log.error(
                "checkpoint at shutdown timed out; the next start replays from the last snapshots"
            )

    async def flush(self, owned: list[int], n_channels: int, force_snapshot: bool = False) -> None:
        """Send partials and heartbeats; store progress, and snapshots when due."""
        async with self.lock1:
            stage1 = self.engine.stage1
            now = time.monotonic()
            work = []
            letters: list[tuple[int, list[tuple[int, Rejected]]]] = []
            max_ts = time.time() + self.settings.max_future_s
            # A few partitions' snapshots per flush, the most overdue first: all of them at
            # once (~36 ms each at 20 deployments) held every window closing meanwhile behind
            # one long step. A partition that cannot snapshot yet (replaying) takes no slot.
            inputs = [(p, state) for p in owned if (state := self.stage1.get(p)) is not None]
            inputs.sort(key=lambda item: item[1].snapshot_at)
            slots = _SNAPSHOTS_PER_FLUSH
            for partition, state in inputs:
                letters.append((partition, self._units(stage1.cut(partition, max_ts))))
                partials = stage1.flush(partition)
                # Taken right after the flush, before any await lets new messages in.
                progress = stage1.progress(partition)
                due = now - state.snapshot_at >= self.settings.snapshot_interval_s
                snapshot = None
                if (force_snapshot or (due and slots > 0)) and stage1.settled(partition):
                    snapshot = stage1.snapshot(partition)
                    slots -= 1
                work.append((partition, state, partials, progress, snapshot))
            for partition, some in letters:
                await self._dead_letters(some, self.specs["predictions"].name, partition)
            caught_up = {p: self.caught_up(p) for p, *_ in work}
            beating = [p for p, *_ in work]
            # The boundaries first: a restore must be able to reproduce these partials. Each
            # partition has its own record, so their round trips overlap.
            records = {p: progress for p, _, partials, progress, _ in work if partials}
            answers = await asyncio.gather(
                *(self.store.save("stage1-progress", p, r["offset"], r) for p, r in records.items())
            )
            stored = dict(zip(records, answers, strict=True))
            for i, (partition, state, partials, progress, _) in enumerate(work):
                if partials and not stored[partition]:
                    # Refused (too large): hold the partials, and so the snapshot, until a
                    # progress record that lists their boundaries is stored.
                    # Its watermark must not reach stage 2 before them either.
                    stage1.requeue(partition, partials)
                    work[i] = (partition, state, [], progress, None)
                    beating.remove(partition)
                    self.metrics.internal_errors.labels("state").inc()
                    log.error("stage 1 partition %d: progress record refused", partition)
            sends = [
                (deployment.encode(), value, None)
                for _, _, partials, _, _ in work
                for deployment, value in partials
            ]
            await send_all_reliably(self.metrics, self.topics.partials, sends)
            # The heartbeat follows the acknowledged partials on every channel: stage 2 never
            # sees a watermark before the data it covers.
            await self._beat(stage1.heartbeat(beating, caught_up), n_channels)
            for partition, state, _, _, snapshot in work:
                if snapshot is None:
                    continue
                # A snapshot the broker refused covers nothing: its messages stay uncommitted.
                # It is tried again after the interval, not at every flush in others' slots.
                if await self.store.save("stage1", partition, snapshot["offset"], snapshot):
                    stage1.snapshot_stored(partition, snapshot["offset"])
                    state.held = _release(state.held, snapshot["offset"])
                state.snapshot_at = now
            # The pending gauge sums every partition here, also after one partition's flush.
            self._gauges(sorted(self.stage1))

    async def _beat(self, heartbeat: dict[str, Any], n_channels: int) -> None:
        """Send ``heartbeat`` to every partials channel (stage 2 reads watermarks per channel)."""
        value = dumps(heartbeat)
        beats = [(None, value, channel) for channel in range(n_channels)]
        await send_all_reliably(self.metrics, self.topics.partials, beats)

    async def _dead_letters(
        self, letters: list[tuple[int, Rejected]], topic: str, partition: int
    ) -> None:
        """Send each rejection, with the offset of its message, to the dead-letter topic."""
        for offset, rejected in letters:
            self.metrics.decode_failures.labels(rejected.reason).inc()
            record = dead_letter(rejected, topic, partition, offset, time.time())
            await send_reliably(
                self.metrics, self.topics.deadletters, record, key=rejected.reason.encode()
            )

    def _gauges(self, owned: list[int]) -> None:
        stage1 = self.engine.stage1
        self.metrics.pending.set(sum(stage1.pending(p) for p in owned))
        for partition in owned:
            watermark = stage1.watermark(partition)
            if math.isfinite(watermark):
                self.metrics.watermark.labels(str(partition)).set(watermark)

    def record_lag(self, partition: int, highwater: int | None) -> bool:
        """Export how far the worker is behind the end of a predictions partition.

        Returns False if the partition now ends before what the worker already read: the log
        was lost (the embedded broker restarted, or an unclean leader election truncated it).
        """
        state = self.stage1.get(partition)
        if highwater is not None and state is not None:
            if highwater < state.last_offset + 1:
                return False
            state.highwater = highwater
            lag = max(0, highwater - max(state.last_offset + 1, state.resume))
            self.metrics.consumer_lag.labels(str(partition)).set(lag)
            # Latched: readiness waits for the backlog found at the restore, not for lag 0.
            state.caught_up_once = state.caught_up_once or lag == 0
        return True

    async def forget_everything(self, reason: str) -> None:
        """Start over after the broker lost its logs: every stage's state refers to them.

        Offsets restart at zero on a wiped log, so offset-stamped state would take new messages
        for ones already applied. The state topic went with the logs, so a fresh start is the
        only state consistent with the broker; windows in flight are lost, and that is said.
        """
        await self.stop_recovery()  # it would install state read before the reset
        async with self.lock1, self.lock2, self.lock3, self.lock_leakage:
            log.error("broker lost its logs (%s): all stage state is reset", reason)
            self.metrics.internal_errors.labels("log_lost").inc()
            for partition in list(self.stage1):
                self.engine.stage1.drop(partition)
            for channel in list(self.stage2):
                self.engine.stage2.drop(channel)
            for deployments in self.stage3_deployments.values():
                self.engine.decider.drop(deployments)
            self.stage1.clear()
            self.stage2.clear()
            self.stage3.clear()
            self.stage3_deployments.clear()
            self.control_offsets.clear()
            for partition in list(self.leakage):
                self.engine.leakage.drop(partition)
            self.leakage.clear()
        # Idle partitions would otherwise wait for a message to be restored (and stay not ready).
        if self.assignment is not None:
            self._start_recovery(self.assignment)

    def caught_up(self, partition: int) -> bool:
        """Whether the worker has read everything the partition held at its last fetch."""
        state = self.stage1.get(partition)
        if state is None or state.highwater is None:
            return False  # not known yet: do not let stage 2 call it idle
        return max(state.last_offset + 1, state.resume) >= state.highwater

    # -- training examples (leakage guard) ------------------------------------------------------

    async def _restore_leakage_locked(self, wanted: Iterable[int]) -> None:
        partitions = self._to_restore("training_examples", wanted, self.leakage)
        if not partitions:
            return
        keys = [f"leakage/{p}" for p in partitions]
        found = await self.store.load(keys, self._inputs("training_examples", keys))
        for p in partitions:
            snapshot = found.get(f"leakage/{p}")
            resume = self.engine.leakage.restore(p, snapshot["state"] if snapshot else None)
            if snapshot:
                self.metrics.restores.labels("leakage").inc()
                log.warning("leakage partition %d restored; resuming at offset %d", p, resume)
            self.leakage[p] = _Input(resume=resume, snapshot_at=time.monotonic())

    async def on_training_example(self, event: Any) -> None:
        """One message of the training examples topic (keyed by pipeline).

        Counts are exact: the guard's state for the partition is snapshotted with the offset it
        includes, and a message is acknowledged only once such a snapshot is stored. A block
        is published before the snapshot that records it; a crash in between re-makes the same
        decision with the same command id.
        """
        message = event.message
        partition, offset = message.partition, message.offset
        state = await self._restored("leakage", partition)
        if offset < state.resume:
            event.ack()
            return
        async with self.lock_leakage:
            decoded = decode_message(event.value)
            stray = len(decoded.predictions) + len(decoded.outcomes)
            if stray:
                decoded.rejected.append(
                    Rejected(
                        "wrong_topic",
                        f"{stray} predictions or outcomes on the training examples topic "
                        "(they belong on the predictions topic); not counted",
                        event.value,
                    )
                )
            letters = [(offset, rejected) for rejected in decoded.rejected]
            await self._dead_letters(letters, message.topic, partition)
            report = self.engine.leakage.process(partition, offset, decoded.training)
            self.metrics.events.labels("training_example").inc(report.examples)
            self.metrics.leakage_violations.inc(report.violations)
            for command, alert in report.commands:
                await self._publish(command, alert)
            state.held.append(event)
            state.last_offset, state.last_message = offset, message
            state.dirty = True

    async def snapshot_leakage(self) -> None:
        """Store the leakage state of every training partition that changed."""
        async with self.lock_leakage:
            for partition, state in list(self.leakage.items()):  # restores may add some
                if not state.dirty:
                    continue
                offset = state.last_offset
                snapshot, stamp = self.engine.leakage.snapshot(partition), state.last_stamp()
                if await self.store.save("leakage", partition, offset, snapshot, stamp):
                    state.held = _release(state.held, offset)
                    state.dirty = False

    async def _publish(
        self, command: Command, alert: Alert | None, closed_at: float | None = None
    ) -> None:
        """A command on the control topic, then its alert (both acknowledged by the broker).

        ``closed_at`` is the wall-clock close of the window whose verdict caused the command.
        """
        key = command.deployment.encode()
        now = time.time()
        await send_reliably(
            self.metrics,
            self.topics.control,
            self.publisher.command_bytes(command, now),
            key=key,
            wait=True,
        )
        self.metrics.commands.labels(command.action, command.guard).inc()
        if closed_at is not None:
            # Clamped: stage 2 may have run on a worker whose clock is ahead of this one.
            self.metrics.close_to_command.observe(max(0.0, time.time() - closed_at))
        if alert is None:  # a notice (``schemas``): nothing for on-call
            return
        await send_reliably(
            self.metrics,
            self.topics.alerts,
            self.publisher.alert_bytes(alert, now),
            key=key,
            wait=True,
        )
        log.warning("command %s %s: %s", command.action, command.command_id, alert.summary)

    # -- stage 2 -------------------------------------------------------------------------------

    async def _restore2_locked(self, wanted: Iterable[int]) -> None:
        channels = self._to_restore("partials", wanted, self.stage2)
        if not channels:
            return
        keys = [f"stage2/{c}" for c in channels]
        found = await self.store.load(keys, self._inputs("partials", keys))
        for c in channels:
            snapshot = found.get(f"stage2/{c}")
            resume = 0
            if snapshot:
                self.engine.stage2.restore(c, snapshot["state"])
                resume = int(snapshot["offset"]) + 1
                self.metrics.restores.labels("stage2").inc()
                log.warning("stage 2 channel %d restored; resuming at offset %d", c, resume)
            self.stage2[c] = _Input(resume=resume, snapshot_at=time.monotonic())

    async def on_partial(self, event: Any) -> None:
        """One message of the partials topic (a partial or a heartbeat)."""
        channel, offset = event.message.partition, event.message.offset
        state = await self._restored("stage2", channel)
        if offset < state.resume:
            event.ack()
            return
        async with self.lock2:
            now = time.time()
            try:
                report = self.engine.stage2.apply(
                    orjson.loads(event.value), now=now, channel=channel
                )
            except (PartialError, orjson.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
                self.metrics.internal_errors.labels("stage2").inc()
                log.error("partial dropped: %s", exc)
            else:
                if message_kind := (
                    "applied" if report.applied else "duplicate" if report.duplicates else ""
                ):
                    self.metrics.partials.labels(message_kind).inc()
                self.metrics.late.labels("merge").inc(report.late_at_merge)
                self.metrics.capped.inc(report.capped_slices)
            await self._publish_verdicts(now)
            state.held.append(event)
            state.last_offset, state.last_message = offset, event.message
            state.dirty = True

    async def close_idle(self) -> None:
        """Close windows whose sources went idle, without a partial arriving."""
        async with self.lock2:
            await self._publish_verdicts(time.time())

    async def _publish_verdicts(self, now: float) -> None:
        stage2 = self.engine.stage2
        closed_at = time.time()  # windows close as advance() starts; the guards run after
        batch: list[tuple[bytes | None, bytes, int | None]] = []
        for verdict in stage2.advance(now=now):
            self.metrics.verdicts.labels(verdict.guard).inc()
            message = verdict.to_dict()
            self.metrics.slices.observe(message)
            batch.append((verdict.deployment.encode(), dumps(message), None))
        # One round trip for a window close's verdicts, not one per verdict.
        await send_all_reliably(self.metrics, _Stamped(self.topics.verdicts, closed_at), batch)
        if batch:
            latency = time.time() - closed_at
            for _ in batch:
                self.metrics.close_to_verdict.observe(latency)
        elif time.monotonic() - self._lag_at < 1.0:
            # Partials arrive by the hundred per second at 20 deployments; a lag gauge per
            # deployment at each cost stage 2 ~7 % of its time. Closes and a second's age
            # update them (scrapes are seconds apart).
            return
        self._lag_at = time.monotonic()
        high = max(stage2.source_watermarks(), default=-math.inf)
        for deployment in stage2.deployments():
            end = stage2.last_closed_end(deployment)
            if end is not None and math.isfinite(high):
                self.metrics.window_lag.labels(deployment).set(max(0.0, high - end))

    async def snapshot_stage2(self) -> None:
        """Store the state of every channel that changed (verdicts are already delivered)."""
        async with self.lock2:
            # A list: a restore can add a channel while a save below awaits the broker.
            for channel, state in list(self.stage2.items()):
                if not state.dirty:
                    continue
                # Nothing read since the restore: it covers what the restored snapshot did.
                offset = max(state.last_offset, state.resume - 1)
                stamp = state.last_stamp() if offset == state.last_offset else None
                snapshot = self.engine.stage2.snapshot(channel)
                if await self.store.save("stage2", channel, offset, snapshot, stamp):
                    state.held = _release(state.held, offset)
                    state.dirty = False

    # -- stage 3 -------------------------------------------------------------------------------

    async def _restore3_locked(self, wanted: Iterable[int]) -> None:
        partitions = self._to_restore("verdicts", wanted, self.stage3)
        if not partitions:
            return
        keys = [f"stage3/{p}" for p in partitions]
        found = await self.store.load(keys, self._inputs("verdicts", keys))
        for p in partitions:
            snapshot = found.get(f"stage3/{p}")
            state = self.stage3[p] = _Input(resume=0)
            self.control_offsets[p] = -1
            if snapshot:
                saved = snapshot["state"]
                self.engine.decider.load(saved["decider"])
                self.stage3_deployments[p] = set(saved["deployments"])
                state.resume = int(saved["verdicts_offset"]) + 1
                self.control_offsets[p] = int(saved["control_offset"])
                self.metrics.restores.labels("stage3").inc()

    async def on_decision_input(self, event: Any, control_topic: str) -> None:
        """A verdict, or a command on the control topic (approvals resume a pause)."""
        message = event.message
        partition, offset = message.partition, message.offset
        state = await self._restored("stage3", partition)
        is_control = message.topic == control_topic
        done = self.control_offsets[partition] if is_control else state.resume - 1
        if offset <= done:
            event.ack()
            return
        async with self.lock3:
            try:
                payload = orjson.loads(event.value)
            except orjson.JSONDecodeError:
                self.metrics.internal_errors.labels("stage3").inc()
                payload = None
            if is_control:
                if isinstance(payload, dict):
                    self._apply_control(payload)
                self.control_offsets[partition] = offset
            elif isinstance(payload, dict):
                self.stage3_deployments[partition].add(str(payload.get("deployment")))
                decisions = self.engine.decider.decide(payload)
                # Stage 2 stamps a verdict with its window's close time (see _Stamped).
                closed_at = message.timestamp if message.timestamp else None
                for command, alert in decisions.commands:
                    await self._publish(command, alert, closed_at)
                for notice in decisions.notices:  # an alert with no command (shadow health)
                    await send_reliably(
                        self.metrics,
                        self.topics.alerts,
                        self.publisher.alert_bytes(notice, time.time()),
                        key=notice.deployment.encode(),
                        wait=True,
                    )
                    log.warning("notice %s: %s", notice.command_id, notice.summary)
                state.last_offset, state.last_message = offset, message
            state.held.append(event)
            state.dirty = True

    def _apply_control(self, payload: dict[str, Any]) -> None:
        """An approval on the control topic, acted on only if its signature holds."""
        if payload.get("action") != "resume":
            return  # the worker's own commands and rollbacks change nothing here
        refused = self.publisher.check_control(payload, time.time())
        if refused is not None:
            self.metrics.control_rejected.labels(refused).inc()
            log.error("ignored an approval (%s): %s", refused, payload.get("command_id"))
        elif self.engine.decider.on_control(payload):
            log.warning("approval applied: %s", payload.get("command_id"))

    async def snapshot_stage3(self) -> None:
        """Store the decider's state per verdicts partition that changed."""
        async with self.lock3:
            for partition, state in list(self.stage3.items()):  # restores may add some
                if not state.dirty:
                    continue
                deployments = self.stage3_deployments[partition]
                verdicts = max(state.last_offset, state.resume - 1)
                control = self.control_offsets[partition]
                saved = {
                    "decider": self.engine.decider.snapshot(deployments),
                    "deployments": sorted(deployments),
                    "verdicts_offset": verdicts,
                    "control_offset": control,
                }
                stamp = state.last_stamp() if verdicts == state.last_offset else None
                if not await self.store.save("stage3", partition, verdicts, saved, stamp):
                    continue  # refused: what it would cover stays uncommitted, and dirty
                # Verdict and control messages share partition numbers but not offsets.
                keep = []
                for event in state.held:
                    upto = (
                        control if event.message.topic == self.specs["control"].name else verdicts
                    )
                    if event.message.offset <= upto:
                        event.ack()
                    else:
                        keep.append(event)
                state.held = keep
                state.dirty = False

    # -- rebalancing and health ------------------------------------------------------------------

    async def on_revoked(self, revoked: set[Any]) -> None:
        """Forget revoked partitions once any flush or snapshot in progress is done.

        Waiting for the locks matters: the partition's next owner reads the progress record,
        so the last one this worker writes must be stored before it lets go.
        """
        self.assignment = None
        await self.stop_recovery()
        names = {role: spec.name for role, spec in self.specs.items()}
        async with self.lock1, self.lock2, self.lock3, self.lock_leakage:
            for tp in revoked:
                if tp.topic == names["predictions"]:
                    self.engine.stage1.drop(tp.partition)
                    self.stage1.pop(tp.partition, None)
                elif tp.topic == names["partials"]:
                    self.engine.stage2.drop(tp.partition)
                    self.stage2.pop(tp.partition, None)
                elif tp.topic == names["training_examples"]:
                    self.engine.leakage.drop(tp.partition)
                    self.leakage.pop(tp.partition, None)
                elif tp.topic == names["verdicts"]:
                    self.engine.decider.drop(self.stage3_deployments.pop(tp.partition, set()))
                    self.stage3.pop(tp.partition, None)
                    self.control_offsets.pop(tp.partition, None)

    def on_assigned(self, assigned: set[Any]) -> None:
        """Partitions were assigned: restore their state now, in the background.

        Restoring here rather than on each partition's first message lets ``/ready`` say when
        the worker has recovered, idle partitions included. The rebalance itself must not wait
        for it (reading snapshots retries while the broker is away).
        """
        self.assignment = {(tp.topic, tp.partition) for tp in assigned}
        self._start_recovery(self.assignment)

    def _start_recovery(self, assignment: set[tuple[str, int]]) -> None:
        if self._recovery is not None:
            self._recovery.cancel()
        self._recovery = asyncio.create_task(self._recover(assignment))

    async def stop_recovery(self) -> None:
        """Cancel a restore in progress and wait until it has let go of its locks."""
        task, self._recovery = self._recovery, None
        if task is not None and not task.done():
            task.cancel()
            await asyncio.wait([task])  # wait() does not re-raise the task's cancellation

    async def _recover(self, assignment: set[tuple[str, int]]) -> None:
        try:
            if self.rewind is not None:
                await self.rewind(assignment)
            for role, stage, _, restore in self._stages():
                wanted = [p for topic, p in assignment if topic == self.specs[role].name]
                if wanted:
                    async with self.restoring[stage]:
                        await restore(wanted)
        except Exception as exc:  # the agents retry on their first message; /health says so
            self.agent_crashed("recovery", exc)

    def _recovery_progress(self) -> dict[str, dict[str, int]]:
        """Per stage: partitions assigned, restored, and (stage 1) read to their end once."""
        assignment = self.assignment or set()
        progress = {}
        for role, stage, loaded, _ in self._stages():
            mine = [p for topic, p in assignment if topic == self.specs[role].name]
            counts = {"assigned": len(mine), "restored": sum(p in loaded for p in mine)}
            if stage == "stage1":
                counts["caught_up"] = sum(p in loaded and loaded[p].caught_up_once for p in mine)
            progress[stage] = counts
        return progress

    def readiness(self, health: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        """HTTP status and document of /ready, given the /health document
        (:func:`~streamguard.faust_app.health.readiness_document`)."""
        return readiness_document(self._recovery_progress(), health, self.assignment is not None)

    def agent_crashed(self, agent: str, exc: BaseException) -> None:
        """An agent raised: Faust restarts it, but the worker is unhealthy until it holds."""
        self.metrics.internal_errors.labels(f"{agent}_crash").inc()
        self.crashed[agent] = (time.monotonic(), f"{type(exc).__name__}: {exc}"[:300])
        log.exception("agent %s crashed", agent, exc_info=exc)

    def health(
        self, owned: list[int], topic_problems: list[str] | None = None
    ) -> tuple[int, dict[str, Any]]:
        """HTTP status and document of /health
        (:func:`~streamguard.faust_app.health.health_document`)."""
        now = time.monotonic()
        return health_document(
            broker_up=self.metrics.broker_ok._value.get() != 0,
            topic_problems=topic_problems or [],
            crashed={a: why for a, (at, why) in self.crashed.items() if now - at < 60},
            dropping=sorted(b for b, at in self.evicted_recently.items() if now - at < 60),
            extra={
                "sources": owned,
                "pending_halves": sum(self.engine.stage1.pending(p) for p in owned),
                "signing": self.publisher.describe(),
                "deployments": self.engine.stage2.deployments(),
            },
        )
