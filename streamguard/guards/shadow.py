"""Shadow-deviation guard: does the shadow (candidate) model score the same requests differently?

Per slice, over the horizon (default: the last 30 closed 10-second windows), from the pairs of
primary and shadow predictions of the same requests:

- ``mean_abs_dev``: mean of ``|shadow - primary|``;
- ``p95_abs_dev``: 95th percentile of it, from a relative-error log-bucket sketch (DDSketch,
  Masson, Rim & Lee, VLDB 2019), accurate to ``dev_alpha``;
- ``flip_rate``: share of requests whose decision at ``decision_threshold`` differs;
- ``psi``: population stability index of the shadow's score histogram against the primary's,
  on bins holding equal primary mass (deciles by default);
- ``js_distance``: Jensen-Shannon distance (base 2, in [0, 1]) on the same bins. This is the
  distance, the square root of the divergence, as Evidently's ``jensenshannon`` test and
  ``scipy.spatial.distance.jensenshannon`` compute it; Evidently's default threshold 0.1
  applies to it.

Shadow health, per slice, over the same horizon (:mod:`streamguard.guards.shadow_health`):
the pairing and error rates. A shadow that times out or fails on some slices compares only the
requests it answered there, so a slice with at least ``health_min_primaries`` primaries and a
pairing rate below ``pairing_floor`` is *untrusted*: its state says so (instead of ``ok``), and
the verdict's ``health`` lists the smallest untrusted slices that explain the gap, which stage 3
turns into an alert, never a pause or rollback.

A shadow version that sends predictions but pairs none in the horizon (it fails on every
request, ``error: true``) has nothing to compare. When it is the latest shadow version, the
guard gives a verdict with its health alone, against the latest primary version, once a slice
is untrusted: no findings, the untrusted slices with ``n`` 0, and the same ``health`` (so the
same notice). A shadow that stops answering altogether is reported through its pairs, which
stay in the horizon while the unpaired primaries pull its pairing rate under the floor (about
the pairing TTL plus a tenth of the horizon after it goes dark); one that never sent a
prediction cannot be named, and is not reported.

Two looks at the same statistics (:mod:`streamguard.guards.shadow_look`): the horizon, and
the last ``recent_windows`` windows (3, 30 s) alone. A sudden shift is diluted in the horizon
by the windows before it and would wait for the horizon to fill; the recent look sees it whole
within a window or two. It may only pause (a rollback needs the horizon), it judges the same
thresholds and ``min_pairs``, and it names only slices it can tell from their parts
(``Look.resolved``): with few pairs per child, the explanation would otherwise stop at a broad
slice. Nor does it widen what the guard has already named for the version: after
``platform=android,region=eu,tier=free``, a short look that cannot judge the paid part would
name ``platform=android,region=eu`` and pause paid users on no evidence about them. Widening
takes the horizon.

A slice with fewer than ``min_pairs`` pairs is *insufficient*, never judged. A statistic at or
above its ``pause`` threshold calls for a pause, at or above ``rollback`` for a rollback; the
slice takes the most severe. Findings name the smallest slices that explain the breach
(:mod:`streamguard.guards.explain`); each carries the onset of the shift dated by an
:class:`~streamguard.stats.OnsetTracker` over the slice's window-level series.
"""

import weakref
from typing import Any

import numpy as np
import numpy.typing as npt

from streamguard.core.measures import PairMeasures
from streamguard.core.slices import label_within
from streamguard.core.snapshot import Part
from streamguard.core.stage1 import PAIR_STREAM
from streamguard.guards.base import (
    SEVERITY_ACTION,
    Finding,
    GuardContext,
    SliceResult,
    Verdict,
    clean_float,
    clean_floats,
)
from streamguard.guards.onset_parts import restore_tracker, snapshot_tracker
from streamguard.guards.shadow_health import PRIMARY_ARM, SHADOW_ARM, judge_health, shadow_health
from streamguard.guards.shadow_look import CLEAN_FRACTION, Look, bands_for, shadow_statistics
from streamguard.policy import SHADOW_STATISTICS, DeploymentPolicy
from streamguard.stats import (
    OnsetTracker,
)

__all__ = ["CLEAN_FRACTION", "ShadowDeviationGuard", "shadow_health", "shadow_statistics"]

F64 = npt.NDArray[np.float64]
NAME = "shadow"
#: Key of the guard's state holding, per shadow version, the slices its findings have named.
_NAMED = "named"


def _widens(label: str, named: set[str]) -> bool:
    """Whether ``label`` is not in ``named`` and strictly contains a slice that is."""
    return label not in named and any(label_within(other, label) for other in named)


def _slice_results(look: Look) -> list[SliceResult]:
    """Every slice of ``look`` with its state and statistics, built column by column."""
    names = list(look.judged.stats)
    columns = [clean_floats(look.judged.stats[name]) for name in names]
    return [
        SliceResult(
            slice=label,
            n=n,
            state=SEVERITY_ACTION.get(level, "ok") if enough else "insufficient",
            stats=dict(zip(names, row, strict=True)),
        )
        for label, n, level, enough, row in zip(
            look.labels,
            look.n.astype(np.int64).tolist(),
            look.judged.severity.astype(np.int64).tolist(),
            look.enough.tolist(),
            zip(*columns, strict=True),
            strict=True,
        )
    ]


class ShadowDeviationGuard:
    """Judges the pair stream of each deployment; see the module docstring."""

    name = NAME

    def __init__(self, policy_for: Any) -> None:
        self._policy_for = policy_for  # deployment name -> DeploymentPolicy
        # Block parts of each onset tracker's series, beside the state (which stage 2 pickles
        # before every judgement): a tracker gone, or replaced by unpickling, takes its own.
        self._parts: weakref.WeakKeyDictionary[OnsetTracker, dict[int, Part]] = (
            weakref.WeakKeyDictionary()
        )

    def evaluate(self, ctx: GuardContext) -> Verdict | None:
        """Verdict on the most recent shadow version with data in the horizon."""
        policy: DeploymentPolicy = self._policy_for(ctx.deployment)
        if not policy.shadow.enabled:
            return None
        versions = ctx.versions(PAIR_STREAM)
        answering = ctx.versions(SHADOW_ARM)
        if answering and answering[0] not in versions:
            # The latest shadow version sent predictions but paired none in the horizon (it
            # failed on every request): there is nothing to compare, only its health to report.
            # While its health is fine (its first pairs may land in the next window), the
            # older version's pairs are judged as before.
            unpaired = self._unpaired_verdict(ctx, policy, answering[0])
            if unpaired is not None or not versions:
                return unpaired
        if not versions:
            return None
        version = versions[0]
        measures = PairMeasures.from_policy(policy.shadow)
        horizon = Look.of(
            "horizon", ctx.horizon_windows, ctx.horizon(PAIR_STREAM, version), policy, measures
        )
        if horizon is None:
            return None
        state = ctx.state(NAME)
        self._forget_old_versions(state, versions)
        self._track_onsets(ctx, policy, measures, version)
        named: set[str] = state.setdefault(_NAMED, {}).setdefault(version, set())
        chosen, explanations = horizon, horizon.explain()
        k = policy.shadow.recent_windows
        recent = None
        if 0 < k < ctx.horizon_windows:
            recent = Look.of("recent", k, ctx.recent(PAIR_STREAM, version, k), policy, measures)
        if recent is not None:
            # Only slices the short look can tell apart from their children (see Look.resolved)
            # and that do not widen an earlier finding; it wins only when more severe than what
            # the horizon finds.
            quick = [
                label
                for label in recent.explain()
                if recent.resolved(label) and not _widens(label, named)
            ]
            if recent.severity_of(quick) > horizon.severity_of(explanations):
                chosen, explanations = recent, quick
        named.update(explanations)
        findings = [
            self._finding(label, chosen, state.get((version, label))) for label in explanations
        ]
        slices = _slice_results(horizon)
        for finding in findings:  # a slice the recent look found is not "ok" in the list
            result = (
                slices[horizon.index[finding.slice]] if finding.slice in horizon.index else None
            )
            if result is not None and result.state in ("ok", "pause"):
                result.state = finding.action
        baseline = ctx.baseline_version(PAIR_STREAM, version)
        health = judge_health(ctx, policy, version, baseline, slices, clean_fraction=CLEAN_FRACTION)
        return self._verdict(
            ctx, version, baseline, slices=slices, findings=findings, health=health
        )

    def _unpaired_verdict(
        self, ctx: GuardContext, policy: DeploymentPolicy, version: str
    ) -> Verdict | None:
        """Health alone for a shadow version with predictions but no pair in the horizon.

        Its baseline is the latest primary version (no pair says which one it shadowed). None
        while no slice is untrusted: without pairs nothing else can be said, and a verdict
        without findings must not pass the version as judged.
        """
        primaries = ctx.versions(PRIMARY_ARM)
        if not primaries:
            return None
        slices: list[SliceResult] = []
        health = judge_health(
            ctx, policy, version, primaries[0], slices, clean_fraction=CLEAN_FRACTION
        )
        if not health["untrusted"]:
            return None
        return self._verdict(ctx, version, primaries[0], slices=slices, findings=[], health=health)

    @staticmethod
    def _verdict(
        ctx: GuardContext,
        version: str,
        baseline: str,
        *,
        slices: list[SliceResult],
        findings: list[Finding],
        health: dict[str, Any],
    ) -> Verdict:
        window_start = float(ctx.window * ctx.window_s)
        return Verdict(
            deployment=ctx.deployment,
            guard=NAME,
            model_version=version,
            baseline_version=baseline,
            window_start=window_start,
            window_end=window_start + ctx.window_s,
            horizon_start=float((ctx.window - ctx.horizon_windows + 1) * ctx.window_s),
            slices=slices,
            findings=findings,
            extra={"health": health},
        )

    def snapshot_state(self, state: dict[Any, Any]) -> Any:
        """Onset trackers per (shadow version, slice), their full blocks as parts
        (:mod:`streamguard.guards.onset_parts`), and the slices named per version."""
        parts = self._parts
        onsets = []
        for key, tracker in state.items():
            if key == _NAMED:
                continue
            cache = parts.get(tracker)
            if cache is None:
                cache = parts[tracker] = {}
            onsets.append([key[0], key[1], snapshot_tracker(tracker, cache)])
        return {
            "onsets": onsets,
            "named": {version: sorted(labels) for version, labels in state.get(_NAMED, {}).items()},
        }

    @staticmethod
    def restore_state(data: Any) -> dict[Any, Any]:
        """State saved by :meth:`snapshot_state` (or a list of trackers, as saved before)."""
        saved = data if isinstance(data, dict) else {"onsets": data, "named": {}}
        state: dict[Any, Any] = {
            (version, label): restore_tracker(tracker)
            for version, label, tracker in saved["onsets"]
        }
        state[_NAMED] = {version: set(labels) for version, labels in saved["named"].items()}
        return state

    @staticmethod
    def _forget_old_versions(state: dict[Any, Any], versions: list[str]) -> None:
        """Drop the state of shadow versions with no pairs left in the horizon."""
        live = set(versions)
        for key in [k for k in state if k != _NAMED and k[0] not in live]:
            del state[key]
        named = state.get(_NAMED, {})
        for version in [v for v in named if v not in live]:
            del named[version]

    @staticmethod
    def _finding(label: str, look: "Look", tracker: OnsetTracker | None) -> Finding:
        i, judged, bands = look.index[label], look.judged, look.bands
        severity = int(judged.severity[i])
        statistic = judged.worst[i]
        j = SHADOW_STATISTICS.index(statistic)
        return Finding(
            slice=label,
            action=SEVERITY_ACTION[severity],
            statistic=statistic,
            value=clean_float(float(judged.stats[statistic][i])),
            threshold=float(bands[i, j, severity - 1]),
            n=int(look.n[i]),
            stats={k: clean_float(float(v[i])) for k, v in judged.stats.items()},
            thresholds={
                name: {"pause": float(bands[i, k, 0]), "rollback": float(bands[i, k, 1])}
                for k, name in enumerate(SHADOW_STATISTICS)
            },
            onset=tracker.onset() if tracker else None,
            change_detected_at=tracker.detected_at if tracker else None,
            # Which look found it: the whole horizon, or only the last windows (a sudden shift).
            extra={"look": look.name, "look_windows": look.windows},
        )

    @staticmethod
    def _track_onsets(
        ctx: GuardContext, policy: DeploymentPolicy, measures: PairMeasures, version: str
    ) -> None:
        """Feed each slice's deviation in the window that just closed to its onset tracker.

        The series is normalised by the slice's pause thresholds (1.0 = at the threshold) so
        one detector setting serves every deployment and statistic.
        """
        closed = ctx.closed_window(PAIR_STREAM, version)
        if closed is None:
            return
        labels, window = closed
        n = window["pairs"]
        floor = max(20, policy.shadow.min_pairs // policy.horizon_windows)
        rows = np.flatnonzero(n >= floor)
        if not len(rows):
            return
        stats = shadow_statistics(
            {k: v[rows] for k, v in window.items()}, measures, policy.shadow.psi_groups
        )
        mad = SHADOW_STATISTICS.index("mean_abs_dev")
        flip = SHADOW_STATISTICS.index("flip_rate")
        row_labels = [labels[r] for r in rows.tolist()]
        row_bands = bands_for(policy, row_labels)
        level = np.maximum(
            stats["mean_abs_dev"] / np.maximum(row_bands[:, mad, 0], 1e-12),
            stats["flip_rate"] / np.maximum(row_bands[:, flip, 0], 1e-12),
        )
        state = ctx.state(NAME)
        start = float(ctx.window * ctx.window_s)
        for label, value in zip(row_labels, level.tolist(), strict=True):
            tracker = state.get((version, label))
            if tracker is None:
                tracker = state[(version, label)] = OnsetTracker()
            tracker.update(start, float(value))
