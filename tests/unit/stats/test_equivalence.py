"""Minimum-effect tests and Holm's step-down against scipy oracles and their definitions."""

import itertools

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats as sps

from streamguard.stats import binomial_sf, exceedance_p, holm, interval_null_p, normal_quantile


@settings(max_examples=60, deadline=None)
@given(st.floats(-5.0, 5.0), st.floats(1e-3, 2.0))
def test_interval_null_with_zero_tolerance_is_the_two_sided_z_test(
    estimate: float, se: float
) -> None:
    expected = 2 * sps.norm.sf(abs(estimate) / se)
    assert float(interval_null_p(estimate, se, 0.0)) == pytest.approx(min(expected, 1.0), rel=1e-9)


@settings(max_examples=40, deadline=None)
@given(st.floats(-0.1, 0.1), st.floats(1e-4, 0.05), st.floats(0.0, 0.05))
def test_interval_null_p_is_the_largest_rejection_probability_over_the_null(
    estimate: float, se: float, tolerance: float
) -> None:
    """sup over |Δ| <= tol of P(|Δ̂| >= |observed|), Δ̂ ~ N(Δ, se²), on a fine grid."""
    grid = np.linspace(-tolerance, tolerance, 2001)
    observed = abs(estimate)
    tails = sps.norm.sf((observed - grid) / se) + sps.norm.cdf((-observed - grid) / se)
    assert float(interval_null_p(estimate, se, tolerance)) == pytest.approx(
        min(float(tails.max()), 1.0), rel=1e-6, abs=1e-12
    )


def test_interval_null_edge_cases() -> None:
    assert interval_null_p([0.01, 0.0005], [0.0, 0.0], 0.001).tolist() == [0.0, 1.0]
    assert np.isnan(interval_null_p(np.nan, 0.1, 0.001))
    assert np.isnan(interval_null_p(0.1, np.nan, 0.001))


@settings(max_examples=60, deadline=None)
@given(st.floats(0.0, 0.1), st.floats(1e-5, 0.05), st.floats(0.0, 0.05))
def test_exceedance_p_matches_scipy(mean: float, se: float, tolerance: float) -> None:
    expected = sps.norm.sf((mean - tolerance) / se)
    assert float(exceedance_p(mean, se, tolerance)) == pytest.approx(expected, rel=1e-9, abs=1e-300)


@settings(max_examples=80, deadline=None)
@given(st.integers(0, 2_000_000), st.floats(1e-4, 0.5), st.data())
def test_binomial_sf_matches_scipy(n: int, p: float, data: st.DataObject) -> None:
    mean = n * p
    sd = (n * p * (1 - p)) ** 0.5
    # Around the mean and far out in both tails, and the ends.
    k = data.draw(
        st.one_of(
            st.integers(0, min(n, 60)),
            st.integers(max(0, int(mean - 6 * sd)), min(n, int(mean + 12 * sd) + 2)),
            st.integers(max(0, n - 3), n + 1),
        )
    )
    expected = sps.binom.sf(k - 1, n, p)
    assert binomial_sf(k, n, p) == pytest.approx(expected, rel=1e-7, abs=1e-12)


def test_binomial_sf_rejects_a_degenerate_share() -> None:
    with pytest.raises(ValueError, match="0 < p < 1"):
        binomial_sf(1, 10, 0.0)


def holm_by_definition(p: list[float], alpha: float) -> list[bool]:
    """Closed testing with Bonferroni local tests: reject H_i iff every intersection
    containing i is rejected (min p of the subset <= alpha / |subset|). Exponential: small K."""
    k = len(p)
    out = []
    for i in range(k):
        out.append(
            all(
                min(p[j] for j in subset) <= alpha / len(subset)
                for size in range(1, k + 1)
                for subset in itertools.combinations(range(k), size)
                if i in subset
            )
        )
    return out


@settings(max_examples=100, deadline=None)
@given(st.lists(st.floats(0.0, 1.0), min_size=1, max_size=7), st.floats(0.001, 0.2))
def test_holm_equals_closed_testing_with_bonferroni(p: list[float], alpha: float) -> None:
    assert holm(p, alpha).tolist() == holm_by_definition(p, alpha)


def test_holm_ignores_nan_and_keeps_the_shape() -> None:
    p = np.array([[0.001, np.nan], [0.02, 0.6]])
    assert holm(p, 0.05).tolist() == [[True, False], [True, False]]
    with pytest.raises(ValueError, match="alpha"):
        holm([0.1], 0.0)


def test_normal_quantile_matches_scipy() -> None:
    for q in (0.5, 0.9, 0.975, 0.9995, 1 - 1e-9):
        assert normal_quantile(q) == pytest.approx(sps.norm.ppf(q), rel=1e-9)
