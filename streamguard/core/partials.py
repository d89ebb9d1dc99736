"""Encoding of internal messages: partial summaries split to fit Kafka's message size.

A deployment's partial from one flush may hold many windows and thousands of slices. It is
split into parts of at most ``max_bytes``, a group with too many slices by rows; each group is
serialised once (numpy arrays straight to JSON by orjson) and parts are assembled as bytes.

Count fields with a trailing width (histograms and sketches) travel as their non-zero cells,
``{"width": w, "cells": [flat indices], "counts": [values]}``: half a second of a slice's
events touches a few of its 100 score bins and 232 sketch buckets, and dense rows were 87 %
zeros, most of the bytes stage 1 encoded and stage 2 parsed (:func:`cells_of` reads them
back as :class:`Cells`, which stage 2 merges into its open windows as they are; stage 2 still
reads dense rows, as older workers sent them).

Examples
--------
>>> import numpy as np
>>> wire = cells(np.array([[0, 3, 0], [0, 0, 1]]))
>>> wire
{'width': 3, 'cells': [1, 5], 'counts': [3, 1]}
>>> from_cells(wire, (2, 3)).tolist()
[[0, 3, 0], [0, 0, 1]]
"""

import math
from typing import Any, NamedTuple

import numpy as np
import numpy.typing as npt
import orjson

from streamguard.core.summary import Array

__all__ = [
    "HEADER_RESERVE",
    "MAX_PARTIAL_BYTES",
    "Cells",
    "cells",
    "cells_of",
    "dumps",
    "encode_group",
    "from_cells",
    "group_fields",
    "pack",
]

#: Upper bound of one partial message (Kafka's default max message size is 1 MiB).
MAX_PARTIAL_BYTES = 512 * 1024
#: Bytes kept free in a part for the message header around its groups.
HEADER_RESERVE = 512


def dumps(message: dict[str, Any]) -> bytes:
    """JSON of an internal message; numpy arrays and scalars included."""
    return orjson.dumps(message, option=orjson.OPT_SERIALIZE_NUMPY)


def cells(counts: Array) -> dict[str, Any]:
    """A 2-D count array's width and non-zero cells: flat indices (ascending) and counts."""
    flat = counts.ravel()
    where = np.flatnonzero(flat)
    return {"width": counts.shape[1], "cells": where.tolist(), "counts": flat[where].tolist()}


class Cells(NamedTuple):
    """A sparse count field as read from the wire: flat indices (ascending, distinct) into a
    ``(rows, width)`` array and their counts, kept sparse so stage 2 never builds the dense
    array (:func:`cells_of`)."""

    where: npt.NDArray[np.int64]
    counts: npt.NDArray[np.int64]

    def dense(self, shape: tuple[int, ...]) -> npt.NDArray[np.int64]:
        """The count array of ``shape`` these cells stand for."""
        out = np.zeros(math.prod(shape), dtype=np.int64)
        out[self.where] = self.counts
        return out.reshape(shape)

    def select(self, keep: npt.NDArray[np.bool_], width: int) -> "Cells":
        """The cells of the rows ``keep`` marks, renumbered as ``array[keep]`` renumbers them."""
        row, column = np.divmod(self.where, width)
        mine = keep[row]
        renumbered = np.cumsum(keep) - 1
        return Cells(renumbered[row[mine]] * width + column[mine], self.counts[mine])


def cells_of(wire: dict[str, Any], shape: tuple[int, ...]) -> Cells:
    """The cells that :func:`cells` gave ``wire`` for, checked against ``shape``.

    Raises
    ------
    ValueError
        When ``wire`` is not such an object: other keys, another width (bins of another
        policy), indices not strictly ascending or outside the shape, counts not non-negative
        integers, or lengths that differ.
    """
    if type(wire) is not dict or wire.keys() != {"width", "cells", "counts"}:
        raise ValueError("a sparse count field has exactly the keys width, cells and counts")
    if wire["width"] != shape[-1]:
        raise ValueError(f"width {wire['width']!r:.20}, this worker's policy expects {shape[-1]}")
    where, values = wire["cells"], wire["counts"]
    if type(where) is not list or type(values) is not list or len(where) != len(values):
        raise ValueError("cells and counts must be arrays of the same length")
    if not set(map(type, where)) | set(map(type, values)) <= {int}:
        raise ValueError("cells and counts must be integers")
    if not where:
        empty = np.zeros(0, dtype=np.int64)
        return Cells(empty, empty.copy())
    size = math.prod(shape)
    try:  # one conversion for both lists: stage 2 reads thousands of these a second
        index, counts = np.array((where, values), dtype=np.int64)
    except OverflowError:
        raise ValueError("cells or counts beyond 64 bits") from None
    if index[0] < 0 or index[-1] >= size or (index[1:] <= index[:-1]).any():
        raise ValueError(f"cells must ascend strictly within [0, {size})")
    if counts.min() < 0:
        raise ValueError("negative counts")
    return Cells(index, counts)


def from_cells(wire: dict[str, Any], shape: tuple[int, ...]) -> npt.NDArray[np.int64]:
    """The count array of ``shape`` that :func:`cells` gave ``wire`` for.

    Raises
    ------
    ValueError
        As :func:`cells_of`.
    """
    return cells_of(wire, shape).dense(shape)


def group_fields(group: dict[str, Any]) -> dict[str, Any]:
    """A parsed partial group's fields with sparse counts made dense again (nested lists), as
    they were before the wire: for tools and tests that read partials."""
    rows = len(group["slices"])
    return {
        name: from_cells(value, (rows, value["width"])).tolist() if type(value) is dict else value
        for name, value in group["fields"].items()
    }


def _wire(fields: dict[str, Array]) -> dict[str, Any]:
    """Fields as sent: histograms and sketches (2-D counts) as their non-zero cells."""
    return {
        name: cells(array) if array.ndim == 2 and array.dtype.kind in "iu" else array
        for name, array in fields.items()
    }


def encode_group(
    header: dict[str, Any], labels: list[str], fields: dict[str, Array], max_bytes: int
) -> list[bytes]:
    """One group as JSON, split by slice rows until each piece fits ``max_bytes``."""
    encoded = dumps({**header, "slices": labels, "fields": _wire(fields)})
    if len(encoded) <= max_bytes or len(labels) <= 1:
        return [encoded]
    half = len(labels) // 2
    return encode_group(
        header, labels[:half], {k: v[:half] for k, v in fields.items()}, max_bytes
    ) + encode_group(header, labels[half:], {k: v[half:] for k, v in fields.items()}, max_bytes)


def pack(groups: list[bytes], max_bytes: int) -> list[list[bytes]]:
    """Greedy packing of encoded groups into messages (always at least one, maybe empty)."""
    parts: list[list[bytes]] = [[]]
    size = 0
    for group in groups:
        if parts[-1] and size + len(group) > max_bytes:
            parts.append([])
            size = 0
        parts[-1].append(group)
        size += len(group) + 1
    return parts
