"""Validate one event against its kind's JSON Schema, naming the field that fails.

The exact, per-event check that the batch paths (:mod:`.batch_rows`, :mod:`.typed_rows`,
:mod:`.typed_columns`) fall back to when a whole-batch check fails: it raises
:class:`~streamguard.contracts.exceptions.DecodeError` with the reason (one of
:data:`~streamguard.contracts.decode.REASONS`) and a detail that names the field.

Examples
--------
>>> try:
...     validate_event({"kind": "outcome", "schema_version": 1, "event_id": "e1"})
... except DecodeError as exc:
...     print(exc.reason, "|", exc.detail)
missing_field | missing request_id, ts, deployment, value
>>> validate_event({"kind": "outcome", "schema_version": 1, "event_id": "e1", "request_id": "r1",
...                 "ts": 1790000000.0, "deployment": "home-ranker", "value": 1.0})
'outcome'
"""

import math
from typing import Any

from streamguard.contracts.exceptions import DecodeError
from streamguard.contracts.schemas import FieldRule, KindRules, rules_for, training_rules

__all__ = ["check_version", "validate_event"]

_NUMBER = (int, float)


def _is_number(value: object) -> bool:
    # JSON Schema numbers exclude booleans, which Python treats as ints.
    return type(value) in _NUMBER


def _check_double(name: str, value: int | float) -> None:
    # Parsed JSON never holds such integers (orjson reads them as doubles or refuses them), but
    # objects handed to decode_events may; the columnar batch could not hold them.
    try:
        float(value)
    except OverflowError:
        raise DecodeError("bad_value", f"{name} is beyond the range of a double") from None


def _check_number(name: str, value: object, *, negative: bool = True) -> None:
    """A JSON number within a double's range (and not below 0 unless ``negative``)."""
    if not _is_number(value):
        raise DecodeError("wrong_type", f"{name} must be a number, got {value!r:.40}")
    assert isinstance(value, int | float)  # _is_number: exactly int or float
    _check_double(name, value)
    if not negative and value < 0:
        raise DecodeError("bad_value", f"{name}={value!r} is negative")


def _check_string(name: str, value: object, rule: FieldRule) -> str:
    if type(value) is not str:
        raise DecodeError("wrong_type", f"{name} must be a string, got {type(value).__name__}")
    if not rule.min_length <= len(value) <= rule.max_length:
        raise DecodeError(
            "bad_value",
            f"{name} length {len(value)} outside [{rule.min_length}, {rule.max_length}]",
        )
    if rule.enum is not None and value not in rule.enum:
        raise DecodeError("bad_value", f"{name}={value!r} is not one of {sorted(rule.enum)}")
    if rule.pattern is not None and rule.pattern.search(value) is None:
        raise DecodeError("bad_value", f"{name}={value!r} does not match {rule.pattern.pattern}")
    return value


def check_version(event: dict[str, Any]) -> None:
    """Raise ``unsupported_version`` unless ``schema_version`` is 1 (an envelope's too)."""
    version = event.get("schema_version")
    if not _is_number(version) or version != 1:
        raise DecodeError("unsupported_version", f"schema_version {version!r} is not supported")


def _check_common(event: dict[str, Any], rules: KindRules, max_ts: float) -> None:
    missing = [name for name in rules.required if name not in event]
    if missing:
        raise DecodeError("missing_field", f"missing {', '.join(missing)}")
    check_version(event)
    for name, rule in rules.strings.items():
        if name in event:
            _check_string(name, event[name], rule)
    ts = event["ts"]
    if not _is_number(ts):
        raise DecodeError("wrong_type", f"ts must be a number, got {type(ts).__name__}")
    _check_double("ts", ts)
    if ts < rules.ts_minimum:
        raise DecodeError("bad_value", f"ts={ts!r} is below {rules.ts_minimum}")
    if ts > max_ts:
        raise DecodeError("ts_in_future", f"ts={ts!r} is later than the accepted bound {max_ts}")


def _check_prediction(event: dict[str, Any], rules: KindRules, max_ts: float) -> None:
    _check_common(event, rules, max_ts)
    _check_number("score", event["score"])
    if "latency_ms" in event:
        _check_number("latency_ms", event["latency_ms"], negative=False)
    slice_ = event["slice"]
    if type(slice_) is not dict:
        raise DecodeError("wrong_type", "slice must be an object")
    if len(slice_) > rules.slice_max_properties:
        raise DecodeError("bad_value", f"slice has {len(slice_)} dimensions, more than allowed")
    for key, value in slice_.items():
        _check_string("slice key", key, rules.slice_key)
        _check_string(f"slice.{key}", value, rules.slice_value)
    if "error" in event and type(event["error"]) is not bool:
        raise DecodeError("wrong_type", f"error must be true or false, got {event['error']!r:.40}")
    if "replica_age_s" in event:
        _check_number("replica_age_s", event["replica_age_s"], negative=False)
    if "replica_ready" in event and type(event["replica_ready"]) is not bool:
        ready = event["replica_ready"]
        raise DecodeError("wrong_type", f"replica_ready must be true or false, got {ready!r:.40}")
    if "items" in event:
        items = event["items"]
        if type(items) is not list:
            raise DecodeError("wrong_type", "items must be an array")
        if len(items) > rules.items_max:
            raise DecodeError("bad_value", f"items has {len(items)} entries, more than allowed")
        for item in items:
            _check_string("items[]", item, rules.item)


def _check_outcome(event: dict[str, Any], rules: KindRules, max_ts: float) -> None:
    _check_common(event, rules, max_ts)
    _check_number("value", event["value"])


def _check_training(event: dict[str, Any]) -> None:
    rules = training_rules()
    missing = [name for name in rules.required if name not in event]
    if missing:
        raise DecodeError("missing_field", f"missing {', '.join(missing)}")
    check_version(event)
    for name, rule in rules.strings.items():
        _check_string(name, event[name], rule)
    _check_number("label_ts", event["label_ts"], negative=False)
    features = event["feature_ts"]
    if type(features) is not dict:
        raise DecodeError("wrong_type", "feature_ts must be an object of feature -> timestamp")
    if len(features) > rules.max_features:
        raise DecodeError("bad_value", f"feature_ts has {len(features)} features, too many")
    for name, ts in features.items():
        _check_string("feature_ts key", name, rules.feature_name)
        _check_number(f"feature_ts.{name:.40}", ts, negative=False)


def validate_event(event: object, max_ts: float = math.inf) -> str:
    """Validate one event exactly and return its kind.

    Raises
    ------
    DecodeError
        With the reason and a detail naming the field.
    """
    if type(event) is not dict:
        raise DecodeError("not_an_object", f"event is a JSON {type(event).__name__}, not an object")
    kind = event.get("kind")
    if kind == "prediction":
        _check_prediction(event, rules_for("prediction"), max_ts)
    elif kind == "outcome":
        _check_outcome(event, rules_for("outcome"), max_ts)
    elif kind == "training_example":
        _check_training(event)
    else:
        raise DecodeError(
            "unknown_kind", f"kind {kind!r:.40} is not prediction, outcome or training_example"
        )
    return str(kind)
