"""The canary guard's change look: has the canary turned worse within the last few windows?

The cumulative look judges everything since the canary started, so an abrupt failure after
ten healthy minutes is diluted by them and proven only once enough bad windows outweigh them
(20-30 s for a tenfold error rate in the evaluation). The change look compares canary and
baseline on the data since each of the last ``change_windows`` windows, per (slice, metric),
with the window-limited Shiryaev-Roberts sum of mSPRTs of :mod:`streamguard.stats.change`.

Its error guarantee is a *rate*: the expected number of false alarms per look is at most
``change_alarms_per_day · window_s / 86400``, split like the cumulative test's alpha: half to
the whole deployment's metrics, half to every (slice, metric) with data to judge at that
look (a union bound at each look; the split is recomputed at every look, which keeps the
bound of that look). So it may only **pause**: a pause is cheap and waits for a human to
resume, a rollback needs the cumulative proof, whose guarantee covers the canary's whole life.

A start counts for a (slice, metric) only with ``min_samples`` in both arms since it and an
estimate on the harmful side; a finding also needs the estimate at its best start to be at
least ``practical_fraction`` of the smallest effect worth catching, like the cumulative
look's. The best start dates the onset (the finding's ``onset``), unless it is the oldest
window looked at: then the change may be older still, and ``onset_censored`` says so. Slices
are named by the same descent as the cumulative look
(:func:`~streamguard.guards.explain.explain`), on the totals of the last ``change_windows``
windows, built only when something crosses.
"""

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from streamguard.core.slices import ROOT
from streamguard.core.summary import Array, Field
from streamguard.core.verdict import Finding, GuardContext, clean_float
from streamguard.guards.canary_metrics import (
    ARM_FIELDS,
    any_metric,
    harmful,
    metric_moments,
    rest_judge,
)
from streamguard.guards.cumulative import Cumulative
from streamguard.guards.explain import explain
from streamguard.guards.stratification import BASELINE_STREAM, CANARY_STREAM
from streamguard.policy import CANARY_METRICS, CanaryPolicy
from streamguard.stats import change_statistic, change_threshold, suffix_moments
from streamguard.stats.change import SCALES

__all__ = ["Changed", "change_findings", "change_look"]

F64 = npt.NDArray[np.float64]
DAY_S = 86_400.0
_TOTAL_FIELDS = (
    Field("events", "count"),
    Field("errors", "count"),
    Field("latency", "moments"),
    Field("outcomes", "moments"),
)


@dataclass
class Changed:
    """The change look at one window close, per metric and label (aligned with ``labels``)."""

    labels: list[str]
    windows: int
    log_stat: dict[str, F64]
    log_threshold: F64  # per label: the deployment's or the slices' threshold
    start: dict[str, npt.NDArray[np.int64]]  # 0 = the last window alone
    delta: dict[str, F64]
    canary: dict[str, F64]  # moments since the best start
    baseline: dict[str, F64]
    firing: dict[str, npt.NDArray[np.bool_]]
    arms: tuple[list[dict[str, Array]], list[dict[str, Array]]]  # the windows, aligned

    def totals(self) -> tuple[Cumulative, Cumulative]:
        """Each arm's totals over the windows looked at (for naming: only when one fires)."""
        out = []
        for windows in self.arms:
            total = Cumulative(_TOTAL_FIELDS)
            for window in windows:
                total.add(self.labels, window)
            out.append(total)
        return out[0], out[1]


def _aligned(
    source: list[str], windows: list[dict[str, Array]], labels: list[str]
) -> list[dict[str, Array]]:
    """``windows`` (rows of ``source``) re-ordered to ``labels``; zeros for labels they lack."""
    if source == labels:
        return windows
    index = {label: i for i, label in enumerate(source)}
    rows = np.array([index.get(label, -1) for label in labels], dtype=np.int64)
    found = rows >= 0
    out = []
    for arrays in windows:
        aligned = {}
        for name, array in arrays.items():
            picked = np.zeros((len(labels), *array.shape[1:]), dtype=array.dtype)
            picked[found] = array[rows[found]]
            aligned[name] = picked
        out.append(aligned)
    return out


def change_look(  # noqa: PLR0917 - one call site, every argument is needed
    ctx: GuardContext,
    canary_version: str,
    baseline_version: str,
    labels: list[str],
    tau: dict[str, F64],
    settings: CanaryPolicy,
) -> Changed | None:
    """The change statistics of every (label, metric), or None when the look is off."""
    k = min(settings.change_windows, ctx.horizon_windows)
    if k <= 0 or not labels:
        return None
    canary_windows, baseline_windows = (
        _aligned(*ctx.windows(stream, version, k, ARM_FIELDS), labels)
        for stream, version in (
            (CANARY_STREAM, canary_version),
            (BASELINE_STREAM, baseline_version),
        )
    )
    c_metrics = [metric_moments(w) for w in canary_windows]
    b_metrics = [metric_moments(w) for w in baseline_windows]
    # At most 1 (long windows, a generous budget): half of it must stay a probability below 1.
    per_look = min(settings.change_alarms_per_day * ctx.window_s / DAY_S, 1.0)
    root = np.array([label == ROOT for label in labels])
    arms = (canary_windows, baseline_windows)
    changed = Changed(labels, k, {}, np.zeros(len(labels)), {}, {}, {}, {}, {}, arms)
    counted = []
    for metric in CANARY_METRICS:
        c = suffix_moments(np.stack([m[metric] for m in c_metrics]))
        b = suffix_moments(np.stack([m[metric] for m in b_metrics]))
        with np.errstate(invalid="ignore"):
            enough = (c[..., 0] >= settings.min_samples) & (b[..., 0] >= settings.min_samples)
        counts = enough & harmful(c[..., 1] - b[..., 1], settings.metrics[metric].worse)
        result = change_statistic(c, b, tau[metric], counts, SCALES)
        at = np.maximum(result.start, 0)[None, :, None]
        changed.log_stat[metric] = result.log_stat
        changed.start[metric] = result.start
        changed.delta[metric] = result.delta
        changed.canary[metric] = np.take_along_axis(c, at, axis=0)[0]
        changed.baseline[metric] = np.take_along_axis(b, at, axis=0)[0]
        # Sample sizes only, never the estimates' side: a data-dependent test count would
        # break the per-look union bound.
        counted.append(enough.any(axis=0))
    # The budget of each look: half for the deployment's metrics, half shared by the (slice,
    # metric) pairs with a start to judge now.
    slice_tests = int(np.sum(np.stack(counted) & ~root[None]))
    deployment = change_threshold(len(CANARY_METRICS), k, per_look / 2)
    slices = change_threshold(max(slice_tests, 1), k, per_look / 2)
    changed.log_threshold = np.where(root, deployment, slices)
    for metric in CANARY_METRICS:
        practical = np.abs(changed.delta[metric]) >= settings.practical_fraction * tau[metric]
        with np.errstate(invalid="ignore"):
            crossed = changed.log_stat[metric] >= changed.log_threshold
        changed.firing[metric] = crossed & practical
    return changed


def change_findings(
    changed: Changed,
    *,
    tau: dict[str, F64],
    settings: CanaryPolicy,
    window_start: float,
    window_s: float,
) -> list[Finding]:
    """Pause findings for the smallest slices that explain the change look's crossings.

    ``window_start`` is the start of the window that just closed.
    """
    labels = changed.labels
    index = {label: i for i, label in enumerate(labels)}
    firing = {labels[i] for i in np.flatnonzero(any_metric(changed.firing)).tolist()}
    if not firing:
        return []
    margin = {
        label: max(
            float(changed.log_stat[m][index[label]] - changed.log_threshold[index[label]])
            for m in CANARY_METRICS
            if changed.firing[m][index[label]]
        )
        for label in firing
    }
    rest = rest_judge(
        *changed.totals(), lambda label, metric: float(tau[metric][index[label]]), settings
    )
    names = explain(labels, firing, rest, margin)
    return [
        _finding(changed, index[label], tau, settings, window_start, window_s) for label in names
    ]


def _finding(  # noqa: PLR0917 - private, one call site
    changed: Changed,
    i: int,
    tau: dict[str, F64],
    settings: CanaryPolicy,
    window_start: float,
    window_s: float,
) -> Finding:
    metrics = [m for m in CANARY_METRICS if changed.firing[m][i]]  # explain names firing ones
    metric = max(metrics, key=lambda m: float(changed.log_stat[m][i]))
    spec = settings.metrics[metric]
    delta = float(changed.delta[metric][i])
    canary, baseline = changed.canary[metric][i], changed.baseline[metric][i]
    start = int(changed.start[metric][i])
    since = window_start - start * window_s
    # Evidence strongest on the longest look: the change may be older than the look can see.
    censored = start == changed.windows - 1
    floor = settings.practical_fraction * float(tau[metric][i])
    log_stat, log_threshold = float(changed.log_stat[metric][i]), float(changed.log_threshold[i])
    relative = f" ({delta / float(baseline[1]):+.1%})" if float(baseline[1]) else ""
    windows = start + 1
    return Finding(
        slice=changed.labels[i],
        action="pause",
        statistic=metric,
        value=clean_float(delta),
        threshold=-floor if spec.worse == "lower" else floor,
        n=int(canary[0]),
        stats={
            f"{m}.change_log_stat": clean_float(float(changed.log_stat[m][i]))
            for m in CANARY_METRICS
        },
        thresholds={
            m: {"min_effect": float(tau[m][i]), "log_threshold": log_threshold}
            for m in CANARY_METRICS
        },
        onset=None if censored else since,
        extra={
            "look": "change",
            "summary": (
                f"{metric} {delta:+.4g}{relative} vs baseline over the last {windows} "
                f"window(s){' (or longer)' if censored else ''}, "
                f"n={int(canary[0])} canary / {int(baseline[0])} baseline; "
                f"change statistic ln R={log_stat:.3g} >= {log_threshold:.3g}"
            ),
            "metric": metric,
            "effect": clean_float(delta),
            "relative_effect": clean_float(delta / float(baseline[1]))
            if float(baseline[1])
            else None,
            "since": since,
            "onset_censored": censored,  # True: the change began at or before ``since``
            "windows": windows,
            "canary_mean": clean_float(float(canary[1])),
            "baseline_mean": clean_float(float(baseline[1])),
            "n_canary": int(canary[0]),
            "n_baseline": int(baseline[0]),
            "log_stat": clean_float(log_stat),
            "log_threshold": clean_float(log_threshold),
            # Its false-alarm budget is spent per look, so a second window adds no safety.
            "per_look_budget": True,
            "test": (
                "window-limited Shiryaev-Roberts sum of mSPRTs (normal mixture, tau x "
                f"{', '.join(f'{s:g}' for s in SCALES)}) over the last {changed.windows} "
                f"windows; expected false pauses per day <= {settings.change_alarms_per_day:g}"
            ),
        },
    )
