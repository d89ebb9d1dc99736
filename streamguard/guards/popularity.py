"""Popularity guard: does the canary amplify popularity feedback faster than the baseline?

Recommending popular items makes them more popular, and a model trained on that traffic
narrows what users see. At every window close, for the most recent canary version and the
baseline (primary), each window of the last ``trend_windows`` gets the standard concentration
measures of its item exposures (:mod:`streamguard.stats.concentration`):

- ``gini``: Gini index of exposure over the exposed items (RecBole ``GiniIndex``);
- ``entropy``: Shannon entropy of the exposure shares over ``ln n`` (``n`` exposed items);
- ``top_share``: share of exposures going to the top ``top_fraction`` (1 %) of items;
- ``coverage``: distinct exposed items over the catalogue (``catalogue_size``), or, when it
  is unknown, over the distinct items either arm exposed over the horizon.

Items beyond the sketch's head (untracked) enter as one block sharing the untracked
exposures evenly over the estimated untracked distinct items.

Amplification is judged for the whole deployment and for each slice of 1 to ``slice_level``
dimensions with exposures in both arms (stage 1 counts them per slice; stage 2 keeps at most
``max_slices``), slices at ``z`` Bonferroni-corrected over the slices judged. One verdict
carries at most one pause: the whole deployment's when every judged slice breaches too, else
the breaching slice with the largest z of the Gini slope gap; the other breaching scopes go in
``also_breaching``:

- the Gini *trend*, the least-squares slope per window over the windows in which both arms
  have at least ``min_exposures``; the guard pauses when the canary's slope exceeds the
  baseline's by ``gini_slope_margin`` and by ``z`` standard errors of the difference, and
  the canary is the more concentrated arm in the last window;
- the rich-get-richer *elasticity*, the slope of an item's log share in window ``t+1`` on
  window ``t`` over the ``head_items`` largest items (averaged over the window pairs); the
  guard also pauses when the canary's exceeds ``1 + elasticity_margin``, the baseline's
  does not, and the canary's exceeds the baseline's (or 1) by ``z`` standard errors of the
  difference (each arm's from the spread of its per-window fits).

The evidence holds both arms' measures, their trends and the items gaining most share.
The guard is stateless between windows: everything is recomputed from stage 2's windows.
"""

import math

from streamguard.core.items import item_stream
from streamguard.core.slices import ROOT
from streamguard.core.verdict import Finding, GuardContext, SliceResult, Verdict, clean_float
from streamguard.guards.base import StatelessGuard
from streamguard.guards.popularity_scope import (
    MEASURES,
    Scope,
    clean,
    scope_of,
    shares,
    slope,
    weighted_gini,
    window_measures,
)
from streamguard.guards.stratification import BASELINE_STREAM, CANARY_STREAM, split_version
from streamguard.policy import DeploymentPolicy, PopularityPolicy
from streamguard.stats.equivalence import normal_quantile

__all__ = ["PopularityGuard", "slope", "weighted_gini", "window_measures"]

NAME = "popularity"


def _bonferroni(z: float, tests: int) -> float:
    """The one-sided critical value of ``tests`` tests at the family level of ``z``."""
    tail = 0.5 * math.erfc(z / math.sqrt(2.0))  # P(Z > z)
    return normal_quantile(1.0 - tail / max(tests, 1))


def _one_finding(findings: list[Finding], sliced: int) -> list[Finding]:
    """One pause per verdict, naming the narrowest scope that explains the breach.

    The whole deployment when every judged slice breaches too (or none was judged), else the
    breaching slice with the largest Gini-gap z: a loop on Android only also moves the whole
    deployment, and the command should say Android. The other breaching scopes are listed in
    ``also_breaching``.
    """
    if len(findings) <= 1:
        return findings
    slices = [f for f in findings if f.slice != ROOT]

    def strength(f: Finding) -> float:
        z = f.stats.get("gini_slope_gap_z")
        return float(z) if z is not None else -math.inf

    everywhere = len(slices) >= sliced
    best = (
        next(f for f in findings if f.slice == ROOT)
        if everywhere and len(slices) < len(findings)
        else max(slices, key=strength)
    )
    best.extra["also_breaching"] = sorted(f.slice for f in findings if f is not best)
    return [best]


class PopularityGuard(StatelessGuard):
    """Judges canary against baseline item-exposure concentration; see the module docstring."""

    name = NAME

    def evaluate(self, ctx: GuardContext) -> Verdict | None:
        """Verdict on the most recent canary version with item exposures, else None."""
        policy: DeploymentPolicy = self._policy_for(ctx.deployment)
        settings = policy.popularity
        canaries = ctx.versions(CANARY_STREAM)
        baselines = ctx.versions(BASELINE_STREAM)
        if not settings.enabled or not canaries or not baselines:
            return None
        key, baseline = canaries[0], baselines[0]
        first = ctx.window - settings.trend_windows + 1
        streams = {
            "canary": (item_stream("canary"), key),
            "baseline": (item_stream("primary"), baseline),
        }
        labels = [ROOT]
        if settings.slice_level:
            labels += sorted(
                set(ctx.item_slices(*streams["canary"]))
                & set(ctx.item_slices(*streams["baseline"]))
            )
        scopes: list[Scope] = []
        for label in labels:
            arms = {arm: dict(ctx.item_windows(*where, label)) for arm, where in streams.items()}
            if arms["canary"] and arms["baseline"]:
                scopes.append(scope_of(label, arms, settings, first))
        if not scopes or scopes[0].label != ROOT:
            return None
        # Each slice is one more test at every look: hold the family to the deployment's z.
        sliced = sum(len(sc.judged) >= settings.min_windows for sc in scopes[1:])
        results: list[SliceResult] = []
        findings: list[Finding] = []
        for sc in scopes:
            z = settings.z if sc.label == ROOT else _bonferroni(settings.z, sliced)
            result, finding = self._judge(ctx, settings, sc, z)
            if sc.label == ROOT or result.state != "insufficient":
                results.append(result)
            if finding is not None:
                findings.append(finding)
        findings = _one_finding(findings, sliced)
        root = scopes[0]
        version, _ = split_version(key)
        start = float(ctx.window * ctx.window_s)
        return Verdict(
            deployment=ctx.deployment,
            guard=NAME,
            model_version=version,
            baseline_version=baseline,
            window_start=start,
            window_end=start + ctx.window_s,
            horizon_start=float(first * ctx.window_s),
            slices=results,
            findings=findings,
            extra={
                "popularity": {
                    "windows": len(root.judged),
                    "trend": root.trend,
                    "slices_judged": sliced,
                    "untracked_slices": ctx.untracked_slices(),
                }
            },
        )

    def _judge(
        self, ctx: GuardContext, settings: PopularityPolicy, sc: Scope, z: float
    ) -> tuple[SliceResult, Finding | None]:
        """The scope's state and, when the canary amplifies, its finding."""
        latest = sc.judged[-1] if sc.judged else None
        stats = self._stats(sc.measures, latest, sc.trend)
        if len(sc.judged) < settings.min_windows or latest is None:
            return SliceResult(sc.label, sc.exposures, "insufficient", stats), None
        (b_c, se_c), (b_b, se_b) = sc.fitted["canary"], sc.fitted["baseline"]
        gap = b_c - b_b
        se_gap = math.hypot(se_c, se_b)
        stats["gini_slope_gap"] = clean_float(gap)
        stats["gini_slope_gap_z"] = clean_float(gap / se_gap) if se_gap > 0 else None
        more_concentrated = (
            sc.measures["canary"][latest]["gini"] > sc.measures["baseline"][latest]["gini"]
        )
        trending = gap > settings.gini_slope_margin and gap > z * se_gap and more_concentrated
        limit = 1.0 + settings.elasticity_margin
        (e_c, err_c), (e_b, err_b) = sc.elasticities["canary"], sc.elasticities["baseline"]
        reference = e_b if math.isfinite(e_b) else 1.0
        se_e = math.hypot(err_c, err_b if math.isfinite(e_b) else 0.0)
        amplifying = (
            math.isfinite(e_c) and e_c > limit and not e_b > limit and e_c - reference > z * se_e
        )
        if not (trending or amplifying):
            return SliceResult(sc.label, sc.exposures, "ok", stats), None
        finding = self._finding(ctx, settings, sc, stats, trending, gap)
        return SliceResult(sc.label, sc.exposures, "pause", stats), finding

    @staticmethod
    def _stats(
        measures: dict[str, dict[int, dict[str, float]]],
        latest: int | None,
        trend: dict[str, dict[str, float | None]],
    ) -> dict[str, float | None]:
        stats: dict[str, float | None] = {}
        for arm in ("canary", "baseline"):
            current = measures[arm].get(latest) if latest is not None else None
            for name in MEASURES:
                stats[f"{name}.{arm}"] = clean_float(current[name]) if current else None
            stats[f"gini_slope.{arm}"] = trend[arm]["gini_slope"]
            stats[f"elasticity.{arm}"] = trend[arm]["elasticity"]
        return stats

    @staticmethod
    def _finding(  # noqa: PLR0917 - private helper, one call site
        ctx: GuardContext,
        settings: PopularityPolicy,
        sc: Scope,
        stats: dict[str, float | None],
        trending: bool,
        gap: float,
    ) -> Finding:
        arms, measures, judged, trend = sc.arms, sc.measures, sc.judged, sc.trend
        before, now = arms["canary"][judged[0]], arms["canary"][judged[-1]]
        old, new = shares(before), shares(now)
        gains = sorted(
            ((item, share - old.get(item, 0.0)) for item, share in new.items()),
            key=lambda kv: (-kv[1], kv[0]),
        )[: settings.gainers]
        gainers = [
            {
                "item": item,
                "share_before": clean_float(old.get(item, 0.0)),
                "share_now": clean_float(new[item]),
                "gain": clean_float(gain),
            }
            for item, gain in gains
            if gain > 0
        ]
        if trending:
            statistic, value, threshold = "gini_slope_gap", gap, settings.gini_slope_margin
            text = (
                f"canary Gini rises {gap:+.4f}/window faster than the baseline's over "
                f"{len(judged)} windows"
            )
        else:
            statistic = "elasticity"
            value = float(trend["canary"]["elasticity"] or math.nan)
            threshold = 1.0 + settings.elasticity_margin
            text = f"canary rich-get-richer elasticity {value:.3f} > {threshold:.3f}"
        per_window: dict[str, list[dict[str, float | None]]] = {
            arm: [
                {"window_end": float((i + 1) * ctx.window_s), **clean(measures[arm][i])}
                for i in judged
            ]
            for arm in ("canary", "baseline")
        }
        return Finding(
            slice=sc.label,
            action="pause",
            statistic=statistic,
            value=clean_float(value),
            threshold=threshold,
            n=int(sum(measures["canary"][i]["exposures"] for i in judged)),
            stats=stats,
            thresholds={
                "gini_slope_gap": {"pause": settings.gini_slope_margin},
                "elasticity": {"pause": 1.0 + settings.elasticity_margin},
            },
            extra={
                "summary": text,
                "trend": trend,
                "measures": per_window,
                "gainers": gainers,
                "scope": "whole deployment" if sc.label == ROOT else f"slice {sc.label}",
            },
        )
