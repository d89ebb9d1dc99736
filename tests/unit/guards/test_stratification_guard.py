"""The stratification guard's decisions on synthetic slice counts (no stages, no broker)."""

import numpy as np

from streamguard.guards.stratification import StratificationGuard, allocation_status
from tests.unit.guards.canary_context import (
    POLICY,
    STRATA,
    Context,
    counts_window,
    draw,
    events_window,
)

SETTINGS = POLICY.stratification
CANARY_EVENTS = 600_000


def skewed(tv: float) -> dict[tuple[str, str], int]:
    """Canary counts at total variation ``tv`` from a uniform mix: ``tv`` of the mass moves
    from (web, premium) to (ios, free), so each dimension and the joint mix are at ``tv``."""
    shares = {s: 1 / len(STRATA) for s in STRATA}
    shares[("ios", "free")] += tv
    shares[("web", "premium")] -= tv
    return {s: round(CANARY_EVENTS * p) for s, p in shares.items()}


def judge(canary: dict[tuple[str, str], int]) -> tuple[Context, dict]:
    ctx = Context()
    baseline = counts_window(dict.fromkeys(STRATA, 1000000))
    mix, _ = ctx.close(counts_window(canary), baseline, with_canary_guard=False)
    return ctx, mix.to_dict()


def test_a_harmless_skew_under_the_tv_floor_gets_no_command_with_huge_traffic() -> None:
    ctx, verdict = judge(skewed(0.05))
    tests = verdict["tests"]
    assert set(tests) == {"platform", "tier", "joint"}
    level = SETTINGS.alpha / len(tests)
    for name, result in tests.items():
        # The sequential SRM test alone would reject every mix at this traffic...
        assert result["p_value"] <= level, name
        # ... but the skew is below the effect-size floor, so nothing is acted on.
        assert result["total_variation"] < SETTINGS.tv_floor, name
        assert result["total_variation"] > 0.04, name
        assert result["uncovered"] == [], name
    assert verdict["findings"] == []
    assert verdict["status"] == "stratified"
    assert allocation_status(ctx.state("stratification"), "v2") == "stratified"


def test_the_same_traffic_with_a_skew_over_the_tv_floor_is_paused() -> None:
    ctx, verdict = judge(skewed(0.12))
    assert [f["action"] for f in verdict["findings"]] == ["pause"]
    finding = verdict["findings"][0]
    assert finding["statistic"].startswith("srm_p_value[")
    assert set(finding["mismatched_mixes"]) == {"platform", "tier", "joint"}
    assert finding["uncovered_weight"] < SETTINGS.max_uncovered_weight
    assert verdict["status"] == "contaminated"
    assert allocation_status(ctx.state("stratification"), "v2") == "contaminated"


def test_too_few_canary_events_are_insufficient_then_judged_once_enough() -> None:
    rng = np.random.default_rng(5)
    ctx = Context()
    ios_premium = {("ios", "premium"): 400}  # all of it in one stratum out of six
    baseline = events_window(draw(rng, dict.fromkeys(STRATA, 2000)))
    mix, canary = ctx.close(events_window(draw(rng, ios_premium)), baseline)
    assert (mix.extra["canary_events"], mix.extra["status"]) == (400, "insufficient")
    assert mix.findings == []
    assert {r.state for r in mix.slices} == {"insufficient"}
    # The canary guard judges its arms (400 >= min_samples) but may not call that healthy.
    assert canary is not None
    assert canary.extra["global"]["error_rate"]["n_canary"] == 400
    assert (canary.extra["status"], canary.extra["trusted"]) == ("untrusted", False)
    assert canary.extra["stratification"] == "insufficient"
    # 200 more events of the same stratum: now judged, and contaminated.
    mix, canary = ctx.close(events_window(draw(rng, {("ios", "premium"): 200})), baseline)
    assert (mix.extra["canary_events"], mix.extra["status"]) == (600, "contaminated")
    assert [f.action for f in mix.findings] == ["pause"]
    assert canary is not None
    assert (canary.extra["status"], canary.extra["trusted"]) == ("untrusted", False)
    assert canary.extra["stratification"] == "contaminated"


def test_the_judgement_survives_a_snapshot_and_older_snapshots_restore() -> None:
    ctx, _ = judge(skewed(0.12))
    state = ctx.state("stratification")
    restored = StratificationGuard.restore_state(StratificationGuard.snapshot_state(state))
    assert allocation_status(restored, "v2") == "contaminated"
    old = StratificationGuard.snapshot_state(state)
    del old["status"]
    old["contaminated"] = {"v2": True, "v1": False}  # the format before judgements were kept
    restored = StratificationGuard.restore_state(old)
    assert allocation_status(restored, "v2") == "contaminated"
    assert allocation_status(restored, "v1") is None  # not known stratified: untrusted
