"""Builders of prediction events and messages for the stage and pipeline tests."""

from collections import defaultdict
from typing import Any

import orjson

from streamguard.contracts import decode_message, partition_for
from streamguard.contracts.decode import Decoded
from streamguard.sim import TrafficGenerator


def prediction(
    request_id: str,
    role: str,
    ts: float,
    score: float = 0.5,
    *,
    slice_: dict[str, str] | None = None,
    deployment: str = "d",
    version: str | None = None,
) -> dict[str, Any]:
    return {
        "schema_version": 1,
        "kind": "prediction",
        "event_id": f"{request_id}-{role}",
        "request_id": request_id,
        "ts": ts,
        "deployment": deployment,
        "model_version": version or ("v1" if role == "primary" else "v2"),
        "role": role,
        "slice": slice_ if slice_ is not None else {"platform": "ios"},
        "score": score,
    }


def pair(
    request_id: str, ts: float, primary: float = 0.4, shadow: float = 0.45, **kw: Any
) -> list[dict[str, Any]]:
    """A primary and its shadow, the shadow 10 ms later."""
    return [
        prediction(request_id, "primary", ts, primary, **kw),
        prediction(request_id, "shadow", ts + 0.01, shadow, **kw),
    ]


def envelope(events: list[dict[str, Any]]) -> bytes:
    return orjson.dumps({"schema_version": 1, "events": events})


def decoded(events: list[dict[str, Any]]) -> Decoded:
    result = decode_message(envelope(events))
    assert not result.rejected
    return result


def sim_messages(generator: TrafficGenerator, seconds: int, partitions: int) -> list[bytes]:
    """One envelope per second and partition, each holding requests of one partition."""
    out: list[bytes] = []
    for events in generator.seconds(seconds):
        by_partition: dict[int, list[dict[str, Any]]] = defaultdict(list)
        for event in events:
            by_partition[partition_for(event["request_id"].encode(), partitions)].append(event)
        out.extend(envelope(evs) for _, evs in sorted(by_partition.items()))
    return out


def partition_of(message: bytes, partitions: int) -> int:
    first = orjson.loads(message)["events"][0]["request_id"]
    return partition_for(first.encode(), partitions)
