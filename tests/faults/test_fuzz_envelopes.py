"""Hypothesis damages large envelopes of valid events; the decoder keeps every good one.

Each damage is checked against the JSON Schema (does it make the event invalid?) and the decoder
must reject exactly the damaged events, with a reason, and keep the rest.
"""

import base64
import json
import random
import time
from collections import Counter
from typing import Any

import jsonschema
import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from streamguard.contracts import dead_letter, decode_message, load_schema
from streamguard.contracts.decode import MAX_MESSAGE_BYTES, REASONS, Decoded
from streamguard.sim import TrainingPipeline
from tests.faults.helpers import valid_events

KINDS = ("prediction", "outcome", "training_example")
SCHEMAS = {kind: load_schema(kind) for kind in KINDS}
PROPERTIES = {
    kind: {name: jsonschema.Draft202012Validator(sub) for name, sub in s["properties"].items()}
    for kind, s in SCHEMAS.items()
}
REQUIRED = {kind: frozenset(s["required"]) for kind, s in SCHEMAS.items()}
MAX_TS = time.time() + 300  # the worker's bound on event time (max_future_s)
STRING_FIELDS = sorted(
    {n for s in SCHEMAS.values() for n, p in s["properties"].items() if p.get("type") == "string"}
)
FIELDS = sorted({n for s in SCHEMAS.values() for n in s["properties"]} | {"note"})
WRONG: list[Any] = [None, True, False, 0, -1, 1.5, "", "x", [], {}, [1], {"a": "b"}, "1"]
WRONG += [2**64, 2**70, -(2**63), 1e308]  # orjson reads integers beyond 64 bits as doubles
VERSIONS: list[Any] = [0, 2, -1, 1.5, "1", True, None, [1], {"v": 1}, 2**70]
BAD_VALUES: list[tuple[str, Any]] = [
    ("ts", -5),
    ("latency_ms", -1.0),
    ("replica_age_s", -3),
    ("label_ts", -1),
    ("role", "judge"),
    ("role", "Primary"),
    ("slice", {"a=b": "x"}),
    ("slice", {"platform": "a,b"}),
    ("slice", {"platform": "a|b"}),
    ("slice", {"": "x"}),
    ("deployment", "home ranker"),
    ("pipeline", "a|b"),
    ("items", [1]),
    ("items", [""]),
    ("feature_ts", {"f": -1}),
    ("feature_ts", {"": 1.0}),
]
OVERSIZED = [*(f for f in STRING_FIELDS if f not in {"kind", "role"}), "slice_dims", "slice_key"]
OVERSIZED += ["slice_value", "items_count", "item_length", "features"]
OPS = [  # "drop" first: hypothesis's simplest cases then still damage every event
    "drop",
    "truncate",
    "wrong_type",
    "version",
    "oversized",
    "empty",
    "bad_value",
    "future",
    "kind",
    "not_an_object",
]
NON_OBJECTS: list[Any] = [None, 1, 1.5, "x", True, [], [{"kind": "prediction"}]]


def check_schema_shape() -> None:
    """The event schemas constrain only the type, the required fields and each property.

    Then an event is valid iff it is an object with the required fields whose present
    properties are each valid, so an event that was valid needs only the properties a damage
    set checked: exact, and far cheaper than validating 100,000 whole events.
    """
    for schema in SCHEMAS.values():
        assert set(schema) <= {"$schema", "$id", "title", "description", "type", "required"} | {
            "properties",
            "additionalProperties",
        }
        assert (schema["type"], schema["additionalProperties"]) == ("object", True)


def schema_valid(event: Any, touched: set[str]) -> bool:
    """JSON Schema's verdict on ``event``, which was valid before ``touched`` were set."""
    if type(event) is not dict:
        return False
    kind = event.get("kind")
    if type(kind) is not str or kind not in SCHEMAS:
        return False
    if not REQUIRED[kind] <= event.keys():
        return False
    names = event.keys() if "kind" in touched else touched & event.keys()  # a new kind: all
    return all(PROPERTIES[kind][n].is_valid(event[n]) for n in names if n in PROPERTIES[kind])


def accepted_by_decoder(event: Any, touched: set[str]) -> bool:
    """What the decoder must do: keep schema-valid events not later than the time bound."""
    if not schema_valid(event, touched):
        return False
    return event["kind"] == "training_example" or bool(event["ts"] <= MAX_TS)


def event_pool() -> list[dict[str, Any]]:
    """Valid events of every kind, mixed: the neighbours, and what damages start from."""
    predictions = valid_events(3000)
    outcomes = [
        {
            "schema_version": 1,
            "kind": "outcome",
            "event_id": f"{p['request_id']}-o",
            "request_id": p["request_id"],
            "ts": p["ts"] + 2.0,
            "deployment": p["deployment"],
            "value": float(i % 2),
        }
        for i, p in enumerate(predictions[::3])
    ]
    pool = predictions + outcomes + TrainingPipeline(seed=5).examples(600)
    random.Random(0).shuffle(pool)
    return pool


POOL = event_pool()


@st.composite
def damages(draw: st.DrawFn) -> tuple[str, Any]:
    """One damage: an operation and its argument."""
    op = draw(st.sampled_from(OPS))
    args: dict[str, st.SearchStrategy[Any]] = {
        "drop": st.integers(0, 31),
        "truncate": st.integers(0, 9),
        "wrong_type": st.tuples(st.sampled_from(FIELDS), st.sampled_from(WRONG)),
        "version": st.sampled_from(VERSIONS),
        "oversized": st.tuples(st.sampled_from(OVERSIZED), st.integers(1, 2000)),
        "empty": st.sampled_from(STRING_FIELDS),
        "bad_value": st.sampled_from(BAD_VALUES),
        "future": st.sampled_from([0.001, 1.0, 3600.0, 1e9]),
        "kind": st.sampled_from(["Prediction", "", None, 1, ["prediction"], "dead_letter", *KINDS]),
        "not_an_object": st.sampled_from(NON_OBJECTS),
    }
    return op, draw(args[op])


def oversized(name: str, n: int) -> Any:
    """A value beyond the schema's limits for ``name``: lengths, counts, dimensions."""
    if name == "slice_dims":
        return "slice", {f"d{i}": "v" for i in range(17 + n % 50)}
    if name == "slice_key":
        return "slice", {"k" * (64 + n): "v"}
    if name == "slice_value":
        return "slice", {"platform": "v" * (64 + n)}
    if name == "items_count":
        return "items", ["i"] * (1001 + n % 100)
    if name == "item_length":
        return "items", ["i" * (256 + n)]
    if name == "features":
        return "feature_ts", {f"f{i}": 1.0 for i in range(1001 + n % 100)}
    return name, "x" * (128 + n)


def damage(event: Any, op: str, arg: Any) -> tuple[Any, set[str]]:
    """``event`` damaged by ``op``, and the fields it set (nested values are replaced whole)."""
    if type(event) is not dict or not event:  # already a non-object, or emptied
        return event, set()
    event = dict(event)
    if op == "drop":
        del event[list(event)[arg % len(event)]]
        return event, set()
    if op == "truncate":  # cut off after its first fields, as by a writer that died mid-object
        return dict(list(event.items())[: arg % len(event)]), set()
    if op == "not_an_object":
        return arg, set()
    if op == "oversized":
        name, value = oversized(*arg)
    elif op in {"wrong_type", "bad_value"}:
        name, value = arg
    elif op == "version":
        name, value = "schema_version", arg
    elif op == "empty":
        name, value = arg, ""
    elif op == "future":
        name, value = "ts", MAX_TS + arg
    else:
        name, value = "kind", arg
    event[name] = value
    return event, {name}


@st.composite
def damaged_envelopes(draw: st.DrawFn) -> tuple[list[Any], list[set[str] | None]]:
    """A large envelope: two events in three damaged, the third left valid, in turn.

    Damages are drawn by hypothesis and applied in turn to the events of a stretch of the
    pool, so each one hits many different events; some stretches get a second damage on top.
    Returns the events and, per event, the fields set (None: left valid).
    """
    size = draw(st.integers(4000, 6000))
    offset = draw(st.integers(0, len(POOL) - 1))
    plan = draw(st.lists(damages(), min_size=8, max_size=40))
    extra = draw(
        st.lists(st.tuples(damages(), st.integers(0, 5999), st.integers(1, 200)), max_size=10)
    )
    events: list[Any] = []
    touched: list[set[str] | None] = []
    for i in range(size):
        event = POOL[(offset + i) % len(POOL)]
        if i % 3 == 0:
            events.append(event)
            touched.append(None)
            continue
        event, fields = damage(event, *plan[i % len(plan)])
        events.append(event)
        touched.append(fields)
    for (op, arg), start, length in extra:
        for i in range(start % size, min(start % size + length, size)):
            prior = touched[i]
            if prior is not None:  # the valid third stays valid: they are the neighbours
                events[i], fields = damage(events[i], op, arg)
                touched[i] = prior | fields
    return events, touched


WHOLE = {
    "truncated": "invalid_json",
    "invalid_utf8": "invalid_json",
    "version": "unsupported_version",
    "extra_field": "bad_value",
    "events_not_array": "wrong_type",
    "oversized": "oversized",
    "not_an_object": "not_an_object",
}


def damaged_whole(raw: bytes, events: list[Any], how: str, at: int) -> bytes:
    """The envelope damaged as a whole message."""
    if how == "truncated":
        return raw[: 1 + at % (len(raw) - 1)]
    if how == "invalid_utf8":
        i = at % len(raw)
        return raw[:i] + b"\xff" + raw[i + 1 :]
    if how == "version":
        return encode({"schema_version": VERSIONS[at % len(VERSIONS)], "events": events})
    if how == "extra_field":
        return encode({"schema_version": 1, "events": events, "source": "x"})
    if how == "events_not_array":
        return encode({"schema_version": 1, "events": {"0": events[0]}})
    if how == "oversized":
        return raw + b" " * (MAX_MESSAGE_BYTES + 1 - len(raw))
    return encode(events)


def encode(value: Any) -> bytes:
    """JSON text as any client could write it (stdlib: integers beyond 64 bits too)."""
    return json.dumps(value, separators=(",", ":")).encode()


def check_envelope(
    decoded: Decoded, parsed: list[Any], touched: list[set[str] | None], offset: int
) -> int:
    """Exactly the bad events are rejected, each dead-lettered with its reason; returns their
    number. The valid ones, damaged or not, are all kept, in order."""
    ok = [
        accepted_by_decoder(e, set() if t is None else t)
        for e, t in zip(parsed, touched, strict=True)
    ]
    assert all(ok[i] for i, t in enumerate(touched) if t is None), "a pool event is invalid"
    assert decoded.n_events == len(parsed)
    assert [r.event_index for r in decoded.rejected] == [i for i, good in enumerate(ok) if not good]
    for r in decoded.rejected:
        assert r.event_index is not None
        letter = orjson.loads(dead_letter(r, "streamguard.predictions", 0, offset, time.time()))
        assert letter["reason"] == r.reason, letter
        assert r.reason in REASONS, letter
        assert letter["detail"], letter
        assert letter["source"]["event_index"] == r.event_index
        assert orjson.loads(base64.b64decode(letter["original_b64"])) == parsed[r.event_index]
    kept = [e for e, good in zip(parsed, ok, strict=True) if good]
    assert decoded.predictions.event_id == [e["event_id"] for e in kept if e["kind"] == KINDS[0]]
    assert decoded.outcomes.event_id == [e["event_id"] for e in kept if e["kind"] == KINDS[1]]
    assert decoded.training.event_id == [e["event_id"] for e in kept if e["kind"] == KINDS[2]]
    return len(decoded.rejected)


@pytest.mark.faults
@pytest.mark.slow
def test_hypothesis_fuzzes_100k_bad_events_in_large_envelopes() -> None:
    """Drawn damages in envelopes of 4,000-6,000 events: the decoder never raises, rejects
    exactly what the JSON Schemas reject, with a reason, and keeps every valid neighbour."""
    check_schema_shape()
    totals = Counter[str]()

    @settings(
        max_examples=60,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )
    @given(damaged_envelopes(), st.sampled_from(sorted(WHOLE)), st.integers(0, 2**32))
    def run(envelope: tuple[list[Any], list[set[str] | None]], how: str, at: int) -> None:
        events, touched = envelope
        raw = encode({"schema_version": 1, "events": events})
        parsed = orjson.loads(raw)["events"]  # what the decoder sees (big integers as doubles)
        decoded = decode_message(raw, max_ts=MAX_TS)
        totals["bad"] += check_envelope(decoded, parsed, touched, totals["messages"])
        totals["events"] += len(parsed)
        totals["messages"] += 1
        # The same envelope damaged as a whole: one reason for the message, nothing kept.
        whole = decode_message(damaged_whole(raw, events, how, at), max_ts=MAX_TS)
        assert [(r.reason, r.event_index) for r in whole.rejected] == [(WHOLE[how], None)]
        assert len(whole.predictions) + len(whole.outcomes) + len(whole.training) == 0

    run()
    assert totals["bad"] >= 100_000, totals
    print(f"hypothesis fuzz: {dict(totals)}")
