"""Per-slice summary tables: the mergeable state behind every guard.

A :class:`Table` holds, for one (deployment, stream, version, window), one row per slice and one
numpy array per field. Fields are either counts (merged by addition) or moments
``(n, mean, m2)`` (merged with Chan's parallel update). Rows are positions in a
:class:`Registry` shared by all windows of the same stream, so merging a horizon of windows is
an array sum, and a slice's complement (a slice minus its children) is a subtraction.

Examples
--------
>>> import numpy as np
>>> fields = (Field("pairs", "count"), Field("dev", "moments"))
>>> reg = Registry()
>>> t = Table(fields)
>>> rows = reg.rows_for(["*", "platform=ios"])
>>> t.add(rows, {"pairs": np.array([3, 1]), "dev": np.array([[3, 0.2, 0.02], [1, 0.1, 0.0]])})
>>> t.view(len(reg))["pairs"].tolist()
[3, 1]
"""

from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

from streamguard.core.snapshot import Part
from streamguard.stats import merge_moments, merge_moments_by_group, subtract_moments

__all__ = [
    "Field",
    "FrozenTable",
    "Registry",
    "Table",
    "add_fields",
    "remainders",
    "rollup",
    "subtract_fields",
    "sum_frozen",
    "sum_rows",
    "zeros",
]

Array = npt.NDArray[np.float64] | npt.NDArray[np.int64]


@dataclass(frozen=True, slots=True)
class Field:
    """One summary field. ``width`` is the trailing size of count fields (0: one number)."""

    name: str
    kind: Literal["count", "moments"]
    width: int = 0

    def shape(self, rows: int) -> tuple[int, ...]:
        """Array shape for ``rows`` slices."""
        if self.kind == "moments":
            return (rows, 3)
        return (rows, self.width) if self.width else (rows,)

    def dtype(self) -> type[np.generic]:
        """Counts are exact integers; moments are floats."""
        return np.float64 if self.kind == "moments" else np.int64


def zeros(fields: tuple[Field, ...], rows: int) -> dict[str, Array]:
    """Empty arrays of every field for ``rows`` slices."""
    return {f.name: np.zeros(f.shape(rows), f.dtype()) for f in fields}


def add_fields(fields: tuple[Field, ...], a: dict[str, Array], b: dict[str, Array]) -> None:
    """``a += b`` field by field (same rows), in place."""
    for f in fields:
        if f.kind == "moments":
            a[f.name][...] = merge_moments(a[f.name], b[f.name])
        else:
            a[f.name] += b[f.name]


def subtract_fields(
    fields: tuple[Field, ...], a: dict[str, Array], b: dict[str, Array]
) -> dict[str, Array]:
    """``a - b`` field by field, as new arrays (counts clipped at zero)."""
    out: dict[str, Array] = {}
    for f in fields:
        if f.kind == "moments":
            out[f.name] = subtract_moments(a[f.name], b[f.name])
        else:
            out[f.name] = np.maximum(a[f.name] - b[f.name], 0)
    return out


def rollup(
    fields: tuple[Field, ...],
    by_part: dict[str, Array],
    table: npt.NDArray[np.int64],
    n_rows: int,
) -> dict[str, Array]:
    """Per-row sums from per-part sums, part ``p`` counting once in each row of ``table[p]``
    (every row in ``[0, n_rows)`` must be in ``table``).

    Counts are added exactly; moments are merged with
    :func:`~streamguard.stats.merge_moments_by_group`.

    Examples
    --------
    >>> import numpy as np
    >>> fields = (Field("n", "count"), Field("x", "moments"))
    >>> by_part = {"n": np.array([2, 1]), "x": np.array([[2, 1.0, 0.5], [1, 4.0, 0.0]])}
    >>> out = rollup(fields, by_part, np.array([[0, 1], [0, 2]]), 3)
    >>> out["n"].tolist(), out["x"][0].tolist()
    ([3, 2, 1], [3.0, 2.0, 6.5])
    """
    rows = table.ravel()
    source = np.repeat(np.arange(len(table)), table.shape[1])
    # Counts: (part, level) cells sorted by row and summed run by run (``reduceat`` is far
    # quicker than ``add.at``); every row in [0, n_rows) holds at least one cell.
    order = np.argsort(rows, kind="stable")
    starts = np.searchsorted(rows[order], np.arange(n_rows))
    by_row = source[order]
    out: dict[str, Array] = {}
    for f in fields:
        if f.kind == "moments":
            out[f.name] = merge_moments_by_group(by_part[f.name][source], rows, n_rows)
        else:
            out[f.name] = np.add.reduceat(by_part[f.name][by_row], starts, axis=0)
    return out


def sum_rows(
    fields: tuple[Field, ...], arrays: dict[str, Array], rows: list[int]
) -> dict[str, Array]:
    """Total of some rows (counts added, moments merged), as one-row arrays."""
    out: dict[str, Array] = {}
    for f in fields:
        picked = arrays[f.name][rows]
        if f.kind == "moments":
            total = np.zeros(3)
            for row in picked:
                total = merge_moments(total, row)
            out[f.name] = total[None, :]
        else:
            out[f.name] = picked.sum(axis=0)[None, ...]
    return out


def remainders(
    fields: tuple[Field, ...], arrays: dict[str, Array], queries: list[tuple[int, list[int]]]
) -> dict[str, Array]:
    """Row ``parent`` minus the total of rows ``parts``, for many ``(parent, parts)`` at once.

    One row per query: ``subtract_fields(parent row, sum_rows(parts))`` for all of them in a
    few array operations, as the complements of a slice lattice are asked for in bulk (counts
    clipped at zero; moments merged with :func:`~streamguard.stats.merge_moments_by_group`,
    then subtracted).

    Examples
    --------
    >>> import numpy as np
    >>> fields = (Field("pairs", "count"), Field("dev", "moments"))
    >>> # rows: the values {1, 2, 3, 4}, then {1}, then {3, 4}
    >>> arrays = {"pairs": np.array([4, 1, 2]),
    ...           "dev": np.array([[4, 2.5, 5.0], [1, 1.0, 0.0], [2, 3.5, 0.5]])}
    >>> out = remainders(fields, arrays, [(0, [1]), (0, [1, 2])])
    >>> out["pairs"].tolist(), np.round(out["dev"], 9).tolist()  # {2, 3, 4}, then {2}
    ([3, 1], [[3.0, 3.0, 2.0], [1.0, 2.0, 0.0]])
    """
    k = len(queries)
    parents = np.fromiter((p for p, _ in queries), np.int64, k)
    parts = np.fromiter((r for _, rows in queries for r in rows), np.int64)
    groups = np.repeat(np.arange(k), [len(rows) for _, rows in queries])
    totals: dict[str, Array] = {}
    for f in fields:
        values = arrays[f.name]
        if f.kind == "moments":
            totals[f.name] = merge_moments_by_group(values[parts], groups, k)
        else:
            totals[f.name] = np.zeros((k, *values.shape[1:]), values.dtype)
            np.add.at(totals[f.name], groups, values[parts])
    return subtract_fields(fields, {f.name: arrays[f.name][parents] for f in fields}, totals)


class Registry:
    """Slice labels and their row numbers; rows are never reused or reordered."""

    __slots__ = ("index", "labels")

    def __init__(self) -> None:
        self.labels: list[str] = []
        self.index: dict[str, int] = {}

    def __len__(self) -> int:
        return len(self.labels)

    def rows_for(self, labels: list[str], limit: int | None = None) -> npt.NDArray[np.int64]:
        """Row of each label, adding unknown labels (up to ``limit`` rows; -1 beyond)."""
        if not self.labels and (limit is None or len(labels) <= limit):
            # A fresh registry (every group of a flush starts with one): distinct labels, as
            # slice rows are, take rows 0, 1, ... in order, with no per-label Python loop.
            index = dict(zip(labels, range(len(labels)), strict=True))
            if len(index) == len(labels):
                self.labels, self.index = list(labels), index
                return np.arange(len(labels), dtype=np.int64)
        found = list(map(self.index.get, labels))
        if None not in found:
            return np.array(found, dtype=np.int64)
        out = np.empty(len(labels), dtype=np.int64)
        for i, label in enumerate(labels):
            row = self.index.get(label)
            if row is None:
                if limit is not None and len(self.labels) >= limit:
                    out[i] = -1
                    continue
                row = self.index[label] = len(self.labels)
                self.labels.append(label)
            out[i] = row
        return out


class Table:
    """Arrays of every field for the rows of a registry; grows as the registry grows."""

    __slots__ = ("arrays", "fields", "rows", "used")

    def __init__(self, fields: tuple[Field, ...], capacity: int = 16) -> None:
        self.fields = fields
        self.rows = capacity
        self.arrays = zeros(fields, capacity)
        self.used = 0  # rows from here on were never written: still zeros

    def ensure(self, rows: int) -> None:
        """Make room for at least ``rows`` rows (doubling, so growth is amortised)."""
        if rows <= self.rows:
            return
        size = max(rows, 2 * self.rows)
        grown = zeros(self.fields, size)
        for name, array in self.arrays.items():
            grown[name][: self.rows] = array
        self.arrays, self.rows = grown, size

    def add(self, rows: npt.NDArray[np.int64], contribution: dict[str, Array]) -> None:
        """Merge per-row contributions into ``rows`` (distinct row numbers)."""
        if len(rows) == 0:
            return
        top = int(rows.max()) + 1
        self.ensure(top)
        if int(rows.min()) >= self.used:
            # Merging into zeros gives the contribution bit for bit (merge_moments passes an
            # empty side through): most adds are a fresh group's first, so skip the arithmetic.
            for f in self.fields:
                self.arrays[f.name][rows] = contribution[f.name]
        else:
            for f in self.fields:
                target = self.arrays[f.name]
                if f.kind == "moments":
                    target[rows] = merge_moments(target[rows], contribution[f.name])
                else:
                    target[rows] += contribution[f.name]
        self.used = max(self.used, top)

    def view(self, rows: int) -> dict[str, Array]:
        """The first ``rows`` rows of every field (a copy padded with zeros if short)."""
        if rows <= self.rows:
            return {name: array[:rows] for name, array in self.arrays.items()}
        out = zeros(self.fields, rows)
        for name, array in self.arrays.items():
            out[name][: self.rows] = array
        return out

    def freeze(self, rows: int) -> "FrozenTable":
        """A compact, read-only copy of the first ``rows`` rows (see :class:`FrozenTable`)."""
        return FrozenTable(self.fields, self.view(rows), rows)


class FrozenTable:
    """A closed window's table, stored compactly: what stage 2 keeps for a whole horizon.

    Count fields keep only their non-zero cells (flat index and value): a window's histogram
    and sketch rows are mostly zeros (a slice with a few events touches a few of its 100 bins
    and 232 sketch buckets), and dense storage of 30 windows was most of a worker's memory at
    1,000 slices. Moments stay dense (three numbers per row).

    Examples
    --------
    >>> import numpy as np
    >>> fields = (Field("n", "count"), Field("hist", "count", 4))
    >>> t = Table(fields)
    >>> hist = np.array([[1, 0, 0, 0], [0, 0, 2, 0]])
    >>> t.add(np.array([0, 2]), {"n": np.array([1, 2]), "hist": hist})
    >>> frozen = t.freeze(3)
    >>> frozen.view(4)["hist"].tolist()
    [[1, 0, 0, 0], [0, 0, 0, 0], [0, 0, 2, 0], [0, 0, 0, 0]]
    >>> total = zeros(fields, 3)
    >>> frozen.add_into(total)
    >>> frozen.add_into(total)
    >>> total["n"].tolist()
    [2, 0, 4]
    """

    __slots__ = ("_encoded", "cells", "dense", "fields", "rows")

    def __init__(self, fields: tuple[Field, ...], arrays: dict[str, Array], rows: int) -> None:
        self.fields = fields
        self.rows = rows
        self._encoded: Part | None = None
        self.dense: dict[str, Array] = {}
        self.cells: dict[str, tuple[npt.NDArray[np.int64], Array]] = {}
        for f in fields:
            array = arrays[f.name][:rows]
            if f.kind == "moments":
                self.dense[f.name] = array.copy()
            else:
                flat = array.reshape(-1)
                where = np.flatnonzero(flat)
                self.cells[f.name] = (where, flat[where])

    @classmethod
    def assemble(
        cls,
        fields: tuple[Field, ...],
        rows: int,
        arrays: dict[str, Array],
        cells: dict[str, tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]],
    ) -> "FrozenTable":
        """The table of ``rows`` rows whose count fields in ``cells`` already are non-zero cells
        (flat indices ascending, within ``rows``) and whose other fields are dense ``arrays``."""
        table = cls(tuple(f for f in fields if f.name not in cells), arrays, rows)
        table.fields = fields
        given = {**table.cells, **cells}
        table.cells = {f.name: given[f.name] for f in fields if f.name in given}  # field order
        return table

    def to_dict(self) -> dict[str, Any]:
        """Snapshot form, as compact as the table (numpy arrays, for orjson's numpy option)."""
        return {
            "rows": self.rows,
            "cells": {name: [where, values] for name, (where, values) in self.cells.items()},
            "dense": dict(self.dense),
        }

    def encoded(self) -> Part:
        """:meth:`to_dict` encoded for a snapshot, once: a frozen table does not change."""
        if self._encoded is None:
            self._encoded = Part(self.to_dict())
        return self._encoded

    @classmethod
    def from_dict(cls, fields: tuple[Field, ...], data: dict[str, Any]) -> "FrozenTable":
        """The table :meth:`to_dict` saved (arrays may come back as JSON lists).

        Raises
        ------
        ValueError
            When a field is missing or its cells do not fit ``rows``.
        """
        rows = int(data["rows"])
        table = cls(fields, zeros(fields, 0), 0)
        table.rows = rows
        for f in fields:
            if f.kind == "moments":
                dense = np.asarray(data["dense"][f.name], dtype=np.float64).reshape(f.shape(rows))
                table.dense[f.name] = dense
            else:
                where, values = data["cells"][f.name]
                where = np.asarray(where, dtype=np.int64)
                size = rows * max(f.width, 1)
                if len(where) and not (where.min() >= 0 and where.max() < size):
                    raise ValueError(f"{f.name}: cells beyond {rows} rows")
                table.cells[f.name] = (where, np.asarray(values, dtype=np.int64))
        return table

    def view(self, rows: int) -> dict[str, Array]:
        """Dense arrays of the first ``rows`` rows (zeros beyond the rows it was frozen with)."""
        out = zeros(self.fields, rows)
        self.add_into(out)
        return out

    def add_into(self, total: dict[str, Array], only: frozenset[str] | None = None) -> None:
        """``total += self`` field by field, in place; ``total`` may have more rows.

        With ``only``, just those fields (``total`` need not hold the others).
        """
        for f in self.fields:
            if only is not None and f.name not in only:
                continue
            target = total[f.name]
            if f.kind == "moments":
                rows = min(self.rows, len(target))
                target[:rows] = merge_moments(target[:rows], self.dense[f.name][:rows])
            else:
                if not target.flags.c_contiguous:  # reshape would copy and drop the sum
                    raise ValueError(f"{f.name}: add_into needs contiguous arrays")
                where, values = self.cells[f.name]
                flat = target.reshape(-1)
                if len(where) and where[-1] >= flat.size:  # fewer rows than frozen with
                    keep = where < flat.size
                    where, values = where[keep], values[keep]
                flat[where] += values  # indices are distinct: no np.add.at needed


def sum_frozen(fields: tuple[Field, ...], rows: int, tables: list[FrozenTable]) -> dict[str, Array]:
    """Dense sum of closed windows over ``rows`` rows: a guard's horizon.

    Counts add cell by cell. Each moments field is merged once, in closed form over every
    window (:func:`~streamguard.stats.merge_moments_by_group`), instead of one
    :func:`~streamguard.stats.merge_moments` per window: a 30-window horizon took 30 of those
    per field, ~40 % of the shadow guard's time at a close of 20 deployments. A row with data in
    one window only keeps that window's moments bit for bit, as merging with nothing does.

    Examples
    --------
    >>> import numpy as np
    >>> fields = (Field("n", "count"), Field("score", "moments"))
    >>> parts = []
    >>> for n, moments in ((2, [2.0, 1.5, 0.5]), (1, [1.0, 3.0, 0.0])):  # {1, 2} and {3}
    ...     t = Table(fields)
    ...     t.add(np.array([0]), {"n": np.array([n]), "score": np.array([moments])})
    ...     parts.append(t.freeze(1))
    >>> total = sum_frozen(fields, 2, parts)  # a second row that no window has data for
    >>> total["n"].tolist(), total["score"].tolist()
    ([3, 0], [[3.0, 2.0, 2.0], [0.0, 0.0, 0.0]])
    """
    total = zeros(fields, rows)
    counts = frozenset(f.name for f in fields if f.kind == "count")
    for table in tables:
        table.add_into(total, only=counts)
    for f in fields:
        if f.kind == "count":
            continue
        parts = [table.dense[f.name][:rows] for table in tables]
        if len(parts) == 1:
            total[f.name][: len(parts[0])] = parts[0]
        elif parts:
            stacked = np.concatenate(parts)
            groups = np.concatenate([np.arange(len(p)) for p in parts])
            merged = merge_moments_by_group(stacked, groups, rows)
            # Rows with data in a single window: that window's moments exactly.
            filled = stacked[:, 0] > 0
            count = np.bincount(groups[filled], minlength=rows)
            source = np.zeros(rows, np.int64)
            source[groups[filled]] = np.flatnonzero(filled)
            single = count == 1
            merged[single] = stacked[source[single]]
            total[f.name][...] = merged
    return total
