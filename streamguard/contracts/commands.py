"""Commands for the control topic and alerts for on-call.

A command's id is a hash of what identifies the decision, (deployment, model_version, guard,
slice, action, ts), never of floating-point evidence: the same decision re-made after a
restart, or by another worker count, gets the same id, and consumers deduplicate on it.

Examples
--------
>>> a = command_id("home-ranker", "v2", "shadow", {"platform": "ios"}, "pause", 1790000300.0)
>>> a == command_id("home-ranker", "v2", "shadow", {"platform": "ios"}, "pause", 1790000300.0)
True
>>> len(a)
32
"""

import hashlib
from dataclasses import dataclass, field
from typing import Any

import orjson

__all__ = [
    "ACTIONS",
    "MODEL_ACTIONS",
    "NOTICE",
    "NOTICE_ACTION",
    "Alert",
    "Command",
    "alert_for",
    "command_id",
    "notice_for",
    "slice_label",
]

#: Actions a command may carry. ``block`` addresses a training pipeline, not a rollout: its
#: ``deployment`` is the pipeline's name (the control topic's key and the signature's audience)
#: and its ``model_version`` is ``*`` (whatever the pipeline would train); rollout views ignore it.
ACTIONS = ("pause", "rollback", "resume", "drain", "hold_scaling", "block", "schemas")
#: Actions that judge the model version (they change its rollout state); the others are for
#: the serving platform (drain a replica, hold scaling), training (block) or notices.
MODEL_ACTIONS = ("pause", "rollback", "resume")
#: The action of a notice: information for subscribers, not an order for serving.
NOTICE_ACTION = "schemas"


def slice_label(slice_: dict[str, str] | None) -> str:
    """Canonical text of a slice: ``*`` for the whole deployment, else ``k=v,k=v`` sorted."""
    if not slice_:
        return "*"
    return ",".join(f"{k}={slice_[k]}" for k in sorted(slice_))


def command_id(  # noqa: PLR0917 - the six parts of a decision's identity, in order
    deployment: str,
    model_version: str,
    guard: str,
    slice_: dict[str, str] | None,
    action: str,
    ts: float,
) -> str:
    """Deterministic 128-bit id (hex) of a decision."""
    text = "\x1f".join(
        (deployment, model_version, guard, slice_label(slice_), action, repr(float(ts)))
    )
    return hashlib.sha256(text.encode()).hexdigest()[:32]


@dataclass(frozen=True, slots=True)
class Command:
    """A message on the control topic (schema ``command``, version 1)."""

    action: str
    deployment: str
    model_version: str
    guard: str
    slice: dict[str, str] | None
    evidence: dict[str, Any]
    ts: float
    reason: str = ""
    command_id: str = field(default="")

    def __post_init__(self) -> None:
        if not self.command_id:
            cid = command_id(
                self.deployment, self.model_version, self.guard, self.slice, self.action, self.ts
            )
            object.__setattr__(self, "command_id", cid)

    def to_dict(self) -> dict[str, Any]:
        """The JSON object published on the control topic."""
        out: dict[str, Any] = {
            "schema_version": 1,
            "command_id": self.command_id,
            "action": self.action,
            "deployment": self.deployment,
            "model_version": self.model_version,
            "guard": self.guard,
            "slice": self.slice,
            "evidence": self.evidence,
            "ts": self.ts,
        }
        if self.reason:
            out["reason"] = self.reason
        return out

    def to_json(self) -> bytes:
        """Serialized form; keys sorted so equal commands serialize to equal bytes."""
        return orjson.dumps(self.to_dict(), option=orjson.OPT_SORT_KEYS)

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> "Command":
        """Rebuild a command from its JSON object."""
        return cls(
            action=raw["action"],
            deployment=raw["deployment"],
            model_version=raw["model_version"],
            guard=raw["guard"],
            slice=raw["slice"],
            evidence=raw["evidence"],
            ts=float(raw["ts"]),
            reason=raw.get("reason", ""),
            command_id=raw["command_id"],
        )


@dataclass(frozen=True, slots=True)
class Alert:
    """A message on the alerts topic (schema ``alert``, version 1)."""

    alert_id: str
    command_id: str
    severity: str
    deployment: str
    model_version: str
    guard: str
    slice: dict[str, str] | None
    summary: str
    evidence: dict[str, Any]
    ts: float

    def to_dict(self) -> dict[str, Any]:
        """The JSON object published on the alerts topic."""
        return {
            "schema_version": 1,
            "alert_id": self.alert_id,
            "command_id": self.command_id,
            "severity": self.severity,
            "deployment": self.deployment,
            "model_version": self.model_version,
            "guard": self.guard,
            "slice": self.slice,
            "summary": self.summary,
            "evidence": self.evidence,
            "ts": self.ts,
        }

    def to_json(self) -> bytes:
        """Serialized form, keys sorted."""
        return orjson.dumps(self.to_dict(), option=orjson.OPT_SORT_KEYS)


_SEVERITY = {"rollback": "critical", "block": "critical", "pause": "warning"}


def alert_for(command: Command, summary: str) -> Alert:
    """The alert that accompanies a command; its id derives from the command's."""
    alert_id = hashlib.sha256(f"alert:{command.command_id}".encode()).hexdigest()[:32]
    return Alert(
        alert_id=alert_id,
        command_id=command.command_id,
        severity=_SEVERITY.get(command.action, "warning"),
        deployment=command.deployment,
        model_version=command.model_version,
        guard=command.guard,
        slice=command.slice,
        summary=summary,
        evidence=command.evidence,
        ts=command.ts,
    )


#: The ``action`` part of the id of an alert that comes with no command (a notice).
NOTICE = "notice"


def notice_for(  # noqa: PLR0917 - the parts of a notice's identity, then its content
    deployment: str,
    model_version: str,
    guard: str,
    slice_: dict[str, str] | None,
    ts: float,
    summary: str,
    evidence: dict[str, Any],
    severity: str = "warning",
) -> Alert:
    """An alert that comes with no command (shadow health: on-call should know, serving not act).

    Its ``command_id`` is the id the decision would have as a command with action ``notice``
    (deterministic, so a notice re-made after a restart deduplicates like a command); no
    command with that id is ever published.
    """
    notice_id = command_id(deployment, model_version, guard, slice_, NOTICE, ts)
    return Alert(
        alert_id=hashlib.sha256(f"alert:{notice_id}".encode()).hexdigest()[:32],
        command_id=notice_id,
        severity=severity,
        deployment=deployment,
        model_version=model_version,
        guard=guard,
        slice=slice_,
        summary=summary,
        evidence=evidence,
        ts=ts,
    )
