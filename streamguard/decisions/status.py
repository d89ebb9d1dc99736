"""What the worker's status API answers: the latest verdicts and the rollout decisions.

Pure: it folds verdict messages and control messages into the current picture per deployment,
and gives the one-word judgement that Argo Rollouts' web metric and Flagger's webhooks gate on:

* ``rolled_back`` / ``paused``: streamguard (or a person) decided against the version;
* ``healthy``: verdicts are arriving and nothing was decided against it;
* ``pending``: no verdict for the deployment yet (Argo counts it inconclusive).

Examples
--------
>>> view = StatusView()
>>> view.judgement("d")
'pending'
>>> view.on_verdict({"kind": "verdict", "deployment": "d", "guard": "shadow",
...                  "model_version": "v2", "window_end": 100.0, "slices": [], "findings": []})
>>> view.judgement("d")
'healthy'
>>> view.on_control({"action": "pause", "deployment": "d", "model_version": "v2",
...                  "guard": "shadow", "slice": None, "command_id": "c", "ts": 100.0})
>>> view.judgement("d"), view.judgement("d", version="v3")
('paused', 'healthy')
"""

from typing import Any

from streamguard.decisions.rollouts import Rollout, RolloutView

__all__ = ["JUDGEMENTS", "StatusView"]

JUDGEMENTS = ("healthy", "paused", "rolled_back", "pending")


def _rollout(r: Rollout) -> dict[str, Any]:
    return {
        "model_version": r.model_version,
        "state": r.state,
        "guard": r.guard,
        "slice": r.slice,
        "command_id": r.command_id,
        "ts": r.ts,
        "by": r.by,
        "reason": r.reason,
    }


class StatusView:
    """Latest verdict per (deployment, guard) and rollout states from the control topic."""

    def __init__(self) -> None:
        self._verdicts: dict[tuple[str, str], dict[str, Any]] = {}
        self.rollouts = RolloutView()

    def on_verdict(self, verdict: dict[str, Any]) -> None:
        """Keep a verdict if it is the latest of its deployment and guard."""
        deployment, guard = verdict.get("deployment"), verdict.get("guard")
        if not isinstance(deployment, str) or not isinstance(guard, str):
            return
        known = self._verdicts.get((deployment, guard))
        end = verdict.get("window_end")
        if not isinstance(end, int | float):
            return
        if known is None or end >= known["window_end"]:
            self._verdicts[(deployment, guard)] = verdict

    def on_control(self, message: dict[str, Any]) -> None:
        """Fold a control message (a command or a person's decision) in."""
        self.rollouts.apply(message)

    def deployments(self) -> list[str]:
        """Deployments with a verdict or a decision."""
        names = {d for d, _ in self._verdicts} | {r.deployment for r in self.rollouts.rollouts()}
        return sorted(names)

    def judgement(self, deployment: str, version: str | None = None) -> str:
        """One of :data:`JUDGEMENTS` for the deployment (or one of its versions)."""
        states = {
            r.state
            for r in self.rollouts.rollouts()
            if r.deployment == deployment and version in (None, r.model_version)
        }
        if "rolled back" in states:
            return "rolled_back"
        if "paused" in states:
            return "paused"
        if any(d == deployment for d, _ in self._verdicts):
            return "healthy"
        return "pending"

    def deployment(self, deployment: str, version: str | None = None) -> dict[str, Any]:
        """Everything known about a deployment: judgement, decisions, latest verdicts."""
        verdicts = {
            guard: {
                "model_version": v.get("model_version"),
                "baseline_version": v.get("baseline_version"),
                "window_start": v.get("window_start"),
                "window_end": v.get("window_end"),
                "slices": v.get("slices", []),
                "findings": v.get("findings", []),
            }
            for (d, guard), v in sorted(self._verdicts.items())
            if d == deployment
        }
        rollouts = [r for r in self.rollouts.rollouts() if r.deployment == deployment]
        return {
            "deployment": deployment,
            "version": version,
            "judgement": self.judgement(deployment, version),
            "rollouts": [_rollout(r) for r in rollouts],
            "pending_approvals": [_rollout(r) for r in rollouts if r.state == "paused"],
            # Request schemas each model version accepts (the compatibility guard's table).
            "schemas": self._verdicts.get((deployment, "compat"), {}).get("schemas", {}),
            "verdicts": verdicts,
        }

    def overview(self) -> dict[str, Any]:
        """Every deployment's judgement, and all pending approvals."""
        return {
            "deployments": {d: self.judgement(d) for d in self.deployments()},
            "pending_approvals": [
                {"deployment": r.deployment, **_rollout(r)} for r in self.rollouts.pending()
            ],
        }
