"""Stage 1 in the worker: predictions in, partials and watermark heartbeats out.

Messages are acknowledged only once a stage-1 snapshot covers them; after every flush a
progress record says which offsets' measurements were sent (rule 2 of
:mod:`streamguard.faust_app.runtime`).
"""

import asyncio
import math
import time
from collections.abc import Callable, Iterable
from typing import Any

from streamguard.contracts import Rejected, decode_message, parse_message
from streamguard.core.exceptions import AccountingError
from streamguard.core.partials import dumps
from streamguard.core.quarantine import Handling, handling, prune
from streamguard.core.stage1 import Stage1Report, Unit
from streamguard.core.stage1_watermarks import one_heartbeat
from streamguard.faust_app.outbox import send_all_reliably
from streamguard.faust_app.runtime.base import RuntimeBase, _Input, _release, _stamp, log

__all__ = ["Stage1Handlers"]


def _stamp_at(state: _Input, message: Any, offset: int, value: bytes | None) -> list[int] | None:
    """Stamp of the message at ``offset``: the one just read, or one held (payload dropped, so
    its bytes come from stage 1); None if neither holds it."""
    if message is not None and message.offset == offset:
        return _stamp(message)
    for event in reversed(state.held):
        if event.message.offset == offset:
            return _stamp(event.message, value)
    return None


#: State key of what stage 1 was accounting at each crash (core.quarantine): beside the
#: partition's snapshot, on the same state partition, so a restore reads no other one.
SUSPECTS = "stage1/{}/suspects"

#: Stage-1 snapshots taken in one flush at most (the most overdue first); the rest wait a flush.
_SNAPSHOTS_PER_FLUSH = 2


class Stage1Handlers(RuntimeBase):
    """Predictions: account, flush (on the timer or at a close), snapshot, lag."""

    async def _restore1_locked(self, wanted: Iterable[int]) -> None:
        partitions = self._to_restore("predictions", wanted, self.stage1)
        if not partitions:
            return
        kinds = ("stage1/{}", "stage1-progress/{}", SUSPECTS)
        keys = [kind.format(p) for p in partitions for kind in kinds]
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
            state = _Input(resume=resume, snapshot_at=time.monotonic())
            state.suspects = self._suspects("stage 1", p, found.get(SUSPECTS.format(p)), resume)
            self.stage1[p] = state

    def _crashed(self, partition: int, state: _Input, exc: AccountingError, message: Any) -> None:
        """Record what stage 1 was accounting when it raised (:meth:`_record_crash`).

        ``message`` is the one just read, if any; the record is stamped with the message at
        ``exc.last``.
        """
        stamp = _stamp_at(state, message, exc.last, exc.value)
        self._record_crash("stage 1", SUSPECTS.format(partition), state, exc, stamp)

    def _suspected(
        self,
        state: _Input,
        message: Any,
        value: bytes | None,
        max_ts: float,
        letters: list[tuple[int, Rejected]],
    ) -> list[Unit]:
        """Account a message of a partition with suspects: in runs, alone, or not at all."""
        partition, offset = message.partition, message.offset
        stage1 = self.engine.stage1
        after = self.settings.quarantine_after
        how = handling(state.suspects, offset, lambda: _stamp(message), after)
        if how is Handling.SKIP and not stage1.skippable(partition, offset):
            log.error(
                "stage 1 partition %d offset %d: not left out, since a flush since the last "
                "snapshot holds it (so it was accounted once); accounted alone",
                partition,
                offset,
            )
            how = Handling.ALONE
        if how is Handling.SKIP:
            units = stage1.skip(partition, offset, max_ts)
            letters.append((offset, self._quarantine_letter("stage1", state, message, value)))
            return units
        try:  # alone: decoded whole, so that no run holds it
            alone = how is Handling.ALONE
            parsed = decode_message(value, max_ts) if alone else parse_message(value, max_ts)
        except Exception as exc:
            raise AccountingError(partition, offset, offset, exc, value) from exc
        return stage1.feed(partition, offset, value, parsed, max_ts)

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
        if offset <= state.last_offset:
            # Delivered again: a pause seeks back to the last message delivered (faust_app.pacing),
            # which may still wait in a run of one-event messages that would take it twice.
            return
        self.metrics.messages.inc()
        max_ts = time.time() + self.settings.max_future_s
        value = event.value
        letters: list[tuple[int, Rejected]] = []
        try:
            if not state.suspects:
                try:
                    parsed = parse_message(value, max_ts)
                except Exception as exc:  # no state changed yet, but the message is to blame
                    raise AccountingError(partition, offset, offset, exc, value) from exc
                units = self.engine.stage1.feed(partition, offset, value, parsed, max_ts)
            else:  # a restart after stage 1 raised (core.quarantine)
                units = self._suspected(state, message, value, max_ts, letters)
        except AccountingError as exc:
            self._crashed(partition, state, exc, message)
            raise
        # The payload is parsed; keeping it until the snapshot would only cost memory (the event
        # holds its own reference). So stage 1's snapshots are not stamped: a restore checks them
        # against the log's end alone.
        message.value = None
        event.value = None
        state.held.append(event)
        state.last_offset = offset
        if units or letters:  # most one-event messages only join their partition's run
            letters = self._units(units, value) + letters
            await self._dead_letters(letters, message.topic, partition)
        stage1 = self.engine.stage1
        if (stage1.closing(partition) or stage1.ending(partition)) and self.caught_up(partition):
            # A window's close passed here: stage 2 hears of it with this partition's next
            # flush, so flush it now rather than at the timer's next tick. Or a window's end,
            # after which its data must be sent before it closes. Not while reading a
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
        """Tell stage 2 of every owned partition that passed a window's close or end since the
        last call; returns them (a partition revoked meanwhile is left to its next owner).

        A heartbeat alone tells it when the data since the last flush may still be held
        (:meth:`streamguard.core.Stage1.holdable`: all of it for windows that have not ended,
        so none for a window the watermark closes); the others are flushed together.
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
        """Send one heartbeat for the holdable ``partitions`` (holdable implies announceable);
        return the others."""
        # Under the flush lock: a flush in progress may be sending data for a window this
        # watermark closes (pending when it was cut), which must reach stage 2 first.
        async with self.lock1:
            stage1 = self.engine.stage1
            heard = [p for p in partitions if p in self.stage1 and stage1.holdable(p)]
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
            # An exception ends the worker (the app wraps this task in faust_app.halt): the
            # flush may have taken its partitions' data and not sent it.
            await self.flush_closing(owned(), n_channels)

    async def flush(self, owned: list[int], n_channels: int, force_snapshot: bool = False) -> None:
        """Send partials and heartbeats; store progress, and snapshots when due."""
        async with self.lock1:
            stage1 = self.engine.stage1
            now = time.monotonic()
            work = []
            taken: list[tuple[int, _Input, dict[str, Any]]] = []
            letters: list[tuple[int, list[tuple[int, Rejected]]]] = []
            max_ts = time.time() + self.settings.max_future_s
            # A few partitions' snapshots per flush, the most overdue first: all of them at
            # once (~36 ms each at 20 deployments) held every window closing meanwhile behind
            # one long step. A partition that cannot snapshot yet (replaying) takes no slot.
            inputs = [(p, state) for p in owned if (state := self.stage1.get(p)) is not None]
            inputs.sort(key=lambda item: item[1].snapshot_at)
            slots = _SNAPSHOTS_PER_FLUSH
            held: list[int] = []
            for partition, state in inputs:
                try:
                    letters.append((partition, self._units(stage1.cut(partition, max_ts))))
                except AccountingError as exc:  # a run of one-event messages raised
                    self._crashed(partition, state, exc, None)
                    raise
                # Or many messages waiting for one: each held event is ~0.6 KB with Faust's
                # message, so a backlog of one-event messages piled up ~80 MB in 10 s.
                due = (
                    now - state.snapshot_at >= self.settings.snapshot_interval_s
                    or len(state.held) >= self.settings.snapshot_held_messages
                )
                wanted = force_snapshot or (due and slots > 0)
                if not wanted and stage1.holdable(partition):
                    # All its new data is for windows still open: it goes in one flush after
                    # they end (or with a snapshot), and a heartbeat says the live watermark.
                    held.append(partition)
                    continue
                partials = stage1.flush(partition)
                # Taken right after the flush, before any await lets new messages in.
                progress = stage1.progress(partition)
                snapshot = None
                if wanted and stage1.settled(partition):
                    snapshot = stage1.snapshot(partition)
                    slots -= 1
                work.append((partition, state, partials, progress, snapshot))
            beating = [p for p, *_ in work]
            caught_up = {p: self.caught_up(p) for p in beating + held}
            # What the heartbeat says is taken with the partials, before any await: messages
            # read meanwhile move a replaying partition's flushed watermark to its next
            # recorded boundary (that partial waits in its outbox for the next flush), and a
            # held partition's live watermark past a close its unsent data belongs to.
            beat = stage1.heartbeat(beating, caught_up)
            announced = stage1.announce(held, caught_up)
            for partition, some in letters:
                await self._dead_letters(some, self.specs["predictions"].name, partition)
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
            beat = one_heartbeat(beat, beating, announced)
            self.metrics.held_flushes.inc(len(held))
            await self._beat(beat, n_channels)
            # The pending gauge sums every partition here, also after one partition's flush.
            self._gauges(sorted(self.stage1))
            taken = [(p, state, snapshot) for p, state, _, _, snapshot in work if snapshot]
            for _, state, _ in taken:
                # Tried again after the interval even if refused, not at every flush in others'
                # slots; set now, as another flush may run while this one stores it.
                state.snapshot_at = now
            if taken:
                # Taken before the flush lock is let go: a revocation waits for both.
                await self.snapshot_lock1.acquire()
        if not taken:
            return
        # Stored outside the flush lock: the heartbeat above is out, and a close heartbeat or
        # the next flush need not wait for these round trips (they held closes up to ~0.4 s
        # at 20 deployments; benchmarks/HISTORY.md). The boundaries they let go of are only
        # those up to each snapshot's offset, so a progress record stored meanwhile lists a
        # superset, which a restore filters.
        try:
            for partition, state, snapshot in taken:
                # A snapshot the broker refused covers nothing: its messages stay uncommitted.
                if await self.store.save("stage1", partition, snapshot["offset"], snapshot):
                    stage1.snapshot_stored(partition, snapshot["offset"])
                    state.held = _release(state.held, snapshot["offset"])
                    if state.suspects:  # those behind it are never read again
                        state.suspects = prune(state.suspects, snapshot["offset"] + 1)
        finally:
            self.snapshot_lock1.release()

    async def _beat(self, heartbeat: dict[str, Any], n_channels: int) -> None:
        """Send ``heartbeat`` to every partials channel (stage 2 reads watermarks per channel)."""
        value = dumps(heartbeat)
        beats = [(None, value, channel) for channel in range(n_channels)]
        await send_all_reliably(self.metrics, self.topics.partials, beats)

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

    def pacing(self) -> set[int]:
        """Owned predictions partitions to leave unread now (:mod:`streamguard.core.pacing`).

        Measured against the lowest of the owned partials channels' low watermarks: what
        stage 2 has heard from every source. A worker that owns no channel paces nothing;
        the workers that own them pace their own partitions.
        """
        if not (self.pacer.max_ahead_s and self.stage2):  # off, or nothing to pace against
            return self.pacer.update({}, -math.inf)
        now = time.time()
        stage1, stage2 = self.engine.stage1, self.engine.stage2
        low = min(stage2.low_watermark(now, channel) for channel in self.stage2)
        # A partition stage 2 has heard less of than it read is never paused (it may be what
        # holds the low watermark back: pausing it would stall every partition).
        watermarks = {p: stage1.watermark(p) for p in self.stage1 if not stage1.replaying(p)}
        paused = self.pacer.update(watermarks, low)
        self.metrics.paused_partitions.set(len(paused))
        return paused

    async def repace(self, *, on_change: bool = False) -> None:
        """Pause and resume partitions as :meth:`pacing` says, through the app's pauser.

        The flush timer applies the answer whole at every tick; stage 2 looks again after each
        partials message while a partition is paused, and applies only an answer that changed
        (``on_change``).
        """
        if self.pause is None:
            return
        before = self.pacer.paused
        wanted = self.pacing()
        if not on_change or wanted != before:
            self.metrics.pauses.inc(await self.pause(wanted))

    def caught_up(self, partition: int) -> bool:
        """Whether the worker has read everything the partition held at its last fetch."""
        state = self.stage1.get(partition)
        if state is None or state.highwater is None:
            return False  # not known yet: do not let stage 2 call it idle
        return max(state.last_offset + 1, state.resume) >= state.highwater
