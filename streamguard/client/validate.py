"""Check a control-topic message against the ``command`` schema without a JSON Schema library.

Required fields, the allowed field names, the action enum and the command_id pattern are read
from ``command.schema.json`` (so a schema change reaches the check); the type checks are written
out by hand. A unit test compares the result with ``jsonschema`` on valid and broken commands.

Examples
--------
>>> from streamguard.contracts import Command
>>> good = Command("pause", "home-ranker", "v2", "shadow", None, {}, 1790000300.0)
>>> parse_command(good.to_json()) == good
True
>>> try:
...     parse_command(b'{"schema_version": 1}')
... except DecodeError as exc:
...     print(exc.reason)
missing_field
"""

import re
from dataclasses import dataclass
from functools import cache
from typing import Any

import orjson

from streamguard.contracts import Command, DecodeError, load_schema

__all__ = ["DecodeError", "parse_command", "parse_json", "validate_command"]

_NUMBER = (int, float)  # JSON numbers; bool is excluded by comparing exact types


@dataclass(frozen=True, slots=True)
class _Rules:
    required: tuple[str, ...]
    allowed: frozenset[str]
    actions: frozenset[str]
    command_id: re.Pattern[str]


@cache
def _rules() -> _Rules:
    schema = load_schema("command")
    props: dict[str, Any] = schema["properties"]
    return _Rules(
        required=tuple(schema["required"]),
        allowed=frozenset(props),
        actions=frozenset(props["action"]["enum"]),
        command_id=re.compile(props["command_id"]["pattern"]),
    )


def _text(raw: dict[str, Any], name: str) -> None:
    value = raw[name]
    if type(value) is not str:
        raise DecodeError("wrong_type", f"{name} must be a string, got {type(value).__name__}")
    if not value:
        raise DecodeError("bad_value", f"{name} must not be empty")


def validate_command(raw: object) -> Command:
    """Return the command a parsed JSON value holds.

    Raises
    ------
    DecodeError
        With reason ``not_an_object``, ``missing_field``, ``unknown_field``,
        ``unsupported_version``, ``wrong_type`` or ``bad_value`` and a detail naming the field.
    """
    if type(raw) is not dict:
        raise DecodeError("not_an_object", f"command is a JSON {type(raw).__name__}, not an object")
    rules = _rules()
    missing = [name for name in rules.required if name not in raw]
    if missing:
        raise DecodeError("missing_field", f"missing {', '.join(missing)}")
    unknown = sorted(set(raw) - rules.allowed)
    if unknown:
        raise DecodeError("unknown_field", f"unexpected {', '.join(unknown)}")
    version = raw["schema_version"]
    if type(version) not in _NUMBER or version != 1:
        raise DecodeError("unsupported_version", f"schema_version {version!r:.40} is not supported")
    _text(raw, "command_id")
    if not rules.command_id.search(raw["command_id"]):
        raise DecodeError("bad_value", f"command_id {raw['command_id']!r:.60} is not 32 hex digits")
    if type(raw["action"]) is not str or raw["action"] not in rules.actions:
        raise DecodeError(
            "bad_value", f"action {raw['action']!r:.40} is not {sorted(rules.actions)}"
        )
    for name in ("deployment", "model_version", "guard"):
        _text(raw, name)
    slice_ = raw["slice"]
    if slice_ is not None and (
        type(slice_) is not dict or any(type(v) is not str for v in slice_.values())
    ):
        raise DecodeError("wrong_type", "slice must be null or an object of strings")
    if type(raw["evidence"]) is not dict:
        raise DecodeError("wrong_type", "evidence must be an object")
    if type(raw["ts"]) not in _NUMBER:
        raise DecodeError("wrong_type", f"ts must be a number, got {type(raw['ts']).__name__}")
    if "reason" in raw and type(raw["reason"]) is not str:
        raise DecodeError("wrong_type", "reason must be a string")
    return Command.from_dict(raw)


def parse_json(data: bytes | None) -> object:
    """Parse a message value.

    Raises
    ------
    DecodeError
        ``invalid_json`` for bytes that are not JSON, or a message without a value.
    """
    if data is None:
        raise DecodeError("invalid_json", "message has no value")
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise DecodeError("invalid_json", str(exc)) from exc


def parse_command(data: bytes | None) -> Command:
    """Parse and validate one control-topic message value.

    Raises
    ------
    DecodeError
        As :func:`parse_json`, then as :func:`validate_command`.
    """
    return validate_command(parse_json(data))
