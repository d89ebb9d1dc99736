"""Tests for streamguard.stats.binning against numpy oracles."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from streamguard.stats.binning import FixedBins, LogBuckets


@st.composite
def fixed_bins(draw: st.DrawFn) -> FixedBins:
    lo = draw(st.floats(-1e3, 1e3))
    width = draw(st.floats(1e-3, 1e3))
    return FixedBins(lo, lo + width, draw(st.integers(1, 60)))


@settings(max_examples=100)
@given(fixed_bins(), st.data())
def test_fixed_bins_counts_match_np_histogram(bins: FixedBins, data: st.DataObject) -> None:
    span = bins.hi - bins.lo
    x = data.draw(hnp.arrays(np.float64, st.integers(0, 200), elements=st.floats(bins.lo, bins.hi)))
    expected, _ = np.histogram(x, bins=bins.edges)
    got = np.bincount(bins.index(x), minlength=bins.bins)
    np.testing.assert_array_equal(got, expected)
    # Values out of range are clipped into the end bins, never dropped.
    below = bins.index(np.array([bins.lo - span, bins.lo - 1e-9 * span]))
    above = bins.index(np.array([bins.hi + span, bins.hi]))
    np.testing.assert_array_equal(below, [0, 0])
    np.testing.assert_array_equal(above, [bins.bins - 1, bins.bins - 1])


def test_fixed_bins_left_edges_open_their_bin() -> None:
    bins = FixedBins(0.0, 1.0, 10)
    np.testing.assert_array_equal(bins.index(bins.edges[:-1]), np.arange(10))
    assert bins.index(np.array([1.0]))[0] == 9
    assert bins.edges.shape == (11,)
    assert bins.edges[0] == 0.0
    assert bins.edges[-1] == 1.0


def test_fixed_bins_keeps_shape_and_dtype() -> None:
    bins = FixedBins(-1.0, 1.0, 4)
    x = np.array([[-0.9, 0.1, 0.6], [2.0, -2.0, 0.0]])
    idx = bins.index(x)
    assert idx.shape == x.shape
    assert idx.dtype == np.intp
    np.testing.assert_array_equal(idx, [[0, 2, 3], [3, 0, 2]])


def test_fixed_bins_outside() -> None:
    bins = FixedBins(0.0, 2.0, 4)
    x = np.array([-0.1, 0.0, 1.0, 2.0, 2.1, np.nan, np.inf])
    np.testing.assert_array_equal(bins.outside(x), [True, False, False, False, True, True, True])
    # NaN is counted with the overflow, consistently with outside().
    assert bins.index(np.array([np.nan]))[0] == 3


@pytest.mark.parametrize(
    ("lo", "hi", "n"),
    [(1.0, 1.0, 3), (2.0, 1.0, 3), (0.0, 1.0, 0), (0.0, np.inf, 3), (np.nan, 1.0, 2)],
)
def test_fixed_bins_rejects_bad_params(lo: float, hi: float, n: int) -> None:
    with pytest.raises(ValueError, match=r"."):
        FixedBins(lo, hi, n)


@st.composite
def log_buckets(draw: st.DrawFn) -> LogBuckets:
    alpha = draw(st.floats(1e-3, 0.5))
    lo = draw(st.floats(1e-6, 1e3))
    ratio = draw(st.floats(1.001, 1e6))
    return LogBuckets(alpha, lo, lo * ratio)


@settings(max_examples=150)
@given(log_buckets(), st.data())
def test_log_buckets_relative_error(lb: LogBuckets, data: st.DataObject) -> None:
    x = data.draw(
        hnp.arrays(
            np.float64,
            st.integers(1, 50),
            elements=st.floats(lb.min_value, lb.max_value),
        )
    )
    idx = lb.index(x)
    assert np.all((idx >= 1) & (idx < lb.n_buckets))
    rep = lb.values()[idx]
    assert np.all(np.abs(rep - x) <= lb.alpha * x * (1 + 1e-12))
    # Index is monotone in the value.
    order = np.argsort(x, kind="stable")
    assert np.all(np.diff(idx[order]) >= 0)


@settings(max_examples=100)
@given(log_buckets())
def test_log_buckets_layout(lb: LogBuckets) -> None:
    assert lb.gamma == pytest.approx((1 + lb.alpha) / (1 - lb.alpha))
    vals = lb.values()
    assert vals.shape == (lb.n_buckets,)
    assert vals[0] == 0.0
    assert np.all(np.diff(vals) > 0)
    # The last bucket is the one holding max_value: no bucket is wasted past it.
    assert lb.index(np.array([lb.max_value]))[0] == lb.n_buckets - 1
    if lb.n_buckets > 2:
        upper_of_previous = vals[-2] * (lb.gamma + 1) / 2
        assert upper_of_previous < lb.max_value
    special = np.array([0.0, -1.0, lb.min_value * 0.999, lb.max_value * 10, np.inf, np.nan])
    np.testing.assert_array_equal(lb.index(special), [0, 0, 0] + [lb.n_buckets - 1] * 3)


def test_log_buckets_bucket_bounds_exact() -> None:
    lb = LogBuckets(0.5, 1.0, 100.0)  # gamma = 3: bounds 1, 3, 9, 27, 81, 243
    x = np.array([1.0, 2.9, 3.0, 3.0000001, 9.0, 80.0, 81.0, 82.0, 100.0, 5000.0])
    np.testing.assert_array_equal(lb.index(x), [1, 1, 1, 2, 2, 4, 4, 5, 5, 5])
    assert lb.n_buckets == 6


@pytest.mark.parametrize(
    ("alpha", "lo", "hi"),
    [(0.0, 1.0, 2.0), (1.0, 1.0, 2.0), (0.01, 0.0, 2.0), (0.01, -1.0, 2.0), (0.01, 2.0, 2.0)],
)
def test_log_buckets_rejects_bad_params(alpha: float, lo: float, hi: float) -> None:
    with pytest.raises(ValueError, match=r"."):
        LogBuckets(alpha, lo, hi)


def test_log_buckets_quantile_lognormal_within_alpha() -> None:
    rng = np.random.default_rng(7)
    lb = LogBuckets(0.01, 1e-3, 1e4)
    x = rng.lognormal(mean=3.0, sigma=1.0, size=(4, 5000))
    counts = np.zeros((4, lb.n_buckets))
    np.add.at(counts, (np.arange(4)[:, None], lb.index(x)), 1)
    for q in (0.0, 0.01, 0.5, 0.9, 0.99, 0.999, 1.0):
        got = lb.quantile(counts, q)
        expected = np.quantile(x, q, axis=-1, method="lower")
        assert got.shape == (4,)
        np.testing.assert_array_less(np.abs(got - expected), 0.01 * expected * (1 + 1e-12))


@settings(max_examples=150)
@given(
    hnp.arrays(np.float64, st.integers(1, 80), elements=st.floats(0.0, 1e3)),
    st.floats(0.0, 1.0),
)
def test_log_buckets_quantile_is_bucket_of_lower_quantile(x: np.ndarray, q: float) -> None:
    lb = LogBuckets(0.05, 0.1, 500.0)
    counts = np.bincount(lb.index(x), minlength=lb.n_buckets)
    expected = lb.values()[lb.index(np.array([np.quantile(x, q, method="lower")]))[0]]
    assert float(lb.quantile(counts, q)) == expected


@settings(max_examples=50)
@given(
    hnp.arrays(np.int64, st.tuples(st.integers(1, 5), st.just(30)), elements=st.integers(0, 20)),
    st.floats(0.0, 1.0),
)
def test_log_buckets_quantile_vectorised(counts: np.ndarray, q: float) -> None:
    lb = LogBuckets(0.1, 1.0, 1e3)
    assert lb.n_buckets == 36
    padded = np.zeros((counts.shape[0], lb.n_buckets), dtype=np.int64)
    padded[:, :30] = counts
    rows = np.array([lb.quantile(row, q) for row in padded])
    got = lb.quantile(padded.reshape(1, *padded.shape), q)
    np.testing.assert_array_equal(got[0], rows)
    assert np.all(np.isnan(rows) == (padded.sum(axis=1) == 0))


def test_log_buckets_quantile_rejects_bad_input() -> None:
    lb = LogBuckets(0.1, 1.0, 10.0)
    with pytest.raises(ValueError, match="q must"):
        lb.quantile(np.ones(lb.n_buckets), 1.5)
    with pytest.raises(ValueError, match="buckets"):
        lb.quantile(np.ones(lb.n_buckets + 1), 0.5)


def test_log_buckets_counts_merge_by_addition() -> None:
    rng = np.random.default_rng(3)
    lb = LogBuckets(0.02, 1e-2, 1e3)
    a = rng.lognormal(0.0, 1.0, 1000)
    b = rng.lognormal(1.0, 0.5, 700)
    ca = np.bincount(lb.index(a), minlength=lb.n_buckets)
    cb = np.bincount(lb.index(b), minlength=lb.n_buckets)
    both = np.concatenate([a, b])
    for q in (0.1, 0.5, 0.95):
        expected = np.quantile(both, q, method="lower")
        assert abs(float(lb.quantile(ca + cb, q)) - expected) <= 0.02 * expected * (1 + 1e-12)
