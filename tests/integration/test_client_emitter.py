"""The emitter against a real embedded broker: routing, envelopes, limits, drops, failures."""

import asyncio
import concurrent.futures
import time
from collections import Counter
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition

from streamguard.broker import EmbeddedBroker
from streamguard.broker.admin import apply_topics
from streamguard.client import Emitter
from streamguard.contracts import decode_message, load_topic_specs, partition_for

pytestmark = pytest.mark.integration

TOPIC = load_topic_specs()["predictions"].name
T0 = 1_790_000_000.0


def prediction(request_id: str, role: str, deployment: str = "home-ranker") -> dict[str, Any]:
    return {
        "schema_version": 1,
        "kind": "prediction",
        "event_id": f"{request_id}:{deployment}:{role}",
        "request_id": request_id,
        "ts": T0,
        "deployment": deployment,
        "model_version": "v2" if role == "shadow" else "v1",
        "role": role,
        "slice": {"platform": "ios", "country": "de"},
        "score": 0.25,
        "latency_ms": 3.5,
    }


def outcome(request_id: str) -> dict[str, Any]:
    return {
        "schema_version": 1,
        "kind": "outcome",
        "event_id": f"{request_id}:outcome",
        "request_id": request_id,
        "ts": T0 + 1,
        "deployment": "home-ranker",
        "value": 1.0,
    }


def workload(n_requests: int) -> list[dict[str, Any]]:
    """Five events per request: primary and shadow of two deployments, and an outcome."""
    events = []
    for i in range(n_requests):
        rid = f"req-{i:06d}"
        for deployment in ("home-ranker", "search-ranker"):
            events.append(prediction(rid, "primary", deployment))
            events.append(prediction(rid, "shadow", deployment))
        events.append(outcome(rid))
    return events


async def read_all(bootstrap: str, n_events: int, timeout_s: float = 15.0) -> list[Any]:
    """Every record of the predictions topic, read until ``n_events`` events arrived."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, auto_offset_reset="earliest")
    await consumer.start()
    try:
        await consumer.topics()
        tps = [TopicPartition(TOPIC, p) for p in sorted(consumer.partitions_for_topic(TOPIC))]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        records: list[Any] = []
        seen = 0
        deadline = time.monotonic() + timeout_s
        while seen < n_events and time.monotonic() < deadline:
            for batch in (await consumer.getmany(timeout_ms=200)).values():
                records.extend(batch)
                seen += sum(len(orjson.loads(r.value).get("events", [None])) for r in batch)
        # A short extra read catches anything sent twice.
        for batch in (await consumer.getmany(timeout_ms=300)).values():
            records.extend(batch)
        return records
    finally:
        await consumer.stop()


@pytest.mark.parametrize(
    ("max_events", "max_bytes"),
    [(200, 900_000), (1000, 20_000)],
    ids=["event-limit", "byte-limit"],
)
def test_every_event_arrives_once_in_its_request_partition(
    broker_with_topics: EmbeddedBroker, max_events: int, max_bytes: int
) -> None:
    events = workload(2000)
    assert len(events) == 10_000

    async def scenario() -> tuple[dict[str, int], list[Any]]:
        async with Emitter(
            broker_with_topics.bootstrap, max_batch_events=max_events, max_batch_bytes=max_bytes
        ) as emitter:
            for i, event in enumerate(events):
                assert emitter.emit(event)
                if i % 500 == 0:
                    await asyncio.sleep(0)  # as a server would, between requests
            await emitter.flush()
            stats = emitter.stats()
        return stats, await read_all(broker_with_topics.bootstrap, len(events))

    stats, records = asyncio.run(scenario())
    partitions = load_topic_specs()["predictions"].partitions
    arrived: Counter[str] = Counter()
    partition_of: dict[str, set[int]] = {}
    sizes = []
    for record in records:
        envelope = orjson.loads(record.value)
        assert set(envelope) == {"schema_version", "events"}
        assert envelope["schema_version"] == 1
        batch = envelope["events"]
        assert record.key == batch[0]["request_id"].encode()
        assert len(batch) <= max_events
        assert len(record.value) <= max_bytes
        assert not decode_message(record.value).rejected
        sizes.append(len(batch))
        for event in batch:
            arrived[event["event_id"]] += 1
            partition_of.setdefault(event["request_id"], set()).add(record.partition)
    assert arrived == Counter(e["event_id"] for e in events)  # each exactly once
    assert len(partition_of) == 2000
    for request_id, found in partition_of.items():
        assert found == {partition_for(request_id.encode(), partitions)}
    assert max(sizes) > 1  # events really were batched
    if max_bytes < 900_000:
        assert max(sizes) < max_events  # the byte limit, not the event limit, closed envelopes
    else:
        assert max(sizes) == max_events
    assert stats["events_emitted"] == stats["events_sent"] == 10_000
    assert stats["envelopes_sent"] == len(records)
    assert stats["events_dropped"] == stats["send_errors"] == stats["buffered"] == 0


def test_full_buffer_drops_and_counts_then_emit_wait_waits(
    broker_with_topics: EmbeddedBroker,
) -> None:
    async def scenario() -> tuple[list[bool], bool, dict[str, int], list[Any]]:
        emitter = Emitter(broker_with_topics.bootstrap, max_buffered_events=10, linger_s=30.0)
        await emitter.start()
        # No await between emits: the sender cannot run, so exactly 10 fit.
        accepted = [emitter.emit(prediction(f"r{i}", "primary")) for i in range(15)]
        waiter = asyncio.create_task(emitter.emit_wait(prediction("late", "primary")))
        await asyncio.sleep(0.1)
        assert not waiter.done()  # waits for room instead of dropping
        await emitter.flush()
        waited = await waiter
        await emitter.stop()
        return accepted, waited, emitter.stats(), await read_all(broker_with_topics.bootstrap, 11)

    accepted, waited, stats, records = asyncio.run(scenario())
    assert accepted == [True] * 10 + [False] * 5
    assert waited
    assert stats["events_dropped"] == stats["drops_buffer_full"] == 5
    assert stats["events_emitted"] == stats["events_sent"] == 11
    sent = [e["request_id"] for r in records for e in orjson.loads(r.value)["events"]]
    assert sorted(sent) == sorted([f"r{i}" for i in range(10)] + ["late"])


def test_stop_flushes_lingering_events_and_oversized_events_are_dropped(
    broker_with_topics: EmbeddedBroker,
) -> None:
    async def scenario() -> tuple[dict[str, int], list[Any]]:
        emitter = Emitter(broker_with_topics.bootstrap, linger_s=60.0, max_batch_bytes=4_000)
        await emitter.start()
        for i in range(500):
            assert emitter.emit(prediction(f"r{i}", "shadow"))
        huge = prediction("big", "primary") | {"items": ["x" * 200] * 30}
        assert not emitter.emit(huge)
        await emitter.stop()  # no flush() before: stop must send what lingers
        assert not emitter.emit(prediction("after", "primary"))  # stopped: dropped, counted
        return emitter.stats(), await read_all(broker_with_topics.bootstrap, 500)

    stats, records = asyncio.run(scenario())
    assert sum(len(orjson.loads(r.value)["events"]) for r in records) == 500
    assert stats["events_sent"] == 500
    assert stats["drops_oversized"] == stats["drops_stopping"] == 1
    assert stats["events_dropped"] == 2


def test_single_mode_sends_one_message_per_event(broker_with_topics: EmbeddedBroker) -> None:
    events = workload(100)

    async def scenario() -> tuple[dict[str, int], list[Any]]:
        async with Emitter(broker_with_topics.bootstrap, batch=False) as emitter:
            for event in events:
                emitter.emit(event)
        return emitter.stats(), await read_all(broker_with_topics.bootstrap, len(events))

    stats, records = asyncio.run(scenario())
    partitions = load_topic_specs()["predictions"].partitions
    assert len(records) == len(events) == stats["envelopes_sent"] == stats["events_sent"]
    for record in records:
        event = orjson.loads(record.value)
        assert record.key == event["request_id"].encode()
        assert record.partition == partition_for(record.key, partitions)
    assert sorted(orjson.loads(r.value)["event_id"] for r in records) == sorted(
        e["event_id"] for e in events
    )


def test_failed_sends_are_retried_then_counted_as_dropped(tmp_path: Path) -> None:
    """With the broker gone for good, every event ends up in events_dropped, none vanish."""
    with EmbeddedBroker(log_path=tmp_path / "broker.log") as broker:
        asyncio.run(apply_topics(broker.bootstrap))

        async def scenario() -> dict[str, int]:
            emitter = Emitter(
                broker.bootstrap,
                max_send_attempts=2,
                retry_backoff_s=0.05,
                producer_config={"request_timeout_ms": 1000},
            )
            await emitter.start()
            broker.kill()
            for i in range(50):
                emitter.emit(prediction(f"r{i}", "primary"))
            await asyncio.wait_for(emitter.flush(), 20)
            await emitter.stop()
            return emitter.stats()

        stats = asyncio.run(scenario())
    assert stats["events_sent"] == 0
    assert stats["events_dropped"] == stats["drops_send_failed"] == 50
    assert stats["send_errors"] >= 2  # at least one envelope was tried twice


def test_send_retried_across_a_broker_restart_is_delivered(tmp_path: Path) -> None:
    broker = EmbeddedBroker(log_path=tmp_path / "broker.log").start()
    try:
        asyncio.run(apply_topics(broker.bootstrap))

        async def scenario() -> tuple[dict[str, int], list[Any]]:
            emitter = Emitter(
                broker.bootstrap,
                max_send_attempts=20,
                retry_backoff_s=0.1,
                max_backoff_s=0.5,
                producer_config={"request_timeout_ms": 1000},
            )
            await emitter.start()
            broker.kill()
            for i in range(50):
                emitter.emit(prediction(f"r{i}", "primary"))
            await asyncio.sleep(1.5)  # let a few attempts fail
            # Same port, empty memory: the topics come back from the specs before the emitter
            # may retry (both calls block this event loop), or the broker would auto-create the
            # topic with its own partition count on the emitter's first write.
            broker.start()
            with concurrent.futures.ThreadPoolExecutor(1) as pool:
                pool.submit(asyncio.run, apply_topics(broker.bootstrap)).result()
            await asyncio.wait_for(emitter.stop(), 20)
            return emitter.stats(), await read_all(broker.bootstrap, 50)

        stats, records = asyncio.run(scenario())
    finally:
        broker.stop()
    assert stats["send_errors"] >= 1
    assert stats["events_dropped"] == 0
    assert stats["events_sent"] == 50
    arrived = Counter(e["event_id"] for r in records for e in orjson.loads(r.value)["events"])
    assert set(arrived) == {f"r{i}:home-ranker:primary" for i in range(50)}
