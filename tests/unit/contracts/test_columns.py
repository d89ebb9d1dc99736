"""Columnar batches of predictions: the same rows as a row envelope, and the same bad rows.

Row ``i`` of a columnar batch is the prediction made of every column's ``i``-th value (null:
absent), so each property here compares a columnar message with the row envelope of the same
events: same accepted columns, same rejected rows with the same reasons, same stage-1 output.
"""

import copy
from typing import Any

import jsonschema
import numpy as np
import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from streamguard.contracts import Decoded, PredictionBatch, decode_message, load_schema
from streamguard.contracts.columns import COLUMNS_KIND, encode_columns, rows_of
from streamguard.core import Stage1
from streamguard.engine import Pipeline
from streamguard.policy import Policy
from streamguard.sim import ShadowDeviation, TrafficGenerator
from streamguard.sim.scenarios import build
from streamguard.testing import envelopes
from tests.unit.contracts._strategies import (
    REASONS,
    any_events,
    encode,
    schema_accepts,
    valid_predictions,
)

START = 1_790_000_000.0
STRING_FIELDS = ("event_id", "request_id", "deployment", "model_version", "allocation")
STRING_FIELDS += ("feature_schema", "replica_id", "env_fingerprint", "items")
NUMBER_FIELDS = ("ts", "score", "latency_ms", "role")


def columns_of(events: list[dict[str, Any]]) -> dict[str, Any]:
    """The columnar message of prediction objects, built independently of encode_columns."""
    names = [k for e in events for k in e if k not in ("schema_version", "kind", "slice")]
    dims = [k for e in events for k in e["slice"]]
    columns: dict[str, Any] = {n: [e.get(n) for e in events] for n in dict.fromkeys(names)}
    columns["slice"] = {d: [e["slice"].get(d) for e in events] for d in dict.fromkeys(dims)}
    return {"schema_version": 1, "kind": COLUMNS_KIND, "n": len(events), "columns": columns}


def same_batch(a: PredictionBatch, b: PredictionBatch) -> None:
    assert a.slices() == b.slices()
    for name in STRING_FIELDS:
        assert getattr(a, name) == getattr(b, name), name
    for name in NUMBER_FIELDS:
        assert np.array_equal(getattr(a, name), getattr(b, name), equal_nan=True), name
    assert np.array_equal(a.errors(), b.errors())
    assert np.array_equal(a.ages(), b.ages(), equal_nan=True)
    assert np.array_equal(a.not_ready(), b.not_ready())


def same_decoded(columnar: Decoded, rows: Decoded) -> None:
    same_batch(columnar.predictions, rows.predictions)
    assert [(r.reason, r.event_index) for r in columnar.rejected] == [
        (r.reason, r.event_index) for r in rows.rejected
    ]
    assert [orjson.loads(r.original) for r in columnar.rejected] == [
        orjson.loads(r.original) for r in rows.rejected
    ]
    assert columnar.n_events == rows.n_events
    assert columnar.max_ts == rows.max_ts


def envelope(events: list[dict[str, Any]]) -> bytes:
    return orjson.dumps({"schema_version": 1, "events": events})


def traffic(seconds: int = 40, scenario: str | None = None) -> list[list[dict[str, Any]]]:
    """Prediction events of each second, from the simulator."""
    gen = (
        build(scenario, 300.0, float(seconds), 3, START)
        if scenario
        else TrafficGenerator(rate=300, seed=4, start_ts=START)
    )
    return [[e for e in events if e["kind"] == "prediction"] for events in gen.seconds(seconds)]


# --- valid batches --------------------------------------------------------------------------


@pytest.mark.parametrize("scenario", [None, "schema-rollback", "popularity-loop"])
def test_columns_decode_to_the_arrays_of_the_rows(scenario: str | None) -> None:
    for events in traffic(5, scenario):
        message = encode_columns(events)
        assert message is not None
        assert orjson.loads(message) == columns_of(events)
        columnar = decode_message(message)
        assert not columnar.rejected
        assert columnar.predictions.slice_columns  # slices stay columns: no object per event
        same_decoded(columnar, decode_message(envelope(events)))


@settings(max_examples=150, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(valid_predictions, min_size=1, max_size=8))
def test_valid_predictions_as_columns_are_all_kept(events: list[dict[str, Any]]) -> None:
    parsed = orjson.loads(encode(events))  # what a producer's JSON becomes
    columnar = decode_message(encode(columns_of(parsed)))
    assert not columnar.rejected
    same_decoded(columnar, decode_message(envelope(parsed)))


def test_an_empty_batch_has_no_events() -> None:
    message = {"schema_version": 1, "kind": COLUMNS_KIND, "n": 0, "columns": columns_of([])}
    message["columns"] = {**columns_of([])["columns"], **{c: [] for c in REQUIRED}}
    decoded = decode_message(orjson.dumps(message))
    assert (len(decoded.predictions), decoded.rejected, decoded.n_events) == (0, [], 0)


REQUIRED = ("event_id", "request_id", "ts", "deployment", "model_version", "role", "score")


# --- bad rows: each reason, alone -------------------------------------------------------------


def _events() -> list[dict[str, Any]]:
    return traffic(2)[1][:6]


@pytest.mark.parametrize(
    ("field", "value", "reason"),
    [
        ("ts", "soon", "wrong_type"),
        ("ts", -1.0, "bad_value"),
        ("ts", 4e9, "ts_in_future"),
        ("score", True, "wrong_type"),
        ("role", "judge", "bad_value"),
        ("event_id", "", "bad_value"),
        ("request_id", 7, "wrong_type"),
        ("request_id", "r" * 129, "bad_value"),
        ("event_id", ["e1"], "wrong_type"),
        ("latency_ms", "12", "wrong_type"),
        ("deployment", "has space", "bad_value"),
        ("latency_ms", -3.0, "bad_value"),
        ("error", "yes", "wrong_type"),
        ("allocation", ["a"], "wrong_type"),
        ("replica_age_s", -1, "bad_value"),
        ("replica_ready", 1, "wrong_type"),
        ("items", ["ok", ""], "bad_value"),
        ("items", "i1", "wrong_type"),
        ("slice.platform", "a=b", "bad_value"),
        ("slice.platform", 3, "wrong_type"),
        ("model_version", None, "missing_field"),
    ],
)
def test_a_bad_row_is_rejected_alone_with_its_reason(field: str, value: Any, reason: str) -> None:
    events = _events()
    bad = [copy.deepcopy(e) for e in events]  # simulated events share slice objects
    message = columns_of(events)
    if field.startswith("slice."):
        message["columns"]["slice"][field[6:]][2] = value
        bad[2]["slice"][field[6:]] = value
    else:
        message["columns"].setdefault(field, [None] * len(events))[2] = value
        if value is None:
            del bad[2][field]
        else:
            bad[2][field] = value
    columnar = decode_message(orjson.dumps(message), max_ts=START + 1e6)
    assert [(r.reason, r.event_index) for r in columnar.rejected] == [(reason, 2)]
    assert orjson.loads(columnar.rejected[0].original) == bad[2]  # the row as an event object
    same_decoded(columnar, decode_message(envelope(bad), max_ts=START + 1e6))


@settings(max_examples=150, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(any_events, min_size=1, max_size=8))
def test_columns_keep_exactly_the_rows_the_schema_accepts(events: list[dict[str, Any]]) -> None:
    # Only what columns can say: prediction objects, with slice objects, and no nulls (a null
    # cell means "absent"); everything else about the values may be wrong.
    rows = [
        {**e, "kind": "prediction", "schema_version": 1}
        for e in orjson.loads(encode(events))
        if type(e.get("slice")) is dict
    ]
    rows = [
        {k: v for k, v in e.items() if v is not None}
        | {"slice": {k: v for k, v in e["slice"].items() if v is not None}}
        for e in rows
    ]
    if not rows:
        return
    columnar = decode_message(encode(columns_of(rows)))
    if any(all(name not in row for row in rows) for name in REQUIRED):
        # A required column that is null in every row is not there at all: the schema of the
        # batch requires it, so the batch is rejected whole, once.
        assert [(r.reason, r.event_index) for r in columnar.rejected] == [("missing_field", None)]
        return
    valid = [schema_accepts(e) for e in rows]
    assert len(columnar.predictions) == sum(valid)
    assert [r.event_index for r in columnar.rejected] == [i for i, ok in enumerate(valid) if not ok]
    assert {r.reason for r in columnar.rejected} <= REASONS
    same_decoded(columnar, decode_message(envelope(rows)))


# --- bad messages: rejected whole -----------------------------------------------------------


def _message(**changes: Any) -> bytes:
    message = columns_of(_events())
    message.update(changes)
    return orjson.dumps(message)


@pytest.mark.parametrize(
    ("message", "reason"),
    [
        (_message(schema_version=2), "unsupported_version"),
        (_message(n=5), "bad_value"),  # columns have 6 values
        (_message(n="6"), "wrong_type"),
        (_message(n=100_001), "bad_value"),
        (_message(extra=1), "bad_value"),
        (_message(columns=[]), "wrong_type"),
        (orjson.dumps({"schema_version": 1, "kind": COLUMNS_KIND, "n": 0}), "missing_field"),
        (_message(columns={"event_id": []}), "missing_field"),
    ],
)
def test_a_bad_batch_is_rejected_whole(message: bytes, reason: str) -> None:
    decoded = decode_message(message)
    assert [(r.reason, r.event_index, r.original) for r in decoded.rejected] == [
        (reason, None, message)
    ]
    assert len(decoded.predictions) == 0


BATCH_SCHEMA = jsonschema.Draft202012Validator(load_schema(COLUMNS_KIND))


def test_the_schema_accepts_the_encoded_batches_and_rejects_the_broken_ones() -> None:
    for events in traffic(3, "schema-rollback"):
        assert BATCH_SCHEMA.is_valid(orjson.loads(encode_columns(events) or b""))
    # Row counts beyond the column lengths are the decoder's check; the rest is the schema's.
    for change in ({"schema_version": 2}, {"n": "6"}, {"n": 100_001}, {"extra": 1}):
        assert not BATCH_SCHEMA.is_valid({**columns_of(_events()), **change})
    assert not BATCH_SCHEMA.is_valid({**columns_of(_events()), "columns": {"event_id": []}})


def test_a_column_of_another_length_or_not_an_array_is_rejected_whole() -> None:
    for change in ({"score": 0.5}, {"score": [0.5]}, {"slice": {"platform": "ios"}}):
        message = columns_of(_events())
        message["columns"].update(change)
        assert [r.reason for r in decode_message(orjson.dumps(message)).rejected] in (
            ["wrong_type"],
            ["bad_value"],
        )


def test_rows_of_drops_nulls() -> None:
    columns = {"event_id": ["a", "b"], "latency_ms": [None, 2.0], "slice": {"p": ["x", None]}}
    assert rows_of(columns, 2) == [
        {"schema_version": 1, "kind": "prediction", "event_id": "a", "slice": {"p": "x"}},
        {
            "schema_version": 1,
            "kind": "prediction",
            "event_id": "b",
            "latency_ms": 2.0,
            "slice": {},
        },
    ]


def test_encode_columns_leaves_what_columns_cannot_say_to_rows() -> None:
    events = _events()
    assert encode_columns([]) is None
    assert encode_columns([*events, {"kind": "outcome", "schema_version": 1}]) is None
    assert encode_columns([{**events[0], "latency_ms": None}]) is None  # explicit null
    assert encode_columns([{**events[0], "slice": {"p": None}}]) is None
    assert encode_columns([{**events[0], "slice": "ios"}]) is None
    assert encode_columns([{**events[0], "schema_version": 2}]) is None


# --- the same engine output ---------------------------------------------------------------


def _stage1_output(messages: list[bytes]) -> list[tuple[str, bytes]]:
    stage1 = Stage1(Policy())
    out: list[tuple[str, bytes]] = []
    for offset, message in enumerate(messages):
        stage1.process(0, offset, decode_message(message))
        if offset % 3 == 2:
            out.extend(stage1.flush(0))
    return out + stage1.flush(0)


@pytest.mark.parametrize("scenario", [None, "schema-rollback", "slice-regression"])
def test_stage1_partials_are_the_same_from_rows_and_columns(scenario: str | None) -> None:
    seconds = traffic(12, scenario)
    # Split each second in uneven parts, so pairs also complete across messages.
    parts = [events[i : i + 97] for events in seconds for i in range(0, len(events), 97)]
    rows = [envelope(p) for p in parts]
    columns = [encode_columns(p) or b"" for p in parts]
    assert _stage1_output(columns) == _stage1_output(rows)


def test_replay_commands_are_the_same_from_rows_and_columns() -> None:
    gen = TrafficGenerator(
        rate=300,
        seed=2,
        start_ts=START,
        deviation=ShadowDeviation({"platform": "android"}, after_s=60, shift=0.15),
    )
    rows: list[bytes] = []
    columns: list[bytes] = []
    for events in gen.seconds(240):
        for _, _, value in envelopes(events, 8):
            rows.append(value)
            columns.append(encode_columns(orjson.loads(value)["events"]) or value)
    results = []
    for messages in (rows, columns):
        pipeline = Pipeline(Policy(), partitions=8)
        for message in messages:
            pipeline.feed(message)
        commands = pipeline.finish()
        results.append(([c.command_id for c in commands], pipeline.stats.pairs))
    assert results[0] == results[1]
    assert results[0][0]  # the deviation was caught, so commands were compared
