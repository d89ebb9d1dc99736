"""Tests for streamguard.stats.histogram against numpy oracles."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from streamguard.stats.binning import FixedBins
from streamguard.stats.divergence import psi
from streamguard.stats.histogram import quantile_from_counts, quantile_groups, regroup

count_rows = hnp.arrays(
    np.int64,
    st.tuples(st.integers(1, 4), st.integers(1, 40)),
    elements=st.integers(0, 50),
)


@settings(max_examples=100)
@given(
    hnp.arrays(np.int64, st.integers(1, 40), elements=st.integers(0, 30)),
    st.floats(0.0, 1.0),
    st.integers(0, 2**32 - 1),
)
def test_quantile_from_counts_matches_np_quantile(counts: np.ndarray, q: float, seed: int) -> None:
    edges = np.linspace(-2.0, 3.0, counts.size + 1)
    width = edges[1] - edges[0]
    got = float(quantile_from_counts(counts, edges, q))
    if counts.sum() == 0:
        assert np.isnan(got)
        return
    # Data spread uniformly within each bin, as the interpolation assumes.
    rng = np.random.default_rng(seed)
    lefts = np.repeat(edges[:-1], counts)
    data = lefts + rng.uniform(0.0, width, lefts.size)
    # The raw quantile that lies in the bin the counts point to: the smallest value with at
    # least q of the data at or below it. (Numpy's default "linear" quantile interpolates
    # between two samples, across empty bins if any lie between them, so it can be farther.)
    assert abs(got - np.quantile(data, q, method="inverted_cdf")) <= width * (1 + 1e-9)
    # And always inside the occupied range.
    occupied = np.flatnonzero(counts)
    assert edges[occupied[0]] - 1e-12 <= got <= edges[occupied[-1] + 1] + 1e-12


def test_quantile_from_counts_exact_cases() -> None:
    edges = np.array([0.0, 1.0, 2.0, 4.0])
    counts = np.array([[0, 2, 2], [1, 0, 3], [0, 0, 0]])
    np.testing.assert_allclose(quantile_from_counts(counts, edges, 0.0), [1.0, 0.0, np.nan])
    np.testing.assert_allclose(quantile_from_counts(counts, edges, 1.0), [4.0, 4.0, np.nan])
    # Half the mass of row 0 is through bin 1 exactly; row 1 reaches 0.5 a third into bin 2.
    np.testing.assert_allclose(
        quantile_from_counts(counts, edges, 0.5), [2.0, 2.0 + 2.0 / 3.0, np.nan]
    )
    # Non-uniform widths interpolate in the bin's own width.
    assert float(quantile_from_counts(np.array([0, 0, 4]), edges, 0.25)) == 2.5


@settings(max_examples=60)
@given(count_rows, st.floats(0.0, 1.0))
def test_quantile_from_counts_vectorised_and_monotone(counts: np.ndarray, q: float) -> None:
    edges = np.linspace(0.0, 1.0, counts.shape[1] + 1)
    stacked = np.stack([counts, counts[::-1]])
    got = quantile_from_counts(stacked, edges, q)
    assert got.shape == stacked.shape[:2]
    for i in range(2):
        for j in range(counts.shape[0]):
            np.testing.assert_array_equal(got[i, j], quantile_from_counts(stacked[i, j], edges, q))
    higher = quantile_from_counts(counts, edges, min(1.0, q + 0.1))
    ok = counts.sum(axis=1) > 0
    assert np.all(higher[ok] >= got[0][ok] - 1e-12)


def test_quantile_from_counts_per_row_edges_and_errors() -> None:
    counts = np.array([[1, 1], [1, 1]])
    edges = np.array([[0.0, 1.0, 2.0], [10.0, 20.0, 30.0]])
    np.testing.assert_allclose(quantile_from_counts(counts, edges, 0.5), [1.0, 20.0])
    with pytest.raises(ValueError, match="edges"):
        quantile_from_counts(counts, np.array([0.0, 1.0]), 0.5)
    with pytest.raises(ValueError, match="q must"):
        quantile_from_counts(counts, edges, -0.1)


def _groups_oracle(reference: np.ndarray, k: int) -> np.ndarray:
    total = reference.sum()
    if total == 0:
        return np.zeros(reference.size, dtype=np.intp)
    out = []
    before = 0.0
    for c in reference:
        through = before + c
        mid = (before / total + through / total) / 2
        out.append(min(k - 1, int(np.floor(k * mid))))
        before = through
    return np.array(out)


@settings(max_examples=100)
@given(count_rows, st.integers(1, 12))
def test_quantile_groups_rule(reference: np.ndarray, k: int) -> None:
    groups = quantile_groups(reference, k)
    assert groups.shape == reference.shape
    assert groups.dtype == np.intp
    assert np.all((groups >= 0) & (groups < k))
    assert np.all(np.diff(groups, axis=-1) >= 0)
    for row, g in zip(reference, groups, strict=True):
        np.testing.assert_array_equal(g, _groups_oracle(row, k))


def test_quantile_groups_deciles_hold_equal_mass() -> None:
    rng = np.random.default_rng(11)
    bins = FixedBins(0.0, 1.0, 1000)
    ref = np.bincount(bins.index(rng.beta(2.0, 5.0, 200_000)), minlength=1000)
    groups = quantile_groups(ref, 10)
    mass = regroup(ref, groups, 10) / ref.sum()
    np.testing.assert_array_less(np.abs(mass - 0.1), ref.max() / ref.sum() + 1e-12)
    # Matches the reference's own deciles to within a fine bin.
    first_bin_of_group = np.searchsorted(groups, np.arange(1, 10))
    cut = bins.edges[first_bin_of_group]
    deciles = np.quantile(bins.edges[:-1].repeat(ref), np.arange(1, 10) / 10)
    np.testing.assert_allclose(cut, deciles, atol=2e-3)


def test_psi_on_quantile_groups_matches_raw_decile_psi() -> None:
    rng = np.random.default_rng(5)
    bins = FixedBins(0.0, 1.0, 1000)
    ref_x = rng.beta(2.0, 5.0, 100_000)
    cur_x = rng.beta(2.5, 5.0, 50_000)
    ref = np.bincount(bins.index(ref_x), minlength=1000)
    cur = np.bincount(bins.index(cur_x), minlength=1000)
    groups = quantile_groups(ref, 10)
    got = float(psi(regroup(ref, groups, 10), regroup(cur, groups, 10)))
    # Oracle: the textbook PSI on the raw reference's decile edges.
    cuts = np.quantile(ref_x, np.linspace(0, 1, 11))
    cuts[0], cuts[-1] = -np.inf, np.inf
    p = np.histogram(ref_x, cuts)[0] / ref_x.size
    q = np.histogram(cur_x, cuts)[0] / cur_x.size
    expected = float(np.sum((q - p) * np.log(q / p)))
    assert expected > 0.02
    assert got == pytest.approx(expected, rel=0.01)


def test_quantile_groups_edge_cases() -> None:
    np.testing.assert_array_equal(quantile_groups(np.zeros((2, 3)), 4), np.zeros((2, 3)))
    # One heavy bin skips group numbers rather than splitting it.
    np.testing.assert_array_equal(quantile_groups(np.array([9, 1]), 10), [4, 9])
    np.testing.assert_array_equal(quantile_groups(np.array([5, 5]), 1), [0, 0])
    with pytest.raises(ValueError, match="k must"):
        quantile_groups(np.ones(3), 0)


@settings(max_examples=100)
@given(count_rows, st.integers(1, 8), st.data())
def test_regroup_matches_loop(counts: np.ndarray, k: int, data: st.DataObject) -> None:
    groups = data.draw(hnp.arrays(np.intp, counts.shape, elements=st.integers(0, k - 1)))
    got = regroup(counts, groups, k)
    assert got.shape == (counts.shape[0], k)
    expected = np.zeros((counts.shape[0], k))
    for r in range(counts.shape[0]):
        for j in range(counts.shape[1]):
            expected[r, groups[r, j]] += counts[r, j]
    np.testing.assert_array_equal(got, expected)
    # One grouping shared by all rows broadcasts.
    shared = regroup(counts, groups[0], k)
    for r in range(counts.shape[0]):
        np.testing.assert_array_equal(shared[r], regroup(counts[r], groups[0], k))


def test_regroup_rejects_bad_groups() -> None:
    with pytest.raises(ValueError, match="group numbers"):
        regroup(np.ones(3), np.array([0, 1, 3]), 3)
    with pytest.raises(ValueError, match="group numbers"):
        regroup(np.ones(3), np.array([0, -1, 1]), 3)
    with pytest.raises(ValueError, match="integers"):
        regroup(np.ones(3), np.array([0.0, 1.0, 1.0]), 3)
    with pytest.raises(ValueError, match="k must"):
        regroup(np.ones(3), np.array([0, 0, 0]), 0)
