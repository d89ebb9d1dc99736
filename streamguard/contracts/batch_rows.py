"""Whole-batch checks of a row envelope's events, straight into columnar batches.

Each field is checked for every event at once with C-level builtins (``map``, ``set``,
``itemgetter``, :func:`~streamguard.contracts.checks.numbers`). Any failure gives None, and
:mod:`.decode` then validates the events one by one, so the culprit is named and its
neighbours kept; when every event is valid the batch is exactly what per-event validation
would have built.
"""

import math
from itertools import chain
from operator import itemgetter, methodcaller
from typing import Any

import numpy as np

from streamguard.contracts.checks import (
    ABSENT,
    ROLE_CODE,
    error_and_allocation,
    numbers,
    prediction_core,
    strings_ok,
    versions_ok,
)
from streamguard.contracts.events import OutcomeBatch, PredictionBatch, TrainingBatch
from streamguard.contracts.schemas import FieldRule, KindRules, rules_for, training_rules

__all__ = ["fast_outcomes", "fast_predictions", "fast_training"]


def _required(events: list[dict[str, Any]], names: tuple[str, ...]) -> dict[str, list[Any]] | None:
    """One list per required field (C-level ``itemgetter``).

    None when an event lacks one or a ``schema_version`` is not one this version reads.
    """
    try:
        col = {name: list(map(itemgetter(name), events)) for name in names}
    except KeyError:
        return None
    return col if versions_ok(col["schema_version"]) else None


def _present(events: list[dict[str, Any]]) -> set[str]:
    """Every field name used by at least one event (one C-level pass over the keys)."""
    return set(chain.from_iterable(events))


def _optional(events: list[dict[str, Any]], name: str, absent: object) -> list[Any]:
    """Column of an optional field, ``absent`` where an event has none."""
    try:
        return list(map(itemgetter(name), events))
    except KeyError:
        return list(map(methodcaller("get", name, absent), events))


def _optional_numbers(
    events: list[dict[str, Any]], name: str, present: set[str]
) -> np.ndarray | None:
    """Non-negative numbers of an optional field, NaN where absent; empty if nowhere given.

    ``None`` when a value is not a number (an explicit null included) or is negative.
    """
    if name not in present:
        return np.zeros(0)
    parsed = numbers(_optional(events, name, math.nan))
    if parsed is None or bool((parsed < 0).any()):
        return None
    return parsed


def _optional_strings(
    events: list[dict[str, Any]], name: str, rule: FieldRule, present: set[str]
) -> list[str] | None:
    """Column of an optional string field ("" where absent), [] if absent everywhere."""
    if name not in present:
        return []
    column = _optional(events, name, ABSENT)
    try:
        distinct = set(column)
    except TypeError:  # an unhashable value (array, object) is not a string
        return None
    complete = ABSENT not in distinct
    distinct.discard(ABSENT)
    if not strings_ok(list(distinct), rule):
        return None
    return column if complete else list(map(methodcaller("get", name, ""), events))


def _optional_flags(
    events: list[dict[str, Any]], name: str, default: bool, present: set[str]
) -> np.ndarray | None:
    """Booleans of an optional field (``default`` where absent); empty if nowhere given."""
    if name not in present:
        return np.zeros(0, dtype=bool)
    flags = _optional(events, name, default)
    if set(map(type, flags)) != {bool}:
        return None
    return np.fromiter(flags, bool, len(flags))


def _fast_items(
    events: list[dict[str, Any]], rules: KindRules, present: set[str]
) -> list[list[str] | None] | None:
    if "items" not in present:
        return []
    items = _optional(events, "items", ABSENT)
    types = set(map(type, items))
    if not types <= {list, type(ABSENT)}:
        return None  # an explicit null, or not an array
    given = [v for v in items if v is not ABSENT]
    if max(map(len, given)) > rules.items_max:
        return None
    flat = list(chain.from_iterable(given))
    if flat and not strings_ok(flat, rules.item):
        return None
    return items if len(given) == len(items) else list(map(methodcaller("get", "items"), events))


def fast_predictions(events: list[dict[str, Any]], max_ts: float) -> PredictionBatch | None:
    """Build the batch if every event passes; return None to fall back to per-event checks."""
    rules = rules_for("prediction")
    col = _required(events, rules.required)
    if col is None:
        return None
    core = prediction_core(col, rules, max_ts)
    if core is None:
        return None
    ts, score = core
    slices: list[dict[str, str]] = col["slice"]
    if set(map(type, slices)) != {dict} or max(map(len, slices)) > rules.slice_max_properties:
        return None
    keys = list(set(chain.from_iterable(slices)))
    try:
        values = list(set(chain.from_iterable(map(dict.values, slices))))
    except TypeError:  # an unhashable value (array, object) is not a string either
        return None
    if (keys and not strings_ok(keys, rules.slice_key)) or (
        values and not strings_ok(values, rules.slice_value)
    ):
        return None
    present = _present(events)
    if "latency_ms" in present:
        latency = _optional_numbers(events, "latency_ms", present)
        if latency is None:
            return None
    else:
        latency = np.full(len(events), math.nan)
    items = _fast_items(events, rules, present)
    error = _optional_flags(events, "error", False, present)
    allocation = _optional_strings(events, "allocation", rules.strings["allocation"], present)
    feature_schema = _optional_strings(
        events, "feature_schema", rules.strings["feature_schema"], present
    )
    replica_id = _optional_strings(events, "replica_id", rules.strings["replica_id"], present)
    fingerprint = _optional_strings(
        events, "env_fingerprint", rules.strings["env_fingerprint"], present
    )
    ages = _optional_numbers(events, "replica_age_s", present)
    ready = _optional_flags(events, "replica_ready", True, present)
    if (
        items is None
        or error is None
        or allocation is None
        or feature_schema is None
        or replica_id is None
        or fingerprint is None
        or ages is None
        or ready is None
    ):
        return None
    error, allocation = error_and_allocation(error, allocation, len(events))
    return PredictionBatch(
        event_id=col["event_id"],
        request_id=col["request_id"],
        ts=ts,
        deployment=col["deployment"],
        model_version=col["model_version"],
        role=np.fromiter(map(ROLE_CODE.__getitem__, col["role"]), np.int8, len(events)),
        score=score,
        latency_ms=latency,
        slice=slices,
        items=items,
        error=error,
        allocation=allocation,
        feature_schema=feature_schema,
        replica_id=replica_id,
        replica_age_s=ages,
        replica_ready=ready,
        env_fingerprint=fingerprint,
    )


def fast_outcomes(events: list[dict[str, Any]], max_ts: float) -> OutcomeBatch | None:
    """Columns of outcome events; None to fall back to per-event checks."""
    rules = rules_for("outcome")
    col = _required(events, rules.required)
    if col is None:
        return None
    for name in ("event_id", "request_id", "deployment"):
        if not strings_ok(col[name], rules.strings[name]):
            return None
    ts = numbers(col["ts"])
    value = numbers(col["value"])
    if ts is None or value is None or ts.min() < rules.ts_minimum or ts.max() > max_ts:
        return None
    return OutcomeBatch(col["event_id"], col["request_id"], ts, col["deployment"], value)


def fast_training(events: list[dict[str, Any]]) -> TrainingBatch | None:
    """Columns of training examples, features flattened; None to fall back to per-event checks."""
    rules = training_rules()
    col = _required(events, rules.required)
    if col is None:
        return None
    for name, rule in rules.strings.items():
        if not strings_ok(col[name], rule):
            return None
    label_ts = numbers(col["label_ts"])
    if label_ts is None or label_ts.min() < 0:
        return None
    features: list[dict[str, Any]] = col["feature_ts"]
    if set(map(type, features)) != {dict}:
        return None
    sizes = list(map(len, features))
    if max(sizes) > rules.max_features:
        return None
    names = list(chain.from_iterable(features))
    if names:
        if not strings_ok(list(set(names)), rules.feature_name):
            return None
        feature_ts = numbers(list(chain.from_iterable(map(dict.values, features))))
        if feature_ts is None or feature_ts.min() < 0:
            return None
    else:
        feature_ts = np.empty(0)
    return TrainingBatch(
        event_id=col["event_id"],
        pipeline=col["pipeline"],
        example_id=col["example_id"],
        label_ts=label_ts,
        feature_row=np.repeat(np.arange(len(events), dtype=np.intp), sizes),
        feature_name=names,
        feature_ts=feature_ts,
    )
