"""Per-slice totals since a canary version started: what sequential tests need.

Windows are merged into a :class:`Cumulative` as they close. Sequential tests are valid on
cumulative data however often they look, so the canary guards judge the whole history of a
canary version (and allocation), not a sliding horizon.

Examples
--------
>>> import numpy as np
>>> from streamguard.core.summary import Field
>>> c = Cumulative((Field("events", "count"),))
>>> c.add(["*", "tier=free"], {"events": np.array([3, 2])})
>>> c.add(["tier=free", "*"], {"events": np.array([1, 4])})
>>> c.take(["*", "tier=free", "tier=premium"])["events"].tolist()
[7, 3, 0]
"""

from typing import Any

import numpy as np

from streamguard.core.summary import Array, Field, Registry, Table, zeros

__all__ = ["Cumulative"]


class Cumulative:
    """Running totals of some fields, one row per slice label."""

    __slots__ = ("fields", "registry", "table")

    def __init__(self, fields: tuple[Field, ...]) -> None:
        self.fields = fields
        self.registry = Registry()
        self.table = Table(fields)

    @property
    def labels(self) -> list[str]:
        """Labels with a row, in first-seen order."""
        return self.registry.labels

    def add(self, labels: list[str], arrays: dict[str, Array]) -> None:
        """Merge one window's rows (``arrays`` aligned with ``labels``; extra fields ignored)."""
        if not labels:
            return
        rows = self.registry.rows_for(labels)
        self.table.add(rows, {f.name: arrays[f.name] for f in self.fields})

    def snapshot(self) -> dict[str, Any]:
        """Field specs, labels and their totals."""
        n = len(self.registry)
        return {
            "fields": [[f.name, f.kind, f.width] for f in self.fields],
            "labels": list(self.labels),
            "arrays": self.table.view(n),
        }

    @classmethod
    def restore(cls, snapshot: dict[str, Any]) -> "Cumulative":
        """Rebuild from :meth:`snapshot` (rows keep their order)."""
        fields = tuple(Field(name, kind, int(width)) for name, kind, width in snapshot["fields"])
        cumulative = cls(fields)
        cumulative.add(snapshot["labels"], snapshot["arrays"])
        return cumulative

    def take(self, labels: list[str]) -> dict[str, Array]:
        """Totals aligned with ``labels`` (zeros for labels never seen)."""
        out = zeros(self.fields, len(labels))
        index = self.registry.index
        known = [(i, index[label]) for i, label in enumerate(labels) if label in index]
        if known:
            at, rows = (np.array(v, dtype=np.int64) for v in zip(*known, strict=True))
            view = self.table.view(len(self.registry))
            for name in out:
                out[name][at] = view[name][rows]
        return out
