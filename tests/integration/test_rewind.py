"""Committed offsets past the end of their log, found on the real broker."""

import asyncio
import time
from pathlib import Path

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.structs import OffsetAndMetadata, TopicPartition

from streamguard.broker import EmbeddedBroker
from streamguard.contracts import load_topic_specs
from streamguard.faust_app.rewind import committed_past_end
from streamguard.testing import WorkerProcess, metric

pytestmark = pytest.mark.integration

PARTIALS = load_topic_specs()["partials"].name


def test_only_commits_past_the_end_of_their_partition_are_reported(
    broker_with_topics: EmbeddedBroker,
) -> None:
    """What a commit that outlived its log looks like: one sent before the broker restarted
    empty, landing on the new one. A commit at or before the end is a group's normal state."""

    async def scenario() -> dict[tuple[str, int], tuple[int, int]]:
        bootstrap = broker_with_topics.bootstrap
        producer = AIOKafkaProducer(bootstrap_servers=bootstrap)
        await producer.start()
        try:
            for partition in (0, 1, 2):
                for _ in range(5):
                    await producer.send_and_wait(PARTIALS, b"x", partition=partition)
        finally:
            await producer.stop()
        committer = AIOKafkaConsumer(
            bootstrap_servers=bootstrap, group_id="sg-rewind", enable_auto_commit=False
        )
        await committer.start()
        try:
            committer.assign([TopicPartition(PARTIALS, p) for p in (0, 1, 2)])
            await committer.commit(
                {
                    TopicPartition(PARTIALS, 0): OffsetAndMetadata(52, ""),  # past the end (5)
                    TopicPartition(PARTIALS, 1): OffsetAndMetadata(5, ""),  # at the end
                    TopicPartition(PARTIALS, 2): OffsetAndMetadata(3, ""),
                }
            )
        finally:
            await committer.stop()
        partitions = {(PARTIALS, p) for p in range(4)}  # 3 has no commit at all
        return await committed_past_end(bootstrap, "sg-rewind", partitions)

    assert asyncio.run(scenario()) == {(PARTIALS, 0): (52, 5)}


def test_a_worker_overwrites_a_commit_that_outlived_its_log(
    broker_with_topics: EmbeddedBroker, tmp_path: Path
) -> None:
    """The worker reads the partition from its start and commits 0 over the stale offset at
    once: Faust never commits below what it believes committed, so without that the stale
    commit would stay until the new log passed it, and a restart before then would skip the
    log again."""
    bootstrap = broker_with_topics.bootstrap
    stale = TopicPartition(PARTIALS, 2)

    async def plant() -> None:
        committer = AIOKafkaConsumer(
            bootstrap_servers=bootstrap, group_id="streamguard", enable_auto_commit=False
        )
        await committer.start()
        try:
            committer.assign([stale])
            await committer.commit({stale: OffsetAndMetadata(52, "")})
        finally:
            await committer.stop()

    async def committed() -> int:
        admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
        await admin.start()
        try:
            offsets = await admin.list_consumer_group_offsets("streamguard", partitions=[stale])
        finally:
            await admin.close()
        return offsets[stale].offset

    asyncio.run(plant())
    assert asyncio.run(committed()) == 52
    with WorkerProcess(broker_with_topics.url, tmp_path / "worker.log") as worker:
        worker.wait_ready(sources=8)
        deadline = time.monotonic() + 20
        while asyncio.run(committed()) != 0 and time.monotonic() < deadline:
            time.sleep(0.2)
        assert asyncio.run(committed()) == 0, worker.log_tail()
        text = worker.metrics()
    assert metric(text, 'streamguard_internal_errors_total{stage="log_lost"}') == 1
