"""Shadow health: how much of each slice the shadow answered, and where it did not.

Per slice, over the horizon: ``pairing_rate``, the share of the slice's primary predictions
that found a usable shadow partner within the pairing TTL (primaries minus those that expired
unpaired, over primaries; a shadow prediction with ``error: true`` does not pair), and
``error_rate``, the share of the slice's shadow predictions that report an error. The counts
come from the arm streams stage 1 keeps (``arm:primary`` of the baseline version,
``arm:shadow`` of the shadow version). The shadow guard (:mod:`streamguard.guards.shadow`)
adds them to its verdicts, marks slices under ``pairing_floor`` *untrusted*, and names the
smallest such slices in the verdict's ``health``.
"""

from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from streamguard.core.summary import Array
from streamguard.guards.base import GuardContext, SliceResult, clean_float, clean_floats
from streamguard.guards.explain import Rest, explain
from streamguard.policy import SHADOW_STATISTICS, DeploymentPolicy

__all__ = ["PRIMARY_ARM", "SHADOW_ARM", "judge_health", "shadow_health"]

F64 = npt.NDArray[np.float64]
PRIMARY_ARM = "arm:primary"
SHADOW_ARM = "arm:shadow"
_ARM_FIELDS = {"primaries": ("events", "unpaired"), "shadow_events": ("events", "errors")}


def shadow_health(
    primaries: Array, unpaired: Array, shadow_events: Array, shadow_errors: Array
) -> dict[str, F64]:
    """``pairing_rate`` and ``error_rate`` per slice row (NaN where a count is zero).

    ``unpaired`` counts primaries that expired without a usable partner; it is attributed to
    the window in which they expired, so over a horizon it can trail ``primaries`` by the
    pairing TTL, and the rate is clipped to [0, 1].
    """
    n = primaries.astype(np.float64)
    m = shadow_events.astype(np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        pairing = np.where(n > 0, np.clip(1.0 - unpaired / n, 0.0, 1.0), np.nan)
        errors = np.where(m > 0, shadow_errors / m, np.nan)
    return {"pairing_rate": pairing, "error_rate": errors}


@dataclass(slots=True)
class _Health:
    """Counts behind shadow health, per label of the union of the arms' slices."""

    labels: list[str]
    primaries: npt.NDArray[np.int64]
    unpaired: npt.NDArray[np.int64]
    shadow_events: npt.NDArray[np.int64]
    shadow_errors: npt.NDArray[np.int64]

    @classmethod
    def gather(cls, ctx: GuardContext, version: str, baseline: str) -> "_Health":
        columns: dict[str, dict[str, int]] = {}
        for stream, arm_version, names in (
            (PRIMARY_ARM, baseline, ("primaries", "unpaired")),
            (SHADOW_ARM, version, ("shadow_events", "shadow_errors")),
        ):
            if arm_version not in ctx.versions(stream):
                continue
            labels, arrays = ctx.horizon(stream, arm_version)
            for name, field in zip(names, _ARM_FIELDS[names[0]], strict=True):
                values = arrays[field][: len(labels)].tolist()
                columns[name] = dict(zip(labels, values, strict=True))
        everything = sorted(set().union(*(c.keys() for c in columns.values())))

        def column(name: str) -> npt.NDArray[np.int64]:
            found = columns.get(name, {})
            return np.array([found.get(label, 0) for label in everything], dtype=np.int64)

        return cls(
            everything,
            column("primaries"),
            column("unpaired"),
            column("shadow_events"),
            column("shadow_errors"),
        )

    def rates(self) -> dict[str, F64]:
        return shadow_health(self.primaries, self.unpaired, self.shadow_events, self.shadow_errors)


def judge_health(
    ctx: GuardContext,
    policy: DeploymentPolicy,
    version: str,
    baseline: str,
    slices: list[SliceResult],
    *,
    clean_fraction: float,
) -> dict[str, Any]:
    """Add pairing and error rates to ``slices`` (in place); the verdict's ``health``.

    ``version`` is the shadow version, ``baseline`` the primary version it shadows. Slices the
    shadow never answered have no pairs, so they are added here when untrusted. What is left
    of a slice without its untrusted parts is ``clean`` when its share of unpaired primaries
    stays under ``clean_fraction`` of the gap below the floor.
    """
    health = _Health.gather(ctx, version, baseline)
    rates = health.rates()
    floor = policy.shadow.pairing_floor
    minimum = policy.shadow.health_min_primaries
    where = {label: i for i, label in enumerate(health.labels)}
    with np.errstate(invalid="ignore"):
        low = (health.primaries >= minimum) & (rates["pairing_rate"] < floor)
    untrusted = {health.labels[i] for i in np.flatnonzero(low).tolist()}
    cleaned = {name: clean_floats(values) for name, values in rates.items()}
    none = dict.fromkeys(rates)
    seen = set()
    for result in slices:
        seen.add(result.slice)
        i = where.get(result.slice)
        result.stats.update(none if i is None else {k: v[i] for k, v in cleaned.items()})
        if result.slice in untrusted and result.state in ("ok", "insufficient"):
            result.state = "untrusted"
    for label in sorted(untrusted - seen):
        i = where[label]
        stats: dict[str, float | None] = dict.fromkeys(SHADOW_STATISTICS)
        stats.update({k: v[i] for k, v in cleaned.items()})
        slices.append(SliceResult(label, 0, "untrusted", stats))
    slices.sort(key=lambda r: r.slice)
    gap = max(1.0 - floor, 1e-12)

    def rest(parent: str, children: list[str]) -> Rest:
        p, kids = where[parent], [where[c] for c in children]
        left = int(health.primaries[p] - health.primaries[kids].sum())
        if left < minimum:
            return "unknown"
        missing = float(health.unpaired[p] - health.unpaired[kids].sum()) / left
        return "clean" if missing < clean_fraction * gap else "elevated"

    strength = {
        label: (1.0 - float(rates["pairing_rate"][where[label]])) / gap for label in untrusted
    }
    explained = explain(health.labels, untrusted, rest, strength) if untrusted else []
    return {
        "pairing_floor": floor,
        "untrusted": sorted(untrusted),
        "findings": [
            {
                "slice": label,
                "pairing_rate": clean_float(float(rates["pairing_rate"][where[label]])),
                "error_rate": clean_float(float(rates["error_rate"][where[label]])),
                "primaries": int(health.primaries[where[label]]),
                "unpaired": int(health.unpaired[where[label]]),
                "shadow_events": int(health.shadow_events[where[label]]),
                "shadow_errors": int(health.shadow_errors[where[label]]),
                "pairing_floor": floor,
            }
            for label in explained
        ],
    }
