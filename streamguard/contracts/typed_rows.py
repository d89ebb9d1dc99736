"""Row envelopes parsed and checked in C (msgspec), straight into columnar batches.

:func:`typed_envelope` reads a row envelope of predictions and outcomes into typed structs
whose field types carry the schemas' types, enums, lengths and bounds, so parsing and nearly
all of validation are one pass in C with no dict per event. What msgspec is not asked to check
(regular-expression patterns, the ``max_ts`` bound) is checked afterwards over the batch, on
distinct values. Events with fields their schema does not name are declined too: msgspec
would skip such a field unchecked, where orjson refuses, say, a number beyond a double in it.
Any failure, whatever it is, gives None: the caller then decodes the message
as before (:func:`streamguard.contracts.decode.parse_message`), which names the culprit and
keeps its neighbours. So this path only ever accepts messages whose every event is valid, and
builds exactly the batches the other path would (a property test compares the two).

Why: parsing a row envelope into Python dicts and checking each field across them was half the
engine's time on row envelopes (benchmarks/HISTORY.md).

Examples
--------
>>> import orjson
>>> event = {"schema_version": 1, "kind": "prediction", "event_id": "e1", "request_id": "r1",
...          "ts": 1790000000.0, "deployment": "home-ranker", "model_version": "v1",
...          "role": "shadow", "slice": {"platform": "ios"}, "score": 0.7}
>>> message = orjson.dumps({"schema_version": 1, "events": [event]})
>>> predictions, outcomes, n = typed_envelope(message)
>>> predictions.request_id, predictions.slice, len(outcomes), n
(['r1'], [{'platform': 'ios'}], 0, 1)
>>> typed_envelope(orjson.dumps({"schema_version": 1, "events": [{**event, "role": "x"}]}))
"""

import math
from functools import cache
from itertools import chain
from typing import Annotated, Any, Literal

import msgspec
import numpy as np
from msgspec.structs import astuple

from streamguard.contracts.checks import ROLE_CODE, error_and_allocation, strings_ok
from streamguard.contracts.events import OutcomeBatch, PredictionBatch
from streamguard.contracts.exceptions import ContractError
from streamguard.contracts.schemas import FieldRule, load_schema, rules_for

__all__ = ["number_type", "patterns_ok", "text_type", "typed_envelope"]

_UNSET = msgspec.UNSET
# The structs' field types are built at runtime from the schemas; as values of type Any these
# forms are what they are here, values, not annotations mypy could check.
_ANNOTATED: Any = Annotated
_LITERAL: Any = Literal
_DICT: Any = dict
_LIST: Any = list


def text_type(rule: FieldRule, *, pattern_after: bool = False) -> Any:
    """A string of the rule's lengths (msgspec counts code points, as JSON Schema does).

    A pattern is not handed to msgspec, which would run the regex on every value; the caller
    checks it after, on distinct values, and says so with ``pattern_after``. A schema that
    gives a pattern where the caller does not check one fails here, when the structs are built.
    """
    if rule.pattern is not None and not pattern_after:
        raise ContractError(f"pattern {rule.pattern.pattern!r} is not checked by the typed decoder")
    if rule.enum is not None:
        return _LITERAL[tuple(sorted(rule.enum))]
    return _ANNOTATED[str, msgspec.Meta(min_length=rule.min_length, max_length=rule.max_length)]


def number_type(prop: dict[str, Any]) -> Any:
    """A JSON number (msgspec's float takes integers, never booleans), with its minimum."""
    if "minimum" in prop:
        return _ANNOTATED[float, msgspec.Meta(ge=float(prop["minimum"]))]
    return float


def _struct(kind: str, required: list[tuple[str, Any]], optional: list[tuple[str, Any]]) -> Any:
    """A struct tagged by ``kind``; optional fields are UNSET when absent (not a default value,
    so that "absent everywhere" can be told from "given everywhere", as the batches need)."""
    schema = load_schema(kind)
    names = {name for name, _ in required} | {"kind", "schema_version"}
    known = names | {name for name, _ in optional}
    if (
        names != set(schema["required"])
        or known != set(schema["properties"])
        or schema.get("additionalProperties") is not True
    ):
        # A field added to the schema must be added here first (a test run catches it).
        raise ContractError(f"the typed decoder does not know the {kind} schema's fields")
    fields: list[tuple[str, Any] | tuple[str, Any, Any]] = [("schema_version", Literal[1])]
    fields += required
    fields += [(name, type_ | msgspec.UnsetType, _UNSET) for name, type_ in optional]
    return msgspec.defstruct(
        f"Typed{kind.title()}",
        fields,
        tag_field="kind",
        tag=kind,
        array_like=False,
        # The schemas allow other fields, but msgspec would skip them unchecked: a number
        # beyond a double or a UTF-8 surrogate there is invalid JSON for orjson. Events with
        # other fields take the dict path.
        forbid_unknown_fields=True,
        # Decoded events hold strings, numbers, a dict and a list, never a cycle: the garbage
        # collector need not track them (decoding ~10 % faster, and fewer objects to traverse).
        gc=False,
    )


@cache
def _types() -> tuple[Any, Any, msgspec.json.Decoder[Any]]:
    """The prediction and outcome structs, and the envelope's decoder."""
    props = load_schema("prediction")["properties"]
    rules = rules_for("prediction")
    s = rules.strings
    slice_type = _ANNOTATED[
        _DICT[
            text_type(rules.slice_key, pattern_after=True),
            text_type(rules.slice_value, pattern_after=True),
        ],
        msgspec.Meta(max_length=rules.slice_max_properties),
    ]
    items_type = _ANNOTATED[_LIST[text_type(rules.item)], msgspec.Meta(max_length=rules.items_max)]
    prediction = _struct(
        "prediction",
        [
            ("event_id", text_type(s["event_id"])),
            ("request_id", text_type(s["request_id"])),
            ("ts", number_type(props["ts"])),
            ("deployment", text_type(s["deployment"], pattern_after=True)),
            ("model_version", text_type(s["model_version"])),
            ("role", text_type(s["role"])),
            ("slice", slice_type),
            ("score", number_type(props["score"])),
        ],
        [
            ("latency_ms", number_type(props["latency_ms"])),
            ("items", items_type),
            ("error", bool),
            ("allocation", text_type(s["allocation"])),
            ("feature_schema", text_type(s["feature_schema"])),
            ("replica_id", text_type(s["replica_id"], pattern_after=True)),
            ("replica_age_s", number_type(props["replica_age_s"])),
            ("replica_ready", bool),
            ("env_fingerprint", text_type(s["env_fingerprint"])),
        ],
    )
    props = load_schema("outcome")["properties"]
    s = rules_for("outcome").strings
    outcome = _struct(
        "outcome",
        [
            ("event_id", text_type(s["event_id"])),
            ("request_id", text_type(s["request_id"])),
            ("ts", number_type(props["ts"])),
            ("deployment", text_type(s["deployment"], pattern_after=True)),
            ("value", number_type(props["value"])),
        ],
        [],
    )
    max_events = load_schema("envelope")["properties"]["events"]["maxItems"]
    envelope = msgspec.defstruct(
        "TypedEnvelope",
        [
            ("schema_version", Literal[1]),
            (
                "events",
                _ANNOTATED[_LIST[prediction | outcome], msgspec.Meta(max_length=max_events)],
            ),
        ],
        forbid_unknown_fields=True,  # the envelope schema allows no other field
    )
    return prediction, outcome, msgspec.json.Decoder(envelope)


def patterns_ok(values: list[Any], rule: FieldRule) -> bool:
    """The one check msgspec was not asked for (its lengths and enums it made already)."""
    return rule.pattern is None or not values or strings_ok(list(set(values)), rule)


def _columns(events: list[Any]) -> dict[str, list[Any]]:
    """Every field of the events (all of one struct type) as a column, UNSET where absent.

    One transposition in C (``astuple``, then ``zip``): half the time of a pass per field.
    """
    names = type(events[0]).__struct_fields__
    return dict(zip(names, map(list, zip(*map(astuple, events), strict=True)), strict=True))


def _given(column: list[Any]) -> int:
    """How many events gave the field (the others hold UNSET)."""
    return len(column) - column.count(_UNSET)


def _filled(column: list[Any], given: int, fill: Any) -> list[Any]:
    return column if given == len(column) else [fill if v is _UNSET else v for v in column]


def _optional_strings(column: list[Any], rule: FieldRule) -> list[str] | None:
    """ "" where absent, [] when no event has the field; None when a pattern fails."""
    given = _given(column)
    if not given:
        return []
    column = _filled(column, given, "")
    return column if patterns_ok([v for v in column if v], rule) else None


def _optional_numbers(column: list[Any], n: int) -> np.ndarray:
    """NaN where absent; empty when no event has the field."""
    given = _given(column)
    if not given:
        return np.zeros(0)
    return np.fromiter(_filled(column, given, math.nan), np.float64, n)


def _optional_flags(column: list[Any], default: bool, n: int) -> np.ndarray:
    given = _given(column)
    if not given:
        return np.zeros(0, dtype=bool)
    return np.fromiter(_filled(column, given, default), bool, n)


def _predictions(events: list[Any], max_ts: float) -> PredictionBatch | None:
    """The batch :func:`~streamguard.contracts.batch_rows.fast_predictions` would build."""
    rules = rules_for("prediction")
    n = len(events)
    c = _columns(events)
    ts = np.fromiter(c["ts"], np.float64, n)
    if ts.max() > max_ts:
        return None
    deployment = c["deployment"]
    slices: list[dict[str, str]] = c["slice"]
    keys = list(set(chain.from_iterable(slices)))
    values = list(set(chain.from_iterable(map(dict.values, slices))))
    if not (
        patterns_ok(deployment, rules.strings["deployment"])
        and patterns_ok(keys, rules.slice_key)
        and patterns_ok(values, rules.slice_value)
    ):
        return None
    latency = _optional_numbers(c["latency_ms"], n)
    items = c["items"]
    given_items = _given(items)
    error = _optional_flags(c["error"], False, n)
    allocation = _optional_strings(c["allocation"], rules.strings["allocation"])
    if allocation is None:
        return None
    error, allocation = error_and_allocation(error, allocation, n)
    strings = {
        name: _optional_strings(c[name], rules.strings[name])
        for name in ("feature_schema", "replica_id", "env_fingerprint")
    }
    feature_schema, replica_id, fingerprint = strings.values()
    if feature_schema is None or replica_id is None or fingerprint is None:
        return None
    return PredictionBatch(
        event_id=c["event_id"],
        request_id=c["request_id"],
        ts=ts,
        deployment=deployment,
        model_version=c["model_version"],
        role=np.fromiter(map(ROLE_CODE.__getitem__, c["role"]), np.int8, n),
        score=np.fromiter(c["score"], np.float64, n),
        latency_ms=latency if len(latency) else np.full(n, math.nan),
        slice=slices,
        items=_filled(items, given_items, None) if given_items else [],
        error=error,
        allocation=allocation,
        feature_schema=feature_schema,
        replica_id=replica_id,
        replica_age_s=_optional_numbers(c["replica_age_s"], n),
        replica_ready=_optional_flags(c["replica_ready"], True, n),
        env_fingerprint=fingerprint,
    )


def _outcomes(events: list[Any], max_ts: float) -> OutcomeBatch | None:
    n = len(events)
    c = _columns(events)
    ts = np.fromiter(c["ts"], np.float64, n)
    deployment = c["deployment"]
    rule = rules_for("outcome").strings["deployment"]
    if ts.max() > max_ts or not patterns_ok(deployment, rule):
        return None
    value = np.fromiter(c["value"], np.float64, n)
    return OutcomeBatch(c["event_id"], c["request_id"], ts, deployment, value)


def typed_envelope(
    value: bytes, max_ts: float = math.inf
) -> tuple[PredictionBatch, OutcomeBatch, int] | None:
    """The predictions, outcomes and event count of a row envelope whose events are all valid
    predictions and outcomes; None for anything else (decode it the other way)."""
    prediction, outcome, decoder = _types()
    try:
        events: list[Any] = decoder.decode(value).events
    except (msgspec.DecodeError, ValueError, RecursionError):
        # ValidationError is a DecodeError; invalid UTF-8 raises UnicodeDecodeError.
        return None
    kinds = set(map(type, events))
    predictions = events if kinds == {prediction} else [e for e in events if type(e) is prediction]
    outcomes = [] if kinds == {prediction} else [e for e in events if type(e) is outcome]
    batch = _predictions(predictions, max_ts) if predictions else PredictionBatch.empty()
    outcome_batch = _outcomes(outcomes, max_ts) if outcomes else OutcomeBatch.empty()
    if batch is None or outcome_batch is None:
        return None
    return batch, outcome_batch, len(events)
