"""Pausing and resuming predictions partitions in Faust's consumer without losing a message.

Faust's ``Consumer.pause_partitions`` alone loses messages: ``getmany`` filters a fetched
batch by the live set of active partitions, so the rest of a batch already fetched for a
partition paused mid-batch is dropped while aiokafka's fetch position has moved past it
(tried 2026-11-25: a worker pausing at 30 s of skew never read 32,024 of 659,264 events). So
:class:`PartitionPauser` seeks each partition it pauses back, in the same step as the pause
(nothing is delivered in between): aiokafka drops what it had buffered for the partition, and
reading resumes there. The seek goes to the consumer's read offset itself, not one past it:
that offset is the last message delivered, except right after an assignment, where Faust sets
it to the committed offset, the *next* one to deliver; one past it would skip that message
(found in review, 2026-11-26). So a pause may deliver the last message again; stage 1 skips
any offset it already has, so a seek can only repeat what is skipped, never lose what was not
read. Messages delivered before the pause are still processed.

Calls are serialised: the flush timer and stage 2 (which resumes partitions as soon as it has
caught up) both apply, and a call waits for its seeks in the consumer's thread.

A rebalance resumes every partition (Faust's recovery); the next look pauses them again if
they are still ahead.
"""

import asyncio
from typing import Any

from aiokafka.errors import IllegalStateError

__all__ = ["PartitionPauser"]


async def _seek(thread: Any, tp: Any, offset: int) -> None:
    thread._ensure_consumer().seek(tp, offset)


class PartitionPauser:
    """Keeps the predictions partitions :meth:`apply` is given paused, and only those."""

    def __init__(self, app: Any, topic: str) -> None:
        self.app = app
        self.topic = topic
        self._ours: set[Any] = set()  # topic partitions this pauser paused (Faust's TP)
        self._lock = asyncio.Lock()  # one call at a time: each one's view of _ours stays whole

    async def apply(self, wanted: set[int]) -> int:
        """Pause the partitions in ``wanted``, resume the others it paused; returns how many
        it paused now. Does nothing while the group rebalances (Faust pauses everything)."""
        async with self._lock:
            return await self._apply(wanted)

    async def _apply(self, wanted: set[int]) -> int:
        app = self.app
        consumer = app.consumer
        if not (wanted or self._ours):  # nothing to pause or resume: most ticks, and when off
            return 0
        if consumer is None or app.rebalancing or not consumer.flow_active:
            return 0
        assigned = {tp.partition: tp for tp in consumer.assignment() if tp.topic == self.topic}
        paused_now = consumer._paused_partitions  # Faust has no public view of it
        resume = [tp for tp in self._ours if tp.partition not in wanted and tp in paused_now]
        if resume:
            consumer.resume_partitions(resume)
        seeks = []
        # The last offset delivered per partition, or the next one right after an assignment.
        read_offsets = consumer._read_offset
        for partition in sorted(wanted):
            tp = assigned.get(partition)
            if tp is None or tp in paused_now:
                continue
            read = read_offsets.get(tp)
            if read is None:
                continue  # nothing delivered since the assignment: no offset to come back to
            consumer.pause_partitions([tp])
            # Records of a partition whose stream buffer was full pass Faust's filter too.
            consumer._buffered_partitions.discard(tp)
            seeks.append((tp, read))  # not read + 1: see the module docstring
        # Every pause above was made before the first await: no message of these partitions
        # was delivered after the offset each one comes back to.
        thread = consumer._thread
        for tp, offset in seeks:
            # In the consumer's own thread, between its fetches: aiokafka's seek drops the
            # partition's fetched records, and done from this thread it raced the fetcher
            # (a KeyError that crashed the worker's fetch loop, in benchmarks.e2e).
            try:
                await thread.call_thread(_seek, thread, tp, offset)
            except IllegalStateError:
                # Assigned elsewhere meanwhile (a rebalance between the pause and this seek):
                # its next assignment seeks it to the committed offset, which loses nothing.
                continue
            read_offsets[tp] = offset  # what Faust's Consumer.seek records: read from here
        self._ours = {tp for tp in assigned.values() if tp.partition in wanted} & set(
            consumer._paused_partitions
        )
        return len(seeks)
