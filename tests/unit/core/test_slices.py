"""Slice levels, canonical labels, value caps and missing dimensions."""

from itertools import combinations
from math import comb

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from streamguard.core.slices import (
    MISSING,
    OTHER,
    ROOT,
    SliceCoder,
    _unique,
    label_dims,
    levels_of,
)
from streamguard.policy import SlicePolicy

DIMS = ("platform", "region", "tier", "os")


def expected_level_count(d: int, max_level: int, include_full: bool) -> int:
    count = sum(comb(d, k) for k in range(min(max_level, d) + 1))
    return count + (1 if include_full and d and max_level < d else 0)


@pytest.mark.parametrize("d", range(5))
@pytest.mark.parametrize("max_level", range(6))
@pytest.mark.parametrize("include_full", [True, False])
def test_levels_of_counts(d: int, max_level: int, include_full: bool) -> None:
    policy = SlicePolicy(dimensions=DIMS[:d], max_level=max_level, include_full=include_full)
    levels = levels_of(policy)
    assert len(levels) == expected_level_count(d, max_level, include_full)
    assert len(set(levels)) == len(levels)
    assert levels[0] == ()  # the whole deployment, first
    sizes = [len(level) for level in levels]
    assert sizes == sorted(sizes)  # coarsest first
    for level in levels:
        assert list(level) == sorted(set(level))
        assert all(0 <= i < d for i in level)
        assert len(level) <= max_level or (include_full and len(level) == d)
    # Every subset up to max_level is there.
    for size in range(min(max_level, d) + 1):
        assert set(combinations(range(d), size)) <= set(levels)
    assert (tuple(range(d)) in levels) == (d == 0 or include_full or max_level >= d)


slice_values = st.sampled_from(["a", "b", "c", "d-1", "x.y"])
events = st.lists(
    st.dictionaries(st.sampled_from([*DIMS, "extra"]), slice_values, max_size=5), max_size=30
)


def oracle_label(event: dict[str, str], dims: tuple[str, ...]) -> str:
    return ",".join(f"{d}={event.get(d, MISSING)}" for d in sorted(dims)) or ROOT


def oracle_labels(event: dict[str, str], policy: SlicePolicy) -> list[str]:
    dims = sorted(policy.dimensions)
    subsets = [
        c for k in range(min(policy.max_level, len(dims)) + 1) for c in combinations(dims, k)
    ]
    if policy.include_full and dims and tuple(dims) not in subsets:
        subsets.append(tuple(dims))
    return [oracle_label(event, subset) for subset in subsets]


@settings(max_examples=100)
@given(
    events,
    st.permutations(DIMS).flatmap(lambda p: st.integers(0, 4).map(lambda n: tuple(p[:n]))),
    st.integers(0, 4),
    st.booleans(),
)
def test_one_row_per_level_and_event(
    batch: list[dict[str, str]], dims: tuple[str, ...], max_level: int, include_full: bool
) -> None:
    policy = SlicePolicy(dimensions=dims, max_level=max_level, include_full=include_full)
    coder = SliceCoder(policy)
    rows = coder.rows(coder.encode(batch))
    n_levels = expected_level_count(len(dims), max_level, include_full)
    assert rows.index.shape == (len(batch), n_levels)
    assert len(set(rows.labels)) == len(rows.labels)
    if batch:
        assert rows.index.min() >= 0
        assert rows.index.max() < len(rows.labels)
        # Every label is used by some event, and the root by all.
        assert set(rows.index.ravel().tolist()) == set(range(len(rows.labels)))
        assert {rows.labels[i] for i in rows.index[:, 0]} == {ROOT}
    for i, event in enumerate(batch):
        got = [rows.labels[j] for j in rows.index[i]]
        assert sorted(got) == sorted(oracle_labels(event, policy))
        assert len(set(got)) == n_levels


@settings(max_examples=100)
@given(events, st.permutations(DIMS[:3]))
def test_labels_do_not_depend_on_policy_order(
    batch: list[dict[str, str]], order: list[str]
) -> None:
    reference = SliceCoder(SlicePolicy(dimensions=tuple(sorted(order))))
    permuted = SliceCoder(SlicePolicy(dimensions=tuple(order)))
    a = reference.rows(reference.encode(batch))
    b = permuted.rows(permuted.encode(batch))
    for i in range(len(batch)):
        assert [a.labels[j] for j in a.index[i]] == [b.labels[j] for j in b.index[i]]
    for label in b.labels:
        if label != ROOT:
            keys = [part.split("=")[0] for part in label.split(",")]
            assert keys == sorted(keys)
            assert label_dims(label) == dict(part.split("=") for part in label.split(","))


def test_missing_dimensions() -> None:
    coder = SliceCoder(SlicePolicy(dimensions=("tier", "platform"), max_level=2))
    rows = coder.rows(coder.encode([{}, {"platform": "ios"}, {"other": "x"}]))
    labels = [[rows.labels[j] for j in rows.index[i]] for i in range(3)]
    assert labels[0] == [
        ROOT,
        f"platform={MISSING}",
        f"tier={MISSING}",
        f"platform={MISSING},tier={MISSING}",
    ]
    assert labels[1] == [ROOT, "platform=ios", f"tier={MISSING}", f"platform=ios,tier={MISSING}"]
    assert labels[2] == labels[0]


def test_no_dimensions_is_the_root_only() -> None:
    coder = SliceCoder(SlicePolicy(dimensions=()))
    rows = coder.rows(coder.encode([{"platform": "ios"}, {}]))
    assert rows.labels == [ROOT]
    assert rows.index.tolist() == [[0], [0]]


def cap_oracle(values: list[str | None], cap: int) -> tuple[list[str], int]:
    seen: list[str] = []
    out, folded = [], 0
    for value in values:
        if value is None:
            out.append(MISSING)
        elif value in seen:
            out.append(value)
        elif len(seen) < cap:
            seen.append(value)
            out.append(value)
        else:
            out.append(OTHER)
            folded += 1
    return out, folded


@given(
    st.lists(
        st.lists(st.sampled_from(["v0", "v1", "v2", "v3", "v4", "v5", None]), max_size=12),
        max_size=5,
    ),
    st.integers(1, 4),
)
def test_value_cap_folds_into_other_and_counts(batches: list[list[str | None]], cap: int) -> None:
    coder = SliceCoder(SlicePolicy(dimensions=("platform",), max_values_per_dimension=cap))
    everything = [v for batch in batches for v in batch]
    expected, folded = cap_oracle(everything, cap)
    got: list[str] = []
    for batch in batches:  # several messages: the cap holds across them
        rows = coder.rows(coder.encode([{} if v is None else {"platform": v} for v in batch]))
        got.extend(rows.labels[j].split("=", 1)[1] for j in rows.index[:, 1])
    assert got == expected
    assert coder.capped == folded
    assert len({v for v in got if v not in (OTHER, MISSING)}) <= cap


@given(
    st.lists(
        st.tuples(st.sampled_from(["a", "b", "c", "d"]), st.sampled_from(["x", "y", "z"])),
        max_size=25,
    ),
    st.integers(1, 3),
)
def test_value_cap_is_per_dimension(pairs: list[tuple[str, str]], cap: int) -> None:
    coder = SliceCoder(
        SlicePolicy(dimensions=("platform", "tier"), max_level=2, max_values_per_dimension=cap)
    )
    rows = coder.rows(coder.encode([{"platform": p, "tier": t} for p, t in pairs]))
    platforms, _ = cap_oracle([p for p, _ in pairs], cap)
    tiers, _ = cap_oracle([t for _, t in pairs], cap)
    for i in range(len(pairs)):
        full = rows.labels[rows.index[i, -1]]
        assert full == f"platform={platforms[i]},tier={tiers[i]}"
    folded_events = sum(OTHER in (p, t) for p, t in zip(platforms, tiers, strict=True))
    assert coder.capped == folded_events


def test_encode_is_stable_across_calls() -> None:
    coder = SliceCoder(SlicePolicy())
    batch = [{"platform": "ios", "region": "eu", "tier": "free"}, {"platform": "web"}]
    first = coder.encode(batch)
    second = coder.encode(list(reversed(batch)))
    np.testing.assert_array_equal(first, second[::-1])


@given(
    st.lists(st.integers(0, 3000), min_size=1, max_size=200),
    st.integers(0, 5000),
)
def test_unique_ids_equal_numpy_unique(ids: list[int], extra: int) -> None:
    array = np.array(ids, dtype=np.int64)
    bound = int(array.max()) + 1 + extra  # both ways: presence table and sort
    unique, inverse = _unique(array, bound)
    expected, expected_inverse = np.unique(array, return_inverse=True)
    assert unique.dtype == np.int64
    assert inverse.dtype == np.int64
    assert unique.tolist() == expected.tolist()
    assert inverse.tolist() == expected_inverse.tolist()
