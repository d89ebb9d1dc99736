"""The columns the decoder builds hold the events' values, and one bad event costs only itself."""

import math
from typing import Any

import numpy as np
import orjson
from hypothesis import given, settings
from hypothesis import strategies as st

from streamguard.contracts import ROLES
from streamguard.contracts.decode import (
    Decoded,
    decode_message,
)
from tests.unit.contracts._strategies import (
    encode,
    strictly_invalid,
    valid_events,
    valid_predictions,
    valid_training,
)

# --- (c) the fast columnar path agrees with the per-event validator -----------------------------


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
