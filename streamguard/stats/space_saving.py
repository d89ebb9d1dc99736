"""SpaceSaving heavy hitters (Metwally, Agrawal, El Abbadi, ICDT 2005): top-k in O(k) memory."""

from __future__ import annotations

import heapq
import operator
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

from streamguard.stats.hashing import (
    VERSION,
    aggregate,
    check_count,
    check_kind,
)

__all__ = ["SpaceSaving"]


class SpaceSaving:
    """SpaceSaving heavy hitters with ``capacity`` counters (Metwally et al., ICDT 2005).

    Each tracked item has a ``count`` and an ``error``. A new item, when all ``k`` counters
    are in use, replaces the item with the smallest count ``m`` (ties: the smallest item
    string) and starts at ``count = m + c``, ``error = m``. Guarantees, with ``N`` the
    :attr:`total`:

    - for a tracked item, ``count − error ≤ true count ≤ count``;
    - for an untracked item, ``true count ≤`` :meth:`min_count` ``≤ N / k``;
    - hence every item with a true count above ``N / k`` is tracked, and ``error ≤ N / k``.

    Memory is ``O(k)`` (a ``dict`` of ``k`` counters and a heap of ``k`` entries) whatever the
    catalogue size or the length of the stream.

    :meth:`update` is the weighted per-item rule above (``O(log k)`` amortised, through a
    lazy min-heap). :meth:`update_many` aggregates the batch exactly first and then merges
    that exact summary in with the rule of :meth:`merge`; the result may differ from
    feeding the events one by one (the batch is summarised as a whole), but the guarantees
    above hold with ``N`` the new total.

    Parameters
    ----------
    capacity : int
        Number of counters ``k``, at least 1.

    Attributes
    ----------
    capacity : int
        ``k``.
    total : int
        Exact total of all counts added (``N``).

    Raises
    ------
    ValueError
        If ``capacity < 1``.

    Examples
    --------
    >>> ss = SpaceSaving(2)
    >>> for item in ["a", "b", "a", "c"]:
    ...     ss.update(item)
    >>> ss.counters()
    [('a', 2, 0), ('c', 2, 1)]
    >>> ss.bounds("c"), ss.bounds("b"), ss.estimate("b")
    ((1, 2), (0, 2), 0)
    """

    def __init__(self, capacity: int) -> None:
        k = operator.index(capacity)
        if k < 1:
            raise ValueError(f"capacity must be at least 1, got {capacity}")
        self.capacity = k
        self.total = 0
        self._count: dict[str, int] = {}
        self._error: dict[str, int] = {}
        # One entry per tracked item; its stored count is a lower bound of the current count
        # (counts only grow), so the top entry is the minimum once it is refreshed.
        self._heap: list[tuple[int, str]] = []

    def _fresh_min(self) -> tuple[int, str]:
        heap = self._heap
        while True:
            stored, item = heap[0]
            current = self._count[item]
            if current == stored:
                return stored, item
            heapq.heapreplace(heap, (current, item))

    def _set(self, counters: Iterable[tuple[str, int, int]]) -> None:
        self._count = {}
        self._error = {}
        for item, count, error in counters:
            self._count[item] = count
            self._error[item] = error
        self._heap = [(c, item) for item, c in self._count.items()]
        heapq.heapify(self._heap)

    def _keep_largest(self, combined: dict[str, tuple[int, int]]) -> None:
        if len(combined) > self.capacity:
            # The k largest (count, item): among equal counts the smallest items go, exactly
            # as one-by-one updates evict the smallest (count, item).
            kept = heapq.nlargest(self.capacity, combined.items(), key=lambda kv: (kv[1][0], kv[0]))
        else:
            kept = list(combined.items())
        self._set((item, c, e) for item, (c, e) in kept)

    def update(self, item: str, count: int = 1) -> None:
        """Add ``count`` occurrences of ``item``.

        Parameters
        ----------
        item : str
            The item.
        count : int, default 1
            Non-negative weight.

        Raises
        ------
        ValueError
            If ``count < 0``.

        Examples
        --------
        >>> ss = SpaceSaving(1)
        >>> ss.update("a", 3)
        >>> ss.update("b")
        >>> ss.counters()
        [('b', 4, 3)]
        """
        c = check_count(count)
        if c == 0:
            return
        self.total += c
        if item in self._count:
            self._count[item] += c
            return
        if len(self._count) < self.capacity:
            self._count[item] = c
            self._error[item] = 0
            heapq.heappush(self._heap, (c, item))
            return
        floor, evicted = self._fresh_min()
        del self._count[evicted], self._error[evicted]
        self._count[item] = floor + c
        self._error[item] = floor
        heapq.heapreplace(self._heap, (floor + c, item))

    def update_many(self, items: Sequence[str], counts: Sequence[int] | None = None) -> None:
        """Add a batch of items (each once, or with the given non-negative ``counts``).

        The batch is first counted exactly (``collections.Counter``); tracked items add their
        batch count, other batch items are candidates at ``min_count() + batch count`` with
        that floor as their error, and the ``k`` largest counters are kept. Only the ``2k``
        largest batch counts can enter, so they are preselected with ``numpy.argpartition``
        (among batch items tied at that cut, the choice follows batch order rather than the
        item order; any choice keeps the guarantees): the Python-level work per batch is
        ``O(k log k)`` plus the C-speed counting. A batch of one item is exactly
        :meth:`update`.

        Parameters
        ----------
        items : sequence of str
            The batch.
        counts : sequence of int, optional
            Weight of each item (same length as ``items``); 1 each when omitted.

        Raises
        ------
        ValueError
            If lengths differ or a count is negative.

        Examples
        --------
        >>> ss = SpaceSaving(2)
        >>> ss.update_many(["a", "b", "c"], [5, 1, 2])
        >>> ss.counters()
        [('a', 5, 0), ('c', 2, 0)]
        """
        batch = aggregate(items, counts)
        if not batch:
            return
        self.total += sum(batch.values())
        floor = self.min_count()
        combined = {
            item: (c + batch.get(item, 0), self._error[item]) for item, c in self._count.items()
        }
        keys = list(batch)
        if len(keys) > 2 * self.capacity:
            values = np.fromiter(batch.values(), dtype=np.int64, count=len(keys))
            cut = len(keys) - 2 * self.capacity
            candidates = [keys[i] for i in np.argpartition(values, cut)[cut:]]
        else:
            candidates = keys
        for item in candidates:
            if item not in combined:
                combined[item] = (floor + batch[item], floor)
        self._keep_largest(combined)

    def min_count(self) -> int:
        """Upper bound on the true count of any untracked item.

        Returns
        -------
        int
            The smallest counter when all ``k`` counters are in use, else 0 (an item never
            seen while a counter was free has count 0).

        Examples
        --------
        >>> ss = SpaceSaving(2)
        >>> ss.update_many(["a", "a", "b"])
        >>> ss.min_count()
        1
        """
        if len(self._count) < self.capacity:
            return 0
        return self._fresh_min()[0]

    def estimate(self, item: str) -> int:
        """Counter of ``item``: an upper bound on its true count if tracked, else 0.

        For an untracked item the true count is only known to be at most :meth:`min_count`;
        :meth:`bounds` gives both bounds for any item.

        Parameters
        ----------
        item : str
            The item.

        Returns
        -------
        int
            ``count`` if tracked, else 0.

        Examples
        --------
        >>> ss = SpaceSaving(4)
        >>> ss.update("a", 2)
        >>> ss.estimate("a"), ss.estimate("z")
        (2, 0)
        """
        return self._count.get(item, 0)

    def bounds(self, item: str) -> tuple[int, int]:
        """Guaranteed ``(lower, upper)`` bounds on the true count of ``item``.

        Parameters
        ----------
        item : str
            The item.

        Returns
        -------
        tuple of int
            ``(count − error, count)`` if tracked, else ``(0, min_count())``.

        Examples
        --------
        >>> ss = SpaceSaving(1)
        >>> ss.update_many(["a", "a", "b"])
        >>> ss.bounds("a"), ss.bounds("b")
        ((2, 2), (0, 2))
        """
        if item in self._count:
            count = self._count[item]
            return count - self._error[item], count
        return 0, self.min_count()

    def counters(self) -> list[tuple[str, int, int]]:
        """All tracked ``(item, count, error)``, by count descending then item.

        Returns
        -------
        list of tuple
            At most ``capacity`` entries.

        Examples
        --------
        >>> ss = SpaceSaving(3)
        >>> ss.update_many(["b", "a", "b"])
        >>> ss.counters()
        [('b', 2, 0), ('a', 1, 0)]
        """
        return sorted(
            ((item, c, self._error[item]) for item, c in self._count.items()),
            key=lambda t: (-t[1], t[0]),
        )

    def top(self, n: int) -> list[tuple[str, int]]:
        """The ``n`` largest ``(item, count)`` (fewer if fewer are tracked).

        Parameters
        ----------
        n : int
            Number of items, non-negative.

        Returns
        -------
        list of tuple
            By count descending then item.

        Examples
        --------
        >>> ss = SpaceSaving(3)
        >>> ss.update_many(["b", "a", "b", "c"])
        >>> ss.top(2)
        [('b', 2), ('a', 1)]
        """
        k = operator.index(n)
        if k < 0:
            raise ValueError(f"n must be non-negative, got {n}")
        best = heapq.nsmallest(k, self._count.items(), key=lambda kv: (-kv[1], kv[0]))
        return [(item, c) for item, c in best]

    def merge(self, other: SpaceSaving) -> SpaceSaving:
        """A new sketch summarising both streams (same capacity).

        Mergeable-summaries rule for SpaceSaving (Agarwal, Cormode, Huang, Phillips, Wei,
        Yi, "Mergeable Summaries", PODS 2012, give it for Misra–Gries, which is isomorphic
        to SpaceSaving; the SpaceSaving form is the one of Cafaro, Pulimeno, Tempesta,
        Information Sciences 2016): an item's merged count (error) is the sum of its count
        (error) on each side, taking that side's :meth:`min_count` as both count and error
        where it is untracked; the ``k`` largest are kept (ties: the smallest items go). The
        bounds ``count − error ≤ true ≤ count``, untracked ``true ≤ min_count()``, and
        ``error, min_count() ≤ (N₁ + N₂) / k`` all still hold. The result does not depend on
        the order of the two operands.

        Parameters
        ----------
        other : SpaceSaving
            A sketch with the same capacity.

        Returns
        -------
        SpaceSaving
            The merged sketch; both inputs are unchanged.

        Raises
        ------
        ValueError
            If the capacities differ.

        Examples
        --------
        >>> a, b = SpaceSaving(2), SpaceSaving(2)
        >>> a.update_many(["x", "x", "y"])
        >>> b.update_many(["x", "z", "z", "z"])
        >>> a.merge(b).counters()  # y: 1 + b's floor 1 = 2 drops out; z: a's floor 1 + 3
        [('z', 4, 1), ('x', 3, 0)]
        """
        if not isinstance(other, SpaceSaving):
            raise TypeError(f"can only merge SpaceSaving, got {type(other).__name__}")
        if other.capacity != self.capacity:
            raise ValueError(f"capacities differ: {self.capacity} vs {other.capacity}")
        f1, f2 = self.min_count(), other.min_count()
        combined: dict[str, tuple[int, int]] = {}
        for item in self._count.keys() | other._count.keys():
            combined[item] = (
                self._count.get(item, f1) + other._count.get(item, f2),
                self._error.get(item, f1) + other._error.get(item, f2),
            )
        merged = SpaceSaving(self.capacity)
        merged.total = self.total + other.total
        merged._keep_largest(combined)
        return merged

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able state: ``{"kind", "version", "capacity", "total", "counters"}``.

        ``counters`` is a list of ``[item, count, error]`` as in :meth:`counters`, so the size
        is ``O(k)`` whatever the stream.

        Returns
        -------
        dict
            The state.

        Examples
        --------
        >>> ss = SpaceSaving(2)
        >>> ss.update("a")
        >>> ss.to_dict()
        {'kind': 'space_saving', 'version': 1, 'capacity': 2, 'total': 1, 'counters': [['a', 1, 0]]}
        """
        return {
            "kind": "space_saving",
            "version": VERSION,
            "capacity": self.capacity,
            "total": self.total,
            "counters": [[item, c, e] for item, c, e in self.counters()],
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> SpaceSaving:
        """Rebuild a sketch from :meth:`to_dict` output (possibly after a JSON round trip).

        Parameters
        ----------
        d : dict
            The state.

        Returns
        -------
        SpaceSaving
            An equivalent sketch.

        Raises
        ------
        ValueError
            If the kind or version is wrong or the counters are inconsistent.

        Examples
        --------
        >>> ss = SpaceSaving(2)
        >>> ss.update_many(["a", "b", "a"])
        >>> SpaceSaving.from_dict(ss.to_dict()).counters() == ss.counters()
        True
        """
        check_kind(d, "space_saving")
        sketch = cls(int(d["capacity"]))
        counters = [(str(item), int(c), int(e)) for item, c, e in d["counters"]]
        if len(counters) > sketch.capacity or len({t[0] for t in counters}) != len(counters):
            raise ValueError("counters exceed the capacity or repeat an item")
        if any(not 0 <= e <= c for _, c, e in counters):
            raise ValueError("every counter needs 0 <= error <= count")
        sketch.total = int(d["total"])
        sketch._set(counters)
        return sketch

    def __repr__(self) -> str:
        return (
            f"SpaceSaving(capacity={self.capacity}, tracked={len(self._count)}, total={self.total})"
        )
