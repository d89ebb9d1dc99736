"""JSON Schemas of every message kind, and the constraints the fast decoder takes from them.

The decoder does not call a JSON Schema validator per event (that costs tens of microseconds);
it reads enums, lengths and required fields from the schema files once, and a property test
checks that it accepts exactly what ``jsonschema`` accepts.
"""

import re
from dataclasses import dataclass
from functools import cache
from typing import Any

import orjson

from streamguard.contracts.exceptions import ContractError
from streamguard.contracts.location import contracts_dir

__all__ = [
    "FieldRule",
    "KindRules",
    "TrainingRules",
    "load_schema",
    "rules_for",
    "string_rule",
    "training_rules",
]


@cache
def load_schema(kind: str) -> dict[str, Any]:
    """Return the parsed JSON Schema of a message kind (``prediction``, ``command``, ...)."""
    path = contracts_dir() / "schemas" / f"{kind}.schema.json"
    try:
        schema: dict[str, Any] = orjson.loads(path.read_bytes())
    except (OSError, orjson.JSONDecodeError) as exc:
        raise ContractError(f"cannot read schema {path.name}: {exc}") from exc
    return schema


@dataclass(frozen=True, slots=True)
class FieldRule:
    """What one top-level string field must satisfy."""

    min_length: int
    max_length: int
    pattern: re.Pattern[str] | None
    enum: frozenset[str] | None


@dataclass(frozen=True, slots=True)
class KindRules:
    """Constraints of one event kind, read from its schema."""

    required: tuple[str, ...]
    strings: dict[str, FieldRule]
    slice_max_properties: int
    slice_key: FieldRule
    slice_value: FieldRule
    items_max: int
    item: FieldRule
    ts_minimum: float


def string_rule(prop: dict[str, Any]) -> FieldRule:
    """The constraints of one string property of a JSON Schema."""
    pattern = prop.get("pattern")
    enum = prop.get("enum")
    return FieldRule(
        min_length=int(prop.get("minLength", 0)),
        max_length=int(prop.get("maxLength", 1 << 20)),
        pattern=re.compile(pattern) if pattern else None,
        enum=frozenset(enum) if enum else None,
    )


@cache
def rules_for(kind: str) -> KindRules:
    """Derive the decoder's constraints for ``prediction`` or ``outcome`` from its schema."""
    schema = load_schema(kind)
    props: dict[str, Any] = schema["properties"]
    strings = {
        name: string_rule(prop)
        for name, prop in props.items()
        if prop.get("type") == "string" or "enum" in prop
    }
    slice_prop = props.get("slice", {})
    items_prop = props.get("items", {})
    return KindRules(
        required=tuple(schema["required"]),
        strings=strings,
        slice_max_properties=int(slice_prop.get("maxProperties", 0)),
        slice_key=string_rule(slice_prop.get("propertyNames", {})),
        slice_value=string_rule(slice_prop.get("additionalProperties", {})),
        items_max=int(items_prop.get("maxItems", 0)),
        item=string_rule(items_prop.get("items", {})),
        ts_minimum=float(props["ts"].get("minimum", 0.0)),
    )


@dataclass(frozen=True, slots=True)
class TrainingRules:
    """Constraints of a training example, read from its schema."""

    required: tuple[str, ...]
    strings: dict[str, FieldRule]
    max_features: int
    feature_name: FieldRule


@cache
def training_rules() -> TrainingRules:
    """Derive the decoder's constraints for ``training_example`` from its schema."""
    schema = load_schema("training_example")
    props: dict[str, Any] = schema["properties"]
    features = props["feature_ts"]
    return TrainingRules(
        required=tuple(schema["required"]),
        strings={n: string_rule(props[n]) for n in ("event_id", "pipeline", "example_id")},
        max_features=int(features["maxProperties"]),
        feature_name=string_rule(features["propertyNames"]),
    )
