"""The decoder accepts exactly what the JSON Schemas accept, and bounds event times."""

import json
from typing import Any

import jsonschema
import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from streamguard.contracts import load_schema
from streamguard.contracts.decode import (
    MAX_MESSAGE_BYTES,
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
    envelopes,
    schema_accepts,
    valid_outcomes,
    valid_predictions,
    valid_training,
)

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
