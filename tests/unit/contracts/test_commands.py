"""Command ids, serialisation and alerts against their JSON Schemas."""

import string
from typing import Any

import jsonschema
import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from streamguard.contracts import Command, alert_for, command_id, load_schema, slice_label
from streamguard.contracts.commands import ACTIONS

COMMAND_SCHEMA = jsonschema.Draft202012Validator(load_schema("command"))
ALERT_SCHEMA = jsonschema.Draft202012Validator(load_schema("alert"))

names = st.text(min_size=1, max_size=20)
dims = st.text(string.ascii_letters + string.digits + "_.-", min_size=1, max_size=8)
dim_values = st.text(st.characters(exclude_characters="=,|", codec="utf-8"), min_size=1, max_size=8)
slices = st.none() | st.dictionaries(dims, dim_values, min_size=1, max_size=4)
timestamps = st.floats(0, 4e9) | st.integers(0, 2**40)
json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**63 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=10),
    lambda c: st.lists(c, max_size=3) | st.dictionaries(st.text(max_size=5), c, max_size=3),
    max_leaves=8,
)
evidence = st.dictionaries(st.text(max_size=8), json_values, max_size=5)
identities = st.tuples(names, names, names, slices, st.sampled_from(ACTIONS), timestamps)


@given(identities)
def test_command_id_is_deterministic_hex(identity: tuple[Any, ...]) -> None:
    first = command_id(*identity)
    assert first == command_id(*identity)
    assert len(first) == 32
    assert set(first) <= set("0123456789abcdef")


@settings(max_examples=100)
@given(identities, st.integers(0, 5), st.data())
def test_command_id_changes_with_each_part(
    identity: tuple[Any, ...], position: int, data: st.DataObject
) -> None:
    strategy = [names, names, names, slices, st.sampled_from(ACTIONS), timestamps][position]
    if position == 3:
        other = data.draw(slices.filter(lambda s: slice_label(s) != slice_label(identity[3])))
    elif position == 5:
        other = data.draw(strategy.filter(lambda t: float(t) != float(identity[5])))
    else:
        other = data.draw(strategy.filter(lambda v: v != identity[position]))
    changed = list(identity)
    changed[position] = other
    assert command_id(*changed) != command_id(*identity)


def test_command_id_ignores_slice_order_and_number_type() -> None:
    a = command_id("d", "v", "shadow", {"tier": "free", "platform": "ios"}, "pause", 100)
    b = command_id("d", "v", "shadow", {"platform": "ios", "tier": "free"}, "pause", 100.0)
    assert a == b
    # The whole deployment has one spelling: no slice and the empty slice are the same.
    assert command_id("d", "v", "g", None, "pause", 1.0) == command_id(
        "d", "v", "g", {}, "pause", 1.0
    )


def test_slice_label_is_canonical() -> None:
    assert slice_label(None) == "*"
    assert slice_label({"tier": "free", "platform": "ios"}) == "platform=ios,tier=free"


commands = st.builds(
    Command,
    action=st.sampled_from(ACTIONS),
    deployment=names,
    model_version=names,
    guard=names,
    slice=slices,
    evidence=evidence,
    ts=st.floats(0, 4e9),
    reason=st.just("") | st.text(max_size=30),
)


@settings(max_examples=100)
@given(commands)
def test_command_json_round_trips(command: Command) -> None:
    raw = orjson.loads(command.to_json())
    assert Command.from_dict(raw) == command
    assert Command.from_dict(raw).to_json() == command.to_json()
    assert raw["command_id"] == command_id(
        command.deployment,
        command.model_version,
        command.guard,
        command.slice,
        command.action,
        command.ts,
    )
    assert ("reason" in raw) == bool(command.reason)


@settings(max_examples=100)
@given(commands)
def test_command_json_meets_its_schema(command: Command) -> None:
    raw = orjson.loads(command.to_json())
    COMMAND_SCHEMA.validate(raw)


def test_command_json_is_canonical_bytes() -> None:
    a = Command("pause", "d", "v", "shadow", {"b": "2", "a": "1"}, {"y": 1, "x": 2}, 10.0)
    b = Command("pause", "d", "v", "shadow", {"a": "1", "b": "2"}, {"x": 2, "y": 1}, 10.0)
    assert a.to_json() == b.to_json()


@settings(max_examples=100)
@given(commands, st.text(max_size=60))
def test_alert_meets_its_schema(command: Command, summary: str) -> None:
    alert = alert_for(command, summary)
    ALERT_SCHEMA.validate(orjson.loads(alert.to_json()))
    assert alert.command_id == command.command_id
    assert alert.alert_id != command.command_id
    assert alert == alert_for(command, summary)
    expected = "critical" if command.action in ("rollback", "block") else "warning"
    assert alert.severity == expected
    assert (alert.evidence, alert.slice, alert.ts) == (command.evidence, command.slice, command.ts)


@pytest.mark.parametrize("action", ACTIONS)
def test_schema_actions_are_the_known_actions(action: str) -> None:
    assert action in load_schema("command")["properties"]["action"]["enum"]
