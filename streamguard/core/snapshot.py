"""Encoding of state snapshots: JSON with numpy arrays, compressed.

Every stage can write its state as a plain structure (:meth:`Stage1.snapshot`,
:meth:`Stage2.snapshot`, :meth:`Decider.snapshot`) and rebuild from it. Snapshots travel through
a Kafka topic, so the format is data only: JSON values plus numpy arrays encoded as
``{"__nd__": [dtype, shape, stored dtype, base64 values, base64 int32 indices or null]}``, never
pickle (a snapshot must not be able to run code). Mostly-zero arrays (the closed windows'
sketches) keep only their non-zero entries and counts are stored in the narrowest unsigned type
that holds them, which makes a busy deployment's snapshot several times smaller and faster.

Parts of a state that never change once made (stage 2's closed windows, most of its bytes,
and the complete blocks of the shadow guard's onset series) are
:class:`Part` objects: encoded once, and named by a hash of their bytes. :func:`pack` writes
them in place; :func:`split` leaves ``{"__part__": name}`` in their place and returns them
apart, so a store writes each one once and only the changing rest at every snapshot
(:class:`streamguard.faust_app.state.StateStore`). :func:`unpack` takes the parts back by name.

Examples
--------
>>> import numpy as np
>>> data = {"n": 3, "rows": np.arange(6, dtype=np.int64).reshape(2, 3), "labels": ["*", "a=b"]}
>>> back = unpack(pack(data))
>>> back["rows"].tolist(), back["labels"], back["n"]
([[0, 1, 2], [3, 4, 5]], ['*', 'a=b'], 3)
>>> unpack(pack({"watermarks": [float("-inf"), 12.5]}))
{'watermarks': [-inf, 12.5]}
>>> closed = Part({"cells": np.arange(3)})
>>> main, parts = split({"closed": [closed], "open": 1})
>>> stored = {name: part.packed() for name, part in parts.items()}
>>> unpack(main, stored)["closed"][0]["cells"].tolist()
[0, 1, 2]
"""

import base64
import hashlib
import math
import zlib
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import orjson

__all__ = ["Part", "SnapshotError", "pack", "split", "unpack"]

_ARRAY = "__nd__"
_PART = "__part__"  # a Part written apart, by name
_FLOAT = "__float__"  # inf, -inf or nan, which JSON cannot hold
_ALLOWED = {"int64", "int32", "uint32", "uint16", "uint8", "int8", "float64", "float32", "bool"}
_SPARSE_MIN_SIZE = 64  # below this the index overhead is not worth it
_PLAIN = frozenset({str, int, bool, type(None)})  # what JSON holds as it is
_NUMBERS = frozenset({float, int, bool})


class SnapshotError(ValueError):
    """A snapshot could not be decoded (corrupt, or written by an incompatible version)."""


def _narrow(array: np.ndarray) -> np.ndarray:
    """Counts in the smallest unsigned type that holds them; restored to their own dtype."""
    if array.dtype == np.int64 and array.size and array.min() >= 0:
        top = int(array.max())
        for small in (np.uint8, np.uint16, np.uint32):
            if top <= np.iinfo(small).max:
                return array.astype(small)
    return array


def _b64(array: np.ndarray) -> str:
    return base64.b64encode(array.tobytes()).decode()


def _encode_array(value: np.ndarray) -> dict[str, list[Any]]:
    flat = np.ascontiguousarray(value).reshape(-1)
    where = None
    if flat.size >= _SPARSE_MIN_SIZE:
        nonzero = np.flatnonzero(flat)
        if 3 * nonzero.size < flat.size:  # an int32 index per stored value: a third pays off
            where, flat = nonzero.astype(np.int32), flat[nonzero]
    stored = _narrow(flat)
    return {
        _ARRAY: [
            value.dtype.name,
            list(value.shape),
            stored.dtype.name,
            _b64(stored),
            None if where is None else _b64(where),
        ]
    }


def _decode_array(record: list[Any]) -> np.ndarray:
    dtype, shape, stored, data, where = record
    if dtype not in _ALLOWED or stored not in _ALLOWED:
        raise SnapshotError(f"array of unsupported dtype {dtype!r} stored as {stored!r}")
    values = np.frombuffer(base64.b64decode(data), dtype=stored).astype(dtype)
    if where is None:
        return values.reshape(shape)
    array = np.zeros(int(np.prod(shape)), dtype=dtype)
    array[np.frombuffer(base64.b64decode(where), dtype=np.int32)] = values
    return array.reshape(shape)


def _default(value: Any) -> Any:
    """orjson walks the structure natively and calls this only for numpy values."""
    if isinstance(value, np.ndarray):
        return _encode_array(value)
    if isinstance(value, np.generic):
        item = value.item()  # float32 and the like: not floats, so _floats did not see them
        return item if not isinstance(item, float) or math.isfinite(item) else _floats(item)
    raise TypeError(f"cannot snapshot a {type(value).__name__}")


def _floats(value: Any) -> Any:
    """``value`` with non-finite floats spelled out: JSON (and orjson) would write null.

    A watermark of -inf (a source not heard from yet) must come back as -inf, not None.
    """
    if isinstance(value, float):
        # float(): numpy 2 spells a numpy float's repr "np.float64(inf)", which float() refuses.
        return value if math.isfinite(value) else {_FLOAT: repr(float(value))}
    if isinstance(value, dict):
        return {k: _floats(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        # Lists of plain values (request ids of open exposures: a quarter of a million in a
        # busy partition's stage-1 snapshot) or of finite numbers (most of a guard's state) are
        # kept as they are, after checks in C instead of a Python call per element.
        kinds = set(map(type, value))
        if kinds <= _PLAIN:
            return value
        if kinds <= _NUMBERS and math.isfinite(sum(value)):
            return value
        return [_floats(v) for v in value]
    return value


def _decoder(parts: Mapping[str, bytes]) -> Callable[[Any], Any]:
    def decode(value: Any) -> Any:
        if isinstance(value, dict):
            if len(value) == 1:
                if _ARRAY in value:
                    return _decode_array(value[_ARRAY])
                if _FLOAT in value:
                    return float(value[_FLOAT])
                if _PART in value:
                    name = value[_PART]
                    if not isinstance(name, str) or name not in parts:
                        raise SnapshotError(f"snapshot part {name!r} is not stored")
                    return decode(orjson.loads(zlib.decompress(parts[name])))
            return {k: decode(v) for k, v in value.items()}
        if isinstance(value, list):
            return [decode(v) for v in value]
        return value

    return decode


def _json(value: Any, default: Callable[[Any], Any] = _default) -> bytes:
    return orjson.dumps(_floats(value), default=default, option=orjson.OPT_NON_STR_KEYS)


class Part:
    """A piece of a state that never changes once made, encoded once.

    For stage 2's closed windows, most of its snapshot: encoding them at every snapshot was most
    of its cost, and :func:`split` lets a store write each one only once. ``name`` is a hash of
    the encoded bytes, so equal content is one part and changed content is another.

    >>> import numpy as np
    >>> part = {"cells": np.arange(3)}
    >>> pack({"closed": [Part(part)]}) == pack({"closed": [part]})
    True
    """

    __slots__ = ("_packed", "name")

    def __init__(self, value: Any) -> None:
        encoded = _json(value)
        self.name = hashlib.blake2b(encoded, digest_size=16).hexdigest()
        # Only the compressed form is kept: a horizon of closed windows holds one part each.
        self._packed = zlib.compress(encoded, level=1)

    def packed(self) -> bytes:
        """The part compressed, as :func:`unpack` reads it from a store."""
        return self._packed

    def encoded(self) -> bytes:
        """The part's JSON, as :func:`pack` embeds it."""
        return zlib.decompress(self._packed)


def _inline(value: Any) -> Any:
    if isinstance(value, Part):
        return orjson.Fragment(value.encoded())
    return _default(value)


def pack(state: Any) -> bytes:
    """Compressed bytes of a structure of dicts, lists, scalars, numpy arrays and parts."""
    encoded = _json(state, _inline)
    return zlib.compress(encoded, level=1)  # fast: snapshots are written every few seconds


def split(state: Any) -> tuple[bytes, dict[str, Part]]:
    """:func:`pack` with every :class:`Part` left out: the bytes, and the parts by name."""
    parts: dict[str, Part] = {}

    def refer(value: Any) -> Any:
        if isinstance(value, Part):
            parts[value.name] = value
            return {_PART: value.name}
        return _default(value)

    return zlib.compress(_json(state, refer), level=1), parts


def unpack(data: bytes, parts: Mapping[str, bytes] | None = None) -> Any:
    """The structure :func:`pack` (or :func:`split`, given its parts packed) encoded.

    Raises
    ------
    SnapshotError
        If the bytes are not a snapshot, or name a part not in ``parts``.
    """
    try:
        return _decoder(parts or {})(orjson.loads(zlib.decompress(data)))
    except (zlib.error, orjson.JSONDecodeError, ValueError, KeyError, TypeError) as exc:
        if isinstance(exc, SnapshotError):
            raise
        raise SnapshotError(f"not a streamguard snapshot: {exc}") from exc
