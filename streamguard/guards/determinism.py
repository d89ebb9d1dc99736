"""Non-determinism guard: do one model version's outputs depend on the execution environment?

The same code and data can give different outputs on different hardware or library versions
(V100 against A100, NumPy 1.23 against 1.24), which breaks reproducibility and rollback.
Predictions carry an optional ``env_fingerprint``; per deployment and model version, over the
horizon of the ``env`` and ``env_pair`` streams (:mod:`streamguard.core.environments`):

- **paired** (the same requests): a shadow of the primary's own model version in another
  environment scores the same request, so ``d = score(a) − score(b)`` (fingerprints ``a < b``)
  is pure non-determinism. Two one-sided tests per fingerprint pair: the mean ``|d|`` above
  ``tolerance`` (z on its moments, :func:`~streamguard.stats.exceedance_p`), and the share of
  requests with ``|d| > tolerance`` above ``max_share`` (exact binomial,
  :func:`~streamguard.stats.binomial_sf`);
- **unpaired** (the same slices): per pair of fingerprints, the difference of mean scores
  post-stratified over the slice combinations both served (Miratrix, Sekhon and Yu, JRSS-B
  2013; :func:`~streamguard.stats.post_stratified_difference`), weighted by the version's
  traffic per stratum, so fingerprints serving different slice mixes are compared like for
  like. Tested against the interval null ``|Δ| <= tolerance``
  (:func:`~streamguard.stats.interval_null_p`), so harmless noise never flags however large
  the traffic.

All tests of a version form one family held at ``alpha`` by Holm's step-down. Confidence
intervals are two-sided at the Bonferroni level ``1 − alpha/K`` for the ``K`` tests made. A
breach is one finding per version, slice ``*``, action ``notice``: the decider turns it into a
signed alert naming the fingerprints and sends no command. Which environment is right cannot
be told from the outputs, and the model version itself is not at fault, so nothing is paused
or rolled back. The guard keeps no state: it recomputes from stage 2's windows.

Examples
--------
>>> from streamguard.core.environments import cell_label
>>> labels = ["~overflow", cell_label("a100", "b200")]
>>> arrays = {"events": np.array([0, 400]), "diff": np.array([[0, 0, 0], [400, 0.03, 0.04]]),
...     "abs_diff": np.array([[0, 0, 0], [400, 0.03, 0.04]]), "beyond": np.array([0, 400])}
>>> [(c.statistic, c.fingerprints, round(c.value, 3)) for c in paired_tests(labels, arrays,
...     DeterminismPolicy())]
[('mean_abs_diff', ('a100', 'b200'), 0.03), ('share_beyond', ('a100', 'b200'), 1.0)]
"""

import math
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from streamguard.core.environments import (
    ENV_PAIR_STREAM,
    ENV_STREAM,
    OVERFLOW_ROW,
    parse_cell,
)
from streamguard.core.summary import Array
from streamguard.core.verdict import Finding, GuardContext, SliceResult, Verdict, clean_float
from streamguard.guards.base import StatelessGuard
from streamguard.policy import DeploymentPolicy, DeterminismPolicy
from streamguard.stats import (
    binomial_sf,
    exceedance_p,
    holm,
    interval_null_p,
    normal_quantile,
    post_stratified_difference,
)

__all__ = ["Comparison", "DeterminismGuard", "judge", "paired_tests", "unpaired_tests"]

NAME = "determinism"
NOTICE = "notice"  # the decider's alert-only action


@dataclass(frozen=True, slots=True)
class Comparison:
    """One test between two fingerprints ``a < b``; differences are ``a`` minus ``b``."""

    check: str  # paired | unpaired
    fingerprints: tuple[str, str]
    statistic: str  # mean_abs_diff | share_beyond (paired), mean_diff (unpaired)
    value: float
    threshold: float
    difference: float  # mean score difference (paired: per request)
    se: float  # its standard error
    n: tuple[float, float]  # events of a and of b (paired: pairs, twice)
    p_value: float
    covered_weight: float = 1.0  # unpaired: share of the version's traffic in shared strata
    rejected: bool = False
    interval: tuple[float, float] = (math.nan, math.nan)

    def to_dict(self) -> dict[str, Any]:
        """Evidence form."""
        return {
            "check": self.check,
            "fingerprints": list(self.fingerprints),
            "statistic": self.statistic,
            "value": clean_float(self.value),
            "threshold": self.threshold,
            "difference": clean_float(self.difference),
            "confidence_interval": [clean_float(x) for x in self.interval],
            "n": {fp: int(n) for fp, n in zip(self.fingerprints, self.n, strict=True)},
            "p_value": clean_float(self.p_value, 9),
            "covered_weight": clean_float(self.covered_weight),
            "breach": self.rejected,
        }


def _rows(labels: list[str]) -> list[tuple[int, tuple[str, str]]]:
    return [(i, cell) for i, label in enumerate(labels) if (cell := parse_cell(label)) is not None]


def paired_tests(
    labels: list[str], arrays: dict[str, Array], policy: DeterminismPolicy
) -> list[Comparison]:
    """Mean ``|d|`` and share beyond the tolerance per fingerprint pair with enough pairs."""
    out: list[Comparison] = []
    for i, pair in _rows(labels):
        n = float(arrays["events"][i])
        if n < max(policy.min_pairs, 2):
            continue
        _, mean_abs, m2_abs = (float(v) for v in arrays["abs_diff"][i])
        _, mean_d, m2_d = (float(v) for v in arrays["diff"][i])
        se_abs = math.sqrt(max(m2_abs, 0.0) / (n - 1) / n)
        se_d = math.sqrt(max(m2_d, 0.0) / (n - 1) / n)
        beyond = int(arrays["beyond"][i])
        for statistic, value, threshold, p_value in (
            (
                "mean_abs_diff",
                mean_abs,
                policy.tolerance,
                float(exceedance_p(mean_abs, se_abs, policy.tolerance)),
            ),
            (
                "share_beyond",
                beyond / n,
                policy.max_share,
                binomial_sf(beyond, int(n), policy.max_share),
            ),
        ):
            out.append(
                Comparison(
                    check="paired",
                    fingerprints=pair,
                    statistic=statistic,
                    value=value,
                    threshold=threshold,
                    difference=mean_d,
                    se=se_d,
                    n=(n, n),
                    p_value=p_value,
                )
            )
    return out


def unpaired_tests(
    labels: list[str], arrays: dict[str, Array], policy: DeterminismPolicy
) -> tuple[list[Comparison], dict[str, int]]:
    """Post-stratified mean difference per pair of fingerprints; and events per fingerprint."""
    cells = _rows(labels)
    if not cells:
        return [], {}
    index = np.array([i for i, _ in cells], dtype=np.intp)
    fps, fp_of = np.unique([fp for _, (fp, _) in cells], return_inverse=True)
    strata, stratum_of = np.unique([s for _, (_, s) in cells], return_inverse=True)
    moments = np.zeros((len(fps), len(strata), 3))
    moments[fp_of, stratum_of] = arrays["score"][index]
    events = np.zeros((len(fps), len(strata)))
    events[fp_of, stratum_of] = arrays["events"][index]
    totals = {str(fp): int(n) for fp, n in zip(fps.tolist(), events.sum(axis=1), strict=True)}
    a, b = np.triu_indices(len(fps), k=1)
    if not len(a) or events.sum() <= 0:
        return [], totals
    result = post_stratified_difference(
        moments[a], moments[b], events.sum(axis=0), policy.min_stratum_events
    )
    se = np.sqrt(result.variance)
    enough = (result.n_canary >= policy.min_events) & (result.n_baseline >= policy.min_events)
    p = np.where(enough, interval_null_p(result.estimate, se, policy.tolerance), np.nan)
    out = []
    for k in np.flatnonzero(~np.isnan(p)).tolist():
        estimate = float(result.estimate[k])
        out.append(
            Comparison(
                check="unpaired",
                fingerprints=(str(fps[a[k]]), str(fps[b[k]])),
                statistic="mean_diff",
                value=abs(estimate),
                threshold=policy.tolerance,
                difference=estimate,
                se=float(se[k]),
                n=(float(result.n_canary[k]), float(result.n_baseline[k])),
                p_value=float(p[k]),
                covered_weight=float(result.covered_weight[k]),
            )
        )
    return out, totals


def judge(tests: list[Comparison], alpha: float) -> list[Comparison]:
    """The tests with Holm's decisions and Bonferroni intervals, strongest first."""
    if not tests:
        return []
    rejected = holm([t.p_value for t in tests], alpha).tolist()
    z = normal_quantile(1.0 - alpha / (2.0 * len(tests)))
    judged = [
        replace(t, rejected=r, interval=(t.difference - z * t.se, t.difference + z * t.se))
        for t, r in zip(tests, rejected, strict=True)
    ]
    # Smallest p first; at equal p (often 0) the paired check, then the larger difference.
    return sorted(
        judged, key=lambda t: (not t.rejected, t.p_value, t.check != "paired", -abs(t.difference))
    )


class DeterminismGuard(StatelessGuard):
    """Judges outputs across execution environments per model version; see the module."""

    name = NAME

    def evaluate(self, ctx: GuardContext) -> list[Verdict] | None:
        """One verdict per model version with fingerprinted predictions in the horizon."""
        policy: DeploymentPolicy = self._policy_for(ctx.deployment)
        settings = policy.determinism
        if not settings.enabled:
            return None
        scored, paired = ctx.versions(ENV_STREAM), ctx.versions(ENV_PAIR_STREAM)
        versions = sorted(set(scored) | set(paired))
        if not versions:
            return None
        return [
            self._judge(ctx, settings, version, version in scored, version in paired)
            for version in versions
        ]

    def _judge(
        self,
        ctx: GuardContext,
        settings: DeterminismPolicy,
        version: str,
        scored: bool,
        paired: bool,
    ) -> Verdict:
        tests: list[Comparison] = []
        totals: dict[str, int] = {}
        overflow = 0
        if scored:
            labels, arrays = ctx.horizon(ENV_STREAM, version)
            unpaired, totals = unpaired_tests(labels, arrays, settings)
            tests.extend(unpaired)
            if OVERFLOW_ROW in labels:
                overflow = int(arrays["events"][labels.index(OVERFLOW_ROW)])
        pairs = 0
        if paired:
            labels, arrays = ctx.horizon(ENV_PAIR_STREAM, version)
            tests.extend(paired_tests(labels, arrays, settings))
            pairs = int(arrays["events"].sum())
        judged = judge(tests, settings.alpha)
        breaches = [t for t in judged if t.rejected]
        top = judged[0] if judged else None
        stats: dict[str, float | None] = {
            "fingerprints": float(len(totals)),
            "events": float(sum(totals.values())),
            "overflow_events": float(overflow),
            "cross_env_pairs": float(pairs),
            "tests": float(len(judged)),
            "breaches": float(len(breaches)),
            "max_abs_difference": clean_float(max((abs(t.difference) for t in judged), default=0)),
            "min_p_value": clean_float(top.p_value if top else math.nan, 9),
        }
        state = "notice" if breaches else ("ok" if judged else "insufficient")
        listed = [t.to_dict() for t in judged[: settings.listed_comparisons]]
        findings = [self._finding(settings, version, breaches, totals, stats)] if breaches else []
        start = float(ctx.window * ctx.window_s)
        return Verdict(
            deployment=ctx.deployment,
            guard=NAME,
            model_version=version,
            baseline_version="",
            window_start=start,
            window_end=start + ctx.window_s,
            horizon_start=float((ctx.window - ctx.horizon_windows + 1) * ctx.window_s),
            slices=[SliceResult("*", int(stats["events"] or 0) + pairs, state, stats)],
            findings=findings,
            extra={"determinism": {"fingerprints": totals, "comparisons": listed}},
        )

    @staticmethod
    def _finding(
        settings: DeterminismPolicy,
        version: str,
        breaches: list[Comparison],
        totals: dict[str, int],
        stats: dict[str, float | None],
    ) -> Finding:
        top = breaches[0]
        involved = sorted({fp for t in breaches for fp in t.fingerprints})
        a, b = top.fingerprints
        low, high = top.interval
        if top.check == "paired":
            where = f"on the same requests ({int(top.n[0])} pairs)"
        else:
            where = (
                f"on the same slices ({int(top.n[0])} and {int(top.n[1])} events, "
                f"{top.covered_weight:.0%} of traffic in shared slices)"
            )
        text = (
            f"{a} minus {b} {where}: {top.statistic} {top.value:.4g} > {top.threshold:.4g} "
            f"(difference {top.difference:+.4g}, CI [{low:+.4g}, {high:+.4g}], "
            f"p={top.p_value:.2g}); fingerprints involved: {', '.join(involved)}; "
            "alert only: the model is not at fault, its environments disagree"
        )
        return Finding(
            slice="*",
            action=NOTICE,
            statistic=top.statistic,
            value=clean_float(top.value),
            threshold=top.threshold,
            n=int(sum(top.n)) if top.check == "unpaired" else int(top.n[0]),
            stats=stats,
            thresholds={
                "mean_abs_diff": {NOTICE: settings.tolerance},
                "mean_diff": {NOTICE: settings.tolerance},
                "share_beyond": {NOTICE: settings.max_share},
                "p_value": {NOTICE: settings.alpha},
            },
            extra={
                "summary": text,
                "check": top.check,
                "model_version": version,
                "fingerprints": involved,
                "events_per_fingerprint": {fp: totals.get(fp, 0) for fp in involved},
                "comparison": top.to_dict(),
                "breaches": [t.to_dict() for t in breaches[: settings.listed_comparisons]],
            },
        )
