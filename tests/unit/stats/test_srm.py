"""Tests for streamguard.stats.srm against scipy oracles, plus error-rate simulations.

Simulated rates are printed (run pytest with ``-s`` to see them).
"""

import math
import warnings

import numpy as np
import pytest
import scipy.special
import scipy.stats
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from streamguard.stats.sequential import running_p
from streamguard.stats.srm import (
    _gamma_q,
    chi_square_p_value,
    dirichlet_multinomial_log_bf,
    log_gamma,
    pearson_residuals,
    srm_p_value,
)

RUNS = 1_000
LOOKS = 200
ALPHA = 0.05
TOLERANCE = 3 * math.sqrt(ALPHA * (1 - ALPHA) / RUNS)
P0 = np.array([0.3, 0.2, 0.2, 0.1, 0.1, 0.1])
EULER_GAMMA = 0.5772156649015329


# --- log-gamma -----------------------------------------------------------------------------


def test_log_gamma_matches_scipy_to_1e10_relative() -> None:
    rng = np.random.default_rng(0)
    x = np.concatenate(
        [
            np.logspace(-300, 0, 3000),
            np.linspace(1e-3, 30, 60_001),
            rng.uniform(0, 1e4, 20_000),
            np.logspace(0, 300, 3000),
            np.arange(1, 200, dtype=np.float64),
        ]
    )
    # scipy.special.gammaln itself is only about 1e-8 relative within 1e-5 of the zeros at 1
    # and 2; those points are checked against the Taylor series below instead.
    x = x[(np.abs(x - 1) > 1e-5) & (np.abs(x - 2) > 1e-5)]
    np.testing.assert_allclose(log_gamma(x), scipy.special.gammaln(x), rtol=1e-10, atol=0)


def test_log_gamma_near_its_zeros() -> None:
    small = np.concatenate([np.logspace(-15, -5, 200), -np.logspace(-15, -5, 200)])
    # ln Γ(1 + ε) = −γ ε + ζ(2)/2 ε² − ζ(3)/3 ε³ + …; ln Γ(2 + ε) = (1 − γ) ε + (ζ(2) − 1)/2 ε² …
    zeta2, zeta3 = math.pi**2 / 6, 1.2020569031595942
    x1, x2 = 1 + small, 2 + small
    e1, e2 = x1 - 1, x2 - 2  # the ε actually represented (exact subtraction)
    at1 = -EULER_GAMMA * e1 + zeta2 / 2 * e1**2 - zeta3 / 3 * e1**3
    at2 = (1 - EULER_GAMMA) * e2 + (zeta2 - 1) / 2 * e2**2 - (zeta3 - 1) / 3 * e2**3
    np.testing.assert_allclose(log_gamma(x1), at1, rtol=1e-10)
    np.testing.assert_allclose(log_gamma(x2), at2, rtol=1e-10)
    np.testing.assert_array_equal(log_gamma([1.0, 2.0]), [0.0, 0.0])
    # Integers: ln((n − 1)!) exactly as math.lgamma (correctly rounded there).
    n = np.arange(3, 60)
    expected = [math.lgamma(float(k)) for k in n]
    np.testing.assert_allclose(log_gamma(n), expected, rtol=2e-15)


def test_log_gamma_domain() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        got = log_gamma([0.0, -1.0, -2.5, np.nan, np.inf, 5e-324])
    assert np.isnan(got[:4]).all()
    assert got[4] == np.inf
    assert got[5] == pytest.approx(-math.log(5e-324), rel=1e-12)
    assert log_gamma(3.0).shape == ()


# --- Bayes factor --------------------------------------------------------------------------


def direct_log_bf(counts: np.ndarray, p0: np.ndarray, c: float) -> float:
    """log B(a + S) − log B(a) − Σ S log p0 with scipy's gammaln."""
    p0 = p0 / p0.sum()
    a = c * p0

    def log_beta(x: np.ndarray) -> float:
        return float(np.sum(scipy.special.gammaln(x)) - scipy.special.gammaln(np.sum(x)))

    return log_beta(a + counts) - log_beta(a) - float(np.sum(counts * np.log(p0)))


@st.composite
def counts_and_shares(draw: st.DrawFn) -> tuple[np.ndarray, np.ndarray]:
    k = draw(st.integers(2, 12))
    rows = draw(st.integers(1, 4))
    counts = draw(hnp.arrays(np.int64, (rows, k), elements=st.integers(0, 5_000)))
    p0 = draw(hnp.arrays(np.float64, (k,), elements=st.floats(0.01, 1.0)))
    return counts, p0


@settings(max_examples=150)
@given(counts_and_shares(), st.sampled_from([1.0, 100.0, 10_000.0, 100_000.0]))
def test_log_bf_matches_scipy(data: tuple[np.ndarray, np.ndarray], c: float) -> None:
    counts, p0 = data
    got = dirichlet_multinomial_log_bf(counts, p0, concentration=c)
    assert got.shape == (counts.shape[0],)
    expected = [direct_log_bf(row, p0, c) for row in counts]
    # Each term is up to ~1e5 in size; the result is a difference of such terms.
    np.testing.assert_allclose(got, expected, rtol=1e-9, atol=1e-7)
    p = srm_p_value(counts, p0, concentration=c)
    np.testing.assert_allclose(p, np.minimum(1.0, np.exp(-np.asarray(expected))), rtol=1e-6)
    assert np.all((p >= 0) & (p <= 1))


def test_log_bf_hand_case_and_shares_as_weights() -> None:
    # c = 2, p0 = (½, ½): a = (1, 1); S = (10, 0): B(11, 1)/B(1, 1) = 1/11, null 2^−10.
    assert float(dirichlet_multinomial_log_bf([10, 0], [0.5, 0.5], 2.0)) == pytest.approx(
        math.log(2**10 / 11), rel=1e-13
    )
    # No counts: BF = 1.
    assert float(dirichlet_multinomial_log_bf([0, 0, 0], [0.2, 0.3, 0.5])) == 0.0
    # p0 given as baseline counts (renormalised) or as shares: same answer.
    counts = np.array([[30, 50, 20], [10, 10, 80]])
    np.testing.assert_allclose(
        srm_p_value(counts, [300, 500, 200]), srm_p_value(counts, [0.3, 0.5, 0.2]), rtol=1e-12
    )
    # p0 broadcast per row.
    p0 = np.array([[0.3, 0.5, 0.2], [0.1, 0.1, 0.8]])
    rowwise = [float(srm_p_value(counts[i], p0[i], 100.0)) for i in range(2)]
    np.testing.assert_allclose(srm_p_value(counts, p0, 100.0), rowwise, rtol=1e-12)


def test_validation() -> None:
    with pytest.raises(ValueError, match="positive"):
        srm_p_value([1, 2, 3], [0.5, 0.5, 0.0])
    with pytest.raises(ValueError, match="positive"):
        srm_p_value([1, 2, 3], [0.5, 0.6, -0.1])
    with pytest.raises(ValueError, match="non-negative"):
        srm_p_value([1, -2, 3], [0.2, 0.3, 0.5])
    with pytest.raises(ValueError, match="categories differ"):
        chi_square_p_value([1, 2, 3], [0.5, 0.5])
    with pytest.raises(ValueError, match="at least 2"):
        pearson_residuals([4], [1.0])
    with pytest.raises(ValueError, match="concentration"):
        srm_p_value([1, 2], [0.5, 0.5], concentration=0.0)


# --- simulations ---------------------------------------------------------------------------


def multinomial_paths(rng: np.random.Generator, shares: np.ndarray, per_look: int) -> np.ndarray:
    """Cumulative counts, shape (RUNS, LOOKS, K)."""
    return np.cumsum(rng.multinomial(per_look, shares, size=(RUNS, LOOKS)), axis=1)


@pytest.mark.parametrize("concentration", [10_000.0, 100.0])
def test_sequential_srm_false_alarm_rate(concentration: float) -> None:
    rng = np.random.default_rng(int(concentration))
    counts = multinomial_paths(rng, P0, 50)
    p = srm_p_value(counts, P0, concentration)
    running = np.minimum.accumulate(p, axis=1)
    rate = float(np.mean(running[:, -1] <= ALPHA))
    print(f"\nsequential SRM false-alarm rate, c={concentration:g}, 200 looks: {rate:.3f}")
    assert rate <= ALPHA + TOLERANCE
    # running_p gives the same running minimum look by look.
    acc = np.full(RUNS, np.nan)
    for look in range(LOOKS):
        acc = running_p(acc, p[:, look])
    np.testing.assert_array_equal(acc, running[:, -1])
    # The fixed-horizon χ² test, re-run at every look, is not valid under monitoring.
    naive = float(np.mean(np.any(chi_square_p_value(counts, P0) <= ALPHA, axis=1)))
    print(f"chi-square re-run at every look, false-alarm rate: {naive:.3f}")
    assert naive > 0.15


@pytest.mark.parametrize(("concentration", "within"), [(10_000.0, 25), (100.0, 4)])
def test_missing_category_is_detected(concentration: float, within: int) -> None:
    rng = np.random.default_rng(3)
    shares = P0.copy()
    shares[-1] = 0.0  # one slice (10% of expected traffic) never reaches the canary
    shares /= shares.sum()
    counts = np.cumsum(rng.multinomial(50, shares, size=(200, within)), axis=1)
    running = np.minimum.accumulate(srm_p_value(counts, P0, concentration), axis=1)
    first = np.argmax(running <= ALPHA, axis=1) + 1
    print(
        f"\nmissing 10% slice, c={concentration:g}, 50 per look: detected in "
        f"{np.mean(running[:, -1] <= ALPHA):.3f} of runs; first look median "
        f"{np.median(first):.0f}, max {first.max()}"
    )
    assert np.all(running[:, -1] <= ALPHA)
    # The residuals point at the missing slice.
    residuals = pearson_residuals(counts[:, -1], P0)
    assert np.all(np.argmin(residuals, axis=1) == len(P0) - 1)


# --- fixed-horizon χ² and residuals --------------------------------------------------------


@settings(max_examples=150)
@given(counts_and_shares())
def test_chi_square_matches_scipy(data: tuple[np.ndarray, np.ndarray]) -> None:
    counts, p0 = data
    counts = counts + 1  # non-empty rows; empty rows are tested separately
    got = chi_square_p_value(counts, p0)
    shares = p0 / p0.sum()
    for row, value in zip(counts, got, strict=True):
        expected = row.sum() * shares
        result = scipy.stats.chisquare(row, expected)
        statistic = float(np.sum((row - expected) ** 2 / expected))
        assert float(result.statistic) == pytest.approx(statistic, rel=1e-9)
        sf = scipy.stats.chi2.sf(statistic, len(p0) - 1)
        if sf > 1e-290:
            assert value == pytest.approx(sf, rel=1e-8)
            assert value == pytest.approx(float(result.pvalue), rel=1e-8)
        else:
            assert value < 1e-280


def test_gamma_q_matches_scipy_over_a_wide_range() -> None:
    df = np.arange(1, 801)
    a = np.repeat(df / 2.0, 400)
    # x from 0 to far in the upper tail of each χ²_df (in units of x/2).
    x = np.tile(np.linspace(0, 1, 400), df.size) * (a * 4 + 60)
    got = _gamma_q(a, x)
    expected = scipy.special.gammaincc(a, x)
    shown = expected > 1e-290
    np.testing.assert_allclose(got[shown], expected[shown], rtol=1e-8)
    assert np.all(got[~shown] < 1e-280)
    np.testing.assert_allclose(
        chi_square_p_value([[60, 40], [50, 50]], [0.5, 0.5]),
        scipy.stats.chi2.sf([4.0, 0.0], 1),
        rtol=1e-12,
    )


def test_gamma_q_edges() -> None:
    got = _gamma_q([1.0, 1.0, 0.0, 1.0, np.nan], [0.0, np.inf, 1.0, -1.0, 1.0])
    np.testing.assert_array_equal(got[:2], [1.0, 0.0])
    assert np.isnan(got[2:]).all()


def test_residuals_sign_magnitude_and_chi_square_link() -> None:
    counts = np.array([[60, 40, 0], [50, 30, 20], [0, 0, 0]])
    p0 = np.array([0.5, 0.3, 0.2])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        r = pearson_residuals(counts, p0)
        p = chi_square_p_value(counts, p0)
    np.testing.assert_allclose(r[0], [10 / math.sqrt(50), 10 / math.sqrt(30), -math.sqrt(20)])
    np.testing.assert_array_equal(r[1], 0.0)
    assert np.isnan(r[2]).all()
    assert np.isnan(p[2])
    assert p[1] == 1.0
    # Σ r² is the Pearson statistic.
    statistic = float(np.sum(r[0] ** 2))
    assert p[0] == pytest.approx(scipy.stats.chi2.sf(statistic, 2), rel=1e-10)
