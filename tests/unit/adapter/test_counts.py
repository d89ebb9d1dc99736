"""What stage 1 reports reaches the worker's metrics."""

import asyncio
import math

import orjson
from prometheus_client import generate_latest

from streamguard.contracts import parse_message
from streamguard.core import Stage1
from streamguard.policy import Policy
from streamguard.testing import metric
from tests.unit.adapter.test_recovery import Store, runtime


def one_event(kind: str, request: str, ts: float, role: str = "primary") -> bytes:
    event = {"schema_version": 1, "kind": kind, "request_id": request, "ts": ts, "deployment": "a"}
    if kind == "outcome":
        event |= {"event_id": f"o-{request}", "value": 1.0}
    else:
        event |= {"event_id": f"{request}-{role}", "model_version": "v1", "role": role}
        event |= {"slice": {"platform": "ios"}, "score": 0.5}
    return orjson.dumps(event)


def test_messages_accounted_one_by_one_are_counted() -> None:
    # An outcome before its prediction: the run cannot be accounted at once.
    script = [
        one_event("prediction", "r0", 100.0, "canary"),
        one_event("outcome", "r1", 101.0),
        one_event("prediction", "r1", 101.5, "canary"),
        one_event("prediction", "r2", 102.0, "canary"),
    ]
    stage1 = Stage1(Policy())
    units = []
    for offset, value in enumerate(script):
        units += stage1.feed(0, offset, value, parse_message(value), math.inf)
    units += stage1.cut(0, math.inf)
    one_by_one = sum(unit.report.one_by_one for unit in units)
    assert one_by_one > 0

    async def count() -> str:
        rt, _ = runtime(Store())
        for unit in units:
            rt._count(unit.report)
        return generate_latest(rt.metrics.registry).decode()

    text = asyncio.run(count())
    assert metric(text, "streamguard_one_by_one_messages_total") == one_by_one
    assert metric(text, "streamguard_events_total") == len(script)
