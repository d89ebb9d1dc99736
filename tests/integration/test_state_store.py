"""Snapshots on the real state topic: closed windows are written once, and restore whole."""

import asyncio
import threading
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.structs import TopicPartition

from streamguard.broker import EmbeddedBroker
from streamguard.contracts import load_topic_specs, partition_for
from streamguard.core import Stage2
from streamguard.core.snapshot import pack, split
from streamguard.engine import Pipeline
from streamguard.faust_app.metrics import Metrics
from streamguard.faust_app.state import StateStore, message_stamp
from streamguard.policy import parse_policy
from streamguard.sim import TrafficGenerator
from streamguard.testing import metric
from tests.unit.core._events import sim_messages

pytestmark = pytest.mark.integration

SPECS = load_topic_specs()
STATE = SPECS["state"]
POLICY = parse_policy("[defaults]\nwindow_s = 10\nhorizon_s = 30\nallowed_lateness_s = 5\n")


class ProducerTopic:
    """What the store asks of a Faust topic (``send`` returning a delivery future)."""

    def __init__(self, producer: AIOKafkaProducer) -> None:
        self.producer = producer

    def get_topic_name(self) -> str:
        return STATE.name

    async def send(self, *, key: bytes | None, value: bytes | None, partition: int | None) -> Any:
        return await self.producer.send(STATE.name, value, key=key, partition=partition)


async def records(bootstrap: str) -> list[tuple[str, bytes | None]]:
    """Every (key, value) of the state topic, in order within each partition."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await consumer.start()
    try:
        tps = [TopicPartition(STATE.name, p) for p in range(STATE.partitions)]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        ends = await consumer.end_offsets(tps)
        out: list[tuple[str, bytes | None]] = []
        for tp in tps:
            while await consumer.position(tp) < ends[tp]:
                for message in (await consumer.getmany(tp, timeout_ms=1000)).get(tp, []):
                    out.append((message.key.decode(), message.value))
        return out
    finally:
        await consumer.stop()


@asynccontextmanager
async def producing(bootstrap: str) -> AsyncIterator[AIOKafkaProducer]:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, max_request_size=1 << 26)
    await producer.start()
    try:
        yield producer
    finally:
        await producer.stop()


def stage2_after(messages: list[bytes]) -> Stage2:
    pipe = Pipeline(POLICY, partitions=8)
    for message in messages:
        pipe.feed(message)
    pipe.flush()
    return pipe.engine.stage2


def halfway_and_end() -> tuple[Stage2, Stage2, int]:
    """Stage 2 after 45 and 90 s of traffic (horizon 30 s), and the channel holding it."""
    generator = TrafficGenerator(deployment="store", rate=60, seed=3, start_ts=1_700_000_000.0)
    messages = sim_messages(generator, 90, 8)
    early, late = stage2_after(messages[: len(messages) // 2]), stage2_after(messages)
    channel = next(c for c in range(8) if early.snapshot(c)["deployments"])
    return early, late, channel


async def scenario(bootstrap: str) -> dict[str, Any]:
    early, late, channel = halfway_and_end()
    async with producing(bootstrap) as producer:
        store = StateStore(bootstrap, STATE, ProducerTopic(producer), Metrics())
        assert await store.save("stage2", channel, 10, early.snapshot(channel))
        assert await store.save("stage2", channel, 11, early.snapshot(channel))  # no new parts
        assert await store.save("stage2", channel, 20, late.snapshot(channel))
        # Another worker restores: a store that has written nothing.
        fresh = StateStore(bootstrap, STATE, ProducerTopic(producer), Metrics())
        found = await fresh.load([f"stage2/{channel}"])
        return {
            "channel": channel,
            "late": late,
            "found": found,
            "records": await records(bootstrap),
            "whole": len(pack({"state": late.snapshot(channel)})),
        }


def test_closed_windows_are_stored_once_and_the_snapshot_restores_whole(
    broker_with_topics: EmbeddedBroker,
) -> None:
    out = asyncio.run(scenario(broker_with_topics.bootstrap))
    channel, late = out["channel"], out["late"]
    prefix = f"stage2/{channel}/part/"
    writes = Counter(key for key, value in out["records"] if value is not None)
    tombstones = {key for key, value in out["records"] if key.startswith(prefix) and value is None}
    parts = {key for key in writes if key.startswith(prefix)}
    assert writes[f"stage2/{channel}"] == 3
    assert parts
    assert all(writes[key] == 1 for key in parts)
    # 90 s of traffic with a 30 s horizon: windows left it between the saves, and got tombstones.
    assert tombstones
    assert tombstones <= parts
    # Restored from the main record and the parts without a tombstone, exactly what was saved.
    saved = out["found"][f"stage2/{channel}"]
    assert saved["offset"] == 20
    restored = Stage2(POLICY, n_sources=8, guards=late.guards)
    restored.restore(channel, saved["state"])
    assert pack(restored.snapshot(channel)) == pack(late.snapshot(channel))
    # The record written at every snapshot is a fraction of the whole state.
    main = [value for key, value in out["records"] if key == f"stage2/{channel}"]
    assert len(main[-1]) < out["whole"] / 3


async def lose_a_part(bootstrap: str, key: str, name: str) -> tuple[dict[str, Any], float]:
    """Tombstone one part of ``key``, then load it as a restarting worker would."""
    async with producing(bootstrap) as producer:
        await producer.send_and_wait(
            STATE.name,
            None,
            key=f"{key}/part/{name}".encode(),
            partition=partition_for(key.encode(), STATE.partitions),
        )
        metrics = Metrics()
        found = await StateStore(bootstrap, STATE, ProducerTopic(producer), metrics).load([key])
        return found, metric(metrics.exposition().decode(), "streamguard_internal_errors_total")


def test_a_snapshot_whose_part_is_gone_is_refused_and_counted(
    broker_with_topics: EmbeddedBroker,
) -> None:
    out = asyncio.run(scenario(broker_with_topics.bootstrap))
    key = f"stage2/{out['channel']}"
    last = dict(out["records"])  # the latest value of each key
    # "<writer>/<name>": the copy of one part that exists
    live = sorted(
        k.split("/part/", 1)[1] for k, v in last.items() if "/part/" in k and v is not None
    )
    found, errors = asyncio.run(lose_a_part(broker_with_topics.bootstrap, key, live[0]))
    assert key not in found  # never a state with a closed window silently missing
    assert errors == 1


async def zombie_scenario(bootstrap: str) -> dict[str, Any]:
    """A worker that lost the channel (the zombie) keeps saving while its new owner restores."""
    early, late, channel = halfway_and_end()
    key = f"stage2/{channel}"
    async with producing(bootstrap) as producer:
        zombie = StateStore(bootstrap, STATE, ProducerTopic(producer), Metrics())
        assert await zombie.save("stage2", channel, 10, early.snapshot(channel))
        owner = StateStore(bootstrap, STATE, ProducerTopic(producer), Metrics())
        assert (await owner.load([key]))[key]["offset"] == 10
        # The zombie moves on: windows that left its horizon get tombstones.
        assert await zombie.save("stage2", channel, 20, late.snapshot(channel))
        # The owner, behind it, stores the state it restored, which still names those windows.
        assert await owner.save("stage2", channel, 10, early.snapshot(channel))
        metrics = Metrics()
        found = await StateStore(bootstrap, STATE, ProducerTopic(producer), metrics).load([key])
        errors = metric(metrics.exposition().decode(), "streamguard_internal_errors_total")
        # Then the owner catches up: copies of windows no snapshot of its names any more,
        # its own and the zombie's it found at load, get tombstones.
        assert await owner.save("stage2", channel, 20, late.snapshot(channel))
        last = dict(await records(bootstrap))
        live = [k.rsplit("/", 1)[1] for k, v in last.items() if "/part/" in k and v is not None]
        return {
            "early": early,
            "channel": channel,
            "found": found.get(key),
            "errors": errors,
            "live": live,
            "named": set(split(late.snapshot(channel))[1]),
        }


def test_a_zombie_writer_cannot_delete_the_parts_the_owner_names(
    broker_with_topics: EmbeddedBroker,
) -> None:
    out = asyncio.run(zombie_scenario(broker_with_topics.bootstrap))
    assert out["errors"] == 0
    assert out["found"] is not None
    assert out["found"]["offset"] == 10
    early, channel = out["early"], out["channel"]
    restored = Stage2(POLICY, n_sources=8, guards=early.guards)
    restored.restore(channel, out["found"]["state"])
    assert pack(restored.snapshot(channel)) == pack(early.snapshot(channel))
    assert set(out["live"]) == out["named"]  # nothing left that no snapshot names
    assert len(out["live"]) > len(out["named"])  # the zombie's copies of live windows remain


async def back_and_forth(bootstrap: str) -> tuple[dict[str, Any] | None, float]:
    """A channel moves A -> B -> A, and B, now a zombie, keeps saving as its state moves on."""
    early, late, channel = halfway_and_end()
    key = f"stage2/{channel}"
    async with producing(bootstrap) as producer:
        a = StateStore(bootstrap, STATE, ProducerTopic(producer), Metrics())
        b = StateStore(bootstrap, STATE, ProducerTopic(producer), Metrics())
        assert await a.save("stage2", channel, 10, early.snapshot(channel))
        await b.load([key])
        assert await b.save("stage2", channel, 10, early.snapshot(channel))
        await a.load([key])  # A holds the channel again; B has not noticed yet
        assert await a.save("stage2", channel, 11, early.snapshot(channel))
        assert await b.save("stage2", channel, 20, late.snapshot(channel))  # tombstones
        assert await a.save("stage2", channel, 12, early.snapshot(channel))
        metrics = Metrics()
        found = await StateStore(bootstrap, STATE, ProducerTopic(producer), metrics).load([key])
        errors = metric(metrics.exposition().decode(), "streamguard_internal_errors_total")
        return found.get(key), errors


def test_a_channel_back_on_its_first_worker_does_not_rely_on_its_old_copies(
    broker_with_topics: EmbeddedBroker,
) -> None:
    found, errors = asyncio.run(back_and_forth(broker_with_topics.bootstrap))
    assert errors == 0
    assert found is not None
    assert found["offset"] == 12


async def outlived_scenario(bootstrap: str) -> dict[str, Any]:
    """A snapshot that covers partials offsets 0-5, read while the partition holds 0, then 6."""
    early, _, channel = halfway_and_end()
    key = f"stage2/{channel}"
    inputs = {key: (SPECS["partials"].name, channel)}
    out: dict[str, Any] = {}
    async with producing(bootstrap) as producer:
        assert await StateStore(bootstrap, STATE, ProducerTopic(producer), Metrics()).save(
            "stage2", channel, 5, early.snapshot(channel)
        )
        for step in ("empty", "short", "long"):
            metrics = Metrics()
            store = StateStore(bootstrap, STATE, ProducerTopic(producer), metrics)
            found = await store.load([key], inputs)
            text = metrics.exposition().decode()
            lost = metric(text, 'streamguard_internal_errors_total{stage="log_lost"}')
            out[step] = (key in found, lost)
            # 5 messages: still short of offset 5; then a sixth, which holds it.
            for _ in range(5 if step == "empty" else 1):
                await producer.send_and_wait(SPECS["partials"].name, b"{}", partition=channel)
        out["unchecked"] = key in await StateStore(
            bootstrap, STATE, ProducerTopic(producer), Metrics()
        ).load([key])
    return out


def test_a_snapshot_beyond_the_end_of_its_input_log_is_refused_and_counted(
    broker_with_topics: EmbeddedBroker,
) -> None:
    """The broker lost the log the snapshot counts offsets in (a restart of the embedded
    broker): a worker that wrote it after the loss must not restore it and skip new messages."""
    out = asyncio.run(outlived_scenario(broker_with_topics.bootstrap))
    assert out["empty"] == (False, 1.0)
    assert out["short"] == (False, 1.0)  # ends at 5: offset 5 was never there
    assert out["long"] == (True, 0.0)  # ends at 6: offset 5 is the last message
    assert out["unchecked"]  # without inputs nothing is checked


async def stamped_scenario(bootstrap: str) -> dict[str, Any]:
    """Snapshots stamped with the message at their offset, and with another message's stamp."""
    early, _, channel = halfway_and_end()
    key, tp = f"stage2/{channel}", TopicPartition(SPECS["partials"].name, channel)
    out: dict[str, Any] = {}
    async with producing(bootstrap) as producer:
        for i in range(6):
            await producer.send_and_wait(tp.topic, b'{"n": %d}' % i, partition=channel)
        consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
        await consumer.start()
        try:
            consumer.assign([tp])
            consumer.seek(tp, 5)
            fifth = (await consumer.getmany(tp, timeout_ms=5000, max_records=1))[tp][0]
        finally:
            await consumer.stop()
        held = message_stamp(fifth.timestamp, fifth.value)
        other = message_stamp(fifth.timestamp, b'{"n": 6}')  # what a refilled log holds there
        for name, stamp in (("same", held), ("other", other)):
            writer = StateStore(bootstrap, STATE, ProducerTopic(producer), Metrics())
            assert await writer.save("stage2", channel, 5, early.snapshot(channel), stamp)
            metrics = Metrics()
            store = StateStore(bootstrap, STATE, ProducerTopic(producer), metrics)
            found = await store.load([key], {key: (tp.topic, channel)})
            lost = metric(metrics.exposition().decode(), "streamguard_internal_errors_total")
            out[name] = (key in found, lost)
    return out


def test_a_snapshot_stamped_with_another_message_than_its_log_holds_is_refused(
    broker_with_topics: EmbeddedBroker,
) -> None:
    """The new log has outgrown the lost one by the restore: only the stamp tells them apart."""
    out = asyncio.run(stamped_scenario(broker_with_topics.bootstrap))
    assert out["same"] == (True, 0.0)
    assert out["other"] == (False, 1.0)


async def save_now_scenario(bootstrap: str) -> dict[str, Any]:
    """A record stored by ``save_now`` from inside a running event loop, as a stopping worker
    does, stamped with the message at its offset; and one to a broker that is not there."""
    tp = TopicPartition(SPECS["predictions"].name, 2)
    key = f"stage1/{tp.partition}/suspects"
    inputs = {key: (tp.topic, tp.partition)}
    out: dict[str, Any] = {}
    async with producing(bootstrap) as producer:
        sent = await producer.send_and_wait(tp.topic, b'{"poison": 1}', partition=tp.partition)
        stamp = message_stamp(sent.timestamp, b'{"poison": 1}')
        store = StateStore(bootstrap, STATE, ProducerTopic(producer), Metrics())
        suspect = {"first": sent.offset, "last": sent.offset, "crashes": 1, "error": "E"}
        record = [{**suspect, "stamp": stamp}]
        out["stored"] = store.save_now(key, sent.offset, record, stamp)

        # Read back by another thread before this loop runs again: the record was on the
        # broker when save_now returned, with no coroutine of this loop run meanwhile.
        def read_back() -> None:
            reader = StateStore(bootstrap, STATE, None, Metrics())
            out["found"] = asyncio.run(reader.load([key], inputs)).get(key)

        thread = threading.Thread(target=read_back)
        thread.start()
        thread.join(60)
        out["stamp"] = stamp
        out["partition"] = (
            StateStore(bootstrap, STATE, None, Metrics())._partition(key),
            StateStore(bootstrap, STATE, None, Metrics())._partition("stage1/2"),
        )
    nowhere = StateStore("127.0.0.1:1", STATE, None, Metrics())
    started = asyncio.get_running_loop().time()
    out["nowhere"] = nowhere.save_now("stage1/0/suspects", 0, [], timeout_s=2.0)
    out["nowhere_s"] = asyncio.get_running_loop().time() - started
    return out


def test_a_record_saved_now_is_stored_before_it_returns_and_is_restored(
    broker_with_topics: EmbeddedBroker,
) -> None:
    out = asyncio.run(save_now_scenario(broker_with_topics.bootstrap))
    assert out["stored"] is True
    assert out["found"] is not None
    assert out["found"]["state"][0]["crashes"] == 1
    assert out["found"]["stamp"] == out["stamp"]
    same, snapshot = out["partition"]
    assert same == snapshot  # beside the partition's snapshot: a restore reads one partition
    assert out["nowhere"] is False
    assert out["nowhere_s"] < 10.0
