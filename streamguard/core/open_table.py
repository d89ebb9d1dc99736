"""Stage 2's open windows: merged partials, with histograms and sketches kept as cells.

A window stays open at stage 2 until every source partition has passed it. While stage 1
reads a backlog its partitions drift apart by minutes of event time, so a deployment holds
many open windows at once, each for every slice seen. Dense, a slice's row of one open window
is its 100 + 100 score bins and 232 sketch buckets (3.5 KB for the pair stream), though a slice
with a few events touches a few of them: in a 10,000-slice burst the dense open windows were
647 of the 946 MB traced in a worker. :class:`OpenTable` keeps those wide count fields as their
non-zero cells, summed by :class:`CellSums`, and the narrow fields (counts, moments) dense in a
:class:`~streamguard.core.summary.Table`; closing freezes it into the same compact
:class:`~streamguard.core.summary.FrozenTable` as before, bit for bit.

Examples
--------
>>> import numpy as np
>>> fields = (Field("n", "count"), Field("hist", "count", 4))
>>> t = OpenTable(fields)
>>> t.add(np.array([2]), {"n": np.array([1]), "hist": np.array([[0, 1, 0, 0]])})
>>> t.add(np.array([0, 2]), {"n": np.array([1, 2]), "hist": np.array([[1, 0, 0, 0], [0, 1, 0, 1]])})
>>> t.view(3)["hist"].tolist()
[[1, 0, 0, 0], [0, 0, 0, 0], [0, 2, 0, 1]]
>>> t.freeze(3).view(3)["n"].tolist()
[1, 0, 3]
"""

from typing import Any

import numpy as np
import numpy.typing as npt

from streamguard.core.partials import Cells
from streamguard.core.summary import Array, Field, FrozenTable, Table, zeros

__all__ = ["CellSums", "OpenTable"]

#: Cells appended before the first summing: small windows never sort.
_FIRST_SUM = 4096


def _wide(field: Field) -> bool:
    return field.kind == "count" and field.width > 0


class CellSums:
    """Counts by flat index, appended as they come and summed in bulk.

    Appended cells are sorted and summed with the summed ones once they outnumber them, so
    each cell is sorted O(log n) times over the window's life and memory stays within about
    twice the distinct cells.

    Examples
    --------
    >>> import numpy as np
    >>> sums = CellSums()
    >>> sums.add(np.array([7, 2]), np.array([1, 1]))
    >>> sums.add(np.array([2]), np.array([3]))
    >>> [a.tolist() for a in sums.summed()]
    [[2, 7], [4, 1]]
    """

    __slots__ = ("_counts", "_pending", "_pending_counts", "_pending_where", "_where")

    def __init__(self) -> None:
        self._where = np.zeros(0, dtype=np.int64)
        self._counts = np.zeros(0, dtype=np.int64)
        self._pending_where: list[npt.NDArray[np.int64]] = []
        self._pending_counts: list[npt.NDArray[np.int64]] = []
        self._pending = 0

    def add(self, where: npt.NDArray[np.int64], counts: npt.NDArray[np.int64]) -> None:
        """Add ``counts`` at the flat indices ``where`` (any order, repeats allowed)."""
        if len(where) == 0:
            return
        self._pending_where.append(where)
        self._pending_counts.append(counts)
        self._pending += len(where)
        if self._pending > max(len(self._where), _FIRST_SUM):
            self._sum()

    def summed(self) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]:
        """Distinct flat indices (ascending) and their total counts, zeros left out."""
        if self._pending:
            self._sum()
        return self._where, self._counts

    def nbytes(self) -> int:
        """Bytes of the arrays held, summed and appended."""
        pending = sum(a.nbytes for a in (*self._pending_where, *self._pending_counts))
        return self._where.nbytes + self._counts.nbytes + pending

    def _sum(self) -> None:
        where = np.concatenate([self._where, *self._pending_where])
        counts = np.concatenate([self._counts, *self._pending_counts])
        self._pending_where, self._pending_counts, self._pending = [], [], 0
        span = int(where.max()) + 1
        if span <= 4 * len(where):
            # Dense enough to scatter into the span: quicker than sorting, and the array is
            # at most twice the bytes of the cells (16 bytes each) for a moment.
            total = np.zeros(span, dtype=np.int64)
            np.add.at(total, where, counts)
            self._where = np.flatnonzero(total)
            self._counts = total[self._where]
            return
        order = np.argsort(where, kind="stable")
        where, counts = where[order], counts[order]
        starts = np.flatnonzero(np.concatenate(([True], where[1:] != where[:-1])))
        totals = np.add.reduceat(counts, starts)
        nonzero = totals != 0  # a contribution of zeros adds no cell
        self._where, self._counts = where[starts][nonzero], totals[nonzero]


class OpenTable:
    """An open window's merged rows: narrow fields dense, histograms and sketches as cells.

    Takes the same ``add`` as :class:`~streamguard.core.summary.Table`; a wide count field may
    be given as :class:`~streamguard.core.partials.Cells` (as read from a partial) instead of
    a dense array.
    """

    __slots__ = ("_cells", "_narrow", "fields")

    def __init__(self, fields: tuple[Field, ...], capacity: int = 16) -> None:
        self.fields = fields
        self._narrow = Table(tuple(f for f in fields if not _wide(f)), capacity)
        self._cells = {f.name: (f.width, CellSums()) for f in fields if _wide(f)}

    def add(self, rows: npt.NDArray[np.int64], contribution: dict[str, Any]) -> None:
        """Merge per-row contributions into ``rows`` (distinct row numbers)."""
        if len(rows) == 0:
            return
        self._narrow.add(rows, contribution)
        for name, (width, sums) in self._cells.items():
            value = contribution[name]
            if isinstance(value, Cells):
                where, counts = value
            else:
                flat = np.asarray(value, dtype=np.int64).reshape(-1)
                where = np.flatnonzero(flat)
                counts = flat[where]
            row, column = np.divmod(where, width)
            sums.add(rows[row] * width + column, counts)

    def nbytes(self) -> int:
        """Bytes of the arrays held."""
        narrow = sum(a.nbytes for a in self._narrow.arrays.values())
        return narrow + sum(sums.nbytes() for _, sums in self._cells.values())

    def freeze(self, rows: int) -> FrozenTable:
        """The closed window: what :meth:`Table.freeze` gives for the same adds."""
        narrow = self._narrow.view(rows)
        cells = {}
        for name, (width, sums) in self._cells.items():
            where, counts = sums.summed()
            if len(where) and where[-1] >= rows * width:  # fewer rows than were written
                keep = where < rows * width
                where, counts = where[keep], counts[keep]
            cells[name] = (where, counts)
        return FrozenTable.assemble(self.fields, rows, narrow, cells)

    def view(self, rows: int) -> dict[str, Array]:
        """Dense arrays of the first ``rows`` rows (for compaction and older snapshots)."""
        return self.freeze(rows).view(rows)

    def to_dict(self, rows: int) -> dict[str, Any]:
        """Snapshot form: that of a :class:`~streamguard.core.summary.FrozenTable`."""
        return self.freeze(rows).to_dict()

    @classmethod
    def of(cls, fields: tuple[Field, ...], table: FrozenTable | dict[str, Array]) -> "OpenTable":
        """An open table holding exactly ``table`` (a saved window, or dense arrays)."""
        if isinstance(table, FrozenTable):
            rows = table.rows
            out = cls(fields, capacity=max(16, rows))
            dense = zeros(out._narrow.fields, rows)
            table.add_into(dense, only=frozenset(dense))
            out._narrow.add(np.arange(rows, dtype=np.int64), dense)
            for name, (_, sums) in out._cells.items():
                where, counts = table.cells[name]
                sums.add(where, counts.astype(np.int64, copy=False))
            return out
        rows = len(next(iter(table.values()))) if table else 0
        out = cls(fields, capacity=max(16, rows))
        out.add(np.arange(rows, dtype=np.int64), table)
        return out
