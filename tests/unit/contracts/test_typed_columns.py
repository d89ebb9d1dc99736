"""Columnar batches read in C (msgspec): only batches the dict path accepts whole, the same batch.

As test_typed_rows does for row envelopes, each property compares the typed path with the dict
path (``typed=False``), which test_columns checks against the row envelopes of the same events.
"""

from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from streamguard.contracts import decode_message, load_schema
from streamguard.contracts.decode import TYPED_MIN_BYTES
from streamguard.contracts.typed_columns import typed_columns
from tests.unit.contracts._strategies import any_events, encode, schema_accepts
from tests.unit.contracts.test_columns import columns_of, same_batch
from tests.unit.contracts.test_typed_rows import (
    FIELDS,
    _plain,
    _prediction,
    predictions,
    same_result,
)

MAX_DIMS = load_schema("prediction")["properties"]["slice"]["maxProperties"]


def _dims(rows: list[dict[str, Any]]) -> int:
    """Slice dimensions of the batch: more than a row may have are left to a row-by-row check."""
    return len({k for r in rows for k in r["slice"]})


def _rows(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """What columns can say: prediction objects with slice objects, and no nulls."""
    rows = [
        {**e, "kind": "prediction", "schema_version": 1}
        for e in orjson.loads(encode(events))
        if type(e.get("slice")) is dict
    ]
    return [
        {k: v for k, v in e.items() if v is not None}
        | {"slice": {k: v for k, v in e["slice"].items() if v is not None}}
        for e in rows
    ]


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(predictions | any_events, min_size=1, max_size=8),
    st.sampled_from([float("inf"), 3e9]),
)
def test_typed_reads_only_what_the_dict_path_accepts_whole_and_the_same(
    events: list[dict[str, Any]], max_ts: float
) -> None:
    rows = _rows(events)
    if not rows:
        return
    raw = encode(columns_of(rows))
    reference = decode_message(raw, max_ts, typed=False)
    batch = typed_columns(raw, max_ts)
    if batch is None:
        plain = [
            schema_accepts(r) and set(r) <= FIELDS["prediction"] and r["ts"] <= max_ts for r in rows
        ]
        covered = all(plain) and _dims(rows) <= MAX_DIMS
        assert reference.rejected or not covered, "a batch of plain valid rows was declined"
        return
    assert not reference.rejected, reference.rejected
    same_batch(batch, reference.predictions)
    assert batch.slice_columns == reference.predictions.slice_columns


@settings(max_examples=200, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(predictions.map(_plain), min_size=1, max_size=8))
def test_plain_valid_batches_are_read_typed_and_the_same(events: list[dict[str, Any]]) -> None:
    rows = _rows(events)
    if _dims(rows) > MAX_DIMS:
        rows = [{**r, "slice": {}} for r in rows]
    raw = encode(columns_of(rows))
    batch = typed_columns(raw)
    assert batch is not None
    same_batch(batch, decode_message(raw, typed=False).predictions)


@settings(max_examples=60, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(predictions | any_events, min_size=1, max_size=6))
def test_long_batches_decode_the_same_either_way(events: list[dict[str, Any]]) -> None:
    rows = _rows(events)
    if not rows:
        return
    times = TYPED_MIN_BYTES // len(encode(columns_of(rows))) + 1
    raw = encode(columns_of(rows * times))
    same_result(decode_message(raw), decode_message(raw, typed=False))


N = 30  # rows: a batch of TYPED_MIN_BYTES or more


def _batch(**changes: Any) -> dict[str, Any]:
    rows = [_prediction(event_id=f"e{i}", latency_ms=12.5 if i % 2 else None) for i in range(N)]
    message = columns_of([{k: v for k, v in r.items() if v is not None} for r in rows])
    message["columns"].update(changes)
    return message


@pytest.mark.parametrize(
    ("change", "why"),
    [
        ({"n": float(N)}, "n written as a double: valid, but for the dict path"),
        ({"n": 0}, "an empty batch: for the dict path"),
        (
            {"columns": {**_batch()["columns"], "note": ["x"] * N}},
            "a column the schema does not name",
        ),
        (
            {"columns": _batch(score=[None] + [0.5] * (N - 1))["columns"]},
            "a null in a required column",
        ),
        ({"columns": _batch(score=[0.5] * (N - 1))["columns"]}, "a column of another length"),
        (
            {"columns": _batch(latency_ms=[1.0] * (N - 1))["columns"]},
            "an optional column too short",
        ),
        (
            {"columns": _batch(slice={"platform": ["ios"] * (N - 1)})["columns"]},
            "a slice too short",
        ),
        ({"columns": _batch(deployment=["home ranker"] * N)["columns"]}, "a pattern broken"),
        ({"columns": _batch(slice={"a=b": ["x"] * N})["columns"]}, "a slice key's pattern"),
        ({"columns": _batch(slice={f"d{i}": ["x"] * N for i in range(17)})["columns"]}, "17 dims"),
        ({"columns": _batch(replica_id=["pod 1"] * N)["columns"]}, "a replica id's pattern"),
        ({"columns": _batch(latency_ms=[-1.0] * N)["columns"]}, "a negative latency"),
        ({"columns": _batch(ts=[4e9] * N)["columns"]}, "ts in the future"),
        ({"extra": 1}, "a field the batch schema does not name"),
    ],
)
def test_what_the_typed_path_declines(change: dict[str, Any], why: str) -> None:
    message = {**_batch(), **change}
    raw = orjson.dumps(message)
    assert typed_columns(raw, max_ts=3e9) is None, why
    assert typed_columns(orjson.dumps(_batch()), max_ts=3e9) is not None
    assert len(raw) >= TYPED_MIN_BYTES
    same_result(decode_message(raw, 3e9), decode_message(raw, 3e9, typed=False))


def test_an_all_null_optional_column_is_as_if_absent() -> None:
    raw = orjson.dumps(_batch(error=[None] * N, items=[None] * N, allocation=[None] * N))
    batch = typed_columns(raw)
    assert batch is not None
    assert (len(batch.error), batch.items, batch.allocation) == (0, [], [])
    same_batch(batch, decode_message(raw, typed=False).predictions)
