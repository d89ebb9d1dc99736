"""Tests for streamguard.stats.multiple: BH, e-BH and post-stratification."""

import warnings

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from streamguard.stats.moments import merge_moments
from streamguard.stats.multiple import (
    benjamini_hochberg,
    e_benjamini_hochberg,
    post_stratified_difference,
)

probabilities = st.one_of(
    st.floats(0.0, 1.0),
    st.sampled_from([0.0, 0.001, 0.01, 0.0125, 0.025, 0.05, 1.0]),  # ties and exact edges
    st.just(float("nan")),
)
p_arrays = hnp.arrays(np.float64, st.integers(0, 30), elements=probabilities)
alphas = st.sampled_from([0.01, 0.05, 0.1, 0.2, 1.0])


def reference_bh(p: np.ndarray, alpha: float) -> np.ndarray:
    """Step-up BH written as the textbook loop over k = K, K−1, …, 1."""
    index = [i for i in range(p.size) if not np.isnan(p[i])]
    k_total = len(index)
    order = sorted(index, key=lambda i: p[i])
    reject = np.zeros(p.size, dtype=bool)
    for k in range(k_total, 0, -1):
        if p[order[k - 1]] <= k * alpha / k_total:
            for i in order[:k]:
                reject[i] = True
            # Tied values beyond position k share the same p-value and pass too.
            break
    return reject


def reference_ebh(e: np.ndarray, alpha: float) -> np.ndarray:
    index = [i for i in range(e.size) if not np.isnan(e[i])]
    k_total = len(index)
    order = sorted(index, key=lambda i: -e[i])
    reject = np.zeros(e.size, dtype=bool)
    for k in range(k_total, 0, -1):
        if e[order[k - 1]] >= k_total / (alpha * k):
            for i in order[:k]:
                reject[i] = True
            break
    return reject


@settings(max_examples=300)
@given(p_arrays, alphas)
def test_bh_matches_reference(p: np.ndarray, alpha: float) -> None:
    got = benjamini_hochberg(p, alpha)
    assert got.dtype == bool
    assert got.shape == p.shape
    np.testing.assert_array_equal(got, reference_bh(p, alpha))
    assert not np.any(got & np.isnan(p))
    # NaN entries are not hypotheses: dropping them changes nothing.
    keep = ~np.isnan(p)
    np.testing.assert_array_equal(got[keep], benjamini_hochberg(p[keep], alpha))


@pytest.mark.parametrize(
    ("p", "alpha", "expected"),
    [
        # K = 4, thresholds 0.0125, 0.025, 0.0375, 0.05.
        ([0.01, 0.04, 0.03, 0.2], 0.05, [True, False, False, False]),
        ([0.01, 0.025, 0.03, 0.2], 0.05, [True, True, True, False]),
        # Step-up: p_(4) = 0.05 <= 0.05 rescues everything below it.
        ([0.04, 0.045, 0.049, 0.05], 0.05, [True, True, True, True]),
        ([0.02, 0.03, np.nan, 0.2], 0.05, [True, True, False, False]),  # K = 3
        ([0.02, 0.03, 0.06, 0.2], 0.05, [False, False, False, False]),
        ([np.nan, np.nan], 0.05, [False, False]),
        ([], 0.05, []),
    ],
)
def test_bh_hand_cases(p: list[float], alpha: float, expected: list[bool]) -> None:
    np.testing.assert_array_equal(benjamini_hochberg(p, alpha), expected)


def test_bh_keeps_shape() -> None:
    p = np.array([[0.001, 0.5], [np.nan, 0.01]])
    np.testing.assert_array_equal(benjamini_hochberg(p, 0.05), [[True, False], [False, True]])


@settings(max_examples=300)
@given(p_arrays, alphas, st.data())
def test_bh_lowering_a_p_value_never_removes_a_rejection(
    p: np.ndarray, alpha: float, data: st.DataObject
) -> None:
    keep = np.nonzero(~np.isnan(p))[0]
    assume(keep.size > 0)
    i = data.draw(st.sampled_from(keep.tolist()))
    lower = p.copy()
    lower[i] = data.draw(st.floats(0.0, float(p[i])))
    before = benjamini_hochberg(p, alpha)
    after = benjamini_hochberg(lower, alpha)
    assert not np.any(before & ~after)


@settings(max_examples=300)
@given(p_arrays, alphas)
def test_bh_rejections_are_a_prefix_of_the_sorted_p_values(p: np.ndarray, alpha: float) -> None:
    got = benjamini_hochberg(p, alpha)
    keep = ~np.isnan(p)
    if got.any():
        # Every p-value below a rejected one is rejected; every non-rejected one is above.
        largest_rejected = p[got].max()
        np.testing.assert_array_equal(got[keep], p[keep] <= largest_rejected)
        assert got.sum() * alpha / keep.sum() >= largest_rejected - 1e-15


def test_bh_validation() -> None:
    with pytest.raises(ValueError, match="alpha"):
        benjamini_hochberg([0.1], 0.0)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        benjamini_hochberg([1.5], 0.05)


e_values = st.one_of(
    st.floats(0.0, 1e4),
    st.sampled_from([0.0, 1.0, 20.0, 40.0, 80.0, 100.0, np.inf]),
    st.just(float("nan")),
)


@settings(max_examples=300)
@given(hnp.arrays(np.float64, st.integers(0, 30), elements=e_values), alphas)
def test_ebh_matches_reference(e: np.ndarray, alpha: float) -> None:
    got = e_benjamini_hochberg(e, alpha)
    np.testing.assert_array_equal(got, reference_ebh(e, alpha))
    keep = ~np.isnan(e)
    np.testing.assert_array_equal(got[keep], e_benjamini_hochberg(e[keep], alpha))


@pytest.mark.parametrize(
    ("e", "alpha", "expected"),
    [
        # K = 4, α = 0.05: thresholds K/(αk) = 80, 40, 26.7, 20.
        ([90.0, 45.0, 10.0, 1.0], 0.05, [True, True, False, False]),
        # Step-up: e_(1) = 79 < 80, but e_(2) = 45 >= 40 rejects the two largest.
        ([79.0, 45.0, 10.0, 1.0], 0.05, [True, True, False, False]),
        ([79.0, 39.0, 10.0, 1.0], 0.05, [False, False, False, False]),
        ([21.0, 21.0, 21.0, 21.0], 0.05, [True, True, True, True]),  # e_(4) >= 20
        ([np.inf, 0.0, np.nan], 0.05, [True, False, False]),  # K = 2: thresholds 40, 20
        ([], 0.05, []),
    ],
)
def test_ebh_hand_cases(e: list[float], alpha: float, expected: list[bool]) -> None:
    np.testing.assert_array_equal(e_benjamini_hochberg(e, alpha), expected)


def test_ebh_validation() -> None:
    with pytest.raises(ValueError, match="non-negative"):
        e_benjamini_hochberg([-1.0], 0.05)
    with pytest.raises(ValueError, match="alpha"):
        e_benjamini_hochberg([1.0], 1.5)


@settings(max_examples=300)
@given(
    hnp.arrays(
        np.float64,
        st.integers(1, 30),
        elements=st.one_of(st.floats(1e-8, 1.0), st.sampled_from([0.01, 0.02, 0.05])),
    ),
    alphas,
)
def test_ebh_on_inverse_p_rejects_a_subset_of_bh(p: np.ndarray, alpha: float) -> None:
    e = 1.0 / p
    ebh = e_benjamini_hochberg(e, alpha)
    bh = benjamini_hochberg(p, alpha)
    # The two inequalities are the same (1/p_(k) >= K/(αk) ⇔ p_(k) <= αk/K), so e-BH rejects a
    # subset of BH (indeed the same set); only rounding of 1/p or of αk/K when a p-value sits
    # exactly on a threshold can make them differ, and then one differing p sits on one.
    differ = ebh != bh
    if differ.any():
        k_total = p.size
        thresholds = alpha * np.arange(1, k_total + 1) / k_total
        gap = np.abs(p[differ][:, None] - thresholds[None, :]) / thresholds[None, :]
        assert np.min(gap) < 1e-12


@settings(max_examples=300)
@given(
    hnp.arrays(
        np.float64,
        st.integers(1, 30),
        elements=st.one_of(st.floats(0.0, 1.0), st.sampled_from([1e-6, 1e-4, 0.01, 0.05])),
    ),
    alphas,
)
def test_ebh_on_calibrated_e_values_rejects_a_subset_of_bh(p: np.ndarray, alpha: float) -> None:
    # e = κ p^(κ−1) with κ = ½ is a valid p-to-e calibrator (Vovk & Wang); e-BH then needs
    # p_(k) <= (αk / 2K)², far below BH's αk/K.
    with np.errstate(divide="ignore"):
        e = 0.5 / np.sqrt(p)
    ebh = e_benjamini_hochberg(e, alpha)
    bh = benjamini_hochberg(p, alpha)
    assert not np.any(ebh & ~bh)


def test_ebh_needs_larger_evidence_than_a_single_test() -> None:
    # One hypothesis: e-BH is Markov's test e >= 1/α.
    assert e_benjamini_hochberg([20.0], 0.05).tolist() == [True]
    assert e_benjamini_hochberg([19.99], 0.05).tolist() == [False]


# --- post-stratification -------------------------------------------------------------------


def bernoulli_moments(n: float, rate: float) -> list[float]:
    return [n, rate, n * rate * (1 - rate)]


def reference_post_stratified(
    canary: np.ndarray, baseline: np.ndarray, weights: np.ndarray, min_n: int
) -> tuple[float, float, float, list[bool]]:
    covered = [bool(c[0] >= min_n and b[0] >= min_n) for c, b in zip(canary, baseline, strict=True)]
    total = float(sum(weights))
    cw = sum(w for w, ok in zip(weights, covered, strict=True) if ok)
    if cw == 0:
        return float("nan"), float("nan"), 0.0, [not ok for ok in covered]
    estimate = variance = 0.0
    for c, b, w, ok in zip(canary, baseline, weights, covered, strict=True):
        if not ok:
            continue
        share = w / cw
        estimate += share * (c[1] - b[1])
        variance += share**2 * (c[2] / (c[0] - 1) / c[0] + b[2] / (b[0] - 1) / b[0])
    return estimate, variance, cw / total, [not ok for ok in covered]


@st.composite
def strata(draw: st.DrawFn) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    s = draw(st.integers(1, 8))
    n = st.integers(0, 200).map(float)
    row = st.tuples(n, st.floats(-10, 10), st.floats(0.0, 500.0))
    canary = np.array(draw(st.lists(row, min_size=s, max_size=s)))
    baseline = np.array(draw(st.lists(row, min_size=s, max_size=s)))
    weights = np.array(draw(st.lists(st.floats(0.0, 10.0), min_size=s, max_size=s)))
    weights[0] += 0.5  # a positive total
    return canary, baseline, weights


@settings(max_examples=200)
@given(strata(), st.integers(2, 50))
def test_post_stratified_matches_loop(
    data: tuple[np.ndarray, np.ndarray, np.ndarray], min_n: int
) -> None:
    canary, baseline, weights = data
    got = post_stratified_difference(canary, baseline, weights, min_n)
    estimate, variance, covered, uncovered = reference_post_stratified(
        canary, baseline, weights, min_n
    )
    np.testing.assert_allclose(got.estimate, estimate, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(got.variance, variance, rtol=1e-10, atol=1e-14)
    np.testing.assert_allclose(got.covered_weight, covered, rtol=1e-12)
    assert got.uncovered.tolist() == uncovered
    mask = ~np.array(uncovered)
    assert float(got.n_canary) == canary[mask, 0].sum()
    assert float(got.n_baseline) == baseline[mask, 0].sum()


def test_simpsons_paradox_is_undone_by_post_stratification() -> None:
    # Free tier (low conversion) and premium tier (high), equal population shares. The canary
    # is better by two points in both tiers but got mostly free-tier traffic, the baseline
    # mostly premium: pooled, the canary looks 30 points worse.
    canary = np.array([bernoulli_moments(90_000, 0.12), bernoulli_moments(10_000, 0.52)])
    baseline = np.array([bernoulli_moments(10_000, 0.10), bernoulli_moments(90_000, 0.50)])
    pooled_c = merge_moments(canary[0], canary[1])
    pooled_b = merge_moments(baseline[0], baseline[1])
    raw = pooled_c[1] - pooled_b[1]
    assert raw == pytest.approx(0.16 - 0.46)
    got = post_stratified_difference(canary, baseline, [0.5, 0.5], min_n=100)
    assert float(got.estimate) == pytest.approx(0.02)
    assert np.sign(raw) == -np.sign(float(got.estimate))
    se = float(np.sqrt(got.variance))
    assert float(got.estimate) - 3 * se > 0  # and the reversal is not noise
    assert float(got.covered_weight) == 1.0


def test_uncovered_weight_is_reported() -> None:
    canary = np.array(
        [bernoulli_moments(500, 0.2), bernoulli_moments(5, 0.0), bernoulli_moments(400, 0.3)]
    )
    baseline = np.array(
        [bernoulli_moments(500, 0.1), bernoulli_moments(800, 0.4), bernoulli_moments(10, 0.3)]
    )
    got = post_stratified_difference(canary, baseline, [6.0, 3.0, 1.0], min_n=30)
    assert got.uncovered.tolist() == [False, True, True]
    assert float(got.covered_weight) == pytest.approx(0.6)
    assert float(got.estimate) == pytest.approx(0.1)
    assert float(got.variance) == pytest.approx(0.2 * 0.8 / 499 + 0.1 * 0.9 / 499)
    assert float(got.n_canary) == 500
    assert float(got.n_baseline) == 500


def test_no_covered_strata() -> None:
    canary = np.array([bernoulli_moments(5, 0.2), bernoulli_moments(500, 0.1)])
    baseline = np.array([bernoulli_moments(500, 0.2), bernoulli_moments(0, 0.0)])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        got = post_stratified_difference(canary, baseline, [1.0, 1.0], min_n=10)
        # Covered strata that all have weight 0 count as no coverage too.
        zero = post_stratified_difference(canary, canary, [1.0, 0.0], min_n=100)
    assert np.isnan(got.estimate)
    assert np.isnan(got.variance)
    assert float(got.covered_weight) == 0.0
    assert got.uncovered.tolist() == [True, True]
    assert np.isnan(zero.estimate)
    assert float(zero.covered_weight) == 0.0


def test_leading_axes_and_validation() -> None:
    rng = np.random.default_rng(2)
    canary = np.stack(
        [rng.uniform(0, 100, (3, 4)), rng.normal(size=(3, 4)), rng.uniform(0, 50, (3, 4))], -1
    )
    baseline = np.stack(
        [rng.uniform(0, 100, (3, 4)), rng.normal(size=(3, 4)), rng.uniform(0, 50, (3, 4))], -1
    )
    weights = rng.uniform(0.1, 1.0, 4)
    got = post_stratified_difference(canary, baseline, weights, min_n=20)
    assert got.estimate.shape == (3,)
    assert got.uncovered.shape == (3, 4)
    for i in range(3):
        one = post_stratified_difference(canary[i], baseline[i], weights, min_n=20)
        np.testing.assert_array_equal(got.estimate[i], one.estimate)
        np.testing.assert_array_equal(got.variance[i], one.variance)
    with pytest.raises(ValueError, match="non-negative"):
        post_stratified_difference(canary[0], baseline[0], [1.0, -1.0, 1.0, 1.0], 10)
    with pytest.raises(ValueError, match="positive sum"):
        post_stratified_difference(canary[0], baseline[0], np.zeros(4), 10)
    with pytest.raises(ValueError, match="min_n"):
        post_stratified_difference(canary[0], baseline[0], weights, 0)
    with pytest.raises(ValueError, match="weights shape"):
        post_stratified_difference(canary[0], baseline[0], np.ones(3), 10)
    with pytest.raises(ValueError, match=r"\(\.\.\., S, 3\)"):
        post_stratified_difference(canary[0], baseline[0, :3], weights, 10)
    # A covered stratum with one observation has no variance estimate.
    single = post_stratified_difference([[1.0, 2.0, 0.0]], [[5.0, 1.0, 4.0]], [1.0], min_n=1)
    assert float(single.estimate) == 1.0
    assert np.isnan(single.variance)
