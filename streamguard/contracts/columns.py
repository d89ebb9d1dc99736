"""Columnar batches of prediction events: one array per field instead of one object per event.

A producer that already holds its events as columns sends them as one message::

    {"schema_version": 1, "kind": "prediction_columns", "n": 2,
     "columns": {"event_id": ["e1", "e2"], "request_id": ["r1", "r1"], "ts": [1.0, 1.5],
                 "deployment": ["d", "d"], "model_version": ["v1", "v2"],
                 "role": ["primary", "shadow"], "score": [0.2, 0.3],
                 "slice": {"platform": ["ios", "ios"], "tier": [null, "free"]},
                 "latency_ms": [12.0, null]}}

Row ``i`` is the prediction event made of every column's ``i``-th value, ``null`` meaning the
event does not have that field (``topics/schemas/prediction_columns.schema.json``). The decoder
(:func:`streamguard.contracts.decode_message`) checks every column at once with C-level builtins
and turns it straight into the arrays of a :class:`PredictionBatch`; slices stay columns
(``PredictionBatch.slice_columns``), so no per-event object is ever built. Only when a column
check fails are the rows built as objects and validated one by one, exactly as the events of a
row envelope, so a bad row is dead-lettered alone with its reason.

:func:`encode_columns` turns prediction events into such a message (the client emitter's
``columnar`` mode).

Examples
--------
>>> event = {"schema_version": 1, "kind": "prediction", "event_id": "e1", "request_id": "r1",
...          "ts": 1790000000.0, "deployment": "home-ranker", "model_version": "v1",
...          "role": "shadow", "slice": {"platform": "ios"}, "score": 0.7}
>>> message = encode_columns([event, {**event, "event_id": "e2", "slice": {}}])
>>> parsed = orjson.loads(message)
>>> parsed["n"], parsed["columns"]["slice"]
(2, {'platform': ['ios', None]})
>>> rows_of(parsed["columns"], parsed["n"])[1]["slice"]
{}
"""

import math
from itertools import chain
from typing import Any

import numpy as np
import orjson

from streamguard.contracts.checks import (
    ROLE_CODE,
    error_and_allocation,
    numbers,
    prediction_core,
    strings_ok,
)
from streamguard.contracts.events import PredictionBatch
from streamguard.contracts.exceptions import DecodeError
from streamguard.contracts.schemas import FieldRule, KindRules, load_schema, rules_for

__all__ = ["COLUMNS_KIND", "check_envelope", "columns_batch", "encode_columns", "rows_of"]

COLUMNS_KIND = "prediction_columns"
_META = ("schema_version", "kind")  # implied by the envelope, not columns
_NONE = type(None)


def check_envelope(parsed: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    """The row count and the columns of a columnar message (everything but the rows checked).

    Raises
    ------
    DecodeError
        When the message as a whole breaks ``prediction_columns.schema.json``.
    """
    schema = load_schema(COLUMNS_KIND)
    version = parsed.get("schema_version")
    if type(version) not in (int, float) or version != 1:
        raise DecodeError("unsupported_version", f"schema_version {version!r:.40} is not supported")
    missing = [name for name in schema["required"] if name not in parsed]
    if missing:
        raise DecodeError("missing_field", f"missing {', '.join(missing)}")
    extra = set(parsed) - set(schema["properties"])
    if extra:
        raise DecodeError("bad_value", f"columnar batch has unknown fields {sorted(extra)}")
    n, columns = parsed["n"], parsed["columns"]
    n_rule = schema["properties"]["n"]
    if type(n) is not int and not (type(n) is float and n.is_integer()):
        raise DecodeError("wrong_type", f"n must be an integer, got {n!r:.40}")
    if not n_rule["minimum"] <= n <= n_rule["maximum"]:
        raise DecodeError("bad_value", f"n={n!r} is outside [0, {n_rule['maximum']}]")
    if type(columns) is not dict:
        raise DecodeError("wrong_type", "columns must be an object of arrays")
    missing = [c for c in schema["properties"]["columns"]["required"] if c not in columns]
    if missing:
        raise DecodeError("missing_field", f"missing columns {', '.join(missing)}")
    slices = columns["slice"]
    if type(slices) is not dict:
        raise DecodeError("wrong_type", "columns.slice must be an object of arrays")
    named = chain(
        ((name, v) for name, v in columns.items() if name != "slice"),
        ((f"slice.{name}", v) for name, v in slices.items()),
    )
    for name, values in named:
        if type(values) is not list:
            raise DecodeError("wrong_type", f"column {name:.70} must be an array")
        if len(values) != n:
            raise DecodeError("bad_value", f"column {name:.70} has {len(values)} values, not {n}")
    return int(n), columns


def rows_of(columns: dict[str, Any], n: int) -> list[dict[str, Any]]:
    """The event objects the rows stand for (nulls dropped): for exact, per-row validation."""
    names = [name for name in columns if name != "slice" and name not in _META]
    dims = list(columns["slice"])
    fields = zip(*(columns[name] for name in names), strict=True) if names else [()] * n
    values = zip(*columns["slice"].values(), strict=True) if dims else [()] * n
    return [
        {
            "schema_version": 1,
            "kind": "prediction",
            **{k: v for k, v in zip(names, row, strict=True) if v is not None},
            "slice": {k: v for k, v in zip(dims, dim_values, strict=True) if v is not None},
        }
        for row, dim_values in zip(fields, values, strict=True)
    ]


def _filled(values: list[Any], fill: object) -> list[Any]:
    """``values`` with None replaced by ``fill`` (one C-level pass when there is none)."""
    if None not in values:
        return values
    return [fill if v is None else v for v in values]


def _optional_numbers(columns: dict[str, Any], name: str) -> np.ndarray | None:
    """Non-negative numbers, NaN where null; empty when the column is absent or all null."""
    values: list[Any] | None = columns.get(name)
    if values is None:
        return np.zeros(0)
    parsed = numbers(_filled(values, math.nan))
    if parsed is None or bool((parsed < 0).any()):
        return None
    # JSON has no NaN: all NaN means all null (checked after the one type scan in numbers).
    return np.zeros(0) if bool(np.isnan(parsed).all()) else parsed


def _optional_strings(columns: dict[str, Any], name: str, rule: FieldRule) -> list[Any] | None:
    """Strings, "" where null; [] when the column is absent or all null."""
    values = columns.get(name)
    if values is None:
        return []
    try:
        distinct = set(values)
    except TypeError:  # an unhashable value (array, object) is not a string
        return None
    distinct.discard(None)
    if not distinct:
        return []
    if not strings_ok(list(distinct), rule):
        return None
    return _filled(values, "")


def _optional_flags(columns: dict[str, Any], name: str, default: bool) -> np.ndarray | None:
    values = columns.get(name)
    if values is None or set(map(type, values)) == {_NONE}:
        return np.zeros(0, dtype=bool)
    flags = _filled(values, default)
    if set(map(type, flags)) != {bool}:
        return None
    return np.fromiter(flags, bool, len(flags))


def _items(columns: dict[str, Any], rules: KindRules) -> list[Any] | None:
    values: list[Any] | None = columns.get("items")
    if values is None or set(map(type, values)) == {_NONE}:
        return []
    if not set(map(type, values)) <= {list, _NONE}:
        return None
    given = [v for v in values if v is not None]
    if max(map(len, given)) > rules.items_max:
        return None
    flat = list(chain.from_iterable(given))
    if flat and not strings_ok(flat, rules.item):
        return None
    return values


def _slice_columns(
    slices: dict[str, list[Any]], rules: KindRules
) -> dict[str, list[str | None]] | None:
    if not slices:
        return {}
    if len(slices) > rules.slice_max_properties or not strings_ok(list(slices), rules.slice_key):
        return None  # rows may still be fine (a dimension null where too many), check each
    for values in slices.values():
        try:
            distinct = set(values)
        except TypeError:
            return None
        distinct.discard(None)
        if distinct and not strings_ok(list(distinct), rules.slice_value):
            return None
    return slices


def columns_batch(
    columns: dict[str, Any], n: int, max_ts: float = math.inf
) -> PredictionBatch | None:
    """The batch of a columnar message when every row is valid; None to check row by row."""
    rules = rules_for("prediction")
    if n == 0:
        return PredictionBatch.empty()
    core = prediction_core(columns, rules, max_ts)
    if core is None:
        return None
    ts, score = core
    slices = _slice_columns(columns["slice"], rules)
    latency = _optional_numbers(columns, "latency_ms")
    ages = _optional_numbers(columns, "replica_age_s")
    error = _optional_flags(columns, "error", False)
    ready = _optional_flags(columns, "replica_ready", True)
    strings = {
        name: _optional_strings(columns, name, rules.strings[name])
        for name in ("allocation", "feature_schema", "replica_id", "env_fingerprint")
    }
    items = _items(columns, rules)
    if (
        slices is None
        or latency is None
        or ages is None
        or error is None
        or ready is None
        or items is None
        or None in strings.values()
    ):
        return None
    allocation, feature_schema, replica_id, fingerprint = (strings[name] or [] for name in strings)
    error, allocation = error_and_allocation(error, allocation, n)
    return PredictionBatch(
        event_id=columns["event_id"],
        request_id=columns["request_id"],
        ts=ts,
        deployment=columns["deployment"],
        model_version=columns["model_version"],
        role=np.fromiter(map(ROLE_CODE.__getitem__, columns["role"]), np.int8, n),
        score=score,
        latency_ms=latency if len(latency) else np.full(n, math.nan),
        slice=[] if slices else [{}] * n,
        items=items,
        error=error,
        allocation=allocation,
        feature_schema=feature_schema,
        replica_id=replica_id,
        replica_age_s=ages,
        replica_ready=ready,
        env_fingerprint=fingerprint,
        slice_columns=slices,
    )


def encode_columns(events: list[dict[str, Any]]) -> bytes | None:
    """A columnar message of prediction events, or None when they cannot all be columns.

    Events that are not predictions of schema version 1 with an object slice, or that hold an
    explicit null (which a column cannot tell from an absent field), are left to row envelopes,
    so the worker judges (and dead-letters) them exactly as before.
    """
    if not events or set(map(type, events)) != {dict}:
        return None
    try:
        kinds = set(map(dict.__getitem__, events, ["kind"] * len(events)))
        versions = set(map(dict.__getitem__, events, ["schema_version"] * len(events)))
        slices = list(map(dict.__getitem__, events, ["slice"] * len(events)))
    except (KeyError, TypeError):
        return None
    if kinds != {"prediction"} or versions != {1} or set(map(type, slices)) != {dict}:
        return None
    names = [k for k in dict.fromkeys(chain.from_iterable(events)) if k not in (*_META, "slice")]
    dims = list(dict.fromkeys(chain.from_iterable(slices)))
    columns: dict[str, Any] = {name: [e.get(name) for e in events] for name in names}
    columns["slice"] = {dim: [s.get(dim) for s in slices] for dim in dims}
    present = sum(map(len, events)) - 3 * len(events)  # fields besides kind, version, slice
    given = sum(len(c) - c.count(None) for name, c in columns.items() if name != "slice")
    if given != present or any(None in s.values() for s in slices):
        return None  # an explicit null somewhere
    message = {"schema_version": 1, "kind": COLUMNS_KIND, "n": len(events), "columns": columns}
    return orjson.dumps(message)
