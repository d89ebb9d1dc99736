"""Stage 2's tables: partial arrays checked against the policy, capped rows, compaction.

Replica and environment-fingerprint streams come and go, so their rows are capped; what does
not fit is folded into one ``~overflow`` row, after rows unused in every held window are
released (:func:`compact`).
"""

from collections import deque
from typing import Any

import numpy as np
import numpy.typing as npt

from streamguard.core.environments import admitted
from streamguard.core.open_table import OpenTable
from streamguard.core.partials import Cells, cells_of
from streamguard.core.replicas import ALL_ROW, OVERFLOW_ROW
from streamguard.core.stage2_state import PartialError, Stream
from streamguard.core.summary import Array, Field, FrozenTable, Registry, sum_rows
from streamguard.policy import DeploymentPolicy

__all__ = [
    "arrays_of",
    "compact",
    "env_rows",
    "fold_overflow",
    "frozen_table",
    "open_table",
    "replica_rows",
    "select_rows",
]


def replica_rows(
    s: Stream, labels: list[str], arrays: dict[str, Array], max_replicas: int, oldest: int
) -> tuple[npt.NDArray[np.int64], dict[str, Array]]:
    """Rows of a replica group's labels, within ``max_replicas`` replica rows.

    Replicas come and go, so when the registry is full the rows of replicas without requests
    in any window still held are released first (:func:`compact`); replicas that still find
    no row are folded into ``~overflow``, whose requests count how much was not attributed.
    Closed windows before ``oldest`` can no longer enter a horizon and are dropped then.
    """
    limit = max_replicas + 2
    s.registry.rows_for([ALL_ROW, OVERFLOW_ROW])
    rows = s.registry.rows_for(labels, limit=limit)
    if (rows < 0).any() and len(s.registry) >= limit:
        compact(s, oldest)
        rows = s.registry.rows_for(labels, limit=limit)
    return fold_overflow(s, rows, arrays)


def env_rows(
    s: Stream,
    labels: list[str],
    arrays: dict[str, Array],
    policy: DeploymentPolicy,
    oldest: int,
    *,
    paired: bool,
) -> tuple[npt.NDArray[np.int64], dict[str, Array]]:
    """Rows of an ``env``/``env_pair`` group's labels, within ``max_fingerprints``.

    Labels naming a fingerprint beyond the cap (or beyond the slice cap) are folded into
    ``~overflow``; rows of fingerprints gone from every held window are released first.
    """
    limit = policy.determinism.max_fingerprints
    s.registry.rows_for([OVERFLOW_ROW])
    fresh = [label for label in labels if label not in s.registry.index]
    if fresh and not all(admitted(s.registry.labels, fresh, limit, paired)):
        compact(s, oldest)
    if fresh:
        allowed = dict(zip(fresh, admitted(s.registry.labels, fresh, limit, paired), strict=True))
        labels = [label if allowed.get(label, True) else OVERFLOW_ROW for label in labels]
    rows = s.registry.rows_for(labels, limit=policy.slices.max_slices)
    return fold_overflow(s, rows, arrays)


def fold_overflow(
    s: Stream, rows: npt.NDArray[np.int64], arrays: dict[str, Array]
) -> tuple[npt.NDArray[np.int64], dict[str, Array]]:
    """Move the entries without a row (``-1``), and any on ``~overflow``, into one overflow row."""
    overflow_row = s.registry.index[OVERFLOW_ROW]
    if not ((rows < 0) | (rows == overflow_row)).any():
        return rows, arrays
    rows = np.where(rows < 0, overflow_row, rows)
    if (rows == overflow_row).sum() == 1:
        return rows, arrays
    merged = sum_rows(s.fields, arrays, np.flatnonzero(rows == overflow_row).tolist())
    keep = rows != overflow_row
    rows = np.append(rows[keep], overflow_row)
    arrays = {k: np.concatenate([v[keep], merged[k]]) for k, v in arrays.items()}
    return rows, arrays


def compact(s: Stream, oldest: int) -> None:
    """Release the rows (replicas, fingerprints) without events in any window still judgeable."""
    while s.closed and s.closed[0][0] < oldest:
        s.closed.popleft()
    n = len(s.registry)
    tables: list[OpenTable | FrozenTable] = [*s.open.values(), *(t for _, t in s.closed)]
    live = np.zeros(n, dtype=bool)
    for table in tables:
        live |= table.view(n)["events"] > 0
    pinned = [
        s.registry.index[label] for label in (ALL_ROW, OVERFLOW_ROW) if label in s.registry.index
    ]
    live[pinned] = True
    if live.all():
        return
    keep = np.flatnonzero(live)
    registry = Registry()
    registry.rows_for([s.registry.labels[i] for i in keep.tolist()])

    def shrink(table: OpenTable | FrozenTable) -> OpenTable:
        arrays = table.view(n)
        return OpenTable.of(s.fields, {k: v[keep] for k, v in arrays.items()})

    s.open = {i: shrink(t) for i, t in s.open.items()}
    s.closed = deque((i, shrink(t).freeze(len(keep))) for i, t in s.closed)
    s.registry = registry


def frozen_table(fields: tuple[Field, ...], saved: dict[str, Any], rows: int) -> FrozenTable:
    """A closed window from a snapshot: compact, or dense arrays (older snapshots)."""
    if "cells" in saved and "rows" in saved:
        return FrozenTable.from_dict(fields, saved)
    return OpenTable.of(fields, saved).freeze(rows)


def open_table(fields: tuple[Field, ...], saved: dict[str, Any]) -> OpenTable:
    """An open window from a snapshot: compact, or dense arrays (older snapshots)."""
    if "cells" in saved and "rows" in saved:
        return OpenTable.of(fields, FrozenTable.from_dict(fields, saved))
    return OpenTable.of(fields, saved)


def select_rows(
    fields: tuple[Field, ...], arrays: dict[str, Any], keep: npt.NDArray[np.bool_]
) -> dict[str, Any]:
    """The rows ``keep`` marks of every field, dense or :class:`Cells`."""
    return {
        f.name: (
            arrays[f.name].select(keep, f.width)
            if isinstance(arrays[f.name], Cells)
            else arrays[f.name][keep]
        )
        for f in fields
    }


def arrays_of(
    fields: tuple[Field, ...], raw: dict[str, Any], rows: int, *, sparse: bool = False
) -> dict[str, Any]:
    """A partial group's fields as arrays, checked against the policy's shapes.

    With ``sparse``, histograms and sketches sent as cells stay :class:`Cells` (what
    :class:`OpenTable` merges) instead of dense arrays.
    """
    out: dict[str, Any] = {}
    for f in fields:
        if f.name not in raw:
            raise PartialError(f"partial lacks field {f.name!r}")
        value = raw[f.name]
        wire = type(value) is dict and f.kind == "count" and f.width
        try:
            if wire:
                found = cells_of(value, f.shape(rows))  # checks its counts itself
                out[f.name] = found if sparse and rows else found.dense(f.shape(rows))
                continue
            array = np.asarray(value, dtype=f.dtype())
        except (TypeError, ValueError, OverflowError) as exc:
            raise PartialError(f"field {f.name!r}: {exc}") from None
        if rows == 0:
            array = np.zeros(f.shape(0), f.dtype())
        if array.shape != f.shape(rows):
            expected = f.shape(rows)
            raise PartialError(
                f"field {f.name!r} has shape {array.shape}, this worker's policy expects {expected}"
            )
        if f.kind == "count" and rows and array.min() < 0:
            raise PartialError(f"field {f.name!r} has negative counts")
        out[f.name] = array
    return out
