"""Canary guard: is the canary worse than the baseline, overall or in some slice?

Per slice, cumulatively since the canary version (and allocation) started, the canary's and
the baseline's (primary's) metrics are compared:

- ``outcome_rate``: mean outcome value per served request, from outcome events joined by
  request id within the join window (click-through or conversion rate);
- ``error_rate``: share of requests that failed;
- ``log_latency``: mean of ln(latency_ms). The p99 of each arm is reported alongside (slice
  stats ``latency_p99_ms.canary``/``.baseline``, findings' ``latency_p99_ms``) wherever
  latency is judged, read from the arm's relative-error latency sketch merged since the
  canary started, like the counts the tests use (DDSketch, Masson, Rim & Lee, VLDB 2019:
  within ``latency_alpha`` of the raw quantile); it informs, the test stays on the mean log
  latency.

Each comparison is an always-valid mixture SPRT (Johari, Pekelis & Walsh, "Always Valid
Inference", 2022) whose mixing scale τ is the metric's smallest effect worth catching; its
running-minimum p-value may be checked at every window close without inflating false alarms,
unlike a fixed-horizon test re-run on a growing window (Kayenta) or a count of threshold
crossings (Argo Rollouts, Flagger). Across slices (all levels below the whole deployment, all
metrics), Benjamini-Hochberg on the always-valid p-values controls the false discovery rate;
the whole deployment is reported separately, raw and mix-adjusted (post-stratified, Miratrix,
Sekhon & Yu 2013) so that a skewed canary cannot look healthy through Simpson's paradox. A
difference counts only when it is significant, harmful, and at least ``practical_fraction`` of
the smallest effect. A regression issues ``rollback`` naming the smallest slice that explains
it, with the effect, its always-valid confidence bounds, both arms' n and the test used.

A verdict is ``trusted`` only once the stratification guard (which judges first at each window
close) has seen enough canary events to judge the traffic mix and found it stratified like the
baseline's: before that, and on a contaminated allocation, ``status`` is ``untrusted`` (never
"no regression detected"), and ``stratification`` says why. Findings are issued either way: a
proven regression is one whatever the mix. With the stratification guard disabled by policy,
the mix is ``not checked`` and verdicts are trusted; when the stratification guard raised at
this close (:mod:`streamguard.core.guard_failure`), the mix is ``failed`` and verdicts are
untrusted, since its state is the previous close's.
"""

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from streamguard.core.measures import ArmMeasures
from streamguard.core.slices import ROOT, label_dims
from streamguard.core.verdict import Finding, GuardContext, Verdict, clean_float
from streamguard.guards.canary_change import change_findings, change_look
from streamguard.guards.canary_metrics import (
    any_metric,
    harmful,
    levels,
    metric_moments,
    rest_judge,
)
from streamguard.guards.canary_report import (
    ARMS,
    Tested,
    describe,
    p99_of,
    row_stats,
    row_summary,
    slice_results,
)
from streamguard.guards.cumulative import Cumulative
from streamguard.guards.explain import explain
from streamguard.guards.stratification import (
    BASELINE_STREAM,
    CANARY_STREAM,
    allocation_status,
    split_version,
)
from streamguard.policy import CANARY_METRICS, CanaryPolicy, DeploymentPolicy
from streamguard.stats import (
    benjamini_hochberg,
    confidence_sequence,
    msprt,
    normal_mixture_p_value,
    post_stratified_difference,
    running_p,
)

__all__ = ["CanaryGuard", "metric_moments"]

NAME = "canary"
F64 = npt.NDArray[np.float64]
LATENCY_Q = 0.99
TRUSTED_MIX = ("stratified", "not checked")


@dataclass
class _State:
    """Cumulative arm totals, running p-values and frozen τ of one canary version."""

    canary: Cumulative
    baseline: Cumulative
    p: dict[tuple[str, str], float] = field(default_factory=dict)  # (label, metric) -> p
    tau: dict[tuple[str, str], float] = field(default_factory=dict)
    windows: int = 0


class CanaryGuard:
    """Judges canary against baseline at every window close; see the module docstring."""

    name = NAME

    def __init__(self, policy_for: Any) -> None:
        self._policy_for = policy_for

    def evaluate(self, ctx: GuardContext) -> Verdict | None:
        """Verdict on the most recent canary version with data, or None without a canary."""
        policy: DeploymentPolicy = self._policy_for(ctx.deployment)
        settings = policy.canary
        canaries = ctx.versions(CANARY_STREAM)
        baselines = ctx.versions(BASELINE_STREAM)
        if not settings.enabled or not canaries or not baselines:
            return None
        key = canaries[0]
        measures = ArmMeasures.from_policy(settings)
        fields = measures.fields
        states: dict[str, _State] = ctx.state(NAME).setdefault("versions", {})
        state = states.setdefault(key, _State(Cumulative(fields), Cumulative(fields)))
        canary_window = ctx.closed_window(CANARY_STREAM, key)
        if canary_window is not None:
            state.windows += 1
            state.canary.add(*canary_window)
            baseline_window = ctx.closed_window(BASELINE_STREAM, baselines[0])
            if baseline_window is not None:
                state.baseline.add(*baseline_window)
        labels = sorted(state.canary.labels)
        if not labels:
            return None
        tested = self._test(state, labels, settings, measures)
        findings = self._findings(state, tested, settings)
        start = float(ctx.window * ctx.window_s)
        # Once the cumulative test rolls back, a pause anywhere is moot (the decider latches).
        changed = (
            None if findings else change_look(ctx, key, baselines[0], labels, tested.tau, settings)
        )
        if changed is not None:
            findings = change_findings(
                changed,
                tau=tested.tau,
                settings=settings,
                window_start=start,
                window_s=ctx.window_s,
            )
        adjusted = self._adjusted(state, policy, settings)
        if not policy.stratification.enabled:
            mix = "not checked"
        elif "stratification" in ctx.failed:
            mix = "failed"  # its state is the last close's: the mix now is not known
        else:
            mix = allocation_status(ctx.state("stratification"), key) or "unknown"
        trusted = mix in TRUSTED_MIX
        version, allocation = split_version(key)
        return Verdict(
            deployment=ctx.deployment,
            guard=NAME,
            model_version=version,
            baseline_version=baselines[0],
            window_start=start,
            window_end=start + ctx.window_s,
            horizon_start=float((ctx.window - state.windows + 1) * ctx.window_s),
            slices=slice_results(tested, {f.slice for f in findings if f.action == "pause"}),
            findings=findings,
            extra={
                "allocation": allocation,
                "status": self._status(tested, findings, trusted),
                "trusted": trusted,
                "stratification": mix,
                "global": row_summary(tested, labels.index(ROOT)) if ROOT in labels else {},
                "global_adjusted": adjusted,
            },
        )

    # -- snapshots -----------------------------------------------------------------------------

    @staticmethod
    def snapshot_state(state: dict[Any, Any]) -> Any:
        """Cumulative arm totals, running p-values and frozen τ per canary version."""
        return {
            key: {
                "canary": s.canary.snapshot(),
                "baseline": s.baseline.snapshot(),
                "p": [[label, metric, p] for (label, metric), p in s.p.items()],
                "tau": [[label, metric, t] for (label, metric), t in s.tau.items()],
                "windows": s.windows,
            }
            for key, s in state.get("versions", {}).items()
        }

    @staticmethod
    def restore_state(data: Any) -> dict[Any, Any]:
        """State saved by :meth:`snapshot_state`."""
        versions = {}
        for key, saved in data.items():
            versions[key] = _State(
                Cumulative.restore(saved["canary"]),
                Cumulative.restore(saved["baseline"]),
                {(label, metric): float(p) for label, metric, p in saved["p"]},
                {(label, metric): float(t) for label, metric, t in saved["tau"]},
                int(saved["windows"]),
            )
        return {"versions": versions}

    # -- tests ---------------------------------------------------------------------------------

    @staticmethod
    def _test(
        state: _State, labels: list[str], settings: CanaryPolicy, measures: ArmMeasures
    ) -> Tested:
        rows = {"canary": state.canary.take(labels), "baseline": state.baseline.take(labels)}
        canary, baseline = metric_moments(rows["canary"]), metric_moments(rows["baseline"])
        out = Tested(labels, canary, baseline, {}, {}, {}, {}, {}, {}, {})
        for metric in CANARY_METRICS:
            spec = settings.metrics[metric]
            c, b = canary[metric], baseline[metric]
            judged = (c[:, 0] >= settings.min_samples) & (b[:, 0] >= settings.min_samples)
            tau = np.array(
                [
                    _tau(state, label, metric, spec, float(b[i, 1]), bool(judged[i]))
                    for i, label in enumerate(labels)
                ]
            )
            result = msprt(c, b, np.where(judged, tau, 1.0))
            previous = np.array([state.p.get((label, metric), 1.0) for label in labels])
            # The running minimum only takes evidence of harm: a moment when the canary looked
            # better must not count later, when its estimate has crossed to the harmful side
            # (a healthy canary was once rolled back that way). Fewer rejections: still valid.
            harm = harmful(result.delta, spec.worse)
            p = np.where(judged, running_p(previous, np.where(harm, result.p_value, 1.0)), 1.0)
            for i, label in enumerate(labels):
                if judged[i]:
                    state.p[(label, metric)] = float(p[i])
            lower, upper = confidence_sequence(
                result.delta, result.variance, np.where(judged, tau, 1.0), levels(settings)[1]
            )
            out.delta[metric] = np.where(judged, result.delta, np.nan)
            out.p[metric], out.tau[metric], out.judged[metric] = p, tau, judged
            out.lower[metric], out.upper[metric] = lower, upper
        # Two families share alpha: the whole deployment (Bonferroni over its metrics) and
        # every (slice, metric) below it (Benjamini-Hochberg, which under the global null
        # also bounds the chance of any false rejection).
        global_level, slice_level = levels(settings)
        root = np.array([label == ROOT for label in labels])
        family = np.stack([np.where(root, np.nan, out.p[m]) for m in CANARY_METRICS])
        family = np.where(np.stack([out.judged[m] for m in CANARY_METRICS]), family, np.nan)
        rejected = benjamini_hochberg(family.ravel(), slice_level).reshape(family.shape)
        for k, metric in enumerate(CANARY_METRICS):
            spec = settings.metrics[metric]
            delta = out.delta[metric]
            harm = harmful(delta, spec.worse)
            practical = np.abs(delta) >= settings.practical_fraction * out.tau[metric]
            significant = np.where(root, out.p[metric] <= global_level, rejected[k])
            out.regressed[metric] = out.judged[metric] & significant & harm & practical
        # Reported where latency is judged: below min_samples a p99 is about the maximum.
        for arm in ARMS:
            p99 = measures.latency.quantile(rows[arm]["latency_sketch"], LATENCY_Q)
            out.p99[arm] = np.where(out.judged["log_latency"], p99, np.nan)
        return out

    def _findings(self, state: _State, tested: Tested, settings: CanaryPolicy) -> list[Finding]:
        labels = tested.labels
        index = {label: i for i, label in enumerate(labels)}
        regressed = any_metric(tested.regressed)
        firing = {labels[i] for i in np.flatnonzero(regressed).tolist()}
        if not firing:
            return []
        strength = {
            labels[i]: max(-math.log(max(float(tested.p[m][i]), 1e-300)) for m in CANARY_METRICS)
            for i in np.flatnonzero(regressed).tolist()
        }
        rest = rest_judge(
            state.canary,
            state.baseline,
            lambda label, metric: float(tested.tau[metric][index[label]]),
            settings,
        )
        names = explain(labels, firing, rest, strength)
        return [self._finding(tested, index[label], settings) for label in names]

    @staticmethod
    def _finding(tested: Tested, i: int, settings: CanaryPolicy) -> Finding:
        metrics = [m for m in CANARY_METRICS if tested.regressed[m][i]]
        if not metrics:  # an explanation inherited from breaching children: report its worst
            metrics = [min(CANARY_METRICS, key=lambda m: float(tested.p[m][i]))]
        metric = min(metrics, key=lambda m: float(tested.p[m][i]))
        delta = float(tested.delta[metric][i])
        baseline_mean = float(tested.baseline[metric][i, 1])
        floor = settings.practical_fraction * float(tested.tau[metric][i])
        spec = settings.metrics[metric]
        return Finding(
            slice=tested.labels[i],
            action="rollback",
            statistic=metric,
            value=clean_float(delta),
            threshold=-floor if spec.worse == "lower" else floor,
            n=int(tested.canary[metric][i, 0]),
            stats=row_stats(tested, i),
            thresholds={
                m: {"min_effect": float(tested.tau[m][i]), "alpha": settings.alpha}
                for m in CANARY_METRICS
            },
            extra={
                "summary": describe(tested, metric, i),
                "metric": metric,
                "regressed_metrics": metrics,
                "effect": clean_float(delta),
                "relative_effect": clean_float(delta / baseline_mean) if baseline_mean else None,
                "confidence_bounds": [
                    clean_float(float(tested.lower[metric][i])),
                    clean_float(float(tested.upper[metric][i])),
                ],
                "p_value": clean_float(float(tested.p[metric][i]), 9),
                # Valid at any stopping time: the decider need not wait for a second window.
                "always_valid": True,
                "canary_mean": clean_float(float(tested.canary[metric][i, 1])),
                "baseline_mean": clean_float(baseline_mean),
                "n_canary": int(tested.canary[metric][i, 0]),
                "n_baseline": int(tested.baseline[metric][i, 0]),
                "latency_p99_ms": p99_of(tested, i),
                "test": (
                    f"always-valid mSPRT (normal mixture, tau={float(tested.tau[metric][i]):.4g}); "
                    f"Benjamini-Hochberg across slices at {levels(settings)[1]:.4g}, "
                    f"whole deployment at {levels(settings)[0]:.4g}"
                ),
            },
        )

    # -- global, mix-adjusted --------------------------------------------------------------------

    @staticmethod
    def _adjusted(
        state: _State, policy: DeploymentPolicy, settings: CanaryPolicy
    ) -> dict[str, Any]:
        dims = set(policy.slices.dimensions)
        strata = sorted(
            label
            for label in set(state.canary.labels) | set(state.baseline.labels)
            if set(label_dims(label)) == dims
        )
        if not strata:
            return {}
        canary = state.canary.take(strata)
        baseline = state.baseline.take(strata)
        # Population weights: the baseline's and the canary's traffic together.
        weights = (canary["events"] + baseline["events"]).astype(np.float64)
        c_metrics, b_metrics = metric_moments(canary), metric_moments(baseline)
        out: dict[str, Any] = {}
        for metric in CANARY_METRICS:
            result = post_stratified_difference(
                c_metrics[metric], b_metrics[metric], weights, settings.min_samples
            )
            tau = state.tau.get((ROOT, metric), settings.metrics[metric].min_effect)
            estimate, variance = float(result.estimate), float(result.variance)
            if math.isfinite(estimate) and math.isfinite(variance) and variance > 0:
                p_now = float(normal_mixture_p_value(estimate, variance, tau))
                p = float(running_p(state.p.get(("*adjusted", metric), 1.0), p_now))
                state.p[("*adjusted", metric)] = p
                lower, upper = confidence_sequence(estimate, variance, tau, levels(settings)[0])
                bounds = [clean_float(float(lower)), clean_float(float(upper))]
            else:
                p, bounds = 1.0, [None, None]
            out[metric] = {
                "estimate": clean_float(estimate),
                "p_value": clean_float(p, 9),
                "confidence_bounds": bounds,
                "covered_weight": clean_float(float(result.covered_weight)),
                "uncovered": [
                    s for s, u in zip(strata, result.uncovered.tolist(), strict=True) if u
                ],
            }
        return out

    # -- status ----------------------------------------------------------------------------------

    @staticmethod
    def _status(tested: Tested, findings: list[Finding], trusted: bool) -> str:
        if not trusted:
            return "untrusted"  # never judged healthy on a mix that is contaminated or unjudged
        if findings:
            return "regression"
        root = tested.labels.index(ROOT) if ROOT in tested.labels else None
        if root is None or not any(bool(tested.judged[m][root]) for m in CANARY_METRICS):
            return "insufficient"
        return "no regression detected"


def _tau(  # noqa: PLR0917 - private helper, one call site
    state: _State, label: str, metric: str, spec: Any, baseline_mean: float, ready: bool
) -> float:
    """Mixing scale of a (slice, metric), frozen at its first judgement so the test stays valid.

    A relative effect is scaled by the baseline's mean once the slice has enough samples to
    judge; before that it is only a provisional value and not stored.
    """
    key = (label, metric)
    tau = state.tau.get(key)
    if tau is not None:
        return tau
    if not spec.relative:
        tau = float(spec.min_effect)
    elif math.isfinite(baseline_mean) and baseline_mean != 0:
        tau = float(spec.min_effect * abs(baseline_mean))
    else:
        return float(spec.min_effect)
    if ready:
        state.tau[key] = tau
    return tau
