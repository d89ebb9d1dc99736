"""Open windows at stage 2: cells instead of dense histograms, the same closed windows."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from streamguard.core.open_table import CellSums, OpenTable
from streamguard.core.partials import Cells, cells, cells_of
from streamguard.core.summary import Field, FrozenTable, Table

FIELDS = (
    Field("n", "count"),
    Field("x", "moments"),
    Field("hist", "count", 5),
    Field("sketch", "count", 3),
)


def contribution(rng: np.random.Generator, k: int, fill: float) -> dict[str, np.ndarray]:
    n = rng.integers(1, 9, size=k)
    hist = rng.integers(0, 4, size=(k, 5)) * (rng.random((k, 5)) < fill)
    sketch = rng.integers(0, 4, size=(k, 3)) * (rng.random((k, 3)) < fill)
    x = np.column_stack([n, rng.normal(size=k), rng.random(k)])
    return {"n": n, "x": x, "hist": hist, "sketch": sketch}


def assert_same_frozen(got: FrozenTable, expected: FrozenTable) -> None:
    assert got.rows == expected.rows
    assert list(got.cells) == list(expected.cells)
    for name, (where, values) in expected.cells.items():
        np.testing.assert_array_equal(got.cells[name][0], where, err_msg=name)
        np.testing.assert_array_equal(got.cells[name][1], values, err_msg=name)
    for name, dense in expected.dense.items():
        np.testing.assert_array_equal(got.dense[name], dense, err_msg=name)  # bit for bit


@settings(max_examples=80, deadline=None)
@given(
    seed=st.integers(0, 2**32 - 1),
    adds=st.integers(1, 12),
    fill=st.sampled_from([0.0, 0.2, 1.0]),
    as_cells=st.booleans(),
    frozen_rows=st.integers(0, 30),
)
def test_an_open_table_freezes_to_what_a_dense_table_freezes_to(
    seed: int, adds: int, fill: float, as_cells: bool, frozen_rows: int
) -> None:
    rng = np.random.default_rng(seed)
    dense, sparse = Table(FIELDS), OpenTable(FIELDS)
    for _ in range(adds):
        k = int(rng.integers(0, 12))
        rows = rng.permutation(24)[:k].astype(np.int64)
        part = contribution(rng, k, fill)
        dense.add(rows, part)
        given_part = dict(part)
        if as_cells:  # as stage 2 reads it from a partial
            for name in ("hist", "sketch"):
                given_part[name] = cells_of(cells(part[name]), part[name].shape)
        sparse.add(rows, given_part)
    assert_same_frozen(sparse.freeze(frozen_rows), dense.freeze(frozen_rows))
    for name, array in dense.view(frozen_rows).items():
        np.testing.assert_array_equal(sparse.view(frozen_rows)[name], array, err_msg=name)
    assert sparse.to_dict(frozen_rows).keys() == dense.freeze(frozen_rows).to_dict().keys()


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), rows=st.integers(1, 30))
def test_a_saved_open_table_comes_back_the_same(seed: int, rows: int) -> None:
    rng = np.random.default_rng(seed)
    table = OpenTable(FIELDS)
    table.add(
        rng.permutation(rows)[: rows // 2 + 1].astype(np.int64),
        contribution(rng, rows // 2 + 1, 0.3),
    )
    saved = FrozenTable.from_dict(FIELDS, table.to_dict(rows))
    back = OpenTable.of(FIELDS, saved)
    assert_same_frozen(back.freeze(rows), table.freeze(rows))
    # and it goes on merging as the original does
    more = contribution(rng, 1, 0.5)
    for t in (table, back):
        t.add(np.array([0]), more)
    assert_same_frozen(back.freeze(rows), table.freeze(rows))


@settings(max_examples=100, deadline=None)
@given(
    st.lists(st.lists(st.tuples(st.integers(0, 300), st.integers(0, 5)), max_size=60), max_size=20)
)
def test_cell_sums_equal_a_bincount(chunks: list[list[tuple[int, int]]]) -> None:
    sums = CellSums()
    total = np.zeros(301, dtype=np.int64)
    for chunk in chunks:
        where = np.array([w for w, _ in chunk], dtype=np.int64)
        counts = np.array([c for _, c in chunk], dtype=np.int64)
        sums.add(where, counts)
        np.add.at(total, where, counts)
    where, counts = sums.summed()
    np.testing.assert_array_equal(where, np.flatnonzero(total))
    np.testing.assert_array_equal(counts, total[np.flatnonzero(total)])


def test_cell_sums_sum_in_bulk_and_stay_within_twice_the_distinct_cells() -> None:
    sums = CellSums()
    for _ in range(200):  # the same 5,000 cells over and over
        sums.add(np.arange(5000, dtype=np.int64), np.ones(5000, dtype=np.int64))
        assert sums.nbytes() <= 16 * (2 * 5000 + 5000)  # 16 bytes a cell
    where, counts = sums.summed()
    assert len(where) == 5000
    assert (counts == 200).all()


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), k=st.integers(0, 15))
def test_selected_cells_are_the_selected_rows(seed: int, k: int) -> None:
    rng = np.random.default_rng(seed)
    dense = rng.integers(0, 3, size=(k, 4)) * (rng.random((k, 4)) < 0.4)
    keep = rng.random(k) < 0.5
    picked = cells_of(cells(dense), dense.shape).select(keep, 4)
    np.testing.assert_array_equal(picked.dense((int(keep.sum()), 4)), dense[keep])


def test_an_open_window_of_sparse_slices_holds_a_fraction_of_the_dense_bytes() -> None:
    # 10,000 slices with 2 events each in the window: a few of 232 sketch buckets per row.
    wide = (Field("n", "count"), Field("sketch", "count", 232))
    rows = np.arange(10_000, dtype=np.int64)
    rng = np.random.default_rng(7)
    where = np.sort(rows * 232 + rng.integers(0, 232, size=10_000))
    part = {"n": np.full(10_000, 2), "sketch": Cells(where, np.full(10_000, 2, dtype=np.int64))}
    dense, sparse = Table(wide, capacity=10_000), OpenTable(wide, capacity=10_000)
    dense.add(rows, {"n": part["n"], "sketch": part["sketch"].dense((10_000, 232))})
    sparse.add(rows, part)
    dense_bytes = sum(a.nbytes for a in dense.arrays.values())
    assert sparse.nbytes() < dense_bytes / 50
    assert_same_frozen(sparse.freeze(10_000), dense.freeze(10_000))


def test_cells_of_refuses_what_from_cells_refused() -> None:
    with pytest.raises(ValueError, match="ascend"):
        cells_of({"width": 2, "cells": [3, 1], "counts": [1, 1]}, (2, 2))
    with pytest.raises(ValueError, match="negative"):
        cells_of({"width": 2, "cells": [1], "counts": [-1]}, (2, 2))
    with pytest.raises(ValueError, match="width"):
        cells_of({"width": 3, "cells": [], "counts": []}, (2, 2))
