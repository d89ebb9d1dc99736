"""Rollback compatibility: which request schemas each model version has served.

A rollback crashed serving for 8 minutes because the previous model did not accept the request
schema serving had moved to with the new one. Prediction events may carry ``feature_schema``;
stage 1 counts predictions and errors per (model version, schema) on the ``schema`` stream
(:mod:`streamguard.core.feature_schemas`). At every window close this guard adds the closed
window to per-version totals kept since the version was first seen, and reports per version:

- ``served``: schema -> ``[predictions, errors]`` since the version was first seen;
- ``accepted``: the schemas it served at least ``min_events`` times with an error rate of at
  most ``max_error_rate``, plus those the policy declares (``declared``);
- ``live``: the schemas it was sent over the horizon.

The guard never calls for an action itself. The decider keeps its latest table and, before it
issues a rollback from version V to its baseline B, writes ``compat`` into the command's
evidence: V's live schemas that B does not accept make the rollback *incompatible*, and the
alert says so in plain words. It also publishes a signed ``schemas`` notice whenever a version
accepts a new schema, from which :class:`streamguard.client.ControlSubscriber` answers
``accepted_schemas(deployment, version)`` so serving can keep a dual read path.

Memory is bounded: ``max_versions`` versions (least recently seen dropped) of at most
``max_schemas`` schemas each.
"""

from typing import Any

import numpy as np

from streamguard.core.feature_schemas import SCHEMA_FIELDS, SCHEMA_STREAM, schema_of
from streamguard.core.verdict import GuardContext, Verdict
from streamguard.guards.cumulative import Cumulative
from streamguard.guards.stratification import BASELINE_STREAM
from streamguard.policy import CompatPolicy, DeploymentPolicy

__all__ = ["CompatGuard", "accepted"]

NAME = "compat"


def accepted(events: int, errors: int, settings: CompatPolicy) -> bool:
    """Whether a version served a schema often enough and without (too many) errors.

    >>> accepted(150, 7, CompatPolicy())  # 100 predictions at most 5 % errors by default
    True
    >>> accepted(150, 8, CompatPolicy()), accepted(99, 0, CompatPolicy())
    (False, False)
    """
    return events >= settings.min_events and errors <= settings.max_error_rate * events


class CompatGuard:
    """Keeps each version's request schemas; see the module docstring."""

    name = NAME

    def __init__(self, policy_for: Any) -> None:
        self._policy_for = policy_for

    def evaluate(self, ctx: GuardContext) -> Verdict | None:
        """The schema table of the deployment, or None when no event carried a schema."""
        policy: DeploymentPolicy = self._policy_for(ctx.deployment)
        settings = policy.compat
        if not settings.enabled:
            return None
        state = ctx.state(NAME)
        totals: dict[str, Cumulative] = state.setdefault("versions", {})
        seen: dict[str, int] = state.setdefault("seen", {})
        recent = ctx.versions(SCHEMA_STREAM)
        for version in recent:
            closed = ctx.closed_window(SCHEMA_STREAM, version)
            if closed is None:
                continue
            total = totals.setdefault(version, Cumulative(SCHEMA_FIELDS))
            labels, arrays = closed
            known = set(total.labels)
            keep = []
            for i, label in enumerate(labels):  # a few schemas per version
                if label in known or len(known) < settings.max_schemas:
                    known.add(label)
                    keep.append(i)
            if keep:
                at = np.asarray(keep, dtype=np.int64)
                total.add([labels[i] for i in keep], {k: v[at] for k, v in arrays.items()})
            seen[version] = ctx.window
        stale = sorted(seen, key=lambda v: seen[v])[: max(0, len(seen) - settings.max_versions)]
        for version in stale:
            del seen[version]
            totals.pop(version, None)
        if not totals:
            return None
        live = set(recent)
        table = {
            version: self._row(ctx, version, total, settings, version in live)
            for version, total in totals.items()
        }
        for version, schemas in settings.declared.items():
            row = table.setdefault(version, {"accepted": [], "live": [], "served": {}})
            row["accepted"] = sorted({*row["accepted"], *schemas})
        newest = recent[0] if recent else max(seen, key=lambda v: seen[v])
        baselines = ctx.versions(BASELINE_STREAM)
        start = float(ctx.window * ctx.window_s)
        return Verdict(
            deployment=ctx.deployment,
            guard=NAME,
            model_version=newest,
            baseline_version=baselines[0] if baselines else "",
            window_start=start,
            window_end=start + ctx.window_s,
            horizon_start=float((ctx.window - ctx.horizon_windows + 1) * ctx.window_s),
            slices=[],
            findings=[],
            extra={"schemas": dict(sorted(table.items()))},
        )

    @staticmethod
    def _row(
        ctx: GuardContext, version: str, total: Cumulative, settings: CompatPolicy, recent: bool
    ) -> dict[str, Any]:
        labels = total.labels
        arrays = total.take(labels)
        served = {
            schema_of(label): [int(arrays["events"][i]), int(arrays["errors"][i])]
            for i, label in enumerate(labels)
        }
        live: list[str] = []
        if recent:  # sent anything over the horizon
            horizon_labels, horizon = ctx.horizon(SCHEMA_STREAM, version)
            events = horizon["events"].tolist()
            live = sorted(
                schema_of(label) for label, n in zip(horizon_labels, events, strict=True) if n > 0
            )
        return {
            "accepted": sorted(s for s, (n, e) in served.items() if accepted(n, e, settings)),
            "live": live,
            "served": dict(sorted(served.items())),
        }

    # -- snapshots -----------------------------------------------------------------------------

    @staticmethod
    def snapshot_state(state: dict[Any, Any]) -> Any:
        """Per-version totals and when each version was last seen."""
        return {
            "versions": {v: c.snapshot() for v, c in state.get("versions", {}).items()},
            "seen": dict(state.get("seen", {})),
        }

    @staticmethod
    def restore_state(data: Any) -> dict[Any, Any]:
        """State saved by :meth:`snapshot_state`."""
        return {
            "versions": {v: Cumulative.restore(c) for v, c in data.get("versions", {}).items()},
            "seen": {v: int(w) for v, w in data.get("seen", {}).items()},
        }
