"""Hierarchical slices: the whole deployment, single dimensions, pairs, the full combination.

A regression concentrated in one platform is diluted when that platform is split further by
region and tier, so every event counts towards one slice per tracked *level* (a subset of the
slice dimensions). Slice labels are canonical text, dimensions sorted by name:
``*`` (whole deployment), ``platform=android``, ``platform=android,tier=free``.

Cardinality is bounded per dimension: after ``max_values_per_dimension`` distinct values, new
values are folded into ``__other__`` (and counted), so a client that puts request ids into a
slice dimension cannot blow up memory.

Examples
--------
>>> from streamguard.policy import SlicePolicy
>>> coder = SliceCoder(SlicePolicy(dimensions=("platform", "tier"), max_level=1))
>>> [coder.level_label(lv) for lv in coder.levels]
['*', 'platform', 'tier', 'platform,tier']
>>> combos = coder.encode([{"platform": "ios", "tier": "free"}, {"platform": "web"}])
>>> rows = coder.rows(combos)
>>> [rows.labels[i] for i in rows.index[1]]
['*', 'platform=web', 'tier=__missing__', 'platform=web,tier=__missing__']
"""

from dataclasses import dataclass, replace
from itertools import combinations
from operator import itemgetter
from typing import Any

import numpy as np
import numpy.typing as npt

from streamguard.policy import SlicePolicy

__all__ = [
    "MISSING",
    "OTHER",
    "ROOT",
    "SliceCoder",
    "SliceParts",
    "SliceRows",
    "label_dims",
    "label_within",
    "levels_of",
]

ROOT = "*"
MISSING = "__missing__"
OTHER = "__other__"

I64 = npt.NDArray[np.int64]


def levels_of(policy: SlicePolicy) -> tuple[tuple[int, ...], ...]:
    """Tracked levels as tuples of dimension positions, coarsest first."""
    d = len(policy.dimensions)
    levels: list[tuple[int, ...]] = []
    for size in range(min(policy.max_level, d) + 1):
        levels.extend(combinations(range(d), size))
    if policy.include_full and d and tuple(range(d)) not in levels:
        levels.append(tuple(range(d)))
    return tuple(levels)


def label_dims(label: str) -> dict[str, str]:
    """Dimensions of a canonical label (``*`` -> ``{}``)."""
    if label == ROOT:
        return {}
    out: dict[str, str] = {}
    for part in label.split(","):
        key, _, value = part.partition("=")
        out[key] = value
    return out


def label_within(label: str, outer: str) -> bool:
    """Whether slice ``label`` lies within ``outer`` (itself included).

    >>> label_within("platform=ios,tier=free", "platform=ios"), label_within("*", "tier=free")
    (True, False)
    """
    return label_dims(outer).items() <= label_dims(label).items()


@dataclass(slots=True)
class SliceRows:
    """Slices touched by a batch.

    ``labels`` lists the distinct slices; ``index[i]`` holds, for event ``i``, one position in
    ``labels`` per level (shape: events x levels).
    """

    labels: list[str]
    index: I64


@dataclass(slots=True)
class SliceParts:
    """Slices touched by a batch, by distinct combination: :class:`SliceRows` before the
    per-event expansion.

    ``part[i]`` is event ``i``'s combination among the batch's distinct ones, and
    ``table[p]`` holds combination ``p``'s position in ``labels`` per level, so
    ``table[part]`` is :attr:`SliceRows.index`. Summarising per combination and rolling the
    sums up through ``table`` touches each event once instead of once per level.
    """

    labels: list[str]
    part: I64
    table: I64


def _unique(ids: I64, bound: int) -> tuple[I64, I64]:
    """``np.unique(ids, return_inverse=True)`` of ids in ``[0, bound)``, by a presence table
    rather than a sort: combination ids are dense and few, and a flush asks this per group.
    A table much larger than the ids (many combinations known, few in the batch) sorts."""
    if bound > 64 * len(ids) + 1024:
        unique, inverse = np.unique(ids, return_inverse=True)
        return unique, inverse.reshape(-1)
    present = np.zeros(bound, dtype=np.bool_)
    present[ids] = True
    unique = np.flatnonzero(present)
    lookup = np.empty(bound, dtype=np.int64)
    lookup[unique] = np.arange(len(unique))
    return unique.astype(np.int64, copy=False), lookup[ids]


class SliceCoder:
    """Turns the ``slice`` objects of events into slice rows, one per tracked level.

    Each distinct full combination of dimension values gets an integer id once; per event the
    only Python work is building its value tuple (C-level ``itemgetter``) and one dict lookup.
    Labels are computed per combination, never per event.

    One coder exists per (source partition, deployment): the value cap is applied in the
    order values appear in that partition, so it is deterministic for a given input order.
    """

    #: Raw value tuples remembered for fast lookup; beyond this the cache is cleared (ids stay).
    RAW_CACHE_LIMIT = 100_000

    def __init__(self, policy: SlicePolicy) -> None:
        self.policy = policy
        # Sort dimensions by name so labels are canonical whatever order the policy lists them.
        self.dimensions = tuple(sorted(policy.dimensions))
        self.levels = levels_of(replace(policy, dimensions=self.dimensions))
        self._getter = itemgetter(*self.dimensions) if len(self.dimensions) > 1 else None
        self._seen: list[set[str]] = [set() for _ in self.dimensions]
        self._raw: dict[tuple[str | None, ...], int] = {}
        self._canonical: dict[tuple[str, ...], int] = {}
        self._labels: list[tuple[str, ...]] = []  # combination id -> label per level
        # Every label gets a coder-wide id; _label_ids[combo] holds one id per level.
        self._label_index: dict[str, int] = {}
        self._label_names: list[str] = []
        self._label_ids = np.zeros((0, len(self.levels)), dtype=np.int64)
        # rows() of recent sets of combinations: their bytes -> (labels, local rows per level)
        self._rows_cache: dict[bytes, tuple[list[str], I64]] = {}
        self.capped = 0  # events whose value was folded into __other__

    def snapshot(self) -> dict[str, Any]:
        """The coder's vocabulary: values seen per dimension and combinations in id order."""
        return {
            "seen": [sorted(values) for values in self._seen],
            "combinations": [
                list(c) for c in sorted(self._canonical, key=self._canonical.__getitem__)
            ],
            "capped": self.capped,
        }

    def restore(self, snapshot: dict[str, Any]) -> None:
        """Take the vocabulary of :meth:`snapshot`; combination ids stay the same."""
        self._seen = [set(values) for values in snapshot["seen"]]
        self._raw.clear()
        self._canonical.clear()
        self._labels.clear()
        self._label_index.clear()
        self._label_names.clear()
        self._rows_cache.clear()
        self._label_ids = np.zeros((0, len(self.levels)), dtype=np.int64)
        for combination in snapshot["combinations"]:
            self._register(tuple(combination))
        self.capped = int(snapshot["capped"])

    def _label_row(self, canonical: tuple[str, ...]) -> tuple[str, ...]:
        return tuple(
            ",".join(f"{self.dimensions[d]}={canonical[d]}" for d in level) or ROOT
            for level in self.levels
        )

    def _register(self, canonical: tuple[str, ...]) -> int:
        """Give a new combination the next id, and its labels their coder-wide ids."""
        combo = self._canonical[canonical] = len(self._labels)
        labels = self._label_row(canonical)
        self._labels.append(labels)
        index = self._label_index
        ids = [index.setdefault(label, len(index)) for label in labels]
        if len(index) > len(self._label_names):
            self._label_names.extend(list(index)[len(self._label_names) :])
        if combo >= len(self._label_ids):
            grown = np.zeros((max(16, 2 * combo), len(self.levels)), dtype=np.int64)
            grown[: len(self._label_ids)] = self._label_ids
            self._label_ids = grown
        self._label_ids[combo] = ids
        return combo

    def level_label(self, level: tuple[int, ...]) -> str:
        """Names of a level's dimensions (``*`` for the whole deployment)."""
        return ",".join(self.dimensions[i] for i in level) or ROOT

    def _keys(self, slices: list[dict[str, str]]) -> list[tuple[str | None, ...]]:
        if self._getter is not None:
            try:
                return list(map(self._getter, slices))
            except KeyError:
                pass
        dims = self.dimensions
        return [tuple(map(s.get, dims)) for s in slices]

    def _new(self, key: tuple[str | None, ...]) -> int:
        values = []
        folded = False
        for dim, value in enumerate(key):
            if value is None:
                values.append(MISSING)
            elif value in self._seen[dim]:
                values.append(value)
            elif len(self._seen[dim]) < self.policy.max_values_per_dimension:
                self._seen[dim].add(value)
                values.append(value)
            else:
                folded = True
                values.append(OTHER)
        self.capped += folded  # one event, however many of its dimensions were folded
        canonical = tuple(values)
        combo = self._canonical.get(canonical)
        if combo is None:
            combo = self._register(canonical)
        if len(self._raw) >= self.RAW_CACHE_LIMIT:
            self._raw.clear()
        if OTHER not in canonical:
            # Keys with a folded value are not cached: each is re-checked (and counted).
            self._raw[key] = combo
        return combo

    def encode(self, slices: list[dict[str, str]]) -> I64:
        """Combination id of each event's slice."""
        return self._ids(self._keys(slices))

    def encode_columns(self, columns: dict[str, list[str | None]], n: int) -> I64:
        """Combination id of each of ``n`` events whose slices come as columns (None: absent).

        The same ids as :meth:`encode` of the same slices as objects: the value tuples are
        built by C-level ``zip`` straight from the columns.
        """
        absent: list[str | None] = [None] * n
        keys = list(zip(*(columns.get(d, absent) for d in self.dimensions), strict=True))
        return self._ids(keys if self.dimensions else [()] * n)

    def _ids(self, keys: list[tuple[str | None, ...]]) -> I64:
        raw = self._raw
        ids = list(map(raw.get, keys))
        if None in ids:  # a value tuple not seen (or not cached) yet
            for i, combo in enumerate(ids):
                if combo is None:  # cached by an earlier event of this batch, or new
                    cached = raw.get(keys[i])
                    ids[i] = cached if cached is not None else self._new(keys[i])
        return np.fromiter(ids, np.int64, len(ids))

    def rows(self, combos: I64) -> SliceRows:
        """Slice rows of encoded events for every tracked level."""
        parts = self.parts(combos)
        return SliceRows(parts.labels, parts.table[parts.part])

    def parts(self, combos: I64) -> SliceParts:
        """Distinct combinations of encoded events and their slice rows for every level."""
        unique, inverse = _unique(combos, len(self._labels))
        key = unique.tobytes()
        cached = self._rows_cache.get(key)
        if cached is None:
            if len(self._rows_cache) >= 256:
                self._rows_cache.clear()
            cached = self._rows_cache[key] = self._local_rows(unique)
        labels, table = cached
        return SliceParts(list(labels), inverse.reshape(-1), table)

    def _local_rows(self, unique: I64) -> tuple[list[str], I64]:
        """Labels of the combinations ``unique`` and each one's local row per level.

        Local rows number the labels in order of first appearance, combinations ascending and
        levels in order, as the partials have always listed them. The same combinations recur
        in most batches, so :meth:`rows` keeps the answers.
        """
        flat = self._label_ids[unique].ravel()
        ids, first, local = np.unique(flat, return_index=True, return_inverse=True)
        order = np.argsort(first, kind="stable")
        rank = np.empty(len(order), dtype=np.int64)
        rank[order] = np.arange(len(order))
        table = rank[local].reshape(len(unique), len(self.levels))
        names = self._label_names
        return [names[i] for i in ids[order].tolist()], table
