"""The decoder never raises, agrees with the JSON Schemas, keeps good neighbours of bad events."""

import json
import math
from typing import Any

import jsonschema
import numpy as np
import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from streamguard.contracts import ROLES, load_schema
from streamguard.contracts.decode import (
    MAX_MESSAGE_BYTES,
    Decoded,
    DecodeError,
    decode_events,
    decode_message,
    validate_event,
)
from tests.unit.contracts._strategies import (
    ENVELOPE_MAX_EVENTS,
    REASONS,
    accepted,
    any_events,
    encode,
    json_values,
    mutated_events,
    parses,
    schema_accepts,
    valid_events,
    valid_outcomes,
    valid_predictions,
    valid_training,
    wrong_values,
)

# --- (a) never raises, bookkeeping ------------------------------------------------------------


def check_bookkeeping(decoded: Decoded) -> None:
    """What every decode result must satisfy, whatever the input."""
    assert {r.reason for r in decoded.rejected} <= REASONS
    assert all(r.detail for r in decoded.rejected)
    n_ok = accepted(decoded)
    whole = [r for r in decoded.rejected if r.event_index is None]
    indexed = [r for r in decoded.rejected if r.event_index is not None]
    if whole and not indexed and n_ok == 0 and decoded.n_events == 0:
        # The message as a whole was rejected (not JSON, not an object, bad envelope, ...).
        assert len(whole) == 1
        return
    assert decoded.n_events == n_ok + len(decoded.rejected)
    if indexed:  # an envelope: each event accepted or rejected once, by its own index
        assert not whole
        positions = [r.event_index for r in indexed]
        assert len(set(positions)) == len(positions)
        assert all(0 <= p < decoded.n_events for p in positions)
        assert positions == sorted(positions)
    else:  # one event in the message
        assert decoded.n_events <= 1 or n_ok == decoded.n_events
    highs = [float(b.ts.max()) for b in (decoded.predictions, decoded.outcomes) if len(b)]
    if highs:  # label times of training examples move no watermark
        assert decoded.max_ts == max(highs)
    else:
        assert decoded.max_ts == -math.inf
    p = decoded.predictions
    assert len(p.request_id) == len(p.ts) == len(p.role) == len(p.score) == len(p.slice) == len(p)
    assert len(p.latency_ms) == len(p.deployment) == len(p.model_version) == len(p)
    assert not p.items or len(p.items) == len(p)
    assert not p.replica_id or len(p.replica_id) == len(p)
    assert not len(p.replica_age_s) or len(p.replica_age_s) == len(p)
    assert not len(p.replica_ready) or len(p.replica_ready) == len(p)
    assert not p.env_fingerprint or len(p.env_fingerprint) == len(p)
    o = decoded.outcomes
    assert len(o.request_id) == len(o.ts) == len(o.value) == len(o.deployment) == len(o)
    t = decoded.training
    assert len(t.pipeline) == len(t.example_id) == len(t.label_ts) == len(t)
    assert len(t.feature_row) == len(t.feature_name) == len(t.feature_ts)


@given(st.binary(max_size=300))
def test_never_raises_on_arbitrary_bytes(value: bytes) -> None:
    decoded = decode_message(value)
    check_bookkeeping(decoded)


@settings(max_examples=100)
@given(json_values | st.lists(json_values) | st.dictionaries(st.text(max_size=8), json_values))
def test_never_raises_on_arbitrary_json(value: Any) -> None:
    raw = encode(value)
    decoded = decode_message(raw)
    check_bookkeeping(decoded)
    if not isinstance(value, dict):
        assert [r.reason for r in decoded.rejected] == ["not_an_object"]


@settings(max_examples=150)
@given(mutated_events(huge=True))
def test_never_raises_on_mutated_events(event: dict[str, Any]) -> None:
    raw = encode(event)
    decoded = decode_message(raw)
    check_bookkeeping(decoded)
    assert accepted(decoded) + len(decoded.rejected) == 1


@st.composite
def envelopes(draw: st.DrawFn, huge: bool = True) -> dict[str, Any]:
    items = valid_events | mutated_events(huge=huge) | json_values
    envelope: dict[str, Any] = {"schema_version": 1, "events": draw(st.lists(items, max_size=8))}
    op = draw(st.sampled_from(["none", "none", "version", "events", "extra", "kind", "drop"]))
    if op == "version":
        envelope["schema_version"] = draw(wrong_values)
    elif op == "events":
        envelope["events"] = draw(wrong_values | json_values)
    elif op == "extra":
        envelope[draw(st.text(min_size=1, max_size=6))] = draw(json_values)
    elif op == "kind":
        envelope["kind"] = draw(st.sampled_from(["prediction", "outcome", "x"]))
    elif op == "drop":
        del envelope["schema_version"]
    return envelope


@settings(max_examples=75)
@given(envelopes())
def test_never_raises_on_mutated_envelopes(envelope: dict[str, Any]) -> None:
    raw = encode(envelope)
    decoded = decode_message(raw)
    check_bookkeeping(decoded)
    version = envelope.get("schema_version")
    proper = (
        parses(raw)
        and "kind" not in envelope
        and set(envelope) == {"schema_version", "events"}
        and type(version) in (int, float)
        and version == 1
        and isinstance(envelope["events"], list)
    )
    if proper:
        assert decoded.n_events == len(envelope["events"])
        assert not any(r.event_index is None for r in decoded.rejected)
    else:
        assert accepted(decoded) == 0


@settings(max_examples=30)
@given(st.lists(mutated_events(huge=True), min_size=1, max_size=6), st.data())
def test_python_level_decode_never_loses_events(events: list[Any], data: st.DataObject) -> None:
    """decode_events takes parsed objects; integers too large for a double are still accounted."""
    good = data.draw(st.lists(valid_events, max_size=4))
    batch = events + good
    decoded = decode_events(batch)
    assert decoded.n_events == len(batch) == accepted(decoded) + len(decoded.rejected)
    assert accepted(decoded) >= len(good)
    assert {r.reason for r in decoded.rejected} <= REASONS


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        (None, "empty_message"),
        (b"", "empty_message"),
        (b"{", "invalid_json"),
        (b"\xff\xfe", "invalid_json"),
        (b'"\\ud800"', "invalid_json"),
        (b"[" * 5000 + b"]" * 5000, "invalid_json"),
        (b'{"ts": 1e400}', "invalid_json"),
        (b"[]", "not_an_object"),
        (b"3", "not_an_object"),
        (b"null", "not_an_object"),
        (b'{"events": []}', "unsupported_version"),
        (b'{"schema_version": 2, "events": []}', "unsupported_version"),
        (b'{"schema_version": true, "events": []}', "unsupported_version"),
        (b'{"schema_version": 1, "events": {}}', "wrong_type"),
        (b'{"schema_version": 1, "events": [], "x": 1}', "bad_value"),
        (b'{"schema_version": 1}', "unknown_kind"),
    ],
)
def test_whole_message_reasons(value: bytes | None, reason: str) -> None:
    decoded = decode_message(value)
    assert [r.reason for r in decoded.rejected] == [reason]
    assert decoded.rejected[0].event_index is None
    assert accepted(decoded) == 0


def test_oversized_message_is_rejected_whole_without_parsing() -> None:
    value = b" " * (MAX_MESSAGE_BYTES + 1)
    decoded = decode_message(value)
    assert [r.reason for r in decoded.rejected] == ["oversized"]
    assert len(decoded.rejected[0].original) <= 1024


def test_empty_envelope_has_no_events() -> None:
    decoded = decode_message(b'{"schema_version": 1, "events": []}')
    assert decoded.n_events == 0
    assert decoded.rejected == []
    assert accepted(decoded) == 0


# --- (b) agreement with the JSON Schema ---------------------------------------------------------


@settings(max_examples=200)
@given(any_events)
def test_decoder_accepts_exactly_what_the_schema_accepts(event: dict[str, Any]) -> None:
    raw = encode(event)
    parsed = orjson.loads(raw)  # what the decoder sees (big integers become doubles)
    expected = schema_accepts(parsed)
    decoded = decode_message(raw)
    assert accepted(decoded) == int(expected), (decoded.rejected, event)
    if not expected:
        assert len(decoded.rejected) == 1
    # The same verdict from the per-event validator, on the parsed and on the original objects.
    for candidate in (parsed, event):
        reason = validator_reason(candidate)
        assert (reason is None) == expected, reason
        assert reason is None or reason in REASONS


def validator_reason(event: Any) -> str | None:
    """The per-event validator's reason for rejecting ``event`` (None: accepted)."""
    try:
        validate_event(event)
    except DecodeError as exc:
        return exc.reason
    return None


@settings(max_examples=100)
@given(st.lists(any_events, min_size=1, max_size=8))
def test_envelope_keeps_exactly_the_schema_valid_events(events: list[dict[str, Any]]) -> None:
    raw = encode({"schema_version": 1, "events": events})
    parsed = orjson.loads(raw)["events"]
    valid = [schema_accepts(e) for e in parsed]
    decoded = decode_message(raw)
    assert accepted(decoded) == sum(valid)
    assert [r.event_index for r in decoded.rejected] == [i for i, ok in enumerate(valid) if not ok]
    kinds = [e["kind"] for e, ok in zip(parsed, valid, strict=True) if ok]
    assert len(decoded.predictions) == kinds.count("prediction")
    assert len(decoded.outcomes) == kinds.count("outcome")
    assert len(decoded.training) == kinds.count("training_example")


def _envelope_schema_without_item_types() -> dict[str, Any]:
    # Documented difference: a non-object event is rejected alone, its neighbours are kept.
    schema = json.loads(json.dumps(load_schema("envelope")))
    del schema["properties"]["events"]["items"]
    return schema


ENVELOPE_VALIDATOR = jsonschema.Draft202012Validator(_envelope_schema_without_item_types())


@settings(max_examples=60)
@given(envelopes(huge=False).filter(lambda e: "kind" not in e))  # with a kind it is one event
def test_envelope_rejected_whole_iff_envelope_schema_rejects(envelope: dict[str, Any]) -> None:
    raw = encode(envelope)
    decoded = decode_message(raw)
    whole = any(r.event_index is None for r in decoded.rejected)
    assert whole == (not ENVELOPE_VALIDATOR.is_valid(orjson.loads(raw)))


def test_envelope_beyond_max_items_is_rejected_whole() -> None:
    event = {
        "schema_version": 1,
        "kind": "outcome",
        "event_id": "e",
        "request_id": "r",
        "ts": 1,
        "deployment": "d",
        "value": 0,
    }
    at_limit = orjson.dumps({"schema_version": 1, "events": [event] * ENVELOPE_MAX_EVENTS})
    over = orjson.dumps({"schema_version": 1, "events": [event] * (ENVELOPE_MAX_EVENTS + 1)})
    assert len(over) <= MAX_MESSAGE_BYTES  # so only the item limit can reject it
    assert not ENVELOPE_VALIDATOR.is_valid(orjson.loads(over))
    assert len(decode_message(at_limit).outcomes) == ENVELOPE_MAX_EVENTS
    decoded = decode_message(over)
    assert accepted(decoded) == 0
    assert [(r.reason, r.event_index) for r in decoded.rejected] == [("bad_value", None)]


@pytest.mark.parametrize("huge", [10**400, -(10**400), 2**1024], ids=["1e400", "-1e400", "2^1024"])
@pytest.mark.parametrize("field", ["ts", "score", "latency_ms"])
def test_numbers_beyond_double_range_are_rejected_alone(huge: int, field: str) -> None:
    """Parsed objects can hold integers no double holds; they must not take neighbours along."""
    good = {
        "schema_version": 1,
        "kind": "prediction",
        "event_id": "e1",
        "request_id": "r1",
        "ts": 5.0,
        "deployment": "d",
        "model_version": "v",
        "role": "primary",
        "slice": {},
        "score": 0.5,
    }
    bad = {**good, "event_id": "e2", field: huge}
    decoded = decode_events([good, bad, good])
    assert len(decoded.predictions) == 2
    assert [r.event_index for r in decoded.rejected] == [1]
    assert decoded.rejected[0].reason in {"bad_value", "wrong_type"}


# --- future timestamps --------------------------------------------------------------------------


@settings(max_examples=100)
@given(valid_predictions | valid_outcomes, st.floats(0, 4e9))
def test_future_events_are_rejected_by_max_ts(event: dict[str, Any], max_ts: float) -> None:
    raw = encode(event)
    ts = orjson.loads(raw)["ts"]
    decoded = decode_message(raw, max_ts=max_ts)
    if ts > max_ts:
        assert [r.reason for r in decoded.rejected] == ["ts_in_future"]
        assert accepted(decoded) == 0
    else:
        assert accepted(decoded) == 1
        assert decoded.rejected == []


@settings(max_examples=30)
@given(valid_training)
def test_training_examples_have_no_future_bound(event: dict[str, Any]) -> None:
    """Backfills are historical and label times move no watermark: max_ts does not apply."""
    decoded = decode_message(encode(event), max_ts=0.0)
    assert (len(decoded.training), decoded.rejected) == (1, [])


def test_future_event_in_envelope_does_not_reject_neighbours() -> None:
    base = {
        "schema_version": 1,
        "kind": "outcome",
        "request_id": "r",
        "deployment": "d",
        "value": 1,
    }
    events = [
        {**base, "event_id": "a", "ts": 100.0},
        {**base, "event_id": "b", "ts": 100.5},  # later than the bound
        {**base, "event_id": "c", "ts": 100.25},  # exactly at the bound: accepted
    ]
    decoded = decode_message(orjson.dumps({"schema_version": 1, "events": events}), max_ts=100.25)
    assert decoded.outcomes.event_id == ["a", "c"]
    assert [(r.reason, r.event_index) for r in decoded.rejected] == [("ts_in_future", 1)]
    assert decoded.max_ts == 100.25


# --- (c) the fast columnar path agrees with the per-event validator -----------------------------

strictly_invalid = mutated_events().filter(lambda e: not schema_accepts(orjson.loads(encode(e))))


def same_predictions(a: Decoded, b: Decoded) -> None:
    pa, pb = a.predictions, b.predictions
    assert pa.event_id == pb.event_id
    assert pa.request_id == pb.request_id
    assert pa.deployment == pb.deployment
    assert pa.model_version == pb.model_version
    assert pa.slice == pb.slice
    assert pa.items == pb.items
    np.testing.assert_array_equal(pa.ts, pb.ts)
    np.testing.assert_array_equal(pa.role, pb.role)
    np.testing.assert_array_equal(pa.score, pb.score)
    np.testing.assert_array_equal(pa.latency_ms, pb.latency_ms)
    assert pa.replica_id == pb.replica_id
    assert pa.env_fingerprint == pb.env_fingerprint
    np.testing.assert_array_equal(pa.ages(), pb.ages())
    np.testing.assert_array_equal(pa.not_ready(), pb.not_ready())
    oa, ob = a.outcomes, b.outcomes
    assert oa.event_id == ob.event_id
    assert oa.request_id == ob.request_id
    assert oa.deployment == ob.deployment
    np.testing.assert_array_equal(oa.ts, ob.ts)
    np.testing.assert_array_equal(oa.value, ob.value)


@settings(max_examples=60)
@given(st.lists(valid_events, min_size=1, max_size=10), strictly_invalid, st.data())
def test_one_bad_event_costs_only_itself(
    good: list[dict[str, Any]], bad: dict[str, Any], data: st.DataObject
) -> None:
    index = data.draw(st.integers(0, len(good)))
    mixed = [*good[:index], bad, *good[index:]]
    decoded = decode_message(encode({"schema_version": 1, "events": mixed}))
    alone = decode_message(encode({"schema_version": 1, "events": good}))
    assert alone.rejected == []
    assert [r.event_index for r in decoded.rejected] == [index]
    assert orjson.loads(decoded.rejected[0].original) == orjson.loads(encode(bad))
    same_predictions(decoded, alone)
    assert decoded.max_ts == alone.max_ts
    assert decoded.n_events == len(mixed)


@settings(max_examples=50)
@given(st.lists(valid_predictions, min_size=1, max_size=10))
def test_columns_hold_the_event_values(events: list[dict[str, Any]]) -> None:
    """The columnar batch is a transposition of the events (oracle: plain Python)."""
    parsed = orjson.loads(encode({"schema_version": 1, "events": events}))["events"]
    batch = decode_message(encode({"schema_version": 1, "events": events})).predictions
    assert batch.event_id == [e["event_id"] for e in parsed]
    assert batch.slice == [e["slice"] for e in parsed]
    assert batch.role.tolist() == [ROLES.index(e["role"]) for e in parsed]
    assert batch.ts.tolist() == [float(e["ts"]) for e in parsed]
    assert batch.score.tolist() == [float(e["score"]) for e in parsed]
    latency = [float(e.get("latency_ms", math.nan)) for e in parsed]
    np.testing.assert_array_equal(batch.latency_ms, np.array(latency))
    if any("items" in e for e in parsed):
        assert batch.items == [e.get("items") for e in parsed]
    else:
        assert batch.items == []
    ages = [float(e.get("replica_age_s", math.nan)) for e in parsed]
    np.testing.assert_array_equal(batch.ages(), np.array(ages))
    assert batch.not_ready().tolist() == [e.get("replica_ready") is False for e in parsed]
    for name in ("replica_id", "env_fingerprint"):
        column = getattr(batch, name)
        if any(name in e for e in parsed):
            assert column == [e.get(name, "") for e in parsed]
        else:
            assert column == []


@settings(max_examples=50)
@given(st.lists(valid_training, min_size=1, max_size=10))
def test_training_columns_flatten_the_features(events: list[dict[str, Any]]) -> None:
    """Features flatten to (row, name, ts) in event order (oracle: plain Python)."""
    parsed = orjson.loads(encode({"schema_version": 1, "events": events}))["events"]
    batch = decode_message(encode({"schema_version": 1, "events": events})).training
    assert batch.pipeline == [e["pipeline"] for e in parsed]
    assert batch.example_id == [e["example_id"] for e in parsed]
    assert batch.label_ts.tolist() == [float(e["label_ts"]) for e in parsed]
    flat = [(i, k, float(v)) for i, e in enumerate(parsed) for k, v in e["feature_ts"].items()]
    assert (
        list(
            zip(
                batch.feature_row.tolist(),
                batch.feature_name,
                batch.feature_ts.tolist(),
                strict=True,
            )
        )
        == flat
    )


# --- (d) dead-letter originals ------------------------------------------------------------------


@settings(max_examples=50)
@given(strictly_invalid)
def test_single_event_message_dead_letters_the_original_bytes(event: dict[str, Any]) -> None:
    raw = encode(event) + b"  \n"  # whitespace too: the bytes, not a re-encoding
    decoded = decode_message(raw)
    assert len(decoded.rejected) == 1
    assert decoded.rejected[0].original == raw
    assert decoded.rejected[0].event_index is None


def test_envelope_event_dead_letters_that_event() -> None:
    bad = {"schema_version": 1, "kind": "prediction", "event_id": "x"}
    raw = orjson.dumps({"schema_version": 1, "events": [{"kind": "outcome"}, bad]})
    decoded = decode_message(raw)
    assert [r.event_index for r in decoded.rejected] == [0, 1]
    assert orjson.loads(decoded.rejected[1].original) == bad
    assert decoded.rejected[1].reason == "missing_field"
    assert "request_id" in decoded.rejected[1].detail


@pytest.mark.parametrize(
    ("mutation", "reason", "named"),
    [
        ({"score": True}, "wrong_type", "score"),
        ({"ts": "1"}, "wrong_type", "ts"),
        ({"ts": -1}, "bad_value", "ts"),
        ({"latency_ms": -0.5}, "bad_value", "latency_ms"),
        ({"latency_ms": None}, "wrong_type", "latency_ms"),
        ({"role": "boss"}, "bad_value", "role"),
        ({"deployment": "a b"}, "bad_value", "deployment"),
        ({"slice": {"a=b": "x"}}, "bad_value", "slice key"),
        ({"slice": {"a": "x|y"}}, "bad_value", "slice.a"),
        ({"slice": {"a": 1}}, "wrong_type", "slice.a"),
        ({"slice": {"a": ["x"]}}, "wrong_type", "slice.a"),
        ({"slice": []}, "wrong_type", "slice"),
        ({"items": "abc"}, "wrong_type", "items"),
        ({"items": ["ok", ""]}, "bad_value", "items[]"),
        ({"replica_id": ""}, "bad_value", "replica_id"),
        ({"replica_id": 7}, "wrong_type", "replica_id"),
        ({"replica_id": "pod a,b"}, "bad_value", "replica_id"),
        ({"replica_age_s": -1}, "bad_value", "replica_age_s"),
        ({"replica_age_s": "3"}, "wrong_type", "replica_age_s"),
        ({"replica_ready": 1}, "wrong_type", "replica_ready"),
        ({"env_fingerprint": "x" * 129}, "bad_value", "env_fingerprint"),
        ({"schema_version": 2}, "unsupported_version", "schema_version"),
        ({"kind": "click"}, "unknown_kind", "kind"),
    ],
)
def test_rejection_reason_and_detail_name_the_field(
    mutation: dict[str, Any], reason: str, named: str
) -> None:
    event = {
        "schema_version": 1,
        "kind": "prediction",
        "event_id": "e",
        "request_id": "r",
        "ts": 1.0,
        "deployment": "d",
        "model_version": "v",
        "role": "shadow",
        "slice": {"platform": "ios"},
        "score": 0.5,
    } | mutation
    for raw in (orjson.dumps(event), orjson.dumps({"schema_version": 1, "events": [event]})):
        decoded = decode_message(raw)
        assert [r.reason for r in decoded.rejected] == [reason]
        assert named in decoded.rejected[0].detail
