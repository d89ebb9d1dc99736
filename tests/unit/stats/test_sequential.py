"""Tests for streamguard.stats.sequential: formulas, edge cases and error-rate simulations.

The simulations monitor 1,000 independent canary/baseline comparisons over 200 looks each,
vectorised over runs, and check the false-alarm rate of the always-valid p-value, the
coverage of the confidence sequence and the power against a 20% relative drop. Each prints
its measured rate (run pytest with ``-s`` to see them).
"""

import math
import warnings
from collections.abc import Callable

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from streamguard.stats.moments import merge_moments, moments_by_group
from streamguard.stats.sequential import (
    Msprt,
    confidence_sequence,
    msprt,
    normal_mixture_p_value,
    running_p,
)

RUNS = 1_000
LOOKS = 200
ALPHA = 0.05
# Binomial tolerance for a rate estimated from 1,000 runs: 3 standard errors above α.
TOLERANCE = 3 * math.sqrt(ALPHA * (1 - ALPHA) / RUNS)


def scalar_log_lr(
    c: tuple[float, float, float], b: tuple[float, float, float], tau: float, theta0: float = 0.0
) -> float:
    """ln Λ of Johari et al., written out with the math module."""
    (n_c, mean_c, m2_c), (n_b, mean_b, m2_b) = c, b
    v = m2_c / (n_c - 1) / n_c + m2_b / (n_b - 1) / n_b
    return scalar_log_lr_v(mean_c - mean_b - theta0, v, tau)


def scalar_log_lr_v(d: float, v: float, tau: float) -> float:
    """ln of Λ = sqrt(v/(v+τ²)) · exp(τ² d² / (2 v (v+τ²))), term by term (exp would overflow)."""
    return 0.5 * math.log(v / (v + tau**2)) + tau**2 * d**2 / (2 * v * (v + tau**2))


moment_rows = st.tuples(
    st.integers(2, 10_000).map(float),
    st.floats(-100, 100, allow_nan=False),
    st.floats(1e-3, 1e4, allow_nan=False),
)


@settings(max_examples=200)
@given(moment_rows, moment_rows, st.floats(0.01, 10.0), st.floats(-1.0, 1.0))
def test_log_lr_matches_direct_formula(
    c: tuple[float, float, float], b: tuple[float, float, float], tau: float, theta0: float
) -> None:
    got = msprt(np.array(c), np.array(b), tau=tau, theta0=theta0)
    expected = scalar_log_lr(c, b, tau=tau, theta0=theta0)
    assert float(got.log_lr) == pytest.approx(expected, rel=1e-9, abs=1e-9)
    assert float(got.delta) == pytest.approx(c[1] - b[1], rel=1e-12, abs=1e-12)
    v = c[2] / (c[0] - 1) / c[0] + b[2] / (b[0] - 1) / b[0]
    assert float(got.variance) == pytest.approx(v, rel=1e-12)
    assert 0.0 <= float(got.p_value) <= 1.0  # exp(−ln Λ) may underflow to 0
    expected_p = min(1.0, math.exp(-expected)) if expected < 700 else 0.0
    assert float(got.p_value) == pytest.approx(expected_p, rel=1e-8, abs=1e-300)


@settings(max_examples=50)
@given(
    hnp.arrays(np.float64, (4, 3, 3), elements=st.floats(0.0, 1.0)),
    hnp.arrays(np.float64, (3, 3), elements=st.floats(0.0, 1.0)),
)
def test_vectorised_equals_row_by_row(raw_c: np.ndarray, raw_b: np.ndarray) -> None:
    def as_moments(raw: np.ndarray) -> np.ndarray:
        out = raw.copy()
        out[..., 0] = np.floor(raw[..., 0] * 50)  # includes n < 2 rows
        out[..., 1] = raw[..., 1] * 10 - 5
        out[..., 2] = raw[..., 2] * 100
        return out

    c, b = as_moments(raw_c), as_moments(raw_b)
    tau = np.array([0.5, 1.0, 2.0])  # broadcasts over the last leading axis
    got = msprt(c, b, tau=tau)
    assert got.log_lr.shape == (4, 3)
    for i in range(4):
        for j in range(3):
            one = msprt(c[i, j], b[j], tau=tau[j])
            for field in ("delta", "variance", "log_lr", "p_value"):
                # Equal up to an ulp or so: numpy's SIMD and scalar loops of exp/log may
                # round differently (hypothesis found a 1.1e-16 difference in log_lr).
                np.testing.assert_allclose(
                    getattr(got, field)[i, j], getattr(one, field), rtol=1e-13, atol=1e-300
                )


@settings(max_examples=100)
@given(moment_rows, moment_rows, st.floats(-1e3, 1e3, allow_nan=False))
def test_invariant_to_a_common_shift(
    c: tuple[float, float, float], b: tuple[float, float, float], shift: float
) -> None:
    step = np.array([0.0, shift, 0.0])
    base = msprt(np.array(c), np.array(b), tau=0.5)
    moved = msprt(np.array(c) + step, np.array(b) + step, tau=0.5)
    # Means near 1e3 lose ~1e-13 absolute to rounding; nothing else changes.
    assert float(moved.log_lr) == pytest.approx(float(base.log_lr), rel=1e-6, abs=1e-6)
    assert float(moved.delta) == pytest.approx(float(base.delta), abs=1e-9)


def test_matches_moments_of_raw_data() -> None:
    rng = np.random.default_rng(3)
    x = np.concatenate([rng.normal(1.0, 2.0, 300), rng.normal(0.5, 1.0, 500)])
    m = moments_by_group(x, np.repeat([0, 1], [300, 500]), 2)
    got = msprt(m[0], m[1], tau=0.3)
    v = np.var(x[:300], ddof=1) / 300 + np.var(x[300:], ddof=1) / 500
    assert float(got.variance) == pytest.approx(v, rel=1e-12)
    assert float(got.delta) == pytest.approx(np.mean(x[:300]) - np.mean(x[300:]), rel=1e-12)


def _no_warnings(fn: Callable[[], Msprt]) -> Msprt:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        return fn()


def test_rows_without_evidence_give_p_one_without_warnings() -> None:
    c = np.array(
        [
            [1.0, 0.3, 0.0],  # n_c < 2
            [0.0, 0.0, 0.0],  # empty
            [100.0, 0.0, 0.0],  # all zeros in both arms: identical constants
            [50.0, 2.0, 0.0],  # both constant and equal
            [np.nan, 0.1, 1.0],  # missing
            [100.0, np.inf, 1.0],  # not finite
        ]
    )
    b = np.array(
        [
            [100.0, 0.1, 9.0],
            [100.0, 0.1, 9.0],
            [100.0, 0.0, 0.0],
            [70.0, 2.0, 0.0],
            [100.0, 0.1, 9.0],
            [100.0, 0.1, 9.0],
        ]
    )
    got = _no_warnings(lambda: msprt(c, b, tau=0.02))
    np.testing.assert_array_equal(got.p_value, 1.0)
    np.testing.assert_array_equal(got.log_lr, 0.0)
    assert np.isnan(got.delta).all()
    assert np.isnan(got.variance).all()
    lo, hi = confidence_sequence(got.delta, got.variance, tau=0.02, alpha=ALPHA)
    assert np.isnan(lo).all()
    assert np.isnan(hi).all()


def test_zero_variance_with_different_means_uses_the_pooled_variance() -> None:
    # Canary fails every request, baseline never: 0/1 data with both plug-in variances 0.
    n = 500.0
    got = _no_warnings(lambda: msprt([n, 1.0, 0.0], [n, 0.0, 0.0], tau=0.02))
    # Both arms merged: mean 0.5, m2 = 2n · 0.25, so v = (n/2)/(2n − 1) · (2/n).
    pooled = (n / 2) / (2 * n - 1) * (2 / n)
    assert float(got.variance) == pytest.approx(pooled, rel=1e-12)
    assert float(got.delta) == 1.0
    assert float(got.log_lr) == pytest.approx(scalar_log_lr_v(1.0, pooled, 0.02), rel=1e-12)
    assert float(got.p_value) < 1e-6
    # Constant but different real values (e.g. a metric stuck at a new value) also count.
    stuck = msprt([30.0, 5.1, 0.0], [40.0, 5.0, 0.0], tau=0.05)
    assert float(stuck.p_value) < 0.01
    # One constant arm (no error in 100 requests against a 10 % baseline): the plug-in
    # variance ignores the constant arm's uncertainty, so the larger pooled one is used.
    one = msprt([100.0, 0.0, 0.0], [100.0, 0.1, 9.0], tau=0.02)
    pooled_one = (9.0 + 0.1**2 * 100 * 100 / 200) / 199 * (2 / 100)
    assert pooled_one > 9.0 / 99 / 100
    assert float(one.variance) == pytest.approx(pooled_one, rel=1e-12)
    # ... and the plug-in one when it is the larger.
    wide = msprt([100.0, 0.1, 0.0], [100.0, 0.1, 900.0], tau=0.02)
    assert float(wide.variance) == pytest.approx(900.0 / 99 / 100, rel=1e-12)


def test_extreme_variances_give_no_nan_and_no_warnings() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        # Subnormal v next to τ²: ln Λ = −½ ln((v+τ²)/v) + ½ Δ̂²/v · τ²/(v+τ²) is finite or +inf.
        p = normal_mixture_p_value([0.0, 1e-160, 0.1, 1e200], [5e-324, 5e-324, 5e-324, 1e300], 0.1)
        r = msprt([2.0, 1e-3, 1e-320], [2.0, 0.0, 1e-320], tau=0.02)
        lo, hi = confidence_sequence([0.1, 0.1], [5e-324, 1e300], tau=0.1, alpha=0.05)
    assert p[0] == 1.0  # Δ̂ = 0: only the −½ ln((v+τ²)/v) ≈ −370 term
    assert 0.0 < p[1] < 1e-200
    assert p[2] == 0.0
    assert p[3] == 1.0
    assert float(r.log_lr) == np.inf
    assert float(r.p_value) == 0.0
    assert lo[0] <= 0.1 <= hi[0]  # half-width ~6e-161, lost in 0.1 ± it
    assert hi[0] - lo[0] < 1e-150
    assert np.isinf(lo[1])
    assert np.isinf(hi[1])


def test_validation() -> None:
    with pytest.raises(ValueError, match="tau"):
        msprt([10.0, 0.0, 1.0], [10.0, 0.0, 1.0], tau=0.0)
    with pytest.raises(ValueError, match="tau"):
        msprt([10.0, 0.0, 1.0], [10.0, 0.0, 1.0], tau=[0.1, -1.0])
    with pytest.raises(ValueError, match="canary"):
        msprt([10.0, 0.0], [10.0, 0.0, 1.0], tau=0.1)
    with pytest.raises(ValueError, match="alpha"):
        confidence_sequence(0.0, 1.0, tau=0.1, alpha=1.0)
    with pytest.raises(ValueError, match="tau"):
        confidence_sequence(0.0, 1.0, tau=np.nan, alpha=0.05)
    with pytest.raises(ValueError, match="tau"):  # τ² would underflow to 0
        confidence_sequence(0.0, 1.0, tau=1e-200, alpha=0.05)


@settings(max_examples=200)
@given(
    st.floats(-1.0, 1.0),
    st.floats(1e-6, 1.0),
    st.floats(0.01, 1.0),
    st.floats(0.001, 0.5),
    st.floats(-3.0, 3.0),
)
def test_confidence_sequence_is_the_set_not_rejected(
    delta: float, v: float, tau: float, alpha: float, where: float
) -> None:
    lo, hi = confidence_sequence(delta, v, tau=tau, alpha=alpha)
    half = float(hi) - delta
    assert float(lo) == pytest.approx(delta - half)
    assert half > 0
    # A θ0 inside the bounds is not rejected at level α, one outside is (Λ(θ0) vs 1/α).
    theta0 = delta + where * half
    if abs(abs(where) - 1.0) < 1e-6:
        return
    # Moments with that Δ̂ and v: n = 2 per arm, m2 = v (so v_c + v_b = v/2 + v/2).
    got = msprt([2.0, delta, v], [2.0, 0.0, v], tau=tau, theta0=theta0)
    assert float(got.variance) == pytest.approx(v)
    assert (float(got.p_value) <= alpha) == (abs(where) > 1.0)


def test_confidence_sequence_formula() -> None:
    v, tau, alpha = 0.004, 0.1, 0.05
    half = math.sqrt(
        v * (v + tau**2) / tau**2 * (2 * math.log(1 / alpha) + math.log((v + tau**2) / v))
    )
    lo, hi = confidence_sequence(np.array([0.0, 1.0]), v, tau=tau, alpha=alpha)
    np.testing.assert_allclose(lo, [-half, 1 - half], rtol=1e-12)
    np.testing.assert_allclose(hi, [half, 1 + half], rtol=1e-12)
    # Howard et al.'s form for S = Δ̂/v, V = 1/v, ρ = 1/τ²: the same boundary.
    big_v, rho = 1 / v, 1 / tau**2
    howard = math.sqrt((big_v + rho) * math.log((big_v + rho) / (rho * alpha**2)))
    assert half / v == pytest.approx(howard, rel=1e-12)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        lo, hi = confidence_sequence([0.1, 0.1, np.nan], [0.0, -1.0, 0.1], tau=tau, alpha=alpha)
    assert np.isnan(lo).all()
    assert np.isnan(hi).all()


@settings(max_examples=100)
@given(moment_rows, moment_rows, st.floats(0.01, 10.0), st.floats(-1.0, 1.0))
def test_normal_mixture_p_value_matches_msprt(
    c: tuple[float, float, float], b: tuple[float, float, float], tau: float, theta0: float
) -> None:
    r = msprt(np.array(c), np.array(b), tau=tau, theta0=theta0)
    got = normal_mixture_p_value(r.delta, r.variance, tau=tau, theta0=theta0)
    np.testing.assert_allclose(got, r.p_value, rtol=1e-12, atol=0)


def test_normal_mixture_p_value_edges() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        got = normal_mixture_p_value(
            [0.1, np.nan, 0.1, 0.1, 5.0], [0.0, 0.1, np.inf, -1.0, 1e-300], 0.1
        )
    np.testing.assert_array_equal(got, [1.0, 1.0, 1.0, 1.0, 0.0])
    with pytest.raises(ValueError, match="tau"):
        normal_mixture_p_value(0.1, 0.1, tau=-1.0)


def test_running_p() -> None:
    np.testing.assert_array_equal(
        running_p([np.nan, 0.2, 0.2, np.nan], [0.5, 0.1, 0.3, np.nan]), [0.5, 0.1, 0.2, 1.0]
    )
    p = np.array([0.9, 0.4, 0.6, 0.05, 0.7])
    acc = np.nan
    seen = []
    for value in p:
        acc = running_p(acc, value)
        seen.append(float(acc))
    assert seen == [0.9, 0.4, 0.4, 0.05, 0.05]


# --- simulations -------------------------------------------------------------------------


def bernoulli_paths(
    rng: np.random.Generator, rate: float, per_look: tuple[int, int] | int
) -> np.ndarray:
    """Cumulative (n, mean, m2) of 0/1 outcomes, shape (RUNS, LOOKS, 3)."""
    if isinstance(per_look, int):
        m = np.full((RUNS, LOOKS), per_look)
    else:
        m = rng.integers(per_look[0], per_look[1] + 1, size=(RUNS, LOOKS))
    n = np.cumsum(m, axis=1).astype(np.float64)
    x = np.cumsum(rng.binomial(m, rate), axis=1).astype(np.float64)
    mean = x / n
    return np.stack([n, mean, x * (1 - mean)], axis=-1)  # Σ(x − x̄)² = x − x²/n for 0/1


def normal_paths(rng: np.random.Generator, mu: float, sigma: float) -> np.ndarray:
    """Cumulative moments of N(mu, sigma²) data, 20-50 values per look, merged look by look."""
    m = rng.integers(20, 51, size=(RUNS, LOOKS)).astype(np.float64)
    batch_mean = rng.normal(mu, sigma / np.sqrt(m))
    batch_m2 = sigma**2 * rng.chisquare(m - 1)
    batches = np.stack([m, batch_mean, batch_m2], axis=-1)
    out = np.empty_like(batches)
    acc = np.zeros((RUNS, 3))
    for look in range(LOOKS):
        acc = merge_moments(acc, batches[:, look])
        out[:, look] = acc
    return out


def ever_rejects(c: np.ndarray, b: np.ndarray, tau: float, alpha: float = ALPHA) -> np.ndarray:
    """Per run: does the always-valid p (running minimum over looks) ever reach alpha?"""
    p = np.full(RUNS, np.nan)
    hit = np.zeros(RUNS, dtype=bool)
    for look in range(LOOKS):
        p = running_p(p, msprt(c[:, look], b[:, look], tau=tau).p_value)
        hit |= p <= alpha
    # The same through the vectorised call and a cumulative minimum.
    whole = np.minimum.accumulate(msprt(c, b, tau=tau).p_value, axis=1)
    np.testing.assert_array_equal(whole[:, -1], p)
    return hit


def naive_z_ever_rejects(c: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Per run: does a fixed-horizon two-sided z-test at 0.05, re-run at each look, ever fire?"""
    v = c[..., 2] / (c[..., 0] - 1) / c[..., 0] + b[..., 2] / (b[..., 0] - 1) / b[..., 0]
    with np.errstate(divide="ignore", invalid="ignore"):
        z = (c[..., 1] - b[..., 1]) / np.sqrt(v)
    return np.any(np.abs(np.where(v > 0, z, 0.0)) >= 1.959964, axis=1)


def test_false_alarm_rate_bernoulli() -> None:
    rng = np.random.default_rng(20240601)
    c = bernoulli_paths(rng, 0.10, (20, 50))
    b = bernoulli_paths(rng, 0.10, (20, 50))
    rate = float(np.mean(ever_rejects(c, b, tau=0.02)))
    print(f"\nmSPRT false-alarm rate, Bernoulli(0.1), 200 looks: {rate:.3f}")
    assert rate <= ALPHA + TOLERANCE


def test_false_alarm_rate_normal() -> None:
    rng = np.random.default_rng(7)
    c = normal_paths(rng, 3.0, 1.5)  # unequal variances: the plug-in v must cope
    b = normal_paths(rng, 3.0, 1.0)
    rate = float(np.mean(ever_rejects(c, b, tau=0.1)))
    print(f"\nmSPRT false-alarm rate, Normal(3, 1.5² vs 1²), 200 looks: {rate:.3f}")
    assert rate <= ALPHA + TOLERANCE


def test_naive_repeated_z_test_inflates_false_alarms() -> None:
    rng = np.random.default_rng(20240601)
    c = bernoulli_paths(rng, 0.10, (20, 50))
    b = bernoulli_paths(rng, 0.10, (20, 50))
    rate = float(np.mean(naive_z_ever_rejects(c, b)))
    print(f"\nnaive z-test at every look, false-alarm rate over 200 looks: {rate:.3f}")
    assert rate > 0.15
    # At the last look alone it is a valid 5% test.
    last = naive_z_ever_rejects(c[:, -1:], b[:, -1:])
    assert float(np.mean(last)) <= ALPHA + TOLERANCE


def test_power_against_a_20_percent_relative_drop() -> None:
    rng = np.random.default_rng(11)
    c = bernoulli_paths(rng, 0.08, 200)
    b = bernoulli_paths(rng, 0.10, 200)
    p = np.minimum.accumulate(msprt(c, b, tau=0.02).p_value, axis=1)
    detected = p[:, -1] <= ALPHA
    power = float(np.mean(detected))
    first = np.argmax(p <= ALPHA, axis=1)[detected] + 1
    print(
        f"\nmSPRT power, 0.10 -> 0.08, 200 per arm per look: {power:.3f} within {LOOKS} looks;"
        f" median first look {np.median(first):.0f}, 90th percentile {np.percentile(first, 90):.0f}"
    )
    assert power > 0.8


@pytest.mark.parametrize(("rate_c", "rate_b"), [(0.10, 0.10), (0.08, 0.10)])
def test_confidence_sequence_coverage_bernoulli(rate_c: float, rate_b: float) -> None:
    rng = np.random.default_rng(5)
    c = bernoulli_paths(rng, rate_c, (20, 50))
    b = bernoulli_paths(rng, rate_b, (20, 50))
    r = msprt(c, b, tau=0.02)
    lo, hi = confidence_sequence(r.delta, r.variance, tau=0.02, alpha=ALPHA)
    truth = rate_c - rate_b
    # NaN bounds (no evidence yet) cover everything.
    missed = np.any((lo > truth) | (hi < truth), axis=1)
    rate = float(np.mean(missed))
    width = float(np.nanmedian(hi[:, -1] - lo[:, -1]))
    print(
        f"\nconfidence sequence miss rate, {rate_c} vs {rate_b}: {rate:.3f}"
        f" (median final width {width:.4f})"
    )
    assert rate <= ALPHA + TOLERANCE


def test_confidence_sequence_coverage_normal() -> None:
    rng = np.random.default_rng(8)
    c = normal_paths(rng, 3.2, 1.0)
    b = normal_paths(rng, 3.0, 2.0)
    r = msprt(c, b, tau=0.1)
    lo, hi = confidence_sequence(r.delta, r.variance, tau=0.1, alpha=ALPHA)
    missed = np.any((lo > 0.2) | (hi < 0.2), axis=1)
    rate = float(np.mean(missed))
    print(f"\nconfidence sequence miss rate, Normal, true difference 0.2: {rate:.3f}")
    assert rate <= ALPHA + TOLERANCE
