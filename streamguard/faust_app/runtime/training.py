"""The leakage guard in the worker: training examples in, commands out."""

import time
from collections.abc import Iterable
from typing import Any

from streamguard.contracts import Rejected, decode_message
from streamguard.faust_app.runtime.base import RuntimeBase, _Input, _release, log

__all__ = ["LeakageHandlers"]


class LeakageHandlers(RuntimeBase):
    """Training examples: judge, publish, snapshot."""

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
                offset, stamp = state.covered()
                snapshot = self.engine.leakage.snapshot(partition)
                if await self.store.save("leakage", partition, offset, snapshot, stamp):
                    state.held = _release(state.held, offset)
                    state.dirty = False
