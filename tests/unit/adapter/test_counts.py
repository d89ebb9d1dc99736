"""What stage 1 reports reaches the worker's metrics."""

import asyncio
import math
from types import SimpleNamespace
from typing import Any

import orjson
from prometheus_client import generate_latest

from streamguard.contracts import parse_message
from streamguard.core import Stage1
from streamguard.faust_app.runtime import Topics
from streamguard.policy import Policy
from streamguard.testing import metric
from tests.unit.adapter.test_outbox import Topic
from tests.unit.adapter.test_recovery import SPECS, Store, runtime
from tests.unit.core._events import envelope, pair


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


class Event:
    """What the stage-1 agent hands the runtime: a message and its value."""

    def __init__(self, offset: int, value: bytes, partition: int = 0) -> None:
        self.message = SimpleNamespace(
            partition=partition, offset=offset, topic=SPECS["predictions"].name, value=value
        )
        self.value = value

    def ack(self) -> None:
        pass


def test_a_caught_up_partitions_close_goes_out_in_a_heartbeat_or_a_flush() -> None:
    """In a heartbeat alone when nothing of the closing window is pending, else in a flush."""

    async def scenario() -> tuple[list[list[int]], list[Any], str]:
        store = Store()
        store.release.set()
        rt, _ = runtime(store)
        partials = Topic(fail=set())
        rt.topics = Topics(partials, None, None, None, None, None)
        flushed: list[list[int]] = []

        async def flush(owned: list[int], n_channels: int, force_snapshot: bool = False) -> None:
            flushed.append(owned)
            rt.engine.stage1.flush(owned[0])

        rt.flush = flush  # type: ignore[method-assign]
        n = SPECS["partials"].partitions
        await rt.on_prediction(Event(0, envelope(pair("a", 1000.0))))
        assert await rt.flush_closing([0], n) == []  # nothing closed yet
        rt.engine.stage1.flush(0)  # the timer's first flush
        rt.record_lag(0, highwater=2)  # offset 1 is the partition's last message: caught up
        await rt.on_prediction(Event(1, envelope(pair("b", 1016.0))))  # past [1000, 1010)'s close
        assert partials.delivered == []  # the agent only asks; the eager flusher tells stage 2
        assert await rt.flush_closing([0], n) == [0]
        beats = [orjson.loads(m) for m in partials.delivered]
        # The pair at 1016 is still pending, for [1010, 1020), which closes at 1025:
        rt.record_lag(0, highwater=3)
        await rt.on_prediction(Event(2, envelope(pair("c", 1026.0))))
        assert await rt.flush_closing([0], n) == [0]
        rt.record_lag(0, highwater=50)  # a backlog: the timer's flush is as early
        await rt.on_prediction(Event(3, envelope(pair("d", 1040.0))))
        assert await rt.flush_closing([0], n) == []
        return flushed, beats, generate_latest(rt.metrics.registry).decode()

    flushed, beats, text = asyncio.run(scenario())
    assert len(beats) == SPECS["partials"].partitions  # one heartbeat on every channel
    assert beats[0]["sources"] == [
        {"partition": 0, "watermark": 1016.01, "offset": 1, "caught_up": True}
    ]
    assert flushed == [[0]]
    assert metric(text, "streamguard_close_heartbeats_total") == 1
    assert metric(text, "streamguard_eager_flushes_total") == 1


def test_partitions_that_close_during_a_flush_are_flushed_together_next() -> None:
    """The eager flusher takes, in one flush, every partition that closed while it flushed."""

    async def scenario() -> list[list[int]]:
        store = Store()
        store.release.set()
        rt, _ = runtime(store)
        flushed: list[list[int]] = []
        in_flight = asyncio.Event()
        broker = asyncio.Event()  # the round trips of a flush in progress

        async def flush(owned: list[int], n_channels: int, force_snapshot: bool = False) -> None:
            flushed.append(list(owned))
            for p in owned:
                rt.engine.stage1.flush(p)
            in_flight.set()
            await broker.wait()

        rt.flush = flush  # type: ignore[method-assign]
        for p in (0, 1, 2):
            await rt.on_prediction(Event(0, envelope(pair(f"a{p}", 1000.0)), partition=p))
            rt.engine.stage1.flush(p)  # the timer's first flush
            rt.record_lag(p, highwater=2)  # offset 1 is the last message: caught up
        owned = [0, 1, 2]
        flusher = asyncio.create_task(rt.eager_flushes(lambda: owned, SPECS["partials"].partitions))

        def closing(p: int) -> Event:
            # A pair for [1000, 1010), then one past its close: the window has data pending.
            return Event(1, envelope(pair(f"b{p}", 1009.0) + pair(f"c{p}", 1016.0)), partition=p)

        await rt.on_prediction(closing(0))
        await asyncio.wait_for(in_flight.wait(), 5)  # partition 0's flush awaits the broker
        for p in (1, 2):  # their closes arrive meanwhile; the agent is not held
            await rt.on_prediction(closing(p))
        owned.remove(2)  # revoked before the next flush: its next owner flushes it
        in_flight.clear()
        broker.set()
        await asyncio.wait_for(in_flight.wait(), 5)
        flusher.cancel()
        return flushed

    assert asyncio.run(scenario()) == [[0], [1]]


def test_an_eager_flush_that_raises_ends_the_flusher_with_the_error() -> None:
    # The app runs the flusher inside faust_app.halt.stops_worker: the worker stops rather
    # than flush on with partitions whose data the failed flush took and never sent.
    async def scenario() -> tuple[list[list[int]], BaseException | None]:
        store = Store()
        store.release.set()
        rt, _ = runtime(store)
        flushed: list[list[int]] = []

        async def flush(owned: list[int], n_channels: int, force_snapshot: bool = False) -> None:
            flushed.append(list(owned))
            raise OSError("broker gone")

        rt.flush = flush  # type: ignore[method-assign]
        flusher = asyncio.create_task(rt.eager_flushes(lambda: [0, 1], 8))
        rt.flush_soon(0)
        await asyncio.wait([flusher], timeout=5)
        rt.flush_soon(1)  # nobody flushes it any more
        await asyncio.sleep(0.05)
        return flushed, flusher.exception() if flusher.done() else None

    flushed, error = asyncio.run(scenario())
    assert flushed == [[0]]
    assert isinstance(error, OSError)
    assert "broker gone" in str(error)
