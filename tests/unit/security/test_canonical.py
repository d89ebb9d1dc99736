"""Canonical JSON: equal for every re-serialisation of a message, strict about what is JSON."""

import json
import random
import re
from typing import Any

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from streamguard.security import CanonicalError, canonical_bytes

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**64 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=10),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner),
    max_leaves=12,
)


def shuffled(value: Any, rng: random.Random) -> Any:
    """The same JSON value with every object's keys in a random order."""
    if isinstance(value, dict):
        items = list(value.items())
        rng.shuffle(items)
        return {k: shuffled(v, rng) for k, v in items}
    if isinstance(value, list):
        return [shuffled(v, rng) for v in value]
    return value


def javascript_numbers(value: Any) -> Any:
    """What a JavaScript hop does to numbers: integral doubles come back as integers."""
    if isinstance(value, dict):
        return {k: javascript_numbers(v) for k, v in value.items()}
    if isinstance(value, list):
        return [javascript_numbers(v) for v in value]
    # Beyond 2**63 a JavaScript hop still prints digits, but no 64-bit JSON parser reads them back.
    if isinstance(value, float) and value.is_integer() and abs(value) < 2**63:
        return int(value)
    return value


@given(json_values, st.randoms(use_true_random=False))
def test_re_serialising_does_not_change_the_canonical_bytes(value: Any, rng: random.Random) -> None:
    expected = canonical_bytes(value)
    # Another library, other key order, indentation and escaping, then parsed back.
    pretty = json.dumps(shuffled(value, rng), indent=rng.choice([None, 1, 4]), ensure_ascii=True)
    assert canonical_bytes(json.loads(pretty)) == expected
    assert canonical_bytes(orjson.loads(orjson.dumps(shuffled(value, rng)))) == expected
    assert canonical_bytes(orjson.loads(orjson.dumps(javascript_numbers(value)))) == expected


@given(json_values)
def test_canonical_bytes_hold_the_same_value_and_are_a_fixed_point(value: Any) -> None:
    encoded = canonical_bytes(value)
    assert orjson.loads(encoded) == value  # 1 == 1.0: numbers keep their value
    assert canonical_bytes(orjson.loads(encoded)) == encoded


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ({"b": 1, "a": 2}, b'{"a":2,"b":1}'),
        ({"z": {"y": [1, 2], "x": None}}, b'{"z":{"x":null,"y":[1,2]}}'),
        ([1.0, -0.0, 1e16, 2.0**64], b"[1,0,10000000000000000,1.8446744073709552e+19]"),
        ([0.1, 1e-7, 1e300, 0.30000000000000004], b"[0.1,1e-7,1e+300,0.30000000000000004]"),
        ([True, False, None], b"[true,false,null]"),
        ({"é": "\n\u2028\x01"}, '{"é":"\\n\u2028\\u0001"}'.encode()),
        ({"\uffff": 1, "\U0001f600": 2, "a": 3}, '{"a":3,"\uffff":1,"\U0001f600":2}'.encode()),
        ((1, 2), b"[1,2]"),
    ],
    ids=["sorted", "nested", "integral", "shortest", "literals", "strings", "codepoint", "tuple"],
)
def test_rules(value: Any, expected: bytes) -> None:
    assert canonical_bytes(value) == expected


@pytest.mark.parametrize(
    ("value", "where"),
    [
        ({"a": float("nan")}, "$.a"),
        ([float("inf")], "$[0]"),
        ({1: "x"}, "$"),
        ({"a": [2**64]}, "$.a[0]"),
        ({"a": -(2**63) - 1}, "$.a"),
        ({"a": {1, 2}}, "$.a"),
        ({"a": b"bytes"}, "$.a"),
        ({"a": "\ud800"}, "$"),
    ],
    ids=["nan", "inf", "int-key", "too-big", "too-small", "set", "bytes", "surrogate"],
)
def test_what_is_not_json_is_refused_with_its_place(value: Any, where: str) -> None:
    with pytest.raises(CanonicalError, match=rf"^{re.escape(where)}:"):
        canonical_bytes(value)
