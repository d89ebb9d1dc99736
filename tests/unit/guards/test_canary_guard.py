"""The canary guard's evidence and trust, against numpy oracles over the raw events."""

import math
from typing import Any

import numpy as np
import pytest

from streamguard.core.slices import ROOT
from streamguard.policy import CANARY_METRICS
from streamguard.sim import Canary
from tests.unit.guards.canary_context import (
    POLICY,
    STRATA,
    Context,
    Events,
    draw,
    events_window,
)
from tests.unit.guards.test_canary_scenarios import run

SETTINGS = POLICY.canary
SMALL = ("web", "premium")  # a stratum the canary barely serves


def test_latency_p99_of_each_arm_is_within_the_sketch_accuracy_of_numpy() -> None:
    rng = np.random.default_rng(7)
    counts = dict.fromkeys(STRATA, 900) | {SMALL: 60}  # 180 canary events there: not judged
    baseline_ms = {s: 100.0 if s[0] == "ios" else 50.0 for s in STRATA}
    canary_ms = {s: 1.6 * ms for s, ms in baseline_ms.items()}  # a latency regression
    ctx, canary, baseline = Context(), [], []
    for _ in range(3):
        canary.append(draw(rng, counts, latency_ms=canary_ms))
        baseline.append(draw(rng, {s: 4 * n for s, n in counts.items()}, latency_ms=baseline_ms))
        _, verdict = ctx.close(events_window(canary[-1]), events_window(baseline[-1]))
    assert verdict is not None
    arms = {"canary": Events.concat(canary), "baseline": Events.concat(baseline)}
    judged = 0
    for result in verdict.slices:
        latencies = {arm: events.of(result.slice).latency_ms for arm, events in arms.items()}
        reported = {arm: result.stats[f"latency_p99_ms.{arm}"] for arm in arms}
        if min(len(x) for x in latencies.values()) < SETTINGS.min_samples:
            assert reported == {"canary": None, "baseline": None}, result.slice
            continue
        judged += 1
        for arm, x in latencies.items():
            # The sketch locates the value of rank q (n - 1): numpy's "lower" percentile.
            truth = float(np.percentile(x, 99, method="lower"))
            got = reported[arm]
            assert got is not None
            assert abs(got - truth) <= SETTINGS.latency_alpha * truth + 1e-6, (result.slice, arm)
    assert (len(verdict.slices), judged) == (12, 11)  # every label but the small stratum
    root = next(r for r in verdict.slices if r.slice == ROOT)
    assert verdict.extra["global"]["log_latency"]["p99_ms"] == {
        "canary": root.stats["latency_p99_ms.canary"],
        "baseline": root.stats["latency_p99_ms.baseline"],
    }
    # Findings carry the p99 of their slice; what triggers them is still mean log latency.
    assert verdict.findings
    stats = {r.slice: r.stats for r in verdict.slices}
    for finding in verdict.findings:
        assert finding.extra["metric"] == "log_latency"
        assert finding.extra["latency_p99_ms"] == {
            arm: stats[finding.slice][f"latency_p99_ms.{arm}"] for arm in ("canary", "baseline")
        }


def test_a_stratified_canary_is_trusted_only_once_its_mix_was_judged() -> None:
    rng = np.random.default_rng(3)
    ctx = Context()
    seen = []
    for _ in range(3):  # 300 canary events per window: the mix is judged from 500
        canary = draw(rng, dict.fromkeys(STRATA, 50))
        baseline = draw(rng, dict.fromkeys(STRATA, 1000))
        mix, verdict = ctx.close(events_window(canary), events_window(baseline))
        assert verdict is not None
        seen.append((mix.extra["status"], verdict.extra["status"], verdict.extra["trusted"]))
        assert verdict.extra["stratification"] == mix.extra["status"]
    # The first window is judged by the canary guard (300 >= min_samples) but not by the mix.
    assert seen == [
        ("insufficient", "untrusted", False),
        ("stratified", "no regression detected", True),
        ("stratified", "no regression detected", True),
    ]


def _value(events: Events, metric: str) -> Any:
    if metric == "outcome_rate":
        return events.outcomes
    if metric == "error_rate":
        return events.errors.astype(np.float64)
    return np.log(np.maximum(events.latency_ms, 1e-3))


def test_mix_adjusted_global_equals_a_numpy_post_stratified_oracle() -> None:
    rng = np.random.default_rng(11)
    # Simpson's paradox: the canary is worse in every stratum but mostly serves the stratum
    # with the highest click-through, so its raw global outcome rate looks better.
    ctr_baseline = {s: 0.30 if s == ("ios", "premium") else 0.05 for s in STRATA}
    ctr_canary = {s: 0.85 * p for s, p in ctr_baseline.items()}
    canary = draw(
        rng,
        {s: 3000 if s == ("ios", "premium") else 300 for s in STRATA} | {SMALL: 50},
        ctr=ctr_canary,
    )
    baseline = draw(
        rng, {s: 2000 if s == ("ios", "premium") else 6000 for s in STRATA}, ctr=ctr_baseline
    )
    _, verdict = Context().close(events_window(canary), events_window(baseline))
    assert verdict is not None
    adjusted = verdict.extra["global_adjusted"]
    assert set(adjusted) == set(CANARY_METRICS)
    level = SETTINGS.alpha / (2 * len(CANARY_METRICS))  # the whole deployment's per-test level
    for metric in CANARY_METRICS:
        weights, diffs, variances = [], [], []
        for k in range(len(STRATA)):
            c = _value(canary, metric)[canary.stratum == k]
            b = _value(baseline, metric)[baseline.stratum == k]
            weights.append(len(c) + len(b))  # population: both arms' traffic
            if min(len(c), len(b)) >= SETTINGS.min_samples:
                diffs.append(c.mean() - b.mean())
                variances.append(c.var(ddof=1) / len(c) + b.var(ddof=1) / len(b))
            else:
                diffs.append(np.nan)
                variances.append(np.nan)
        w, d, v = np.array(weights, float), np.array(diffs), np.array(variances)
        covered = np.isfinite(d)
        share = w[covered] / w[covered].sum()
        estimate = float(share @ d[covered])
        variance = float(share**2 @ v[covered])
        spec = SETTINGS.metrics[metric]
        tau = spec.min_effect * (abs(_value(baseline, metric).mean()) if spec.relative else 1.0)
        # mSPRT and its confidence sequence (Johari et al. 2022; Howard et al. 2021).
        t2 = tau * tau
        log_lr = 0.5 * math.log(variance / (variance + t2)) + t2 * estimate**2 / (
            2 * variance * (variance + t2)
        )
        half = math.sqrt(
            variance
            * (variance + t2)
            / t2
            * (2 * math.log(1 / level) + math.log((variance + t2) / variance))
        )
        got = adjusted[metric]
        assert got["estimate"] == pytest.approx(estimate, abs=1e-6), metric
        assert got["covered_weight"] == pytest.approx(w[covered].sum() / w.sum(), abs=1e-6)
        assert got["uncovered"] == ["platform=web,tier=premium"]
        assert got["p_value"] == pytest.approx(min(1.0, math.exp(-log_lr)), rel=1e-6, abs=1e-9)
        assert got["confidence_bounds"] == pytest.approx(
            [estimate - half, estimate + half], abs=1e-6
        )
    # The raw comparison is fooled by the mix; the adjusted one is not.
    assert (
        verdict.extra["global"]["outcome_rate"]["delta"] > 0 > adjusted["outcome_rate"]["estimate"]
    )


def _replay(canary: Canary, seconds: int) -> list[dict[str, Any]]:
    return run(canary, seconds, rate=100)[1]


def _by_window(verdicts: list[dict[str, Any]]) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    mix = {v["window_end"]: v for v in verdicts if v["guard"] == "stratification"}
    return [(mix[v["window_end"]], v) for v in verdicts if v["guard"] == "canary"]


def test_a_contaminated_canary_is_never_judged_healthy_before_its_mix_is_judged() -> None:
    # 10 canary requests/s, all iOS / North America: the canary guard has 200 per arm from
    # t = 20 s, the stratification guard needs 500 canary events (t = 50 s) to see the skew.
    verdicts = _replay(Canary(share=0.1, only={"platform": "ios", "region": "na"}), 60)
    windows = _by_window(verdicts)
    early = [
        canary
        for mix, canary in windows
        if mix["status"] == "insufficient"
        and canary["global"]["error_rate"]["n_canary"] >= SETTINGS.min_samples
    ]
    assert len(early) >= 2  # the reported case: judged by the canary guard, not by the mix
    assert {mix["status"] for mix, _ in windows} == {"insufficient", "contaminated"}
    for mix, canary in windows:
        assert canary["trusted"] is False
        assert canary["status"] == "untrusted"
        assert canary["stratification"] == mix["status"]


def test_a_healthy_canary_becomes_trusted_when_its_mix_is_judged_stratified() -> None:
    windows = _by_window(_replay(Canary(share=0.1), 80))
    statuses = [(mix["status"], canary["trusted"], canary["status"]) for mix, canary in windows]
    assert ("insufficient", False, "untrusted") in statuses
    assert statuses[-1] == ("stratified", True, "no regression detected")
    for mix, canary in windows:
        assert canary["trusted"] is (mix["status"] == "stratified")
