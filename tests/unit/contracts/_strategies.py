"""Hypothesis strategies and schema oracles for the decoder's tests (shared by the
``test_decode*`` files and test_columns)."""

import json
import string
from typing import Any

import jsonschema
import orjson
from hypothesis import strategies as st

from streamguard.contracts import ROLES, load_schema
from streamguard.contracts.decode import Decoded

#: Every reason the decoder may give; dead-letter keys and metric labels come from this set.
REASONS = {
    "empty_message",
    "oversized",
    "invalid_json",
    "not_an_object",
    "unsupported_version",
    "unknown_kind",
    "missing_field",
    "wrong_type",
    "bad_value",
    "ts_in_future",
}

VALIDATORS = {
    kind: jsonschema.Draft202012Validator(load_schema(kind))
    for kind in ("prediction", "outcome", "training_example")
}
ENVELOPE_MAX_EVENTS = load_schema("envelope")["properties"]["events"]["maxItems"]


def schema_accepts(event: Any) -> bool:
    """What JSON Schema says of one event: valid for the schema of the kind it claims."""
    return any(v.is_valid(event) for v in VALIDATORS.values())


def accepted(decoded: Decoded) -> int:
    return len(decoded.predictions) + len(decoded.outcomes) + len(decoded.training)


def parses(raw: bytes) -> bool:
    """Whether orjson reads the text (it refuses numbers beyond the range of a double)."""
    try:
        orjson.loads(raw)
    except orjson.JSONDecodeError:
        return False
    return True


def encode(value: Any) -> bytes:
    """JSON text as any client could send it (stdlib json: ints of any size, no NaN)."""
    return json.dumps(value, allow_nan=False).encode()


# --- strategies ---------------------------------------------------------------------------------

text = st.characters(codec="utf-8")
# Short values keep generation fast; the boundary lengths are drawn explicitly.
ids = st.text(text, min_size=1, max_size=10) | st.sampled_from(["i" * 128, "\u00e9" * 128])
deployments = st.text(string.ascii_letters + string.digits + "._:/-", min_size=1, max_size=12)
replica_ids = st.text(string.ascii_letters + string.digits + "._:/@-", min_size=1, max_size=12)
slice_keys = st.text(
    string.ascii_letters + string.digits + "_.-", min_size=1, max_size=8
) | st.just("k" * 64)
slice_values = st.text(
    st.characters(codec="utf-8", exclude_characters="=,|"), min_size=1, max_size=8
) | st.just("v" * 64)
slices = st.dictionaries(slice_keys, slice_values, max_size=4) | st.just(
    {f"d{i}": "v" for i in range(16)}
)
items = st.lists(st.text(text, min_size=1, max_size=8), max_size=4) | st.sampled_from(
    [[], ["i" * 256], ["x"] * 1000]
)
# JSON numbers; beyond 64 bits orjson parses integers as doubles, which is still a number.
json_ints = st.integers(-(2**70), 2**70)
numbers = json_ints | st.floats(allow_nan=False, allow_infinity=False)
non_negative = st.integers(0, 2**70) | st.floats(0, 1e300)
timestamps = st.integers(0, 2**40) | st.floats(0.0, 4e9)

json_values = st.recursive(
    st.none()
    | st.booleans()
    | json_ints
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(text, max_size=20),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=4)
    ),
    max_leaves=12,
)

valid_predictions = st.fixed_dictionaries(
    {
        "schema_version": st.sampled_from([1, 1.0]),
        "kind": st.just("prediction"),
        "event_id": ids,
        "request_id": ids,
        "ts": timestamps,
        "deployment": deployments,
        "model_version": ids,
        "role": st.sampled_from(ROLES),
        "slice": slices,
        "score": numbers,
    },
    optional={
        "latency_ms": non_negative,
        "items": items,
        "replica_id": replica_ids,
        "replica_age_s": non_negative,
        "replica_ready": st.booleans(),
        "env_fingerprint": ids,
        "note": json_values,  # additional properties are allowed
    },
)
valid_outcomes = st.fixed_dictionaries(
    {
        "schema_version": st.sampled_from([1, 1.0]),
        "kind": st.just("outcome"),
        "event_id": ids,
        "request_id": ids,
        "ts": timestamps,
        "deployment": deployments,
        "value": numbers,
    },
    optional={"note": json_values},
)
feature_names = st.text(text, min_size=1, max_size=10) | st.just("f" * 128)
valid_training = st.fixed_dictionaries(
    {
        "schema_version": st.sampled_from([1, 1.0]),
        "kind": st.just("training_example"),
        "event_id": ids,
        "pipeline": deployments,
        "example_id": ids,
        "label_ts": non_negative,
        "feature_ts": st.dictionaries(feature_names, non_negative, max_size=5),
    },
    optional={"note": json_values},
)
valid_events = valid_predictions | valid_outcomes | valid_training

FIELDS = [
    "schema_version",
    "kind",
    "event_id",
    "request_id",
    "ts",
    "deployment",
    "model_version",
    "role",
    "slice",
    "score",
    "latency_ms",
    "items",
    "value",
    "replica_id",
    "replica_age_s",
    "replica_ready",
    "env_fingerprint",
    "pipeline",
    "example_id",
    "label_ts",
    "feature_ts",
]
STRING_FIELDS = [
    "event_id",
    "request_id",
    "deployment",
    "model_version",
    "role",
    "kind",
    "replica_id",
    "env_fingerprint",
    "pipeline",
    "example_id",
]
wrong_values = st.sampled_from(
    [None, True, False, 0, 1, -1, 1.5, "", "x", [], {}, [1], {"a": "b"}, "1", 2**64, -(2**63)]
)


@st.composite
def mutations(draw: st.DrawFn, event: dict[str, Any], huge: bool) -> dict[str, Any]:
    """One mutation of an event: most make it invalid, some leave it valid (extras, 1.0)."""
    event = dict(event)
    op = draw(
        st.sampled_from(
            [
                "drop",
                "wrong_type",
                "version",
                "long_string",
                "empty_string",
                "role",
                "slice_key",
                "slice_value",
                "slice_size",
                "items",
                "negative",
                "kind",
                "nested",
                "deployment",
                "features",
            ]
        )
    )
    field = draw(st.sampled_from(FIELDS))
    if op == "drop":
        event.pop(draw(st.sampled_from(sorted(event))), None)
    elif op == "wrong_type":
        event[field] = draw(wrong_values | json_values)
    elif op == "version":
        event["schema_version"] = draw(
            st.sampled_from([0, 2, -1, 1.5, "1", True, False, None, [1], {"v": 1}, 1.0, 1])
        )
    elif op == "long_string":
        limit = 64 if field == "slice" else 128
        long = "x" * draw(st.integers(limit + 1, limit + 200))
        if field == "slice":
            event["slice"] = {long: "v"} if draw(st.booleans()) else {"k": long}
        elif field == "items":
            event["items"] = ["i" * draw(st.integers(257, 400))]
        else:
            event[draw(st.sampled_from(STRING_FIELDS))] = long
    elif op == "empty_string":
        event[draw(st.sampled_from(STRING_FIELDS))] = ""
    elif op == "role":
        event["role"] = draw(
            st.sampled_from(["", "Primary", "candidate", "shadow ", " canary", "PRIMARY"])
            | st.text(max_size=8)
        )
    elif op == "slice_key":
        bad_key = draw(
            st.sampled_from(["", "a=b", "a,b", "a|b", "a b", "plat form", "é", "k\x00", "a/b"])
            | st.text(max_size=10)
        )
        event["slice"] = {**_dict(event.get("slice")), bad_key: "v"}
    elif op == "slice_value":
        bad_value = draw(
            st.sampled_from(["", "a=b", "a,b", "a|b", "=", ",", "|", None, 1, True, [], {}])
            | st.text(max_size=10)
            | json_values
        )
        event["slice"] = {**_dict(event.get("slice")), "platform": bad_value}
    elif op == "slice_size":
        event["slice"] = {f"d{i}": "v" for i in range(draw(st.integers(15, 20)))}
    elif op == "items":
        event["items"] = draw(
            st.sampled_from([None, "a", 1, {}, [""], [1], [None], [["a"]], ["a", 2], [True]])
            | st.just(["x"] * 1001)
            | st.just(["x"] * 1000)
            | st.lists(json_values, max_size=3)
        )
    elif op == "negative":
        name = draw(
            st.sampled_from(["ts", "latency_ms", "score", "value", "replica_age_s", "label_ts"])
        )
        event[name] = draw(st.sampled_from([-1, -0.001, -1e300, -0.0, -(2**64), 0, 0.0]))
    elif op == "kind":
        event["kind"] = draw(
            st.sampled_from(
                ["prediction", "outcome", "training_example", "Prediction", "", None, 1, ["x"]]
            )
        )
    elif op == "nested":
        event[field] = draw(
            st.recursive(json_values, lambda c: st.lists(c, min_size=1, max_size=2), max_leaves=20)
        )
    elif op == "deployment":
        name = draw(st.sampled_from(["deployment", "pipeline"]))
        event[name] = draw(
            st.sampled_from(["home ranker", "a|b", "ä", "a\tb", "x" * 128, "x" * 129, "a,b"])
        )
    elif op == "features":
        event["feature_ts"] = draw(
            st.sampled_from(
                [
                    {"": 1.0},
                    {"f" * 129: 1.0},
                    {"f" * 128: 1.0},
                    {"a": -1},
                    {"a": -0.0},
                    {"a": True},
                    {"a": None},
                    {"a": "1"},
                    {"a": [1]},
                    {f"f{i}": 1 for i in range(1001)},
                    {f"f{i}": 1 for i in range(1000)},
                    [],
                    "a",
                ]
            )
            | st.dictionaries(st.text(max_size=4), json_values, max_size=3)
        )
    if huge and draw(st.booleans()):
        # Integers beyond the range of a double, which stdlib JSON writes and orjson refuses.
        field = draw(
            st.sampled_from(["ts", "score", "value", "latency_ms", "replica_age_s", "label_ts"])
        )
        event[field] = draw(st.sampled_from([10**400, -(10**400), 2**1024, 10**308 * 2]))
    return event


def _dict(value: Any) -> dict[str, Any]:
    return dict(value) if isinstance(value, dict) else {}


@st.composite
def mutated_events(draw: st.DrawFn, huge: bool = False) -> dict[str, Any]:
    event = draw(valid_events)
    for _ in range(draw(st.integers(1, 3))):
        event = draw(mutations(event, huge))
    return event


any_events = valid_events | mutated_events()


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


#: Events the JSON Schema refuses (mutations that happen to stay valid are filtered out).
strictly_invalid = mutated_events().filter(lambda e: not schema_accepts(orjson.loads(encode(e))))
