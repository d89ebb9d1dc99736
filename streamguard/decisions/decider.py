"""Stage 3: turn guard findings into commands without thrash.

Per (deployment, model version) the rollout is *healthy*, *paused* or *rolled back*:

- a finding counts once the same (guard, slice) has explained a breach at ``confirm_windows``
  consecutive window closes (policy, default 2), so a slice that crosses its threshold by noise
  one window before the slice that really deviates does not become a command. A finding marked
  ``always_valid`` (the canary guard's mSPRT) counts at once: its p-value keeps its error
  guarantee at any stopping time, including the first window it crosses alpha (Johari, Pekelis
  & Walsh, "Always Valid Inference", 2022), and a second window would add ten seconds, not
  safety. So does one marked ``per_look_budget`` (the canary guard's change look), whose
  false-alarm budget is already spent look by look;
- a finding that calls for ``rollback`` issues one rollback command and latches: nothing more is
  issued for that version;
- a finding that calls for ``pause`` issues a pause command once per (guard, slice) while the
  version is not rolled back; a paused rollout resumes only by an explicit ``resume`` command
  (an approval), never by itself;
- a command (or notice) is not issued for a slice inside one the same guard has already issued
  the same action for (``platform=android,tier=free`` after ``platform=android``): serving
  already acts on all of it, and a second alert would only repeat the first;
- a new model version starts healthy with a clean slate;
- a rollback from version V to its baseline B carries ``compat`` in its evidence when events
  carry ``feature_schema``: V's live request schemas that B never served without errors make
  the rollback *incompatible*, and its alert says that rolling back may crash serving (the
  table comes from the compatibility guard, :mod:`streamguard.guards.compat`);
- when a version starts to accept a new request schema, a ``schemas`` notice (no alert) tells
  subscribers which schemas it accepts;
- ``drain`` and ``hold_scaling`` findings (the cold-start guard) are issued once per
  (guard, slice, action) like a pause, but leave the version's state alone: the model is
  not at fault, so they neither pause nor roll it back;
- a finding whose action is ``notice`` (the non-determinism guard) becomes one *notice* per
  (guard, slice) once confirmed like the others: a signed alert with no command, leaving the
  version's state alone;
- a verdict's ``health`` findings (the shadow guard's untrusted slices) become one *notice*
  per (guard, slice) once confirmed like findings: an alert with no command. A shadow that
  times out on some slices makes the comparison there untrustworthy; on-call should know, and
  serving should not act on the model for it;
- an *error verdict* (a guard that raised at a close, :mod:`streamguard.core.guard_failure`)
  becomes one critical *notice* per (deployment, guard, error): the guard's verdicts are
  missing until the bug is fixed, and on-call must know at once, not after ``confirm_windows``.
  It changes no rollout state and no streak (the guard's findings resume where they stood).
  Once the guard judges that deployment again, the same error notifies again if it returns.
  While the compatibility guard fails, a rollback's ``compat`` evidence (its last table) is
  marked ``stale`` and its alert says so.

Commands are stamped with the end of the window whose verdict triggered them, and their ids are
derived from (deployment, model_version, guard, slice, action, ts), so the same input always
yields the same commands with the same ids.

Examples
--------
>>> d = Decider()  # default policy: confirm_windows = 2
>>> verdict = {"deployment": "d", "guard": "shadow", "model_version": "v2",
...     "baseline_version": "v1", "window_start": 0.0, "window_end": 10.0, "horizon_start": -290.0,
...     "findings": [{"slice": "platform=ios", "action": "pause", "statistic": "psi",
...                   "value": 0.2, "threshold": 0.1, "n": 900}]}
>>> d.on_verdict(verdict)  # first sighting: not confirmed yet
[]
>>> [c.action for c, _ in d.on_verdict({**verdict, "window_end": 20.0})]
['pause']
>>> d.on_verdict({**verdict, "window_end": 30.0})  # the same evidence again: nothing new
[]
"""

import math
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from streamguard.contracts import Alert, Command, alert_for
from streamguard.contracts.commands import MODEL_ACTIONS, NOTICE
from streamguard.core.guard_failure import ERROR_STATUS
from streamguard.core.slices import label_dims, label_within
from streamguard.decisions.alerts import (
    command_summary,
    failure_notice,
    finding_evidence,
    finding_notice,
    health_notice,
)
from streamguard.policy import Policy

__all__ = ["COMPAT_GUARD", "Decider", "Decisions", "RolloutState"]

COMPAT_GUARD = "compat"  # the compatibility guard's verdicts carry the schema table
_ERROR_KEY = ".error"  # (guard + this, signature) in ``noticed``: an error already notified


class RolloutState(StrEnum):
    """Where a model version's rollout stands."""

    HEALTHY = "healthy"
    PAUSED = "paused"
    ROLLED_BACK = "rolled_back"


@dataclass(slots=True)
class _Version:
    state: RolloutState = RolloutState.HEALTHY
    issued: set[tuple[str, str, str]] = field(default_factory=set)  # (guard, slice, action)
    approvals: list[dict[str, Any]] = field(default_factory=list)
    streaks: dict[tuple[str, str], int] = field(default_factory=dict)  # (guard, slice) -> closes
    # Last window judged per guard: a verdict redelivered after a restart is ignored.
    last_window: dict[str, float] = field(default_factory=dict)
    accepts: list[str] = field(default_factory=list)  # request schemas served without errors
    live: list[str] = field(default_factory=list)  # request schemas sent over the horizon
    noticed: set[tuple[str, str]] = field(default_factory=set)  # (guard, slice) notices issued


@dataclass(slots=True)
class Decisions:
    """What one verdict calls for: commands (with their alert; ``schemas`` notices have none),
    and alerts without a command (shadow-health notices)."""

    commands: list[tuple[Command, Alert | None]] = field(default_factory=list)
    notices: list[Alert] = field(default_factory=list)


class Decider:
    """Decision state of the deployments one worker owns (keyed like the verdicts topic)."""

    def __init__(self, policy: Policy | None = None) -> None:
        self.policy = policy or Policy()
        self._versions: dict[tuple[str, str], _Version] = {}

    def state(self, deployment: str, model_version: str) -> RolloutState:
        """Current state of a deployment's model version."""
        version = self._versions.get((deployment, model_version))
        return version.state if version else RolloutState.HEALTHY

    def on_verdict(self, verdict: dict[str, Any]) -> list[tuple[Command, Alert | None]]:
        """Commands (with their alert; notices have none) a verdict calls for (:meth:`decide`)."""
        return self.decide(verdict).commands

    def decide(self, verdict: dict[str, Any]) -> Decisions:
        """Commands and notices that a verdict calls for."""
        deployment, model_version = verdict["deployment"], verdict["model_version"]
        version = self._versions.setdefault((deployment, model_version), _Version())
        guard = verdict["guard"]
        window_end = float(verdict["window_end"])
        if window_end <= version.last_window.get(guard, -math.inf):
            return Decisions()
        version.last_window[guard] = window_end
        if verdict.get("status") == ERROR_STATUS:
            return Decisions([], self._failure_notice(verdict, version))
        failed = self._versions.get((deployment, ""))
        if failed is not None and failed.noticed:  # the guard judges again: it recovered
            failed.noticed = {k for k in failed.noticed if k[0] != f"{guard}{_ERROR_KEY}"}
        if guard == COMPAT_GUARD:
            return Decisions(self._on_schemas(deployment, verdict.get("schemas") or {}, window_end))
        confirm = self.policy.for_deployment(deployment).confirm_windows
        notices = self._notices(verdict, version, confirm)
        streaks = {
            (guard, f["slice"]): version.streaks.get((guard, f["slice"]), 0) + 1
            for f in verdict["findings"]
        }
        # A verdict of this guard without a slice breaks that slice's streak.
        version.streaks = {k: v for k, v in version.streaks.items() if k[0] != guard} | streaks
        out: list[tuple[Command, Alert | None]] = []
        # Rollbacks first: once latched, the pauses of the same verdict are moot. Then the
        # broadest slices, which cover the narrower ones of the same action.
        findings = sorted(
            verdict["findings"],
            key=lambda f: (f["action"] != "rollback", len(label_dims(f["slice"])), f["slice"]),
        )
        for finding in findings:
            at_once = finding.get("always_valid") is True or finding.get("per_look_budget") is True
            needed = 1 if at_once else confirm
            if streaks[(guard, finding["slice"])] < needed:
                continue
            action = finding["action"]
            key = (verdict["guard"], finding["slice"], action)
            if version.state is RolloutState.ROLLED_BACK or _covered(version.issued, key):
                continue
            version.issued.add(key)
            evidence = finding_evidence(verdict, finding)
            if action == NOTICE:  # an alert for on-call, nothing for serving to act on
                notices.append(finding_notice(verdict, finding, evidence))
                continue
            compat = self._compat(deployment, version, evidence["baseline_version"])
            if action == "rollback" and compat is not None:
                evidence["compat"] = compat
            if action == "rollback":
                version.state = RolloutState.ROLLED_BACK
            elif action in MODEL_ACTIONS:
                version.state = RolloutState.PAUSED
            command = Command(
                action=action,
                deployment=deployment,
                model_version=model_version,
                guard=verdict["guard"],
                slice=label_dims(finding["slice"]) or None,
                evidence=evidence,
                ts=float(verdict["window_end"]),
            )
            out.append((command, alert_for(command, command_summary(command, finding))))
        return Decisions(out, notices)

    @staticmethod
    def _notices(verdict: dict[str, Any], version: _Version, confirm: int) -> list[Alert]:
        """One notice per confirmed (guard, slice) of the verdict's ``health`` findings."""
        raw = verdict.get("health")
        findings = raw.get("findings", []) if isinstance(raw, dict) else []
        key = f"{verdict['guard']}.health"
        streaks = {
            (key, f["slice"]): version.streaks.get((key, f["slice"]), 0) + 1 for f in findings
        }
        version.streaks = {k: v for k, v in version.streaks.items() if k[0] != key} | streaks
        out = []
        for finding in sorted(findings, key=lambda f: str(f["slice"])):
            label = str(finding["slice"])
            if streaks[(key, label)] < confirm or (key, label) in version.noticed:
                continue
            version.noticed.add((key, label))
            out.append(health_notice(verdict, finding))
        return out

    @staticmethod
    def _failure_notice(verdict: dict[str, Any], version: _Version) -> list[Alert]:
        """One critical notice per (guard, error) of a deployment, until the guard recovers."""
        guard, error = verdict["guard"], verdict["error"]
        key = (f"{guard}{_ERROR_KEY}", str(error["signature"]))
        if key in version.noticed:
            return []
        version.noticed.add(key)
        return [failure_notice(verdict)]

    def _on_schemas(
        self, deployment: str, table: dict[str, Any], window_end: float
    ) -> list[tuple[Command, Alert | None]]:
        """Take the compatibility guard's table; a notice per version accepting more."""
        out: list[tuple[Command, Alert | None]] = []
        for model_version, row in sorted(table.items()):
            version = self._versions.setdefault((deployment, model_version), _Version())
            accepts = sorted({str(s) for s in row.get("accepted", [])})
            version.live = sorted({str(s) for s in row.get("live", [])})
            if set(accepts) <= set(version.accepts):
                continue
            version.accepts = sorted({*version.accepts, *accepts})
            notice = Command(
                action="schemas",
                deployment=deployment,
                model_version=model_version,
                guard=COMPAT_GUARD,
                slice=None,
                evidence={"accepted": version.accepts, "served": row.get("served", {})},
                ts=window_end,
            )
            out.append((notice, None))
        return out

    def _compat(self, deployment: str, version: _Version, target: str) -> dict[str, Any] | None:
        """Whether rolling back to ``target`` meets the schemas ``version`` is being sent."""
        failed = self._versions.get((deployment, ""))
        key = f"{COMPAT_GUARD}{_ERROR_KEY}"
        stale = failed is not None and any(k[0] == key for k in failed.noticed)
        if not version.live:
            if stale:  # the guard fails and never gave a table: say so, claim nothing
                return {"target_version": target, "compatible": None, "stale": True}
            return None  # no event of this version carried a feature_schema
        known = self._versions.get((deployment, target))
        accepts = known.accepts if known else []
        missing = sorted(set(version.live) - set(accepts))
        out: dict[str, Any] = {
            "target_version": target,
            "live_schemas": version.live,
            "target_accepts": accepts,
            "missing": missing,
            "compatible": not missing,
        }
        if stale:
            out["stale"] = True  # the compatibility guard fails: this is its last table
        return out

    def on_control(self, command: dict[str, Any]) -> bool:
        """Apply a command seen on the control topic; True if it changed the state.

        Only ``resume`` (an approval) changes anything here: it moves a paused version back
        to healthy. A rolled-back version stays rolled back.
        """
        if command.get("action") != "resume":
            return False
        key = (command["deployment"], command["model_version"])
        version = self._versions.setdefault(key, _Version())
        if version.state is not RolloutState.PAUSED:
            return False
        version.state = RolloutState.HEALTHY
        raw = command.get("evidence")
        evidence: dict[str, Any] = raw if isinstance(raw, dict) else {}
        version.approvals.append(
            {
                "command_id": command.get("command_id"),
                "ts": command.get("ts"),
                "reason": command.get("reason") or evidence.get("reason", ""),
                "by": evidence.get("approved_by", ""),
            }
        )
        return True

    def snapshot(self, deployments: set[str] | None = None) -> dict[str, Any]:
        """JSON-serialisable state (all deployments, or only ``deployments``)."""
        return {
            f"{d}\x1f{v}": {
                "state": s.state.value,
                "issued": sorted(list(k) for k in s.issued),
                "approvals": s.approvals,
                "streaks": sorted([g, sl, n] for (g, sl), n in s.streaks.items()),
                "last_window": s.last_window,
                "accepts": s.accepts,
                "live": s.live,
                "noticed": sorted(list(k) for k in s.noticed),
            }
            for (d, v), s in sorted(self._versions.items())
            if deployments is None or d in deployments
        }

    @classmethod
    def restore(cls, snapshot: dict[str, Any], policy: Policy | None = None) -> "Decider":
        """Rebuild a decider from :meth:`snapshot`."""
        decider = cls(policy)
        decider.load(snapshot)
        return decider

    def drop(self, deployments: set[str]) -> None:
        """Forget the state of ``deployments`` (their partition moved to another worker)."""
        for key in [k for k in self._versions if k[0] in deployments]:
            del self._versions[key]

    def load(self, snapshot: dict[str, Any]) -> None:
        """Take the state of the deployments in a :meth:`snapshot` (others are kept)."""
        for key, value in snapshot.items():
            deployment, model_version = key.split("\x1f", 1)
            self._versions[(deployment, model_version)] = _Version(
                state=RolloutState(value["state"]),
                issued={(g, s, a) for g, s, a in value["issued"]},
                approvals=list(value["approvals"]),
                streaks={(g, sl): int(n) for g, sl, n in value.get("streaks", [])},
                last_window={g: float(w) for g, w in value.get("last_window", {}).items()},
                accepts=[str(x) for x in value.get("accepts", [])],
                live=[str(x) for x in value.get("live", [])],
                noticed={(g, sl) for g, sl in value.get("noticed", [])},
            )


def _covered(issued: set[tuple[str, str, str]], key: tuple[str, str, str]) -> bool:
    """Whether (guard, slice, action) ``key`` was issued for this slice or a slice containing it."""
    if key in issued:
        return True
    guard, label, action = key
    return any(g == guard and a == action and label_within(label, s) for g, s, a in issued)
