"""Columnar batches parsed and checked in C (msgspec), as :mod:`.typed_rows` does row envelopes.

:func:`typed_columns` reads a ``prediction_columns`` message into a struct whose column types
carry the prediction schema's types, enums, lengths and bounds (``null`` allowed where a row
may lack the field), then checks what msgspec was not asked to (patterns, ``max_ts``, that
every column has ``n`` values) and builds the batch
:func:`~streamguard.contracts.columns.columns_batch` would. Anything else gives None and the
message is decoded as before: a column the schema does not name, a null in a required column,
``n`` written as 1.0, an empty batch, any bad row. A property test compares the two paths.

Examples
--------
>>> import orjson
>>> from streamguard.contracts.columns import encode_columns
>>> event = {"schema_version": 1, "kind": "prediction", "event_id": "e1", "request_id": "r1",
...          "ts": 1790000000.0, "deployment": "home-ranker", "model_version": "v1",
...          "role": "shadow", "slice": {"platform": "ios"}, "score": 0.7}
>>> batch = typed_columns(encode_columns([event, {**event, "event_id": "e2", "slice": {}}]))
>>> batch.event_id, batch.slice_columns
(['e1', 'e2'], {'platform': ['ios', None]})
>>> typed_columns(encode_columns([{**event, "deployment": "home ranker"}])) is None
True
"""

import math
from functools import cache
from typing import Annotated, Any, Literal

import msgspec
import numpy as np

from streamguard.contracts.checks import ROLE_CODE, error_and_allocation, strings_ok
from streamguard.contracts.columns import COLUMNS_KIND
from streamguard.contracts.events import PredictionBatch
from streamguard.contracts.schemas import load_schema, rules_for
from streamguard.contracts.typed_rows import number_type, patterns_ok, text_type

__all__ = ["typed_columns"]

# Built at runtime from the schemas (see typed_rows): values, not annotations.
_ANNOTATED: Any = Annotated
_LIST: Any = list
_DICT: Any = dict
_OPTIONAL = (
    *("latency_ms", "items", "error", "allocation", "feature_schema", "replica_id"),
    *("replica_age_s", "replica_ready", "env_fingerprint"),
)


@cache
def _decoder() -> msgspec.json.Decoder[Any]:
    rules = rules_for("prediction")
    props = load_schema("prediction")["properties"]
    s = rules.strings
    schema = load_schema(COLUMNS_KIND)
    max_rows = schema["properties"]["n"]["maximum"]
    item = _ANNOTATED[_LIST[text_type(rules.item)], msgspec.Meta(max_length=rules.items_max)]
    strings = ["event_id", "request_id", "model_version", "role", "allocation"]
    strings += ["feature_schema", "env_fingerprint"]
    types = {
        **{name: text_type(s[name]) for name in strings},
        # Patterns checked after decoding, on distinct values (typed_columns below).
        **{name: text_type(s[name], pattern_after=True) for name in ("deployment", "replica_id")},
        **{name: number_type(props[name]) for name in ("ts", "score", "latency_ms")},
        "replica_age_s": number_type(props["replica_age_s"]),
        "items": item,
        "error": bool,
        "replica_ready": bool,
    }
    required = schema["properties"]["columns"]["required"]
    # Slice keys are checked after (a row may still be valid where a check of all keys fails).
    slices = _DICT[str, _LIST[text_type(rules.slice_value, pattern_after=True) | None]]
    fields: list[tuple[str, Any] | tuple[str, Any, Any]] = [("slice", slices)]
    for name, type_ in types.items():
        if name in required:
            fields.append((name, _LIST[type_]))
        else:  # null where a row lacks the field; None when no row has the column
            fields.append((name, _LIST[type_ | None] | None, None))
    columns = msgspec.defstruct("TypedColumns", fields, kw_only=True, forbid_unknown_fields=True)
    message = msgspec.defstruct(
        "TypedColumnsMessage",
        [
            ("schema_version", Literal[1]),
            ("kind", Literal["prediction_columns"]),
            ("n", _ANNOTATED[int, msgspec.Meta(ge=1, le=max_rows)]),
            ("columns", columns),
        ],
        forbid_unknown_fields=True,
    )
    return msgspec.json.Decoder(message)


def _strings(values: list[str | None] | None, name: str) -> list[str] | None:
    """ "" where null; [] when no row has the field; None when a pattern fails."""
    if values is None:
        return []
    distinct = set(values)
    distinct.discard(None)
    if not distinct:
        return []
    if not patterns_ok(list(distinct), rules_for("prediction").strings[name]):
        return None
    return [v if v is not None else "" for v in values] if None in values else values  # type: ignore[return-value]  # no None left


def _numbers(values: list[float | None] | None, n: int) -> np.ndarray:
    """NaN where null; empty when no row has the field."""
    if values is None or values.count(None) == n:
        return np.zeros(0)
    return np.array(values, dtype=np.float64)  # None becomes NaN


def _flags(values: list[bool | None] | None, default: bool, n: int) -> np.ndarray:
    if values is None or values.count(None) == n:
        return np.zeros(0, dtype=bool)
    filled = values if None not in values else [default if v is None else v for v in values]
    return np.fromiter(filled, bool, n)


def _slices(slices: dict[str, list[str | None]], n: int) -> dict[str, list[str | None]] | None:
    rules = rules_for("prediction")
    if len(slices) > rules.slice_max_properties:
        return None
    if slices and not strings_ok(list(slices), rules.slice_key):
        return None
    for values in slices.values():
        if len(values) != n:
            return None
        distinct = set(values)
        distinct.discard(None)
        if not patterns_ok(list(distinct), rules.slice_value):
            return None
    return slices


def typed_columns(value: bytes, max_ts: float = math.inf) -> PredictionBatch | None:
    """The batch of a columnar message whose every row is a valid prediction; else None."""
    try:
        message = _decoder().decode(value)
    except (msgspec.DecodeError, ValueError, RecursionError):
        return None
    n, c = message.n, message.columns
    given = [getattr(c, name) for name in _OPTIONAL]
    required = [c.event_id, c.request_id, c.ts, c.deployment, c.model_version, c.role, c.score]
    if any(len(values) != n for values in required) or any(
        values is not None and len(values) != n for values in given
    ):
        return None
    ts = np.array(c.ts, dtype=np.float64)
    slices = _slices(c.slice, n)
    if ts.max() > max_ts or slices is None:
        return None
    if not patterns_ok(c.deployment, rules_for("prediction").strings["deployment"]):
        return None
    strings = {
        name: _strings(getattr(c, name), name)
        for name in ("allocation", "feature_schema", "replica_id", "env_fingerprint")
    }
    allocation, feature_schema, replica_id, fingerprint = strings.values()
    if allocation is None or feature_schema is None or replica_id is None or fingerprint is None:
        return None
    error = _flags(c.error, False, n)
    error, allocation = error_and_allocation(error, allocation, n)
    latency = _numbers(c.latency_ms, n)
    items = c.items if c.items is not None and c.items.count(None) != n else []
    return PredictionBatch(
        event_id=c.event_id,
        request_id=c.request_id,
        ts=ts,
        deployment=c.deployment,
        model_version=c.model_version,
        role=np.fromiter(map(ROLE_CODE.__getitem__, c.role), np.int8, n),
        score=np.array(c.score, dtype=np.float64),
        latency_ms=latency if len(latency) else np.full(n, math.nan),
        slice=[] if slices else [{}] * n,
        items=items,
        error=error,
        allocation=allocation,
        feature_schema=feature_schema,
        replica_id=replica_id,
        replica_age_s=_numbers(c.replica_age_s, n),
        replica_ready=_flags(c.replica_ready, True, n),
        env_fingerprint=fingerprint,
        slice_columns=slices,
    )
