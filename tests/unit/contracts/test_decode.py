"""The decoder never raises, keeps its books, and dead-letters the original bytes.

Agreement with the JSON Schemas: ``test_decode_schema.py``; the columnar fast path against the
per-event validator: ``test_decode_columns.py``.
"""

import math
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from streamguard.contracts.decode import (
    MAX_MESSAGE_BYTES,
    Decoded,
    decode_events,
    decode_message,
)
from tests.unit.contracts._strategies import (
    REASONS,
    accepted,
    encode,
    envelopes,
    json_values,
    mutated_events,
    parses,
    strictly_invalid,
    valid_events,
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
