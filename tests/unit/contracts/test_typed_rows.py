"""Row envelopes read in C (msgspec): only messages the dict path accepts whole, the same batches.

The dict path (``typed=False``) is checked against ``jsonschema`` by test_decode; here the
typed path is checked against the dict path: when it reads a message, the batches are equal
and the dict path rejects nothing; it declines nothing that is a plain envelope of valid
predictions and outcomes; and the public decoder gives the same result either way.
"""

from typing import Any

import numpy as np
import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import streamguard.contracts.decode as decode_module
from streamguard.contracts import (
    Decoded,
    OutcomeBatch,
    decode_message,
    load_schema,
    parse_message,
)
from streamguard.contracts.decode import TYPED_MIN_BYTES
from streamguard.contracts.exceptions import ContractError
from streamguard.contracts.schemas import rules_for
from streamguard.contracts.typed_rows import _struct, text_type, typed_envelope
from tests.unit.contracts._strategies import (
    any_events,
    encode,
    ids,
    schema_accepts,
    valid_outcomes,
    valid_predictions,
)
from tests.unit.contracts.test_columns import same_batch

# Every optional field of a prediction, including those the shared strategy leaves out.
short = st.text(st.characters(codec="utf-8"), min_size=1, max_size=10)
predictions = st.tuples(
    valid_predictions,
    st.fixed_dictionaries(
        {}, optional={"error": st.booleans(), "allocation": ids, "feature_schema": short}
    ),
).map(lambda pair: {**pair[0], **pair[1]})
events = predictions | valid_outcomes | any_events
FIELDS = {kind: set(load_schema(kind)["properties"]) for kind in ("prediction", "outcome")}


def same_outcomes(a: OutcomeBatch, b: OutcomeBatch) -> None:
    assert (a.event_id, a.request_id, a.deployment) == (b.event_id, b.request_id, b.deployment)
    assert np.array_equal(a.ts, b.ts)
    assert np.array_equal(a.value, b.value)


def same_result(a: Decoded, b: Decoded) -> None:
    """Equal batches, and equal rejections byte for byte (a whole message may not be JSON)."""
    same_batch(a.predictions, b.predictions)
    same_outcomes(a.outcomes, b.outcomes)
    assert [(r.reason, r.detail, r.event_index, r.original) for r in a.rejected] == [
        (r.reason, r.detail, r.event_index, r.original) for r in b.rejected
    ]
    assert (a.n_events, a.max_ts, len(a.training)) == (b.n_events, b.max_ts, len(b.training))


def plain(event: dict[str, Any]) -> bool:
    """A valid prediction or outcome with no other field and the integer version 1."""
    return (
        event.get("kind") in ("prediction", "outcome")
        and schema_accepts(event)
        and set(event) <= FIELDS[event["kind"]]
        and type(event["schema_version"]) is int
    )


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(events, min_size=1, max_size=8), st.sampled_from([float("inf"), 3e9]))
def test_typed_reads_only_what_the_dict_path_accepts_whole_and_the_same(
    batch: list[dict[str, Any]], max_ts: float
) -> None:
    raw = encode({"schema_version": 1, "events": batch})
    reference = decode_message(raw, max_ts, typed=False)
    read = typed_envelope(raw, max_ts)
    parsed = orjson.loads(raw)["events"] if not reference.rejected else None
    if read is None:
        # It declines only envelopes with an event that is invalid, late beyond max_ts, or
        # not plain (another field, version 1.0): the dict path reads those.
        assert parsed is None or not all(plain(e) and e["ts"] <= max_ts for e in parsed), (
            "a plain envelope of valid events was declined"
        )
        return
    assert not reference.rejected, reference.rejected
    predictions, outcomes, n_events = read
    same_batch(predictions, reference.predictions)
    same_outcomes(outcomes, reference.outcomes)
    assert n_events == reference.n_events == len(batch)
    assert not len(reference.training)


def _plain(event: dict[str, Any]) -> dict[str, Any]:
    return {**{k: v for k, v in event.items() if k != "note"}, "schema_version": 1}


@settings(max_examples=200, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists((predictions | valid_outcomes).map(_plain), min_size=1, max_size=8))
def test_plain_valid_envelopes_are_read_typed_and_the_same(batch: list[dict[str, Any]]) -> None:
    # Optional fields given by some events only: the batches' fills and lengths matter here.
    raw = encode({"schema_version": 1, "events": batch})
    reference = decode_message(raw, typed=False)
    read = typed_envelope(raw)
    assert read is not None
    assert not reference.rejected
    same_batch(read[0], reference.predictions)
    same_outcomes(read[1], reference.outcomes)


@settings(max_examples=60, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(events, min_size=1, max_size=6))
def test_long_envelopes_decode_the_same_either_way(batch: list[dict[str, Any]]) -> None:
    one = encode({"schema_version": 1, "events": batch})
    times = TYPED_MIN_BYTES // len(one) + 1
    raw = encode({"schema_version": 1, "events": batch * times})  # long enough to be typed
    typed, untyped = decode_message(raw), decode_message(raw, typed=False)
    same_result(typed, untyped)


def _prediction(**changes: Any) -> dict[str, Any]:
    event = {
        "schema_version": 1,
        "kind": "prediction",
        "event_id": "e1",
        "request_id": "r1",
        "ts": 1_790_000_000.5,
        "deployment": "home-ranker",
        "model_version": "v1",
        "role": "shadow",
        "slice": {"platform": "ios"},
        "score": 0.7,
    }
    return {**event, **changes}


def _raw(*events: dict[str, Any], tail: bytes = b"") -> bytes:
    body = b",".join(orjson.dumps(e)[:-1] + tail + b"}" for e in events)
    return b'{"schema_version":1,"events":[' + body + b"]}"


@pytest.mark.parametrize(
    ("tail", "why"),
    [
        (b',"note":1e400', "a number beyond a double in another field: orjson refuses it"),
        (b',"note":' + b"9" * 400, "an integer beyond a double in another field"),
        (b',"note":"\xed\xa0\x80"', "a UTF-8-encoded surrogate in another field"),
        (b',"note":"\\ud800"', "a lone surrogate escape"),
        (b',"score":1e400', "a score beyond a double"),
        (b',"slice":{"platform":"\xff"}', "invalid UTF-8 in a slice value"),
        (b',"latency_ms":null', "an explicit null"),
        (b',"error":1', "a number for a flag"),
        (b',"score":true', "a flag for a number"),
        (b',"deployment":"home ranker"', "a deployment breaking its pattern"),
        (b',"slice":{"a=b":"x"}', "a slice key breaking its pattern"),
        (b',"slice":{"platform":"a|b"}', "a slice value breaking its pattern"),
        (b',"replica_id":"pod 1"', "a replica id breaking its pattern"),
        (b',"schema_version":1.0', "version 1.0: valid, but for the dict path"),
        (b',"kind":"training_example"', "a training example"),
    ],
)
def test_what_the_typed_path_declines(tail: bytes, why: str) -> None:
    raw = _raw(_prediction(), _prediction(event_id="e2"), tail=tail)
    assert typed_envelope(raw) is None, why
    assert typed_envelope(_raw(_prediction(), _prediction(event_id="e2"))) is not None
    # The public decoder still answers as the dict path does.
    long = _raw(*[_prediction(event_id=f"e{i}") for i in range(20)], tail=tail)
    assert len(long) >= TYPED_MIN_BYTES
    same_result(decode_message(long), decode_message(long, typed=False))


def test_duplicate_keys_keep_the_last_value_as_orjson_does() -> None:
    raw = _raw(_prediction(), tail=b',"score":0.25,"slice":{"a":"b","a":"c"}')
    predictions, _, _ = typed_envelope(raw) or pytest.fail("declined")
    assert predictions.score.tolist() == [0.25]
    parsed = orjson.loads(raw)["events"][0]
    assert predictions.slice == [{"a": "c"}] == [parsed["slice"]]
    assert parsed["score"] == 0.25


def test_events_later_than_max_ts_are_left_to_the_dict_path() -> None:
    raw = _raw(_prediction(), _prediction(event_id="e2", ts=1_790_000_100.0))
    assert typed_envelope(raw, max_ts=1_790_000_050.0) is None
    assert typed_envelope(raw, max_ts=1_790_000_100.0) is not None


def test_parse_message_reads_long_envelopes_typed_and_short_ones_not(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    calls: list[int] = []

    def spy(value: bytes, max_ts: float) -> Any:
        calls.append(len(value))
        return typed_envelope(value, max_ts)

    monkeypatch.setattr(decode_module, "typed_envelope", spy)
    short_raw = _raw(_prediction())
    long_raw = _raw(*[_prediction(event_id=f"e{i}") for i in range(20)])
    assert isinstance(parse_message(short_raw), Decoded)
    assert calls == []
    decoded = parse_message(long_raw)
    assert calls == [len(long_raw)]
    assert isinstance(decoded, Decoded)
    assert len(decoded.predictions) == 20
    assert decoded.max_ts == 1_790_000_000.5
    parse_message(long_raw, typed=False)
    assert calls == [len(long_raw)]


def test_a_schema_with_fields_the_typed_decoder_does_not_know_fails_loudly() -> None:
    fields = [(name, str) for name in ("event_id", "request_id", "deployment")]
    fields += [("ts", float), ("value", float)]
    assert _struct("outcome", fields, []) is not None
    with pytest.raises(ContractError, match="does not know"):
        _struct("outcome", fields[:-1], [])  # value missing
    with pytest.raises(ContractError, match="does not know"):
        _struct("outcome", fields, [("note", str)])  # not in the schema


def test_a_pattern_the_typed_decoder_would_not_check_fails_loudly() -> None:
    rule = rules_for("prediction").strings["deployment"]
    assert text_type(rule, pattern_after=True) is not None
    with pytest.raises(ContractError, match="not checked"):
        text_type(rule)
