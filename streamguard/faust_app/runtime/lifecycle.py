"""The assembled runtime: assignment, recovery, shutdown checkpoint, log loss and health.

The stages' handlers (``predictions``, ``partials``, ``decisions``, ``training``) keep the three
rules of :mod:`streamguard.faust_app.runtime`; this class decides when their state is
restored, checkpointed, forgotten or reported.
"""

import asyncio
import time
from typing import Any

from streamguard.faust_app.health import health_document, readiness_document
from streamguard.faust_app.runtime.base import Stage, log
from streamguard.faust_app.runtime.decisions import Stage3Handlers
from streamguard.faust_app.runtime.partials import Stage2Handlers
from streamguard.faust_app.runtime.predictions import Stage1Handlers
from streamguard.faust_app.runtime.training import LeakageHandlers

__all__ = ["Runtime"]


class Runtime(Stage1Handlers, Stage2Handlers, Stage3Handlers, LeakageHandlers):
    """The three stages of one worker, their snapshots, and its health."""

    def _stages(self) -> tuple[Stage, ...]:
        """(input topic role, stage, its partitions' state, its restore) for every stage."""
        return (
            ("predictions", "stage1", self.stage1, self._restore1_locked),
            ("partials", "stage2", self.stage2, self._restore2_locked),
            ("verdicts", "stage3", self.stage3, self._restore3_locked),
            ("training_examples", "leakage", self.leakage, self._restore_leakage_locked),
        )

    async def checkpoint(self, owned: list[int], n_channels: int, timeout_s: float = 10.0) -> None:
        """Flush and snapshot every stage now (graceful shutdown); bounded in time."""

        async def everything() -> None:
            await self.stop_recovery()
            await self.flush(owned, n_channels, force_snapshot=True)
            for state in self.stage2.values():
                state.dirty = True
            await self.snapshot_stage2(force=True)
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

    async def forget_everything(self, reason: str) -> None:
        """Start over after the broker lost its logs: every stage's state refers to them.

        Offsets restart at zero on a wiped log, so offset-stamped state would take new messages
        for ones already applied. The state topic went with the logs, so a fresh start is the
        only state consistent with the broker; windows in flight are lost, and that is said.
        """
        await self.stop_recovery()  # it would install state read before the reset
        async with self.lock1, self.snapshot_lock1, self.lock2, self.lock3, self.lock_leakage:
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

    # -- rebalancing and health ------------------------------------------------------------------

    async def on_revoked(self, revoked: set[Any]) -> None:
        """Forget revoked partitions once any flush or snapshot in progress is done.

        Waiting for the locks matters: the partition's next owner reads the progress record,
        so the last one this worker writes must be stored before it lets go.
        """
        self.assignment = None
        await self.stop_recovery()
        names = {role: spec.name for role, spec in self.specs.items()}
        async with self.lock1, self.snapshot_lock1, self.lock2, self.lock3, self.lock_leakage:
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
                "quarantined": list(self.quarantined),
                "guard_failures": list(self.guard_failures),
            },
        )
