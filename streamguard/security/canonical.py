"""Canonical JSON: the bytes a signature covers, the same however a message was re-serialised.

A signed message travels as JSON and may be parsed and written again on its way (a proxy, a
replay tool, another language's JSON library). Key order, whitespace and the spelling of
numbers then change, so the signature is computed over a canonical encoding that every
re-serialisation maps back to the same bytes.

The rules
---------
1. Values are JSON values only: ``dict`` (object), ``list``/``tuple`` (array), ``str``,
   ``int``, ``float``, ``bool`` and ``None``. Anything else raises :class:`CanonicalError`.
2. Object keys must be strings. Objects are written with their keys sorted by Unicode code
   point (the same order as their UTF-8 bytes).
3. No whitespace anywhere: ``{"a":1,"b":[true,null]}``.
4. Strings are written as UTF-8 without escaping anything but what JSON requires: ``"`` and
   ``\\`` as ``\\"`` and ``\\\\``; ``\\b \\f \\n \\r \\t`` in their short form; the other
   control characters below U+0020 as ``\\u00XX`` (lower-case hex). No Unicode normalisation.
   Strings that are not valid Unicode (lone surrogates) are rejected.
5. Numbers: JSON has one number type, and re-serialisers differ on ``1`` versus ``1.0`` or
   ``1e+16`` versus ``10000000000000000``. So integers, and floats with an integral value in
   [-2**63, 2**64), are written as integers in decimal (``1.0``, ``1e16`` and ``-0.0`` become
   ``1``, ``10000000000000000`` and ``0``). Other floats are written in the shortest form that
   reads back to the same double, as orjson writes it (``0.1``, ``1e-7``, ``1e+300``,
   ``0.30000000000000004``). NaN, infinities and integers outside [-2**63, 2**64) are
   rejected. (A JavaScript hop rounds integers beyond ±2**53 to doubles; a message carrying
   one then fails verification, so keep integers within ±2**53 where that can happen.)
6. ``true``, ``false`` and ``null`` as such.

Examples
--------
>>> canonical_bytes({"b": [1.0, 0.5, None], "a": "é"})
b'{"a":"\\xc3\\xa9","b":[1,0.5,null]}'
>>> canonical_bytes({"ts": 1790000230.0}) == canonical_bytes({"ts": 1790000230})
True
"""

import math
from typing import Any

import orjson

from streamguard.security.exceptions import CanonicalError

__all__ = ["INTEGER_RANGE", "canonical_bytes"]

#: Integers that can be written: those a 64-bit JSON reader holds exactly (orjson's range).
INTEGER_RANGE = range(-(2**63), 2**64)
# Integral floats in the same range are written as ints: a reader that gets "1e+19" and one
# that gets "10000000000000000000" then agree (orjson reads the latter as an int).
_INTEGRAL_FLOATS = (-(2.0**63), 2.0**64)


def _normal(value: Any, where: str) -> Any:
    """Plain-Python copy of ``value`` with numbers normalised; raises CanonicalError."""
    # bool before int: bool is a subclass of int.
    if value is None or isinstance(value, bool | str):
        return value
    if isinstance(value, int):
        if value not in INTEGER_RANGE:
            raise CanonicalError(f"{where}: integer {value} is outside [-2**63, 2**64)")
        return int(value)  # int subclasses (IntEnum, numpy ints) become plain ints
    if isinstance(value, float):
        if not math.isfinite(value):
            raise CanonicalError(f"{where}: {value!r} is not a JSON number")
        low, high = _INTEGRAL_FLOATS
        if value.is_integer() and low <= value < high:
            return int(value)
        return float(value)  # float subclasses (numpy.float64) become plain floats
    if isinstance(value, dict):
        out: dict[str, Any] = {}
        for key, item in value.items():
            if not isinstance(key, str):
                raise CanonicalError(f"{where}: object key {key!r:.40} is not a string")
            out[str(key)] = _normal(item, f"{where}.{key}")
        return out
    if isinstance(value, list | tuple):
        return [_normal(item, f"{where}[{i}]") for i, item in enumerate(value)]
    raise CanonicalError(f"{where}: {type(value).__name__} is not a JSON value")


def canonical_bytes(obj: Any) -> bytes:
    """The canonical JSON encoding of ``obj`` (see the module's rules).

    Parameters
    ----------
    obj
        A JSON value built from dicts, lists, strings, numbers, booleans and None.

    Returns
    -------
    bytes
        UTF-8 JSON, keys sorted, no whitespace, numbers normalised.

    Raises
    ------
    CanonicalError
        For NaN or infinite numbers, integers outside [-2**63, 2**64), non-string keys, strings
        that are not valid Unicode, and values that are not JSON.

    Examples
    --------
    >>> canonical_bytes({"z": 1, "a": {"y": True, "x": 1e-7}})
    b'{"a":{"x":1e-7,"y":true},"z":1}'
    >>> canonical_bytes([float("nan")])
    Traceback (most recent call last):
    ...
    streamguard.security.exceptions.CanonicalError: $[0]: nan is not a JSON number
    """
    normal = _normal(obj, "$")
    try:
        return orjson.dumps(normal, option=orjson.OPT_SORT_KEYS)
    except orjson.JSONEncodeError as exc:  # lone surrogates and the like
        raise CanonicalError(f"$: cannot encode: {exc}") from exc
