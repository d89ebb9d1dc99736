"""Tests for streamguard.stats.divergence against scipy and direct-formula oracles."""

import warnings
from collections.abc import Callable

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from scipy.spatial.distance import jensenshannon
from scipy.stats import ks_2samp, wasserstein_distance

from streamguard.stats.divergence import (
    js_distance,
    ks_statistic,
    psi,
    total_variation,
    wasserstein1,
)


@st.composite
def count_pairs(draw: st.DrawFn, max_rows: int = 4) -> tuple[np.ndarray, np.ndarray]:
    """Two count matrices with the same bins, rows non-empty."""
    shape = (draw(st.integers(1, max_rows)), draw(st.integers(1, 25)))
    counts = hnp.arrays(np.int64, shape, elements=st.integers(0, 40))
    ref = draw(counts)
    cur = draw(counts)
    # Guarantee a non-empty row on each side; empty rows are tested separately.
    ref[:, 0] += 1
    cur[:, -1] += 1
    return ref, cur


def _psi_oracle(r: np.ndarray, c: np.ndarray, eps: float) -> float:
    total = 0.0
    for ri, ci in zip(r / r.sum(), c / c.sum(), strict=True):
        p = ri if ri > 0 else eps
        q = ci if ci > 0 else eps
        total += (q - p) * np.log(q / p)
    return total


@settings(max_examples=100)
@given(count_pairs(), st.sampled_from([1e-4, 1e-6, 0.01]))
def test_psi_matches_direct_formula(pair: tuple[np.ndarray, np.ndarray], eps: float) -> None:
    ref, cur = pair
    got = psi(ref, cur, eps=eps)
    assert got.shape == (ref.shape[0],)
    expected = [_psi_oracle(r, c, eps) for r, c in zip(ref, cur, strict=True)]
    np.testing.assert_allclose(got, expected, rtol=1e-10, atol=1e-12)
    assert np.all(got >= 0)
    # Symmetric in P and Q, zero against itself, and invariant to scaling counts.
    np.testing.assert_allclose(psi(cur, ref, eps=eps), got, rtol=1e-12, atol=1e-15)
    np.testing.assert_array_equal(psi(ref, ref, eps=eps), 0.0)
    np.testing.assert_allclose(psi(3 * ref, cur, eps=eps), got, rtol=1e-10, atol=1e-12)


def test_psi_known_value_and_validation() -> None:
    # 50/50 -> 25/75: (0.25-0.5)ln(0.5) + (0.75-0.5)ln(1.5)
    expected = -0.25 * np.log(0.5) + 0.25 * np.log(1.5)
    assert float(psi(np.array([50, 50]), np.array([25, 75]))) == pytest.approx(expected)
    with pytest.raises(ValueError, match="eps"):
        psi(np.ones(2), np.ones(2), eps=0.0)
    with pytest.raises(ValueError, match="bins differ"):
        psi(np.ones(2), np.ones(3))


@settings(max_examples=100)
@given(count_pairs())
def test_js_distance_matches_scipy(pair: tuple[np.ndarray, np.ndarray]) -> None:
    ref, cur = pair
    got = js_distance(ref, cur)
    expected = [jensenshannon(r, c, base=2) for r, c in zip(ref, cur, strict=True)]
    np.testing.assert_allclose(got, np.nan_to_num(expected), rtol=1e-9, atol=1e-7)
    assert np.all((got >= 0) & (got <= 1))
    np.testing.assert_allclose(js_distance(cur, ref), got, rtol=1e-12, atol=1e-12)


def test_js_distance_extremes() -> None:
    assert float(js_distance(np.array([5, 0]), np.array([0, 7]))) == 1.0
    assert float(js_distance(np.array([5, 2]), np.array([10, 4]))) == pytest.approx(0.0, abs=1e-7)


def _values_at(points: np.ndarray, counts: np.ndarray) -> np.ndarray:
    return np.repeat(points, counts)


@settings(max_examples=100)
@given(count_pairs(max_rows=1))
def test_ks_statistic_matches_ks_2samp_on_left_edges(pair: tuple[np.ndarray, np.ndarray]) -> None:
    ref, cur = pair
    edges = np.cumsum(np.r_[0.0, np.linspace(0.5, 2.0, ref.shape[1])])
    r = _values_at(edges[:-1], ref[0])
    c = _values_at(edges[:-1], cur[0])
    with warnings.catch_warnings():
        # Only the statistic is compared; scipy's p-value warnings for tiny samples are noise.
        warnings.simplefilter("ignore", RuntimeWarning)
        expected = ks_2samp(r, c).statistic
    assert float(ks_statistic(ref, cur)[0]) == pytest.approx(expected, abs=1e-12)


@settings(max_examples=100)
@given(count_pairs(max_rows=1))
def test_wasserstein1_matches_scipy(pair: tuple[np.ndarray, np.ndarray]) -> None:
    ref, cur = pair
    bins = ref.shape[1]
    # Equal-width bins: exact with all mass at the bin centres.
    edges = np.linspace(-1.0, 4.0, bins + 1)
    centres = (edges[:-1] + edges[1:]) / 2
    expected = wasserstein_distance(centres, centres, u_weights=ref[0], v_weights=cur[0])
    got = float(wasserstein1(ref, cur, edges)[0])
    assert got == pytest.approx(expected, rel=1e-9, abs=1e-12)
    # Uneven bins: exact with all mass at the left edges.
    uneven = np.cumsum(np.r_[0.0, np.geomspace(0.1, 3.0, bins)])
    lefts = uneven[:-1]
    expected = wasserstein_distance(lefts, lefts, u_weights=ref[0], v_weights=cur[0])
    got = float(wasserstein1(ref, cur, uneven)[0])
    assert got == pytest.approx(expected, rel=1e-9, abs=1e-12)


def test_wasserstein1_approximation_bound_on_raw_data() -> None:
    rng = np.random.default_rng(2)
    edges = np.linspace(0.0, 10.0, 41)
    a = rng.gamma(2.0, 1.5, 5000).clip(0, 10)
    b = rng.gamma(2.5, 1.5, 4000).clip(0, 10)
    ra = np.histogram(a, edges)[0]
    rb = np.histogram(b, edges)[0]
    got = float(wasserstein1(ra, rb, edges))
    assert abs(got - wasserstein_distance(a, b)) <= 2 * 0.25


@settings(max_examples=100)
@given(count_pairs())
def test_total_variation_matches_formula(pair: tuple[np.ndarray, np.ndarray]) -> None:
    ref, cur = pair
    got = total_variation(ref, cur)
    p = ref / ref.sum(axis=1, keepdims=True)
    q = cur / cur.sum(axis=1, keepdims=True)
    np.testing.assert_allclose(got, 0.5 * np.abs(p - q).sum(axis=1), rtol=1e-12, atol=1e-15)
    # KS on ordered bins never exceeds total variation.
    assert np.all(ks_statistic(ref, cur) <= got + 1e-12)


FUNCS: list[Callable[[np.ndarray, np.ndarray], np.ndarray]] = [
    psi,
    js_distance,
    ks_statistic,
    total_variation,
    lambda r, c: wasserstein1(r, c, np.linspace(0.0, 1.0, np.shape(r)[-1] + 1)),
]


@pytest.mark.parametrize("func", FUNCS)
def test_empty_rows_give_nan(func: Callable[[np.ndarray, np.ndarray], np.ndarray]) -> None:
    ref = np.array([[1, 2, 3], [0, 0, 0], [1, 1, 1]])
    cur = np.array([[3, 2, 1], [1, 1, 1], [0, 0, 0]])
    got = func(ref, cur)
    assert got.shape == (3,)
    assert np.isfinite(got[0])
    assert np.isnan(got[1])
    assert np.isnan(got[2])


@settings(max_examples=40)
@given(count_pairs())
def test_vectorised_equals_row_by_row_with_broadcasting(
    pair: tuple[np.ndarray, np.ndarray],
) -> None:
    ref, cur = pair
    edges = np.linspace(0.0, 1.0, ref.shape[1] + 1)
    funcs = [*FUNCS[:4], lambda r, c: wasserstein1(r, c, edges)]
    batch = np.stack([cur, cur[::-1]])  # shape (2, rows, bins)
    for func in funcs:
        got = func(ref[0], batch)  # one reference row against every current row
        assert got.shape == batch.shape[:2]
        for i in range(2):
            for j in range(cur.shape[0]):
                assert got[i, j] == pytest.approx(float(func(ref[0], batch[i, j])), abs=1e-12)
