"""Partitions whose committed offset lies past the end of their log: the broker lost the log.

A consumer group's committed offset can only lie past its partition's end if the log went
and the commit did not: a commit the worker sent before the broker restarted empty, retried
through the outage, lands on the new broker (the embedded broker accepts it). Faust then
starts the partition there and drops every message below it unseen; after the embedded broker
restarted, that was the new partials log's first partials, and stage 2 judged none of the new
traffic. Such a partition is read again from its start instead, and its commit is set back to
0 at once: Faust never commits below the offset it believes committed, so the stale commit
would otherwise stay until the new log passed it, and a restart before then would again skip
what lies below it.
"""

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

from aiokafka import AIOKafkaConsumer
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import KafkaError
from aiokafka.structs import TopicPartition

from streamguard.faust_app.metrics import Metrics

__all__ = ["committed_past_end", "rewinder"]

log = logging.getLogger(__name__)

_SETTLE_S = 30.0  # longest wait for Faust to finish a rebalance before checking anyway


async def committed_past_end(
    bootstrap: str, group: str, partitions: Iterable[tuple[str, int]]
) -> dict[tuple[str, int], tuple[int, int]]:
    """``(committed, end)`` of each partition whose group's committed offset is past its end."""
    tps = [TopicPartition(topic, partition) for topic, partition in sorted(partitions)]
    if not tps:
        return {}
    # The group's commits in one request for all partitions (a consumer asks one at a time).
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=10_000)
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap, enable_auto_commit=False, request_timeout_ms=10_000
    )
    try:
        await admin.start()
        await consumer.start()
        commits = await admin.list_consumer_group_offsets(group, partitions=tps)
        ends = await consumer.end_offsets(tps)
    finally:
        await consumer.stop()
        await admin.close()
    past = {}
    for tp in tps:
        commit = commits.get(tp)
        if commit is not None and commit.offset > ends[tp]:  # -1: nothing committed
            past[(tp.topic, tp.partition)] = (commit.offset, ends[tp])
    return past


async def _commit_start(consumer: Any, tp: Any) -> None:
    """Overwrite the stale commit with 0, through the group member's own consumer.

    Only a member of the current generation may commit, so it goes through Faust's consumer;
    its bookkeeping (``_committed_offset``, no public setter) must forget the stale offset too,
    or Faust would refuse to commit anything below it.
    """
    consumer._committed_offset[tp] = None  # Faust offers no public way
    try:
        committed = await consumer._commit({tp: 0})
    except (KafkaError, OSError, TimeoutError) as exc:
        committed = False
        log.warning("%s:%d: could not commit offset 0: %s", tp.topic, tp.partition, exc)
    if committed:
        consumer._committed_offset[tp] = 0  # as Faust records its own
    # Not committed: the next commit of acknowledged offsets overwrites it instead.


def rewinder(
    app: Any, bootstrap: str, metrics: Metrics
) -> Callable[[set[tuple[str, int]]], Awaitable[list[tuple[str, int]]]]:
    """What the runtime runs before restoring an assignment: read lost logs from their start.

    It waits for the rebalance to finish first: until then Faust seeks every partition back to
    its committed offset again, over any seek made here.
    """

    async def rewind(assignment: set[tuple[str, int]]) -> list[tuple[str, int]]:
        consumer = app.consumer
        deadline = time.monotonic() + _SETTLE_S
        # Polled: Faust signals neither flag's change (can_resume_flow stays set when the
        # rebalance started without an assignment to stop).
        while (app.rebalancing or not consumer.flow_active) and time.monotonic() < deadline:  # noqa: ASYNC110
            await asyncio.sleep(0.05)
        try:
            past = await committed_past_end(bootstrap, app.conf.id, assignment)
        except (KafkaError, OSError, TimeoutError) as exc:
            # The restores that follow wait for the broker; this check is not worth holding
            # them up for.
            log.warning("could not compare committed offsets with the logs' ends: %s", exc)
            return []
        tps = {(tp.topic, tp.partition): tp for tp in consumer.assignment()}
        for key, (committed, end) in sorted(past.items()):
            if key not in tps:
                continue  # revoked meanwhile: its next owner checks it
            metrics.internal_errors.labels("log_lost").inc()
            log.error(
                "%s:%d: the group's committed offset %d is past the partition's end %d (the "
                "broker lost its log); reading it from its start",
                *key,
                committed,
                end,
            )
            await consumer.seek(tps[key], 0)
            await _commit_start(consumer, tps[key])
        return sorted(k for k in past if k in tps)

    return rewind
