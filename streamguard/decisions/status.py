"""What the worker's status API answers: the latest verdicts and the rollout decisions.

Pure: it folds verdict messages and control messages into the current picture per deployment,
and gives the one-word judgement that Argo Rollouts' web metric and Flagger's webhooks gate on.
For one model version:

* ``rolled_back`` / ``paused``: streamguard (or a person) decided against that version;
* ``healthy``: nothing was decided against it, a guard that compares it with its baseline
  (:data:`MODEL_GUARDS`) judged at least one of its slices, and none of its latest verdicts
  says its evidence cannot be trusted (a contaminated canary allocation, shadow slices that
  too few shadow predictions pair in);
* ``pending``: anything else: no verdict of that version yet, too little traffic in every
  slice, untrusted evidence, a model guard or the stratification guard that failed (an error
  verdict, :mod:`streamguard.core.guard_failure`) and has not had a whole later close without
  one, or a view that has not caught up on the topics yet. Argo counts
  it inconclusive, Flagger does not promote on it, and neither fails the rollout for it.

Without a version, the deployment is ``rolled_back`` or ``paused`` when any of its versions
is, else the judgement of its *current* versions: those with a :data:`MODEL_GUARDS` verdict at
the deployment's latest window close (``healthy`` only when each of them is). A gate that
knows the canary's version should ask for it: the current version is what streamguard saw
last, which may not yet be the canary that was just deployed.

Examples
--------
>>> view = StatusView()
>>> view.judgement("d")
'pending'
>>> view.on_verdict({"kind": "verdict", "deployment": "d", "guard": "shadow",
...                  "model_version": "v2", "window_end": 100.0,
...                  "slices": [{"slice": "*", "n": 900, "state": "ok"}], "findings": []})
>>> view.judgement("d"), view.judgement("d", version="v2"), view.judgement("d", version="v3")
('healthy', 'healthy', 'pending')
>>> view.on_control({"action": "pause", "deployment": "d", "model_version": "v2",
...                  "guard": "shadow", "slice": None, "command_id": "c", "ts": 100.0})
>>> view.judgement("d"), view.judgement("d", version="v2"), view.judgement("d", version="v3")
('paused', 'paused', 'pending')
"""

import math
from typing import Any

from streamguard.core.guard_failure import ERROR_STATUS
from streamguard.decisions.rollouts import Rollout, RolloutView

__all__ = ["JUDGED_STATES", "JUDGEMENTS", "MODEL_GUARDS", "VOUCHING_GUARDS", "StatusView"]

JUDGEMENTS = ("healthy", "paused", "rolled_back", "pending")

#: Guards whose verdicts judge a model version against its baseline. The others judge the
#: traffic allocation, replicas, environments or schemas: their "ok" says nothing of the model.
MODEL_GUARDS = frozenset({"shadow", "canary", "popularity"})

#: Slice states of a slice that was judged ("insufficient" and "untrusted" ones were not).
JUDGED_STATES = frozenset({"ok", "pause", "rollback"})

#: Guards whose failure leaves a model version without a trustworthy judgement: the model
#: guards, and the stratification guard the canary guard's trust rests on.
VOUCHING_GUARDS = MODEL_GUARDS | {"stratification"}

# A verdict's ``status`` that says its evidence cannot be trusted (canary, stratification).
_UNTRUSTED_STATUS = frozenset({"untrusted", "contaminated"})


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


def _judged(verdict: dict[str, Any]) -> bool:
    """Did a model guard's verdict judge at least one slice of its version?"""
    if verdict.get("guard") not in MODEL_GUARDS:
        return False
    slices = verdict.get("slices")
    return isinstance(slices, list) and any(
        isinstance(s, dict) and s.get("state") in JUDGED_STATES for s in slices
    )


def _untrusted(verdict: dict[str, Any]) -> bool:
    """Does the verdict say the version's evidence cannot be trusted?"""
    if verdict.get("trusted") is False or verdict.get("status") in _UNTRUSTED_STATUS:
        return True
    health = verdict.get("health")  # the shadow guard's slices with too few pairs
    return isinstance(health, dict) and bool(health.get("untrusted"))


def _shown(verdict: dict[str, Any]) -> dict[str, Any]:
    return {
        "model_version": verdict.get("model_version"),
        "baseline_version": verdict.get("baseline_version"),
        "window_start": verdict.get("window_start"),
        "window_end": verdict.get("window_end"),
        "slices": verdict.get("slices", []),
        "findings": verdict.get("findings", []),
    }


class StatusView:
    """Latest verdicts per (deployment, model version, guard) and rollout states.

    Parameters
    ----------
    caught_up
        Whether the verdicts and control messages folded in so far are all there is. While
        False, every judgement is ``pending``: a pause or a rollback may not have been read
        yet, nor the approval that followed one. The status feed sets it once it has read up
        to the end offsets it found at start.
    """

    def __init__(self, *, caught_up: bool = True) -> None:
        self.caught_up = caught_up
        # Latest verdict per (deployment, guard) over all versions, what /status/{d} shows.
        self._verdicts: dict[tuple[str, str], dict[str, Any]] = {}
        # Latest verdict per (deployment, model version, guard): what a version is judged on.
        self._by_version: dict[tuple[str, str, str], dict[str, Any]] = {}
        self.rollouts = RolloutView()
        # Guards whose latest verdict of a deployment is an error (a guard that raised), with it.
        self._failing: dict[tuple[str, str], dict[str, Any]] = {}
        # The two latest window ends of the deployment's verdicts (kept ones), latest first.
        self._ends: dict[str, list[float]] = {}

    def on_verdict(self, verdict: dict[str, Any]) -> None:
        """Keep a verdict if it is the latest of its deployment, guard (and version)."""
        deployment, guard = verdict.get("deployment"), verdict.get("guard")
        if not isinstance(deployment, str) or not isinstance(guard, str):
            return
        end = verdict.get("window_end")
        if not isinstance(end, int | float):
            return
        failing = self._failing.get((deployment, guard))
        if verdict.get("status") == ERROR_STATUS:
            judged = self._verdicts.get((deployment, guard))
            if not isinstance(verdict.get("error"), dict) or (
                judged is not None and end < judged["window_end"]
            ):
                return  # junk, or older than what the guard judged since (a resend)
            self._seen(deployment, float(end))
            if failing is None or end >= failing["window_end"]:
                self._failing[(deployment, guard)] = verdict
            return  # it judged no version: the verdicts it stands in for stay as they were
        self._seen(deployment, float(end))
        if failing is not None and end > failing["window_end"]:
            del self._failing[(deployment, guard)]  # judging again
        known = self._verdicts.get((deployment, guard))
        if known is None or end >= known["window_end"]:
            self._verdicts[(deployment, guard)] = verdict
        version = verdict.get("model_version")
        if isinstance(version, str):
            known = self._by_version.get((deployment, version, guard))
            if known is None or end >= known["window_end"]:
                self._by_version[(deployment, version, guard)] = verdict

    def on_control(self, message: dict[str, Any]) -> None:
        """Fold a control message (a command or a person's decision) in."""
        self.rollouts.apply(message)

    def deployments(self) -> list[str]:
        """Deployments with a verdict or a decision."""
        names = {d for d, _ in self._verdicts} | {d for d, _ in self._failing}
        names |= {r.deployment for r in self.rollouts.rollouts()}
        return sorted(names)

    def current_versions(self, deployment: str) -> list[str]:
        """Versions with a :data:`MODEL_GUARDS` verdict at the deployment's latest window."""
        latest: dict[str, float] = {}
        for (d, version, guard), verdict in self._by_version.items():
            if d == deployment and guard in MODEL_GUARDS:
                latest[version] = max(latest.get(version, -float("inf")), verdict["window_end"])
        if not latest:
            return []
        newest = max(latest.values())
        return sorted(v for v, end in latest.items() if end == newest)

    def _version_judgement(self, deployment: str, version: str) -> str:
        verdicts = [
            v for (d, ver, _), v in self._by_version.items() if d == deployment and ver == version
        ]
        if any(_untrusted(v) for v in verdicts) or not any(_judged(v) for v in verdicts):
            return "pending"
        return "healthy"

    def _seen(self, deployment: str, end: float) -> None:
        ends = self._ends.setdefault(deployment, [])
        if end not in ends:
            self._ends[deployment] = sorted([*ends, end], reverse=True)[:2]

    def _failing_guards(self, deployment: str) -> dict[str, dict[str, Any]]:
        """Guards (with their error verdicts) not yet followed by a whole close without one.

        A guard that fails gives an error verdict at every close, so a close without one means
        it no longer failed there (it judged, or had nothing to judge). But a close's verdicts
        arrive one guard after another, so the first verdict of the next close does not say
        that close is whole: only a verdict of the close after it does (two later ends).
        """
        ends = self._ends.get(deployment, [])
        second = ends[1] if len(ends) == 2 else -math.inf
        return {
            g: v
            for (d, g), v in self._failing.items()
            if d == deployment and v["window_end"] >= second
        }

    def judgement(self, deployment: str, version: str | None = None) -> str:
        """One of :data:`JUDGEMENTS` for the deployment (or one of its versions)."""
        if not self.caught_up:
            return "pending"
        states = {
            r.state
            for r in self.rollouts.rollouts()
            if r.deployment == deployment and version in (None, r.model_version)
        }
        if "rolled back" in states:
            return "rolled_back"
        if "paused" in states:
            return "paused"
        if self._failing_guards(deployment).keys() & VOUCHING_GUARDS:
            return "pending"  # a guard the judgement rests on is failing: nothing to vouch for
        versions = [version] if version is not None else self.current_versions(deployment)
        if versions and all(self._version_judgement(deployment, v) == "healthy" for v in versions):
            return "healthy"
        return "pending"

    def deployment(self, deployment: str, version: str | None = None) -> dict[str, Any]:
        """Everything known about a deployment: judgement, decisions, latest verdicts.

        With a ``version``, the verdicts, rollouts and pending approvals are that version's
        only; ``schemas`` stays the deployment's whole table (it compares versions).
        """
        if version is None:
            verdicts = {
                guard: _shown(v)
                for (d, guard), v in sorted(self._verdicts.items())
                if d == deployment
            }
        else:
            verdicts = {
                guard: _shown(v)
                for (d, ver, guard), v in sorted(self._by_version.items())
                if d == deployment and ver == version
            }
        rollouts = [
            r
            for r in self.rollouts.rollouts()
            if r.deployment == deployment and version in (None, r.model_version)
        ]
        return {
            "deployment": deployment,
            "version": version,
            "judgement": self.judgement(deployment, version),
            "current_versions": self.current_versions(deployment),
            "rollouts": [_rollout(r) for r in rollouts],
            "pending_approvals": [_rollout(r) for r in rollouts if r.state == "paused"],
            # Request schemas each model version accepts (the compatibility guard's table).
            "schemas": self._verdicts.get((deployment, "compat"), {}).get("schemas", {}),
            "verdicts": verdicts,
            # Guards failing at their latest close of the deployment (error verdicts).
            "guard_errors": {
                guard: {"window_end": v["window_end"], **v["error"]}
                for guard, v in sorted(self._failing_guards(deployment).items())
            },
        }

    def overview(self) -> dict[str, Any]:
        """Every deployment's judgement, and all pending approvals."""
        return {
            "deployments": {d: self.judgement(d) for d in self.deployments()},
            "pending_approvals": [
                {"deployment": r.deployment, **_rollout(r)} for r in self.rollouts.pending()
            ],
        }
