"""Count-Min sketch (Cormode and Muthukrishnan, J. Algorithms 2005): point estimates in O(w d)."""

from __future__ import annotations

import operator
from collections.abc import Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

from streamguard.stats.hashing import (
    GOLDEN,
    HASH_NAME,
    MASK64,
    U64,
    VERSION,
    aggregate,
    check_kind,
    fmix64,
    hash64,
)

__all__ = ["CountMin"]


class CountMin:
    """Count-Min sketch: ``depth`` rows of ``width`` counters (Cormode & Muthukrishnan 2005).

    Item ``x`` adds its count to one counter per row, ``table[j, h_j(x)]``, and its estimate
    is the minimum of those counters (standard update, not conservative update, so that
    merging by addition stays exact). It never underestimates, and with ``N`` the
    :attr:`total`, ``estimate − true ≤ ε·N`` with probability at least ``1 − δ`` for each
    item, where ``ε = e / width`` and ``δ = e^(−depth)``: size ``width = ⌈e/ε⌉``,
    ``depth = ⌈ln(1/δ)⌉``. Memory ``8 · width · depth`` bytes whatever the catalogue.

    Row hashes: with ``h = hash64(x)`` (see :func:`hash64`), row ``j`` uses
    multiply-add-shift hashing (Dietzfelbinger, STACS 1996) to 32 bits,
    ``g_j = ((a_j · h + b_j) mod 2^64) >> 32``, then Lemire's multiply-shift range reduction
    ``(g_j · width) >> 32`` to ``[0, width)``. ``a_j`` (odd) and ``b_j`` are
    ``fmix64(seed + i · 0x9e3779b97f4a7c15 mod 2^64)`` for ``i = 2j + 1, 2j + 2``. Everything
    is fixed by ``(width, depth, seed)``, so sketches from different processes merge; the
    tests check the error bound empirically on skewed streams.

    Parameters
    ----------
    width : int
        Counters per row, in ``[1, 2^32]``.
    depth : int
        Number of rows, at least 1.
    seed : int, default 0
        Selects the row hash functions; in ``[0, 2^64)``.

    Attributes
    ----------
    width, depth, seed : int
        The parameters.
    total : int
        Exact total of all counts added.
    table : numpy.ndarray
        ``int64`` counters, shape ``(depth, width)``.

    Raises
    ------
    ValueError
        If ``width`` or ``depth`` is out of range or ``seed`` is out of range.

    Examples
    --------
    >>> cm = CountMin(width=100, depth=4)
    >>> cm.update_many(["a", "b", "a"], [3, 1, 2])
    >>> cm.estimate("a"), cm.total
    (5, 6)
    """

    def __init__(self, width: int, depth: int, seed: int = 0) -> None:
        w, d, s = operator.index(width), operator.index(depth), operator.index(seed)
        if not (1 <= w <= 1 << 32 and d >= 1):
            raise ValueError(f"need 1 <= width <= 2**32 and depth >= 1, got {width}, {depth}")
        if not 0 <= s <= MASK64:
            raise ValueError(f"seed must be in [0, 2**64), got {seed}")
        self.width = w
        self.depth = d
        self.seed = s
        self.total = 0
        self.table: npt.NDArray[np.int64] = np.zeros((d, w), dtype=np.int64)
        steps = np.array([(s + (i + 1) * GOLDEN) & MASK64 for i in range(2 * d)], dtype=np.uint64)
        mixed = fmix64(steps)
        self._mul = (mixed[0::2] | np.uint64(1)).reshape(d, 1)  # odd multipliers a_j
        self._add = mixed[1::2].reshape(d, 1)  # offsets b_j

    def _columns(self, hashes: U64) -> npt.NDArray[np.intp]:
        """Counter index of each hash in each row, shape ``(depth, n)``."""
        row_hash = (hashes[None, :] * self._mul + self._add) >> np.uint64(32)
        return ((row_hash * np.uint64(self.width)) >> np.uint64(32)).astype(np.intp)

    def update(self, item: str, count: int = 1) -> None:
        """Add ``count`` occurrences of ``item``.

        Parameters
        ----------
        item : str
            The item.
        count : int, default 1
            Non-negative weight.

        Examples
        --------
        >>> cm = CountMin(16, 2)
        >>> cm.update("a", 4)
        >>> cm.estimate("a")
        4
        """
        self.update_many([item], [count])

    def update_many(self, items: Sequence[str], counts: Sequence[int] | None = None) -> None:
        """Add a batch: aggregated exactly, hashed once per distinct item, added with numpy.

        Parameters
        ----------
        items : sequence of str
            The batch.
        counts : sequence of int, optional
            Non-negative weight of each item; 1 each when omitted.

        Raises
        ------
        ValueError
            If lengths differ or a count is negative.

        Examples
        --------
        >>> cm = CountMin(16, 2)
        >>> cm.update_many(["a", "a", "b"])
        >>> cm.total, int(cm.table.sum())
        (3, 6)
        """
        batch = aggregate(items, counts)
        if not batch:
            return
        keys = list(batch)
        weights = np.fromiter(batch.values(), dtype=np.int64, count=len(keys))
        cols = self._columns(hash64(keys))
        flat = cols + (np.arange(self.depth, dtype=np.intp) * self.width)[:, None]
        np.add.at(self.table.reshape(-1), flat.ravel(), np.tile(weights, self.depth))
        self.total += int(weights.sum())

    def estimate_many(self, items: Sequence[str]) -> npt.NDArray[np.int64]:
        """Estimates of many items at once (vectorised :meth:`estimate`).

        Parameters
        ----------
        items : sequence of str
            Items.

        Returns
        -------
        numpy.ndarray
            ``int64`` estimates, each ``>=`` the true count.

        Examples
        --------
        >>> cm = CountMin(64, 3)
        >>> cm.update_many(["a", "a", "b"])
        >>> cm.estimate_many(["a", "b"]).tolist()
        [2, 1]
        """
        if len(items) == 0:
            return np.zeros(0, dtype=np.int64)
        cols = self._columns(hash64(items))
        rows = np.arange(self.depth, dtype=np.intp)[:, None]
        return np.asarray(self.table[rows, cols].min(axis=0), dtype=np.int64)

    def estimate(self, item: str) -> int:
        """Estimated count of ``item``: never below the true count.

        Parameters
        ----------
        item : str
            The item.

        Returns
        -------
        int
            The minimum of the item's ``depth`` counters.

        Examples
        --------
        >>> CountMin(8, 2).estimate("never seen")
        0
        """
        return int(self.estimate_many([item])[0])

    def merge(self, other: CountMin) -> CountMin:
        """A new sketch of both streams: the tables add, exactly as if built on the union.

        Parameters
        ----------
        other : CountMin
            A sketch with the same width, depth and seed.

        Returns
        -------
        CountMin
            The merged sketch; both inputs are unchanged.

        Raises
        ------
        ValueError
            If width, depth or seed differ.

        Examples
        --------
        >>> a, b = CountMin(16, 2), CountMin(16, 2)
        >>> a.update("x", 2)
        >>> b.update("x", 3)
        >>> a.merge(b).estimate("x")
        5
        """
        if not isinstance(other, CountMin):
            raise TypeError(f"can only merge CountMin, got {type(other).__name__}")
        mine = (self.width, self.depth, self.seed)
        theirs = (other.width, other.depth, other.seed)
        if mine != theirs:
            raise ValueError(f"(width, depth, seed) differ: {mine} vs {theirs}")
        merged = CountMin(self.width, self.depth, self.seed)
        merged.table = self.table + other.table
        merged.total = self.total + other.total
        return merged

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able state; ``table`` is a list of ``depth`` lists of ``width`` ints.

        Returns
        -------
        dict
            ``{"kind", "version", "hash", "width", "depth", "seed", "total", "table"}``.

        Examples
        --------
        >>> cm = CountMin(2, 1)
        >>> cm.to_dict()["table"]
        [[0, 0]]
        """
        return {
            "kind": "count_min",
            "version": VERSION,
            "hash": HASH_NAME,
            "width": self.width,
            "depth": self.depth,
            "seed": self.seed,
            "total": self.total,
            "table": self.table.tolist(),
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> CountMin:
        """Rebuild a sketch from :meth:`to_dict` output.

        Parameters
        ----------
        d : dict
            The state.

        Returns
        -------
        CountMin
            An equivalent sketch.

        Raises
        ------
        ValueError
            If kind, version or hash differ, or the table has the wrong shape.

        Examples
        --------
        >>> cm = CountMin(8, 2, seed=7)
        >>> cm.update("a")
        >>> CountMin.from_dict(cm.to_dict()).estimate("a")
        1
        """
        check_kind(d, "count_min")
        if d.get("hash") != HASH_NAME:
            raise ValueError(f"unsupported hash {d.get('hash')!r}")
        sketch = cls(int(d["width"]), int(d["depth"]), int(d["seed"]))
        table = np.asarray(d["table"], dtype=np.int64)
        if table.shape != sketch.table.shape:
            raise ValueError(f"table shape {table.shape} != {sketch.table.shape}")
        sketch.table = table.copy()
        sketch.total = int(d["total"])
        return sketch

    def __repr__(self) -> str:
        return (
            f"CountMin(width={self.width}, depth={self.depth}, seed={self.seed}, "
            f"total={self.total})"
        )
