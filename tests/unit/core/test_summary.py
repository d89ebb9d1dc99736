"""Summary tables: merging the summaries of parts equals the summary of the whole."""

from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from streamguard.core.slices import SliceCoder
from streamguard.core.summary import (
    Field,
    FrozenTable,
    Registry,
    Table,
    add_fields,
    remainders,
    subtract_fields,
    sum_frozen,
    zeros,
)
from streamguard.stats import merge_moments
from tests.unit.core._pairs import MEASURES, SLICES, pair_batches


def summarise(parts: list[tuple[list[dict[str, str]], np.ndarray, np.ndarray]], capacity: int = 16):
    coder = SliceCoder(SLICES)
    registry = Registry()
    table = Table(MEASURES.fields, capacity=capacity)
    for slices, primary, shadow in parts:
        if not slices:
            continue
        rows = coder.rows(coder.encode(slices))
        contribution = MEASURES.contributions(rows.index, len(rows.labels), primary, shadow)
        table.add(registry.rows_for(rows.labels), contribution)
    return {
        label: {name: array[row] for name, array in table.view(len(registry)).items()}
        for row, label in enumerate(registry.labels)
    }


def assert_same_summary(got: dict, expected: dict) -> None:
    assert set(got) == set(expected)
    for label, fields in expected.items():
        for name, value in fields.items():
            if name == "dev":
                n, mean, m2 = value
                assert got[label][name][0] == n
                assert got[label][name][1] == pytest.approx(mean, rel=1e-9, abs=1e-12)
                assert got[label][name][2] == pytest.approx(m2, rel=1e-9, abs=1e-12)
            else:
                np.testing.assert_array_equal(got[label][name], value, err_msg=f"{label} {name}")


@settings(max_examples=60)
@given(pair_batches(), st.data())
def test_merging_halves_equals_the_whole(batch, data: st.DataObject) -> None:
    slices, primary, shadow = batch
    k = data.draw(st.integers(0, len(slices)))
    whole = summarise([batch])
    halves = summarise(
        [(slices[:k], primary[:k], shadow[:k]), (slices[k:], primary[k:], shadow[k:])],
        capacity=1,  # also exercises growth of the table
    )
    assert_same_summary(halves, whole)


@settings(max_examples=40)
@given(st.lists(pair_batches(max_size=15), min_size=1, max_size=5))
def test_merging_is_independent_of_the_split(parts) -> None:
    joined = (
        [s for p in parts for s in p[0]],
        np.concatenate([p[1] for p in parts]),
        np.concatenate([p[2] for p in parts]),
    )
    assert_same_summary(summarise(parts), summarise([joined]))


@settings(max_examples=50)
@given(pair_batches(min_size=1), st.data())
def test_subtracting_a_part_gives_the_rest(batch, data: st.DataObject) -> None:
    slices, primary, shadow = batch
    k = data.draw(st.integers(0, len(slices)))
    coder = SliceCoder(SLICES)
    # One row: everything in the root slice.
    root = np.zeros((len(slices), 1), dtype=np.int64)
    total = MEASURES.contributions(root, 1, primary, shadow)
    head = MEASURES.contributions(root[:k], 1, primary[:k], shadow[:k])
    tail = MEASURES.contributions(root[k:], 1, primary[k:], shadow[k:])
    rest = subtract_fields(MEASURES.fields, total, head)
    for f in MEASURES.fields:
        if f.kind == "count":
            np.testing.assert_array_equal(rest[f.name], tail[f.name])
        else:
            assert rest[f.name][0, 0] == tail[f.name][0, 0]
            assert rest[f.name][0, 1] == pytest.approx(tail[f.name][0, 1], rel=1e-7, abs=1e-9)
            assert rest[f.name][0, 2] == pytest.approx(tail[f.name][0, 2], rel=1e-6, abs=1e-9)
    again = zeros(MEASURES.fields, 1)
    add_fields(MEASURES.fields, again, head)
    add_fields(MEASURES.fields, again, tail)
    for f in MEASURES.fields:
        if f.kind == "count":
            np.testing.assert_array_equal(again[f.name], total[f.name])
    del coder


@settings(max_examples=50)
@given(pair_batches(min_size=1), st.data())
def test_remainders_are_the_summaries_of_what_is_left(batch, data: st.DataObject) -> None:
    """Many complements at once equal the direct summary of the events they leave."""
    _, primary, shadow = batch
    n = len(primary)
    cuts = sorted(data.draw(st.lists(st.integers(0, n), min_size=2, max_size=2)))
    chunks = [slice(0, cuts[0]), slice(cuts[0], cuts[1]), slice(cuts[1], n)]

    def summary(index: np.ndarray) -> dict[str, Any]:
        one_row = np.zeros((len(index), 1), dtype=np.int64)
        return MEASURES.contributions(one_row, 1, primary[index], shadow[index])

    # Row 0 holds every event, rows 1-3 the three chunks.
    rows = [summary(np.arange(n))] + [summary(np.arange(n)[c]) for c in chunks]
    arrays = {f.name: np.concatenate([r[f.name] for r in rows]) for f in MEASURES.fields}
    subsets = data.draw(st.lists(st.sets(st.integers(1, 3), min_size=1), min_size=1, max_size=5))
    got = remainders(MEASURES.fields, arrays, [(0, sorted(parts)) for parts in subsets])
    for q, parts in enumerate(subsets):
        kept = [np.arange(n)[chunks[i - 1]] for i in (1, 2, 3) if i not in parts]
        want = summary(np.concatenate([np.zeros(0, np.int64), *kept]))
        for f in MEASURES.fields:
            if f.kind == "count":
                np.testing.assert_array_equal(got[f.name][q], want[f.name][0])
            else:
                assert got[f.name][q, 0] == want[f.name][0, 0]
                np.testing.assert_allclose(got[f.name][q, 1:], want[f.name][0, 1:], 1e-6, 1e-9)


def test_registry_rows_are_stable_and_limited() -> None:
    registry = Registry()
    assert registry.rows_for(["*", "a=1"]).tolist() == [0, 1]
    assert registry.rows_for(["a=1", "b=2", "*"], limit=3).tolist() == [1, 2, 0]
    assert registry.rows_for(["c=3", "a=1"], limit=3).tolist() == [-1, 1]
    assert registry.labels == ["*", "a=1", "b=2"]
    assert len(registry) == 3


def test_table_view_pads_with_zeros() -> None:
    fields = (Field("n", "count"), Field("h", "count", 3), Field("m", "moments"))
    table = Table(fields, capacity=2)
    table.add(
        np.array([1]),
        {"n": np.array([4]), "h": np.array([[1, 2, 1]]), "m": np.array([[4.0, 0.5, 1.0]])},
    )
    view = table.view(5)
    assert view["n"].tolist() == [0, 4, 0, 0, 0]
    assert view["h"].shape == (5, 3)
    assert view["m"][1].tolist() == [4.0, 0.5, 1.0]
    assert view["m"][0].tolist() == [0.0, 0.0, 0.0]
    assert view["n"].dtype == np.int64
    assert view["m"].dtype == np.float64


def test_table_add_merges_moments_like_numpy() -> None:
    fields = (Field("m", "moments"),)
    table = Table(fields, capacity=1)
    a, b = np.array([1.0, 2.0, 3.0]), np.array([10.0, 20.0])
    for x, row in ((a, 0), (b, 0), (b, 3)):
        moments = np.array([[len(x), x.mean(), ((x - x.mean()) ** 2).sum()]])
        table.add(np.array([row]), {"m": moments})
    both = np.concatenate([a, b])
    got = table.view(4)["m"]
    np.testing.assert_allclose(got[0], [5, both.mean(), both.var() * 5], rtol=1e-12)
    np.testing.assert_allclose(got[3], [2, 15.0, 50.0], rtol=1e-12)
    assert got[1].tolist() == got[2].tolist() == [0.0, 0.0, 0.0]


@given(
    st.lists(
        st.tuples(
            st.lists(st.integers(0, 12), min_size=1, max_size=6, unique=True),
            st.integers(0, 2**32 - 1),
        ),
        min_size=1,
        max_size=5,
    )
)
def test_adds_to_fresh_rows_equal_merging_into_zeros_bit_for_bit(adds) -> None:
    """The fast path (rows never written are assigned) changes no bit of any sum."""
    fields = (Field("n", "count"), Field("h", "count", 3), Field("m", "moments"))
    table, reference = Table(fields, capacity=2), zeros(fields, 13)
    for rows, seed in adds:
        rng = np.random.default_rng(seed)
        k = len(rows)
        n = rng.integers(0, 4, k).astype(np.float64)  # some rows empty (n = 0)
        moments = np.stack([n, rng.normal(size=k), rng.random(k) * n], axis=-1)
        contribution = {"n": rng.integers(0, 9, k), "h": rng.integers(0, 9, (k, 3)), "m": moments}
        index = np.array(rows)
        table.add(index, contribution)
        reference["n"][index] += contribution["n"]
        reference["h"][index] += contribution["h"]
        reference["m"][index] = merge_moments(reference["m"][index], moments)
    view = table.view(13)
    for name, expected in reference.items():
        assert view[name].tobytes() == expected.tobytes()


def window_tables(windows: list[Any]) -> tuple[Registry, list[tuple[Table, FrozenTable]]]:
    """Each window's pairs summarised in a table with one registry, and its frozen form."""
    coder = SliceCoder(SLICES)
    registry = Registry()
    tables = []
    for slices, primary, shadow in windows:
        table = Table(MEASURES.fields)
        if slices:
            rows = coder.rows(coder.encode(slices))
            contribution = MEASURES.contributions(rows.index, len(rows.labels), primary, shadow)
            table.add(registry.rows_for(rows.labels), contribution)
        # Freeze with the rows known then: later windows may add rows to the registry.
        tables.append((table, table.freeze(len(registry))))
    return registry, tables


@settings(max_examples=60)
@given(st.lists(pair_batches(), min_size=1, max_size=4), st.integers(0, 5))
def test_frozen_windows_sum_like_dense_tables(windows, extra_rows) -> None:
    """A horizon summed from frozen (sparse) windows equals the sum of the dense tables."""
    registry, tables = window_tables(windows)
    rows = len(registry) + extra_rows
    dense, sparse = zeros(MEASURES.fields, rows), zeros(MEASURES.fields, rows)
    for table, frozen in tables:
        add_fields(MEASURES.fields, dense, table.view(rows))
        frozen.add_into(sparse)
        for name, array in frozen.view(rows).items():
            np.testing.assert_array_equal(array, table.view(rows)[name], err_msg=name)
    for name in dense:
        np.testing.assert_allclose(sparse[name], dense[name], rtol=1e-12, atol=1e-12, err_msg=name)
        assert sparse[name].dtype == dense[name].dtype


@settings(max_examples=60)
@given(st.lists(pair_batches(), min_size=1, max_size=6), st.integers(0, 5))
def test_a_horizon_merged_at_once_equals_window_by_window(windows, extra_rows) -> None:
    """sum_frozen (one closed-form merge per moments field) against one merge per window;
    rows with data in one window only keep its moments bit for bit."""
    registry, tables = window_tables(windows)
    frozen = [table for _, table in tables]
    rows = len(registry) + extra_rows
    one_by_one = zeros(MEASURES.fields, rows)
    for table in frozen:
        table.add_into(one_by_one)
    at_once = sum_frozen(MEASURES.fields, rows, frozen)
    for f in MEASURES.fields:
        got, want = at_once[f.name], one_by_one[f.name]
        assert got.dtype == want.dtype
        assert got.shape == want.shape
        if f.kind == "count":
            np.testing.assert_array_equal(got, want, err_msg=f.name)
            continue
        np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12, err_msg=f.name)
        windows_with_data = sum((t.view(rows)[f.name][:, 0] > 0).astype(int) for t in frozen)
        alone = windows_with_data == 1
        assert got[alone].tobytes() == want[alone].tobytes(), f.name


def test_a_row_with_data_in_one_window_keeps_its_moments_exactly() -> None:
    # The closed form alone would give (3 * 0.1) / 3 = 0.10000000000000002 for row 0.
    assert (3 * 0.1) / 3 != 0.1
    fields = (Field("m", "moments"),)
    first, second = Table(fields), Table(fields)
    first.add(np.array([0, 1]), {"m": np.array([[3.0, 0.1, 0.02], [1.0, 0.5, 0.0]])})
    second.add(np.array([1]), {"m": np.array([[2.0, 0.25, 0.01]])})
    total = sum_frozen(fields, 2, [first.freeze(2), second.freeze(2)])
    assert total["m"][0].tolist() == [3.0, 0.1, 0.02]
    np.testing.assert_allclose(total["m"][1], merge_moments([1.0, 0.5, 0.0], [2.0, 0.25, 0.01]))


def test_frozen_table_keeps_only_non_zero_cells_and_refuses_copies() -> None:
    fields = (Field("h", "count", 100),)
    table = Table(fields, capacity=64)
    table.add(np.array([3]), {"h": np.eye(100, dtype=np.int64)[[7]]})
    frozen = table.freeze(4)
    assert [len(part) for part in frozen.cells["h"]] == [1, 1]  # one cell, not 64 x 100
    assert isinstance(frozen, FrozenTable)
    assert frozen.view(2)["h"].sum() == 0  # the cell is in row 3, cut off at 2 rows
    with pytest.raises(ValueError, match="contiguous"):
        frozen.add_into({"h": np.zeros((8, 200), dtype=np.int64)[:, ::2]})


def test_frozen_table_round_trips_through_its_snapshot_json() -> None:
    import orjson

    fields = (Field("n", "count"), Field("h", "count", 5), Field("m", "moments"))
    table = Table(fields)
    table.add(
        np.array([0, 3]),
        {
            "n": np.array([2, 7]),
            "h": np.array([[0, 2, 0, 0, 0], [1, 0, 0, 5, 1]]),
            "m": np.array([[2.0, 0.5, 0.1], [7.0, 0.25, 0.3]]),
        },
    )
    frozen = table.freeze(4)
    saved = orjson.loads(orjson.dumps(frozen.to_dict(), option=orjson.OPT_SERIALIZE_NUMPY))
    back = FrozenTable.from_dict(fields, saved)
    for name, array in table.view(6).items():
        np.testing.assert_array_equal(back.view(6)[name], array, err_msg=name)
    saved["cells"]["h"][0] = [99]  # a cell beyond the 4 x 5 table
    with pytest.raises(ValueError, match="beyond"):
        FrozenTable.from_dict(fields, saved)


def _rows_one_by_one(registry: Registry, labels: list[str], limit: int | None) -> list[int]:
    """What rows_for gives, label by label (the rule its fast path must keep)."""
    out = []
    for label in labels:
        if label not in registry.index:
            if limit is not None and len(registry.labels) >= limit:
                out.append(-1)
                continue
            registry.index[label] = len(registry.labels)
            registry.labels.append(label)
        out.append(registry.index[label])
    return out


@given(
    st.lists(st.lists(st.sampled_from("abcdefgh"), max_size=10), min_size=1, max_size=4),
    st.one_of(st.none(), st.integers(0, 10)),
)
def test_rows_for_equals_label_by_label(calls: list[list[str]], limit: int | None) -> None:
    fast, slow = Registry(), Registry()
    for labels in calls:
        got = fast.rows_for(labels, limit=limit).tolist()
        assert got == _rows_one_by_one(slow, labels, limit)
        assert fast.labels == slow.labels
        assert fast.index == slow.index
