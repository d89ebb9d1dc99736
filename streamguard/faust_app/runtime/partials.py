"""Stage 2 in the worker: partials in, verdicts out as sources' watermarks close windows."""

import asyncio
import math
import time
from collections.abc import Iterable
from typing import Any

import orjson

from streamguard.core import PartialError
from streamguard.core.guard_failure import GuardFailure
from streamguard.core.partials import dumps
from streamguard.faust_app.halt import stops_worker
from streamguard.faust_app.outbox import send_all_reliably
from streamguard.faust_app.runtime.base import RuntimeBase, _Input, _release, _Stamped, log

__all__ = ["HEARTBEATS_SNAPSHOT_S", "Stage2Handlers"]

#: A channel that only heartbeats changed since its last snapshot (no partial applied, no
#: window closed) is saved at most this often, not at every 2 s round: heartbeats follow every
#: flush, data or not, and a restore replays them to the same state anyway.
HEARTBEATS_SNAPSHOT_S = 30.0


class Stage2Handlers(RuntimeBase):
    """Partials: merge, close windows, publish verdicts, snapshot."""

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
            self.stage2[c] = _Input(
                resume=resume,
                snapshot_at=time.monotonic(),
                saved_revision=self.engine.stage2.revision(c),
            )

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
                # Nothing of it was merged (Stage2.apply checks the whole partial first).
                await self._refuse("stage2", "bad_partial", f"{type(exc).__name__}: {exc}", event)
            else:
                if message_kind := (
                    "applied" if report.applied else "duplicate" if report.duplicates else ""
                ):
                    self.metrics.partials.labels(message_kind).inc()
                self.metrics.late.labels("merge").inc(report.late_at_merge)
                self.metrics.capped.inc(report.capped_slices)
            await self._publish_verdicts(now)
            state.held.append(event)
            # What changed is told by Stage2.revision (snapshot_stage2), not by a flag here:
            # a close can also come from close_idle, or from another channel's message.
            state.last_offset, state.last_message = offset, event.message
        if self.pacer.paused:
            # Stage 2 moved on: a partition paused for running ahead of it resumes now, not at
            # the next flush tick (a backlog read with pauses idled until then).
            await self.repace(on_change=True)

    async def close_idle(self) -> None:
        """Close windows whose sources went idle, without a partial arriving."""
        async with self.lock2:
            await self._publish_verdicts(time.time())

    async def _publish_verdicts(self, now: float) -> None:
        stage2 = self.engine.stage2
        closed_at = time.time()  # windows close as advance() starts; the guards run after
        batch: list[tuple[bytes | None, bytes, int | None]] = []
        verdicts = stage2.advance(now=now)
        for failure in stage2.take_failures():
            self._guard_failed(failure)
        for verdict in verdicts:
            self.metrics.verdicts.labels(verdict.guard).inc()
            message = verdict.to_dict()
            self.metrics.slices.observe(message)
            batch.append((verdict.deployment.encode(), dumps(message), None))
        if batch:
            # Sent behind the previous close's verdicts, without waiting here for the broker:
            # a close is judged channel by channel, and each channel's judging waited for the
            # round trip of the one before (benchmarks/HISTORY.md). Snapshots wait for it.
            self._verdicts_out = asyncio.create_task(
                self._send_verdicts(self._verdicts_out, batch, closed_at)
            )
        if not batch and time.monotonic() - self._lag_at < 1.0:
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
            windows, held = stage2.open_windows(deployment)
            self.metrics.open_windows.labels(deployment).set(windows)
            self.metrics.open_window_bytes.labels(deployment).set(held)

    def _guard_failed(self, failure: GuardFailure) -> None:
        """Count and log a guard that raised; its traceback once per deployment and error."""
        self.metrics.internal_errors.labels(f"guard_{failure.guard}").inc()
        self.evicted_recently["guard"] = time.monotonic()  # /health: degraded for a minute
        self.guard_failures.append(
            {
                "deployment": failure.deployment,
                "guard": failure.guard,
                "window_end": failure.window_end,
                "error": failure.error,
                "where": failure.where,
            }
        )
        key = (failure.deployment, failure.guard, failure.signature)
        if key in self._failures_logged:
            log.error(
                "guard %s failed again on %s (%s)", failure.guard, failure.deployment, failure.error
            )
            return
        self._failures_logged.add(key)
        log.error(
            "guard %s failed on %s at the window ending %.0f; its verdict is an error verdict and "
            "the other guards judge on (a bug: please report it)\n%s",
            failure.guard,
            failure.deployment,
            failure.window_end,
            failure.traceback.rstrip(),
        )

    async def _send_verdicts(
        self,
        before: "asyncio.Task[None] | None",
        batch: list[tuple[bytes | None, bytes, int | None]],
        closed_at: float,
    ) -> None:
        """One close's verdicts, once the broker has the previous close's (order is kept).

        Transient broker errors are retried (:func:`send_all_reliably`); anything else stops
        the worker here, once, as an exception in stage 2 itself does
        (:mod:`streamguard.faust_app.halt`): stage 2 has closed these windows, so going on
        would let a snapshot store them without their verdicts.
        """
        with stops_worker("stage2_verdicts", self.agent_crashed, self.exit_):
            if before is not None:
                await before
            # One round trip for a window close's verdicts, not one per verdict.
            await send_all_reliably(self.metrics, _Stamped(self.topics.verdicts, closed_at), batch)
        latency = time.time() - closed_at
        for _ in batch:
            self.metrics.close_to_verdict.observe(latency)

    async def verdicts_delivered(self) -> None:
        """Wait until the broker has every verdict published so far."""
        if self._verdicts_out is not None:
            await self._verdicts_out

    async def snapshot_stage2(self, force: bool = False) -> None:
        """Store the state of every channel that changed (verdicts are already delivered).

        A channel changed (:meth:`~streamguard.core.Stage2.revision`: a partial applied, a
        window closed, by a message or not) is stored at the next round; one that only read
        heartbeats since, every :data:`HEARTBEATS_SNAPSHOT_S` (``force``: now, as at shutdown).
        """
        stage2 = self.engine.stage2
        # A list: a restore can add a channel while a save below awaits the broker.
        for channel, state in list(self.stage2.items()):
            # One channel at a time: all of them under one hold of the lock (up to ~0.1 s each
            # at 20 deployments, late in a horizon) kept every window closing meanwhile
            # waiting for the whole round (benchmarks/HISTORY.md).
            async with self.lock2:
                if self.stage2.get(channel) is not state:
                    continue  # revoked (or reset) while an earlier channel saved
                revision = stage2.revision(channel)
                changed = state.dirty or revision != state.saved_revision
                due = force or time.monotonic() - state.snapshot_at >= HEARTBEATS_SNAPSHOT_S
                if not (changed or (state.held and due)):
                    continue  # clean, or heartbeats alone since the last save (a replay redoes)
                await self.verdicts_delivered()  # of every partial this snapshot covers
                offset, stamp = state.covered()
                snapshot = stage2.snapshot(channel)
                if await self.store.save("stage2", channel, offset, snapshot, stamp):
                    state.held = _release(state.held, offset)
                    state.dirty = False
                    state.saved_revision = revision
                    state.snapshot_at = time.monotonic()
