"""The leakage guard in the worker: training examples in, commands out."""

import time
from collections.abc import Iterable
from typing import Any

from streamguard.contracts import Rejected, TrainingBatch, decode_message
from streamguard.core.exceptions import AccountingError
from streamguard.core.quarantine import Handling, handling
from streamguard.faust_app.runtime.base import RuntimeBase, _Input, _release, _stamp, log

__all__ = ["LeakageHandlers"]

#: State key of what the leakage guard was counting at each crash (core.quarantine).
SUSPECTS = "leakage/{}/suspects"


def _taken(state: _Input, event: Any) -> None:
    """The partition's state now covers ``event``: held until a snapshot says so."""
    state.held.append(event)
    state.last_offset, state.last_message = event.message.offset, event.message
    state.dirty = True


class LeakageHandlers(RuntimeBase):
    """Training examples: judge, publish, snapshot."""

    async def _restore_leakage_locked(self, wanted: Iterable[int]) -> None:
        partitions = self._to_restore("training_examples", wanted, self.leakage)
        if not partitions:
            return
        keys = [kind.format(p) for p in partitions for kind in ("leakage/{}", SUSPECTS)]
        found = await self.store.load(keys, self._inputs("training_examples", keys))
        for p in partitions:
            snapshot = found.get(f"leakage/{p}")
            resume = self.engine.leakage.restore(p, snapshot["state"] if snapshot else None)
            if snapshot:
                self.metrics.restores.labels("leakage").inc()
                log.warning("leakage partition %d restored; resuming at offset %d", p, resume)
            state = _Input(resume=resume, snapshot_at=time.monotonic())
            state.suspects = self._suspects("leakage", p, found.get(SUSPECTS.format(p)), resume)
            self.leakage[p] = state

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
            if state.suspects and await self._left_out(state, event):
                return
            try:
                decoded = decode_message(event.value)
                report = self.engine.leakage.process(partition, offset, decoded.training)
            except Exception as exc:  # a bug this message triggers: recorded (core.quarantine)
                failed = AccountingError(
                    partition, offset, offset, exc, event.value, source="training examples"
                )
                self._record_crash(
                    "leakage", SUSPECTS.format(partition), state, failed, _stamp(message)
                )
                raise failed from exc
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
            self.metrics.events.labels("training_example").inc(report.examples)
            self.metrics.leakage_violations.inc(report.violations)
            for command, alert in report.commands:
                await self._publish(command, alert)
            _taken(state, event)

    async def _left_out(self, state: _Input, event: Any) -> bool:
        """Leave out a message that stopped ``quarantine_after`` workers (core.quarantine):
        dead-lettered, its offset covered; True when it was, False to account it."""
        message = event.message
        after = self.settings.quarantine_after
        how = handling(state.suspects, message.offset, lambda: _stamp(message), after)
        if how is not Handling.SKIP:
            return False
        letter = self._quarantine_letter("leakage", state, message, event.value)
        # Nothing of it was counted (the guard raised before it published): cover the offset.
        self.engine.leakage.process(message.partition, message.offset, TrainingBatch.empty())
        await self._dead_letters([(message.offset, letter)], message.topic, message.partition)
        _taken(state, event)
        return True

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
