"""Item exposures: exact per-flush counts in stage 1, bounded per-window summaries in stage 2.

Prediction events may carry ``items``, the ranked item ids served. Stage 1 counts the
exposures of one flush exactly per (deployment, role, version, window) -- the ids are hashed
with :func:`~streamguard.stats.heavy_hitters.hash64` and counted with ``np.unique`` -- and
sends only the ``top_k`` largest counts, the flush's total exposures, its number of distinct
items and the non-zero HyperLogLog registers of its distinct items. Stage 2 merges those
into one :class:`ItemWindow` per arm and window: a :class:`SpaceSaving` summary of
``capacity`` counters, the exact total, and HyperLogLog registers (merged by maximum).

Memory per arm and window is ``capacity`` counters plus ``2^precision`` bytes, whatever the
catalogue size. Counts are exact while no flush has more than ``top_k`` distinct items of a
group and no window more than ``capacity``; beyond that they are SpaceSaving estimates (an
item's count is overestimated by at most the flush cut-offs and the sketch's ``min_count``),
and may then depend on how the partials were cut.
"""

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import numpy as np
import numpy.typing as npt

from streamguard.core.snapshot import Part
from streamguard.stats.heavy_hitters import DistinctCounter, SpaceSaving, hash64

__all__ = [
    "ITEMS_PREFIX",
    "ItemRecord",
    "ItemWindow",
    "count_items",
    "exposures_by_slice",
    "item_levels",
    "item_record",
    "item_stream",
]

#: Streams of item exposures are named ``items:<role>``.
ITEMS_PREFIX = "items:"


def item_stream(role: str) -> str:
    """Stream name of a role's item exposures, e.g. ``items:canary``."""
    return f"{ITEMS_PREFIX}{role}"


def item_levels(levels: Sequence[tuple[int, ...]], slice_level: int) -> tuple[int, ...]:
    """Positions of the slice levels whose exposures are counted per slice.

    Levels combining 1 to ``slice_level`` dimensions (the whole deployment is always
    counted); ``slice_level = 0`` counts the whole deployment only.
    """
    return tuple(i for i, level in enumerate(levels) if 1 <= len(level) <= slice_level)


def exposures_by_slice(
    ranked: Sequence[Sequence[str] | None],
    index: npt.NDArray[np.int64],
    labels: Sequence[str],
    positions: Sequence[int],
) -> Iterator[tuple[str, list[str]]]:
    """The items exposed to each slice: ``(label, ids)`` per slice of the given level positions.

    ``ranked[i]`` holds the items of event ``i``, ``index[i, p]`` its slice at level ``p``
    (rows of :class:`~streamguard.core.slices.SliceRows`). Slices without items are skipped.

    Examples
    --------
    >>> index = np.array([[0, 1], [0, 2], [0, 1]])
    >>> labels = ["*", "platform=ios", "platform=web"]
    >>> list(exposures_by_slice([["a", "b"], ["c"], None], index, labels, [1]))
    [('platform=ios', ['a', 'b']), ('platform=web', ['c'])]
    """
    for position in positions:
        column = index[:, position]
        order = np.argsort(column, kind="stable")
        codes, starts = np.unique(column[order], return_index=True)
        bounds = [*starts.tolist()[1:], len(order)]
        for code, lo, hi in zip(codes.tolist(), starts.tolist(), bounds, strict=True):
            ids = [item for i in order[lo:hi].tolist() if (items := ranked[i]) for item in items]
            if ids:
                yield labels[code], ids


def count_items(items: Sequence[str], top_k: int, precision: int) -> dict[str, Any]:
    """Exact counts of one flush, cut to the ``top_k`` largest (ties: smallest hash).

    Returns the partial's ``items`` record: ``ids``, ``counts`` (descending), ``total``,
    ``distinct`` and ``hll`` (``[register indices, values]`` of the non-zero registers).
    """
    if not items:
        return {"ids": [], "counts": [], "total": 0, "distinct": 0, "hll": [[], []]}
    hashes = hash64(items)
    unique, first, counts = np.unique(hashes, return_index=True, return_counts=True)
    order = np.lexsort((unique, -counts))[:top_k]
    hll = DistinctCounter(precision)
    hll.update_many([items[i] for i in first.tolist()])
    nonzero = np.flatnonzero(hll.registers)
    return {
        "ids": [items[i] for i in first[order].tolist()],
        "counts": counts[order].tolist(),
        "total": len(items),
        "distinct": int(unique.size),
        "hll": [nonzero.tolist(), hll.registers[nonzero].tolist()],
    }


class ItemRecord(NamedTuple):
    """A partial's ``items`` record, checked (:func:`item_record`): merging it cannot fail."""

    ids: list[str]
    counts: list[int]
    total: int
    hll_index: npt.NDArray[np.int64]
    hll_values: npt.NDArray[np.uint8]


def item_record(raw: dict[str, Any], precision: int) -> ItemRecord:
    """Check a partial's ``items`` record against HyperLogLog ``precision``.

    Stage 2 checks every group of a partial before it merges any, so that a malformed group
    leaves nothing of its partial merged (a redelivery then merges it whole, once).

    Raises
    ------
    ValueError
        When ids and counts differ in length, counts or the total are negative, or the
        HyperLogLog registers are of another precision or out of range.
    KeyError, TypeError
        When a key is missing or a value is not of its type.

    Examples
    --------
    >>> item_record({"ids": ["a"], "counts": [2], "total": 2, "hll": [[3], [1]]}, 4).total
    2
    >>> item_record({"ids": ["a"], "counts": [2], "total": 2, "hll": [[16], [1]]}, 4)
    Traceback (most recent call last):
    ...
    ValueError: items record: HyperLogLog registers of another precision
    """
    ids = [str(i) for i in raw["ids"]]
    counts = [int(c) for c in raw["counts"]]
    total = int(raw["total"])
    if len(ids) != len(counts) or any(c < 0 for c in counts) or total < 0:
        raise ValueError("items record: ids and counts differ in length or are negative")
    index, values = raw["hll"]
    try:
        idx = np.asarray(index, dtype=np.int64).reshape(-1)
        registers = np.asarray(values, dtype=np.int64).reshape(-1)
    except OverflowError:
        raise ValueError("items record: HyperLogLog registers beyond 64 bits") from None
    if len(idx) != len(registers):
        raise ValueError("items record: HyperLogLog indices and values differ in length")
    if len(idx) and (idx.min() < 0 or idx.max() >= 1 << precision):
        raise ValueError("items record: HyperLogLog registers of another precision")
    if len(registers) and (registers.min() < 0 or registers.max() > 64):
        raise ValueError("items record: HyperLogLog register values outside 0..64")
    return ItemRecord(ids, counts, total, idx, registers.astype(np.uint8))


@dataclass(slots=True)
class ItemWindow:
    """Item exposures of one arm in one window, merged from partials (bounded memory)."""

    capacity: int
    precision: int
    sketch: SpaceSaving = field(init=False)
    total: int = 0  # exact exposures
    registers: npt.NDArray[np.uint8] = field(init=False)
    # counts() of the current content: guards read a closed window at every close.
    _counts: tuple[list[str], npt.NDArray[np.float64]] | None = field(
        default=None, init=False, repr=False, compare=False
    )
    _part: Part | None = field(default=None, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        self.sketch = SpaceSaving(self.capacity)
        self.registers = np.zeros(1 << self.precision, dtype=np.uint8)

    def add(self, record: "dict[str, Any] | ItemRecord") -> None:
        """Merge one partial's ``items`` record (raw, or checked by :func:`item_record`)."""
        if not isinstance(record, ItemRecord):
            record = item_record(record, self.precision)
        self._counts = None
        self._part = None
        if record.ids:
            self.sketch.update_many(record.ids, record.counts)
        self.total += record.total
        if len(record.hll_index):
            np.maximum.at(self.registers, record.hll_index, record.hll_values)

    def counts(self) -> tuple[list[str], npt.NDArray[np.float64]]:
        """Tracked items and their (estimated) counts, largest first (do not modify them)."""
        if self._counts is None:
            counters = self.sketch.counters()
            self._counts = (
                [c[0] for c in counters],
                np.array([c[1] for c in counters], dtype=np.float64),
            )
        return self._counts

    def distinct(self) -> float:
        """HyperLogLog estimate of the distinct items exposed (never below those tracked)."""
        hll = DistinctCounter(self.precision)
        hll.registers = self.registers
        tracked = len(self.counts()[0]) if self.total else 0
        return max(hll.estimate(), float(tracked))

    def to_dict(self) -> dict[str, Any]:
        """Snapshot data (JSON values and one numpy array)."""
        return {"sketch": self.sketch.to_dict(), "total": self.total, "hll": self.registers}

    def part(self) -> Part:
        """:meth:`to_dict` encoded once for snapshots (a closed window no longer changes)."""
        if self._part is None:
            self._part = Part(self.to_dict())
        return self._part

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "ItemWindow":
        """Rebuild from :meth:`to_dict`."""
        sketch = SpaceSaving.from_dict(data["sketch"])
        registers = np.asarray(data["hll"], dtype=np.uint8)
        window = cls(sketch.capacity, int(registers.size).bit_length() - 1)
        window.sketch = sketch
        window.total = int(data["total"])
        window.registers = registers.copy()
        return window
