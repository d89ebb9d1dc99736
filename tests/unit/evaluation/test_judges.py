"""Reference judges: the Mann-Whitney test against scipy, error rates by simulation, the join."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats

from streamguard.evaluation.judges import (
    GlobalThresholdJudge,
    KayentaJudge,
    Observations,
    mann_whitney,
)

values = st.lists(st.integers(0, 6).map(float), min_size=1, max_size=60)


@settings(max_examples=200, deadline=None)
@given(values, values)
def test_mann_whitney_matches_scipy_asymptotic_with_ties(x: list[float], y: list[float]) -> None:
    a, b = np.array(x), np.array(y)
    u, p = mann_whitney(a, b)
    if np.unique(np.concatenate([a, b])).size == 1:
        assert p == 1.0  # scipy divides by a zero variance here
        return
    want = stats.mannwhitneyu(a, b, alternative="two-sided", method="asymptotic")
    assert u == pytest.approx(want.statistic)
    assert p == pytest.approx(want.pvalue, rel=1e-9, abs=1e-12)


def test_mann_whitney_on_continuous_samples() -> None:
    rng = np.random.default_rng(3)
    a, b = rng.normal(0, 1, 500), rng.normal(0.2, 1, 700)
    want = stats.mannwhitneyu(a, b, alternative="two-sided", method="asymptotic")
    assert mann_whitney(a, b) == pytest.approx((want.statistic, want.pvalue))


def _served(role: str, ts: float, i: int, **extra: object) -> dict[str, object]:
    event = {
        "kind": "prediction", "role": role, "ts": ts, "request_id": f"{role}-{i}",
        "score": 0.5, "latency_ms": 40.0,
    }  # fmt: skip
    event.update(extra)
    return event


def _minute(obs: Observations, minute: int, rng: np.random.Generator, canary_err: float) -> None:
    """One minute of traffic: 400 primary and 100 canary requests, 2 % primary errors."""
    t = minute * 60.0
    errors = rng.random(500) < np.r_[np.full(400, 0.02), np.full(100, canary_err)]
    obs.add(
        [
            _served("primary" if k < 400 else "canary", t + k / 10, k, error=bool(errors[k]))
            for k in range(500)
        ]
    )


def _looks(canary_err: float, seed: int, minutes: int) -> list[bool]:
    """Whether the Kayenta judge failed the rollout at each minute's look."""
    rng = np.random.default_rng(seed)
    obs = Observations()
    failed = []
    for minute in range(minutes):
        _minute(obs, minute, rng, canary_err)
        failed.append(KayentaJudge().judge(obs, 0.0, (minute + 1) * 60.0) is not None)
    return failed


def test_kayenta_single_look_error_rate_is_within_its_level() -> None:
    # One look at a 98 % level, harmful direction only: about 1 % of null runs fail.
    fails = [_looks(0.02, seed, 1)[0] for seed in range(400)]
    assert np.mean(fails) < 0.04


def test_kayenta_repeated_looks_inflate_false_failures() -> None:
    # The weakness the sequential tests fix: re-judging a growing window at a fixed level.
    runs = [_looks(0.02, seed, 10) for seed in range(250)]
    single = np.mean([r[0] for r in runs])
    repeated = np.mean([any(r) for r in runs])
    assert repeated > single + 0.02


def test_kayenta_fails_a_canary_with_more_errors_and_names_the_metric() -> None:
    assert any(_looks(0.10, 1, 3))
    rng = np.random.default_rng(1)
    obs = Observations()
    for minute in range(3):
        _minute(obs, minute, rng, 0.10)
    found = KayentaJudge().judge(obs, 0.0, 180.0)
    assert found is not None
    assert found.metric == "errors"
    assert found.experiment > found.control
    assert found.p_value is not None


def test_global_threshold_judges_the_last_interval_only() -> None:
    rng = np.random.default_rng(2)
    obs = Observations()
    _minute(obs, 0, rng, 0.02)
    _minute(obs, 1, rng, 0.2)
    judge = GlobalThresholdJudge()
    assert judge.judge(obs, 0.0, 60.0) is None
    found = judge.judge(obs, 0.0, 120.0)
    assert found is not None
    assert found.metric == "errors"


def test_outcomes_join_their_served_request_within_the_join_window() -> None:
    obs = Observations(join_s=30.0)
    obs.add([_served("primary", 0.0, 1), _served("shadow", 0.0, 1)])
    obs.add([{"kind": "outcome", "request_id": "primary-1", "ts": 5.0}])
    obs.add([_served("primary", 100.0, 2)])  # moves time past the first request's join window
    obs.add([{"kind": "outcome", "request_id": "primary-2", "ts": 101.0}])
    obs.add([{"kind": "outcome", "request_id": "primary-1", "ts": 102.0}])  # too late: ignored
    clicks = obs.metrics("primary", 0.0, 200.0, wait_s=0.0)["ctr"]
    assert clicks.tolist() == [1.0, 1.0]
    assert obs.metrics("primary", 0.0, 200.0, wait_s=150.0)["ctr"].tolist() == [1.0]
    assert obs.experiment() == "shadow"
