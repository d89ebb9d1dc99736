"""The guard contract: what stage 2 gives a guard, and the verdict a guard returns.

A verdict lists every judged slice with its statistics and state, and the *findings*: the
slices that explain a breach, each with the action it calls for and its evidence. Stage 3
turns findings into commands; the verdict itself goes to the verdicts topic, where dashboards
and the demo's live table read it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt

from streamguard.core.items import ItemWindow
from streamguard.core.summary import Array

__all__ = [
    "SEVERITY_ACTION",
    "Finding",
    "Guard",
    "GuardContext",
    "SliceResult",
    "Verdict",
    "clean_float",
    "clean_floats",
]

#: Severity level -> action. 0 is healthy.
SEVERITY_ACTION = {1: "pause", 2: "rollback"}


def clean_float(value: float, digits: int = 6) -> float | None:
    """Round for evidence; NaN (undefined, e.g. no data) becomes None (JSON null)."""
    if value is None or not math.isfinite(value):
        return None
    return round(float(value), digits)


def clean_floats(values: npt.ArrayLike, digits: int = 6) -> list[float | None]:
    """:func:`clean_float` of every value, with one finiteness check for the whole column.

    Verdicts list every slice (1,000 and more, several statistics each); a function call per
    cell was most of a guard's time at many slices. The rounding is Python's own, so the
    values are exactly :func:`clean_float`'s.

    >>> clean_floats([0.1234567, float("nan"), 2.0, float("inf")])
    [0.123457, None, 2.0, None]
    """
    array = np.asarray(values, dtype=np.float64)
    floats = array.tolist()
    finite = np.isfinite(array)
    if finite.all():
        return [round(v, digits) for v in floats]
    return [round(v, digits) if ok else None for v, ok in zip(floats, finite.tolist(), strict=True)]


@dataclass(slots=True)
class SliceResult:
    """One slice's statistics and state in a verdict."""

    slice: str
    n: int
    state: str  # ok | pause | rollback | insufficient
    stats: dict[str, float | None]

    def to_dict(self) -> dict[str, Any]:
        """JSON form."""
        return {"slice": self.slice, "n": self.n, "state": self.state, "stats": self.stats}


@dataclass(slots=True)
class Finding:
    """A slice that explains a breach, with everything on-call needs to judge it."""

    slice: str
    action: str
    statistic: str
    value: float | None
    threshold: float
    n: int
    stats: dict[str, float | None]
    thresholds: dict[str, dict[str, float]]
    onset: float | None = None
    change_detected_at: float | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """JSON form."""
        out = {
            "slice": self.slice,
            "action": self.action,
            "statistic": self.statistic,
            "value": self.value,
            "threshold": self.threshold,
            "n": self.n,
            "stats": self.stats,
            "thresholds": self.thresholds,
            "onset": self.onset,
            "change_detected_at": self.change_detected_at,
        }
        out.update(self.extra)
        return out


@dataclass(slots=True)
class Verdict:
    """A guard's judgement of one deployment at one window close."""

    deployment: str
    guard: str
    model_version: str
    baseline_version: str
    window_start: float
    window_end: float
    horizon_start: float
    slices: list[SliceResult]
    findings: list[Finding]
    extra: dict[str, Any] = field(default_factory=dict)  # guard-specific summary (global tests)

    def to_dict(self) -> dict[str, Any]:
        """The verdict message (schema ``verdict``)."""
        return {
            **self.extra,
            "schema_version": 1,
            "kind": "verdict",
            "deployment": self.deployment,
            "guard": self.guard,
            "model_version": self.model_version,
            "baseline_version": self.baseline_version,
            "window_start": self.window_start,
            "window_end": self.window_end,
            "horizon_start": self.horizon_start,
            "slices": [s.to_dict() for s in self.slices],
            "findings": [f.to_dict() for f in self.findings],
        }


class GuardContext(Protocol):
    """What stage 2 gives a guard when a window closes."""

    deployment: str
    window: int  # index of the window that just closed
    window_s: int
    horizon_windows: int
    failed: set[str]  # guards that raised at this close so far (core.guard_failure)

    def versions(self, stream: str) -> list[str]:
        """Versions with data in the horizon for ``stream``, most recent first."""
        ...

    def horizon(self, stream: str, version: str) -> tuple[list[str], dict[str, Array]]:
        """Slice labels and summed arrays of ``stream``/``version`` over the horizon."""
        ...

    def recent(self, stream: str, version: str, windows: int) -> tuple[list[str], dict[str, Array]]:
        """Like :meth:`horizon`, over the last ``windows`` windows only (at most the horizon)."""
        ...

    def closed_window(self, stream: str, version: str) -> tuple[list[str], dict[str, Array]] | None:
        """Slice labels and arrays of the window that just closed (None if it had no data)."""
        ...

    def windows(
        self, stream: str, version: str, count: int, names: frozenset[str]
    ) -> tuple[list[str], list[dict[str, Array]]]:
        """Fields ``names`` of the last ``count`` windows one by one (oldest first, at most the
        horizon), each aligned with the labels; a window without data is all zeros."""
        ...

    def baseline_version(self, stream: str, version: str) -> str:
        """Primary (baseline) model version seen with ``stream``/``version``."""
        ...

    def item_windows(
        self, stream: str, version: str, slice_: str = "*"
    ) -> list[tuple[int, ItemWindow]]:
        """Closed windows of item exposures (``items:<role>``) in the horizon, oldest first.

        ``slice_`` is ``*`` (the whole deployment) or a slice of :meth:`item_slices`.
        """
        ...

    def item_slices(self, stream: str, version: str) -> list[str]:
        """Slices (not ``*``) with closed windows of item exposures, sorted."""
        ...

    def untracked_slices(self) -> int:
        """Slices whose item exposures were refused beyond the popularity guard's cap."""
        ...

    def state(self, guard: str) -> dict[Any, Any]:
        """Mutable per-(deployment, guard) state that survives between window closes."""
        ...


class Guard(Protocol):
    """A guard: judges a deployment's horizon at every window close.

    Its per-deployment state must pickle: stage 2 pickles it before each judgement to put it
    back if the guard raises (:mod:`streamguard.core.guard_failure`). What the context hands
    out is the guard's to read, not to change (the sums and labels are copies).
    """

    name: str

    def evaluate(self, ctx: GuardContext) -> Verdict | list[Verdict] | None:
        """A verdict (or one per model version it judges), or None when nothing to judge."""
        ...

    def snapshot_state(self, state: dict[Any, Any]) -> Any:
        """Its per-deployment state (see :meth:`GuardContext.state`) as snapshot data."""
        ...

    def restore_state(self, data: Any) -> dict[Any, Any]:
        """The per-deployment state :meth:`snapshot_state` saved."""
        ...
