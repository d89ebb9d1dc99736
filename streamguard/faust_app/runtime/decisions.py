"""Stage 3 in the worker: verdicts and the control topic in, signed commands and alerts out."""

import time
from collections.abc import Iterable
from typing import Any

import orjson

from streamguard.client.validate import validate_any_command
from streamguard.contracts import DecodeError
from streamguard.decisions import VerdictError, check_verdict
from streamguard.faust_app.outbox import send_reliably
from streamguard.faust_app.runtime.base import RuntimeBase, _Input, log

__all__ = ["Stage3Handlers"]


class Stage3Handlers(RuntimeBase):
    """Verdicts and control messages: decide, publish, snapshot."""

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
            if is_control:
                try:
                    control = orjson.loads(event.value)
                except orjson.JSONDecodeError:
                    # Serving's topic too: counted, not dead-lettered (not ours to judge).
                    self.metrics.internal_errors.labels("stage3").inc()
                    control = None
                if isinstance(control, dict):
                    self._apply_control(control)
                self.control_offsets[partition] = offset
            elif (payload := await self._verdict(event)) is not None:
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

    async def _verdict(self, event: Any) -> dict[str, Any] | None:
        """The verdict ``event`` holds, checked; None (dead-lettered) if there is none."""
        try:
            verdict = orjson.loads(event.value)
            check_verdict(verdict)
        except (orjson.JSONDecodeError, VerdictError) as exc:
            detail = f"not JSON: {exc}" if isinstance(exc, orjson.JSONDecodeError) else str(exc)
            await self._refuse("stage3", "bad_verdict", detail, event)
            return None
        assert isinstance(verdict, dict)  # check_verdict accepted it, so it is an object
        return verdict

    def _apply_control(self, payload: dict[str, Any]) -> None:
        """An approval on the control topic, acted on only if its signature holds."""
        if payload.get("action") != "resume":
            return  # the worker's own commands and rollbacks change nothing here
        try:
            validate_any_command(payload)  # what on_control reads, signed (v2) or not
        except DecodeError as exc:
            self.metrics.control_rejected.labels("malformed").inc()
            log.error("ignored a malformed approval (%s): %s", exc.reason, exc.detail)
            return
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
                verdicts, stamp = state.covered()
                control = self.control_offsets[partition]
                saved = {
                    "decider": self.engine.decider.snapshot(deployments),
                    "deployments": sorted(deployments),
                    "verdicts_offset": verdicts,
                    "control_offset": control,
                }
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
