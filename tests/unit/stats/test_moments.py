"""Tests for streamguard.stats.moments against numpy (and river) oracles."""

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from river import stats as river_stats

from streamguard.stats.moments import (
    merge_moments,
    merge_moments_by_group,
    moment_mean,
    moment_variance,
    moments_by_group,
    subtract_moments,
)
from streamguard.stats.running_moments import Moments

sane = st.floats(-1e6, 1e6, allow_nan=False, allow_infinity=False)
# Subnormal inputs round differently in numpy's and our formulas; below this nothing matters.
TINY = 1e-300


def values(min_size: int = 0, max_size: int = 60) -> st.SearchStrategy[np.ndarray]:
    return hnp.arrays(np.float64, st.integers(min_size, max_size), elements=sane)


def oracle(x: np.ndarray) -> np.ndarray:
    """(n, mean, m2) by numpy."""
    if x.size == 0:
        return np.zeros(3)
    return np.array([x.size, np.mean(x), np.var(x) * x.size])


def assert_moments_close(
    got: np.ndarray, expected: np.ndarray, scale: float, amp: float = 1.0
) -> None:
    """Compare moments with tolerances set by the data's magnitude (float rounding only)."""
    assert got[0] == expected[0]
    n = max(expected[0], 1.0)
    s = scale
    assert got[1] == pytest.approx(expected[1], rel=1e-9, abs=1e-11 * s * amp + TINY)
    assert got[2] == pytest.approx(expected[2], rel=1e-8, abs=1e-10 * s * s * n * amp + TINY)


def _scale(*arrays: np.ndarray) -> float:
    return max((float(np.max(np.abs(a))) for a in arrays if a.size), default=1.0)


@settings(max_examples=150)
@given(values(), st.integers(1, 6), st.data())
def test_moments_by_group_matches_numpy(x: np.ndarray, k: int, data: st.DataObject) -> None:
    groups = data.draw(hnp.arrays(np.intp, x.shape, elements=st.integers(0, k - 1)))
    got = moments_by_group(x, groups, k)
    assert got.shape == (k, 3)
    for g in range(k):
        sub = x[groups == g]
        if sub.size == 0:
            np.testing.assert_array_equal(got[g], 0.0)
        else:
            assert_moments_close(got[g], oracle(sub), _scale(sub))


@settings(max_examples=150)
@given(values(), st.integers(1, 8), st.integers(1, 4), st.data())
def test_merge_moments_by_group_equals_moments_of_each_union(
    x: np.ndarray, k: int, n_groups: int, data: st.DataObject
) -> None:
    # Values fall in k parts; each part belongs to one group (some parts and groups empty).
    part = data.draw(hnp.arrays(np.intp, x.shape, elements=st.integers(0, k - 1)))
    group_of = data.draw(hnp.arrays(np.intp, k, elements=st.integers(0, n_groups - 1)))
    got = merge_moments_by_group(moments_by_group(x, part, k), group_of, n_groups)
    assert got.shape == (n_groups, 3)
    for g in range(n_groups):
        sub = x[np.isin(part, np.flatnonzero(group_of == g))]
        if sub.size == 0:
            np.testing.assert_array_equal(got[g], 0.0)
        else:
            assert_moments_close(got[g], oracle(sub), _scale(sub))


def test_merge_moments_by_group_keeps_large_offsets_exact() -> None:
    # Parts far from zero and close together: Σx² − n·mean² would lose every digit here.
    x = 1e9 + np.array([0.0, 1.0, 2.0, 3.0, 4.0, 5.0])
    parts = moments_by_group(x, np.array([0, 0, 1, 1, 2, 2]), 3)
    got = merge_moments_by_group(parts, np.array([0, 0, 0]), 1)[0]
    assert got[0] == 6
    assert got[1] == 1e9 + 2.5
    assert got[2] == pytest.approx(17.5, rel=1e-12)


def test_merge_moments_by_group_needs_one_group_per_part() -> None:
    with pytest.raises(ValueError, match="one group per part"):
        merge_moments_by_group(np.zeros((2, 3)), np.array([0]), 1)


def test_moments_by_group_two_pass_is_exact_with_large_offset() -> None:
    # Σx² − n·mean² would lose every digit here; the two-pass form keeps them.
    x = 1e9 + np.array([1.0, 2.0, 3.0, 4.0])
    got = moments_by_group(x, np.zeros(4, dtype=np.intp), 1)
    np.testing.assert_array_equal(got, [[4.0, 1e9 + 2.5, 5.0]])


def test_moments_by_group_validation() -> None:
    with pytest.raises(ValueError, match="same shape"):
        moments_by_group(np.ones(3), np.zeros(2, dtype=np.intp), 1)
    with pytest.raises(ValueError, match="group numbers"):
        moments_by_group(np.ones(2), np.array([0, 2]), 2)
    with pytest.raises(ValueError, match="integers"):
        moments_by_group(np.ones(2), np.array([0.0, 1.0]), 2)
    np.testing.assert_array_equal(
        moments_by_group(np.array([]), np.array([], dtype=np.intp), 2), 0.0
    )


@settings(max_examples=200)
@given(values(), values())
def test_merge_equals_moments_of_union(a: np.ndarray, b: np.ndarray) -> None:
    got = merge_moments(oracle(a), oracle(b))
    assert_moments_close(got, oracle(np.concatenate([a, b])), _scale(a, b))


@settings(max_examples=200)
@given(values(min_size=1), values(min_size=1))
def test_subtract_is_inverse_of_merge(a: np.ndarray, b: np.ndarray) -> None:
    total = oracle(np.concatenate([a, b]))
    got = subtract_moments(total, oracle(b))
    # Removing a part loses accuracy in proportion to how much larger it is than the rest.
    assert_moments_close(got, oracle(a), _scale(a, b), amp=1.0 + b.size / a.size)
    assert got[2] >= 0.0


@settings(max_examples=100)
@given(values())
def test_merge_and_subtract_with_empty_side_are_exact(a: np.ndarray) -> None:
    m = oracle(a)
    empty = np.zeros(3)
    np.testing.assert_array_equal(merge_moments(m, empty), m)
    np.testing.assert_array_equal(merge_moments(empty, m), m)
    np.testing.assert_array_equal(subtract_moments(m, empty), m)
    np.testing.assert_array_equal(subtract_moments(m, m), empty)
    np.testing.assert_array_equal(merge_moments(empty, empty), empty)


def test_subtract_more_than_total_is_empty() -> None:
    got = subtract_moments(np.array([2.0, 1.0, 0.5]), np.array([3.0, 1.0, 1.0]))
    np.testing.assert_array_equal(got, 0.0)


def test_subtract_clamps_negative_m2() -> None:
    # Inconsistent inputs (part's spread exceeds the total's) clamp to 0 rather than go negative.
    got = subtract_moments(np.array([4.0, 0.0, 1.0]), np.array([2.0, 0.0, 5.0]))
    assert got[2] == 0.0
    assert got[0] == 2.0


@settings(max_examples=50)
@given(
    hnp.arrays(
        np.float64, st.tuples(st.integers(1, 4), st.integers(1, 3), st.just(3)), elements=sane
    ),
    hnp.arrays(np.float64, st.tuples(st.integers(1, 3), st.just(3)), elements=sane),
)
def test_vectorised_merge_and_subtract_equal_row_by_row(a: np.ndarray, b: np.ndarray) -> None:
    # Make each row a valid moment triple: n a small non-negative integer, m2 >= 0.
    a[..., 0] = np.abs(np.round(a[..., 0])) % 7
    a[..., 2] = np.abs(a[..., 2])
    b[..., 0] = np.abs(np.round(b[..., 0])) % 7
    b[..., 2] = np.abs(b[..., 2])
    if a.shape[1] != b.shape[0]:
        b = np.resize(b, (a.shape[1], 3))
    merged = merge_moments(a, b)
    rest = subtract_moments(a, b)
    assert merged.shape == a.shape
    for i in range(a.shape[0]):
        for j in range(a.shape[1]):
            np.testing.assert_array_equal(merged[i, j], merge_moments(a[i, j], b[j]))
            np.testing.assert_array_equal(rest[i, j], subtract_moments(a[i, j], b[j]))


def test_moment_mean_and_variance() -> None:
    m = np.array([[0.0, 0.0, 0.0], [1.0, 5.0, 0.0], [4.0, 2.5, 5.0]])
    np.testing.assert_array_equal(moment_mean(m), [np.nan, 5.0, 2.5])
    np.testing.assert_array_equal(moment_variance(m), [np.nan, np.nan, 5.0 / 3.0])
    np.testing.assert_array_equal(moment_variance(m, ddof=0), [np.nan, 0.0, 1.25])
    with pytest.raises(ValueError, match="last axis"):
        moment_mean(np.ones(4))


@settings(max_examples=100)
@given(values(max_size=30))
def test_moments_class_matches_numpy_after_every_update(x: np.ndarray) -> None:
    acc = Moments()
    river_var = river_stats.Var(ddof=1)
    assert math.isnan(acc.mean)
    for i, v in enumerate(x, start=1):
        assert acc.update(float(v)) is acc
        river_var.update(float(v))
        seen = x[:i]
        s = _scale(seen)
        assert acc.n == i
        assert acc.mean == pytest.approx(np.mean(seen), rel=1e-9, abs=1e-11 * s + TINY)
        if i > 1:
            assert acc.variance() == pytest.approx(
                np.var(seen, ddof=1), rel=1e-8, abs=1e-10 * s * s + TINY
            )
            assert acc.variance() == pytest.approx(
                river_var.get(), rel=1e-6, abs=1e-9 * s * s + TINY
            )
        else:
            assert math.isnan(acc.variance())
        assert acc.variance(ddof=0) == pytest.approx(
            np.var(seen), rel=1e-8, abs=1e-10 * s * s + TINY
        )


@settings(max_examples=100)
@given(values(), values(), values())
def test_moments_class_update_many_and_merge(a: np.ndarray, b: np.ndarray, c: np.ndarray) -> None:
    acc = Moments().update_many(a)
    assert acc.update_many(b) is acc
    other = Moments().update_many(c)
    before = other.to_array()
    assert acc.merge(other) is acc
    np.testing.assert_array_equal(other.to_array(), before)
    assert_moments_close(acc.to_array(), oracle(np.concatenate([a, b, c])), _scale(a, b, c))


def test_moments_class_array_round_trip() -> None:
    acc = Moments().update(1.0).update(4.0).update(10.0)
    arr = acc.to_array()
    assert arr.shape == (3,)
    back = Moments.from_array(arr)
    np.testing.assert_array_equal(back.to_array(), arr)
    assert back.n == 3
    assert back.mean == 5.0
    assert back.m2 == acc.m2 == 42.0
    arr[0] = 99.0  # to_array returns a copy
    assert acc.n == 3
    with pytest.raises(ValueError, match="shape"):
        Moments.from_array(np.ones(4))
    with pytest.raises(ValueError, match="non-negative"):
        Moments.from_array(np.array([-1.0, 0.0, 0.0]))
