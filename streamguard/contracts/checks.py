"""Whole-column checks shared by the row and the columnar decoders.

Each takes one list of values (a field of every event) and answers with C-level builtins
(``set``, ``map``) whether all of them satisfy a rule of the JSON Schema, so the decoders only
look at single events when a column fails.
"""

from typing import Any

import numpy as np

from streamguard.contracts.events import ROLES
from streamguard.contracts.schemas import FieldRule, KindRules

__all__ = [
    "ABSENT",
    "ROLE_CODE",
    "error_and_allocation",
    "numbers",
    "prediction_core",
    "strings_ok",
    "versions_ok",
]

#: Role codes by name (the enum of the schema's ``role``).
ROLE_CODE = {name: code for code, name in enumerate(ROLES)}
#: Default of optional fields: no JSON value is this object.
ABSENT = object()


def strings_ok(values: list[Any], rule: FieldRule) -> bool:
    """True when every value is a string of the rule's length, enum and pattern."""
    if rule.enum is None and rule.pattern is None:
        # Ids (event, request): types and lengths only, with no set of the (distinct) values,
        # whose hashing was most of the check.
        if set(map(type, values)) != {str}:
            return False
        sizes = set(map(len, values))
        return min(sizes) >= rule.min_length and max(sizes) <= rule.max_length
    # Checked once per distinct value: deployments, versions and roles have few distinct
    # values per batch.
    try:
        distinct = set(values)
    except TypeError:  # an unhashable value (array, object) is not a string
        return False
    if set(map(type, distinct)) != {str}:
        return False
    lengths = list(map(len, distinct))
    if min(lengths) < rule.min_length or max(lengths) > rule.max_length:
        return False
    if rule.enum is not None and not distinct <= rule.enum:
        return False
    return rule.pattern is None or all(rule.pattern.search(v) for v in distinct)


def numbers(values: list[Any]) -> np.ndarray | None:
    """The values as float64, or None when one is not a JSON number (or exceeds a double)."""
    if not set(map(type, values)) <= {int, float}:
        return None
    try:
        return np.asarray(values, dtype=np.float64)
    except OverflowError:  # an integer too large for a float64
        return None


def versions_ok(versions: list[Any]) -> bool:
    """True when every ``schema_version`` is the number 1."""
    return not (set(map(type, versions)) - {int, float}) and set(versions) == {1}


def prediction_core(
    columns: dict[str, Any], rules: KindRules, max_ts: float
) -> tuple[np.ndarray, np.ndarray] | None:
    """``ts`` and ``score`` of predictions whose required strings and numbers all pass."""
    for name in ("event_id", "request_id", "deployment", "model_version", "role"):
        if not strings_ok(columns[name], rules.strings[name]):
            return None
    ts, score = numbers(columns["ts"]), numbers(columns["score"])
    if ts is None or score is None or ts.min() < rules.ts_minimum or ts.max() > max_ts:
        return None
    return ts, score


def error_and_allocation(
    error: np.ndarray, allocation: list[str], n: int
) -> tuple[np.ndarray, list[str]]:
    """Both columns at full length (False and "" where absent) when any event gives either.

    The canary guards read the two together; batches from rows always had it so, and the
    columnar and typed decoders must build the same batches.
    """
    if not len(error) and not allocation:
        return error, allocation
    return (error if len(error) else np.zeros(n, dtype=bool)), (allocation or [""] * n)
