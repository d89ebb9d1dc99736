"""Check a control-topic message against the ``command`` schema without a JSON Schema library.

Required fields, the allowed field names, the action enum and the command_id pattern are read
from ``command.schema.json`` (so a schema change reaches the check); the type checks are written
out by hand. A unit test compares the result with ``jsonschema`` on valid and broken commands.

Versions: :func:`validate_command` is exactly schema version 1. :func:`validate_any_command` is
the tolerant reader consumers use: version 1 as above; version 2 (version 1 plus a
``signature`` block) and any later version are checked for the version-1 fields, with the same
rules, and every other field is ignored. A later streamguard can therefore add fields, and
streamguard can be rolled back to an older version, without stranding a consumer. The
signature itself is checked by :mod:`streamguard.security`, which covers all fields.

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
>>> future = good.to_dict() | {"schema_version": 3, "priority": "high"}
>>> validate_any_command(future) == good
True
"""

import re
from dataclasses import dataclass
from functools import cache
from typing import Any

import orjson

from streamguard.contracts import Command, DecodeError, load_schema

__all__ = [
    "FIRST_TOLERANT_VERSION",
    "DecodeError",
    "parse_command",
    "parse_json",
    "validate_any_command",
    "validate_command",
]

_NUMBER = (int, float)  # JSON numbers; bool is excluded by comparing exact types

#: From this schema version on, fields a reader does not know are ignored (tolerant reader).
FIRST_TOLERANT_VERSION = 2


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
    return _known_fields(raw, rules)


def _known_fields(raw: dict[str, Any], rules: _Rules) -> Command:
    """Check the version-1 fields' values and build the command from them."""
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


def _tolerant_version(version: object) -> bool:
    """True for a whole number >= FIRST_TOLERANT_VERSION (2 and 2.0 alike, as JSON has it)."""
    if isinstance(version, bool):
        return False
    if isinstance(version, int):
        return version >= FIRST_TOLERANT_VERSION
    return isinstance(version, float) and version.is_integer() and version >= FIRST_TOLERANT_VERSION


def validate_any_command(raw: object) -> Command:
    """Return the command a parsed JSON value of any supported schema version holds.

    Version 1 is checked as :func:`validate_command` does. Versions 2 and later need the same
    fields with the same rules; fields a reader does not know are ignored, not refused.

    Raises
    ------
    DecodeError
        As :func:`validate_command`; ``unsupported_version`` for a version that is not a whole
        number >= 1.
    """
    if type(raw) is not dict:
        raise DecodeError("not_an_object", f"command is a JSON {type(raw).__name__}, not an object")
    if not _tolerant_version(raw.get("schema_version")):
        return validate_command(raw)
    rules = _rules()
    missing = [name for name in rules.required if name not in raw]
    if missing:
        raise DecodeError("missing_field", f"missing {', '.join(missing)}")
    return _known_fields(raw, rules)


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
