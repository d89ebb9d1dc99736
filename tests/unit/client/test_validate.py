"""The hand-written command check agrees with the JSON Schema it stands in for."""

from typing import Any

import jsonschema
import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from streamguard.client import parse_command, validate_command
from streamguard.client.validate import DecodeError
from streamguard.contracts import Command, load_schema

VALID = Command(
    "rollback", "home-ranker", "v2", "shadow", {"platform": "ios"}, {"p": 1e-4}, 1790000300.0
).to_dict() | {"reason": "deviation above bound"}

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=40),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3)
    ),
    max_leaves=6,
)
field_names = st.sampled_from([*VALID, "signature", "extra"])
interesting: st.SearchStrategy[Any] = st.sampled_from(
    [
        1,
        1.0,
        True,
        0,
        "",
        "x",
        "pause",
        "resume",
        "a" * 32,
        "0" * 32,
        "0" * 31,
        "0" * 32 + "\n",
        None,
        {},
        {"k": "v"},
        {"k": 1},
        [],
        1790000300,
    ]
)


def schema_accepts(raw: Any) -> bool:
    return jsonschema.Draft202012Validator(load_schema("command")).is_valid(raw)


def ours_accepts(raw: Any) -> bool:
    try:
        validate_command(raw)
    except DecodeError:
        return False
    return True


@given(
    st.lists(
        st.tuples(st.sampled_from(["set", "delete"]), field_names, json_values | interesting),
        max_size=3,
    )
)
def test_agrees_with_jsonschema(mutations: list[tuple[str, str, Any]]) -> None:
    raw = dict(VALID)
    for op, name, value in mutations:
        if op == "delete":
            raw.pop(name, None)
        else:
            raw[name] = value
    assert ours_accepts(raw) == schema_accepts(raw)


def test_valid_command_round_trips() -> None:
    command = validate_command(VALID)
    assert command.to_dict() == VALID
    assert parse_command(orjson.dumps(VALID)) == command


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        (b"{", "invalid_json"),
        (None, "invalid_json"),
        (b"[]", "not_an_object"),
        (orjson.dumps({k: v for k, v in VALID.items() if k != "ts"}), "missing_field"),
        (orjson.dumps(VALID | {"unexpected": 1}), "unknown_field"),
        (orjson.dumps(VALID | {"schema_version": 2}), "unsupported_version"),
        (orjson.dumps(VALID | {"ts": "soon"}), "wrong_type"),
        (orjson.dumps(VALID | {"action": "explode"}), "bad_value"),
        (orjson.dumps(VALID | {"command_id": "XYZ"}), "bad_value"),
    ],
)
def test_rejections_name_their_reason(value: bytes | None, reason: str) -> None:
    with pytest.raises(DecodeError) as caught:
        parse_command(value)
    assert caught.value.reason == reason
