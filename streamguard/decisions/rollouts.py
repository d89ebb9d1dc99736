"""The state of each rollout as the control topic tells it, for ``streamguard status``.

Pure: it folds control messages (commands from the worker, approvals and rejections from
people) in topic order into one line per (deployment, model version).

Examples
--------
>>> view = RolloutView()
>>> view.apply({"action": "pause", "deployment": "d", "model_version": "v2", "guard": "shadow",
...             "slice": {"tier": "free"}, "command_id": "c1", "ts": 10.0, "evidence": {}})
>>> [(r.deployment, r.model_version, r.state) for r in view.pending()]
[('d', 'v2', 'paused')]
>>> view.apply({"action": "resume", "deployment": "d", "model_version": "v2", "guard": "manual",
...             "slice": None, "command_id": "c2", "ts": 20.0,
...             "evidence": {"approved_by": "ana", "reason": "known seasonal shift"}})
>>> view.pending(), view.rollouts()[0].state, view.rollouts()[0].by
([], 'resumed', 'ana')
"""

from dataclasses import dataclass
from typing import Any

from streamguard.contracts import slice_label

__all__ = ["Rollout", "RolloutView"]

_STATE = {"pause": "paused", "rollback": "rolled back", "resume": "resumed"}


@dataclass
class Rollout:
    """The last word on one model version of a deployment."""

    deployment: str
    model_version: str
    state: str
    guard: str
    slice: str
    command_id: str
    ts: float
    by: str = ""
    reason: str = ""


class RolloutView:
    """Rollouts by (deployment, model version), from control messages in topic order."""

    def __init__(self) -> None:
        self._rollouts: dict[tuple[str, str], Rollout] = {}

    def apply(self, message: dict[str, Any]) -> None:
        """Fold one control message in (anything that is not a command is ignored)."""
        action = message.get("action")
        deployment, version = message.get("deployment"), message.get("model_version")
        if action not in _STATE or not isinstance(deployment, str) or not isinstance(version, str):
            return
        current = self._rollouts.get((deployment, version))
        if current is not None and current.state == "rolled back" and action == "pause":
            return  # a rolled-back version stays rolled back; a late pause changes nothing
        raw = message.get("evidence")
        evidence: dict[str, Any] = raw if isinstance(raw, dict) else {}
        self._rollouts[(deployment, version)] = Rollout(
            deployment=deployment,
            model_version=version,
            state=_STATE[str(action)],
            guard=str(message.get("guard", "")),
            slice=slice_label(message.get("slice") or None),
            command_id=str(message.get("command_id", "")),
            ts=float(message.get("ts", 0.0)),
            by=str(evidence.get("approved_by") or evidence.get("rejected_by") or ""),
            reason=str(evidence.get("reason", "")),
        )

    def rollouts(self) -> list[Rollout]:
        """Every rollout seen, by deployment and version."""
        return [self._rollouts[k] for k in sorted(self._rollouts)]

    def pending(self) -> list[Rollout]:
        """Paused rollouts waiting for ``streamguard approve`` or ``reject``."""
        return [r for r in self.rollouts() if r.state == "paused"]

    def paused_version(self, deployment: str) -> str | None:
        """The one paused version of ``deployment`` (None if none; the latest if several)."""
        paused = [r for r in self.pending() if r.deployment == deployment]
        return max(paused, key=lambda r: r.ts).model_version if paused else None
