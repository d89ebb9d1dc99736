"""The rewinder seeks back only assigned partitions whose commit is past their end, and only
once Faust has finished the rebalance (Faust's own seeks to committed offsets come first)."""

import asyncio
from types import SimpleNamespace
from typing import Any

import pytest
from aiokafka.errors import KafkaConnectionError
from aiokafka.structs import TopicPartition
from prometheus_client import generate_latest

from streamguard.faust_app import rewind as rewind_module
from streamguard.faust_app.metrics import Metrics
from streamguard.testing import metric


class Consumer:
    def __init__(self, assigned: set[TopicPartition], commit_error: Exception | None) -> None:
        self.assigned = assigned
        self.flow_active = False
        self.seeks: list[tuple[TopicPartition, int, bool]] = []
        self.commits: list[dict[TopicPartition, int]] = []
        self.commit_error = commit_error
        # What Faust believes committed: the stale offsets it sought to.
        self._committed_offset: dict[TopicPartition, int | None] = dict.fromkeys(assigned, 52)
        self.app: Any = None

    async def _commit(self, offsets: dict[TopicPartition, int]) -> bool:
        # Faust refuses nothing here; what it would refuse is decided by _committed_offset.
        assert all(self._committed_offset[tp] is None for tp in offsets)
        if self.commit_error is not None:
            raise self.commit_error
        self.commits.append(dict(offsets))
        return True

    def assignment(self) -> set[TopicPartition]:
        return self.assigned

    async def seek(self, tp: TopicPartition, offset: int) -> None:
        # Records whether the rebalance was over when the seek came.
        self.seeks.append((tp, offset, self.flow_active and not self.app.rebalancing))


def run(
    past: dict[tuple[str, int], tuple[int, int]] | Exception,
    commit_error: Exception | None = None,
) -> tuple[Consumer, str, Any]:
    assigned = {TopicPartition("p", 0), TopicPartition("p", 1)}
    consumer = Consumer(assigned, commit_error)
    app = SimpleNamespace(rebalancing=True, consumer=consumer, conf=SimpleNamespace(id="g"))
    consumer.app = app
    metrics = Metrics()

    async def committed_past_end(bootstrap: str, group: str, partitions: Any) -> Any:
        assert (bootstrap, group) == ("host:1", "g")
        if isinstance(past, Exception):
            raise past
        return past

    async def scenario() -> Any:
        original = rewind_module.committed_past_end
        rewind_module.committed_past_end = committed_past_end  # type: ignore[assignment]
        try:
            task = asyncio.create_task(
                rewind_module.rewinder(app, "host:1", metrics)({("p", 0), ("p", 1), ("p", 2)})
            )
            await asyncio.sleep(0.2)
            assert not task.done()  # still rebalancing
            app.rebalancing = False
            consumer.flow_active = True
            return await task
        finally:
            rewind_module.committed_past_end = original  # type: ignore[assignment]

    result = asyncio.run(scenario())
    return consumer, generate_latest(metrics.registry).decode(), result


def test_an_assigned_partition_committed_past_its_end_is_read_from_its_start() -> None:
    # ("p", 2) was revoked meanwhile: its next owner checks it.
    consumer, text, result = run({("p", 1): (52, 6), ("p", 2): (9, 3)})
    assert consumer.seeks == [(TopicPartition("p", 1), 0, True)]
    assert result == [("p", 1)]
    assert metric(text, 'streamguard_internal_errors_total{stage="log_lost"}') == 1
    # The stale commit is overwritten at once, and Faust's bookkeeping forgets it, so a
    # restart before the new log passes it does not skip the log again.
    assert consumer.commits == [{TopicPartition("p", 1): 0}]
    assert consumer._committed_offset[TopicPartition("p", 1)] == 0
    assert consumer._committed_offset[TopicPartition("p", 0)] == 52  # not sought, not touched


def test_a_commit_that_fails_is_left_to_the_next_commit_of_acknowledged_offsets() -> None:
    consumer, _, result = run({("p", 1): (52, 6)}, commit_error=KafkaConnectionError())
    assert consumer.seeks == [(TopicPartition("p", 1), 0, True)]
    assert result == [("p", 1)]
    assert consumer.commits == []
    # Nothing committed, but Faust may now commit any acknowledged offset over it.
    assert consumer._committed_offset[TopicPartition("p", 1)] is None


def test_nothing_is_sought_when_every_commit_is_within_its_log() -> None:
    consumer, _, result = run({})
    assert consumer.seeks == []
    assert result == []


@pytest.mark.parametrize("error", [KafkaConnectionError(), OSError("refused")])
def test_a_broker_that_cannot_answer_leaves_the_partitions_where_faust_put_them(
    error: Exception,
) -> None:
    consumer, _, result = run(error)
    assert consumer.seeks == []
    assert result == []
