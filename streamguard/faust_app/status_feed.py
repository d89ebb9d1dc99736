"""Feeds the status API: every worker reads all verdicts and control messages.

Stage 3 only sees the verdict partitions this worker owns, but the status API must answer for
every deployment on every worker (a load balancer picks any). So each worker also reads the
verdicts and control topics entirely, outside its consumer group: the control topic from the
beginning (it is small, and decisions must not be forgotten), the verdicts topic from the last
``verdict_tail`` messages of each partition (the latest verdict per deployment is near the end).
Until it has read up to the end offsets it found at start, the view is not *caught up* and
every judgement is ``pending``: a gate must not pass a version on half the decisions.
"""

import asyncio
import logging

import orjson
from aiokafka import AIOKafkaConsumer
from aiokafka.errors import KafkaError
from aiokafka.structs import TopicPartition

from streamguard.decisions.status import StatusView

__all__ = ["StatusFeed"]

log = logging.getLogger("streamguard.worker")


class StatusFeed:
    """A group-less consumer keeping a :class:`StatusView` current."""

    def __init__(
        self, bootstrap: str, verdicts: str, control: str, verdict_tail: int = 5000
    ) -> None:
        self.bootstrap = bootstrap
        self.verdicts = verdicts
        self.control = control
        self.verdict_tail = verdict_tail
        self.view = StatusView(caught_up=False)

    @property
    def caught_up(self) -> bool:
        """Whether the first read up to the end offsets found at start is done."""
        return self.view.caught_up

    async def _consume(self) -> None:
        consumer = AIOKafkaConsumer(bootstrap_servers=self.bootstrap, enable_auto_commit=False)
        try:
            await consumer.start()
            tps = [
                TopicPartition(topic, p)
                for topic in (self.verdicts, self.control)
                for p in sorted(consumer.partitions_for_topic(topic) or ())
            ]
            consumer.assign(tps)
            starts = await consumer.beginning_offsets(tps)
            ends = await consumer.end_offsets(tps)
            for tp in tps:
                tail = self.verdict_tail if tp.topic == self.verdicts else None
                start = starts[tp] if tail is None else max(starts[tp], ends[tp] - tail)
                consumer.seek(tp, start)
            while True:
                batches = await consumer.getmany(timeout_ms=1000)
                for tp, records in batches.items():
                    apply = self.view.on_control if tp.topic == self.control else None
                    for record in records:
                        try:
                            message = orjson.loads(record.value or b"")
                        except orjson.JSONDecodeError:
                            continue  # not ours to judge; the subscriber counts those
                        if not isinstance(message, dict):
                            continue
                        if apply is not None:
                            apply(message)
                        else:
                            self.view.on_verdict(message)
                if not self.view.caught_up:
                    positions = [await consumer.position(tp) for tp in tps]
                    self.view.caught_up = all(
                        pos >= ends[tp] for pos, tp in zip(positions, tps, strict=True)
                    )
        finally:
            await consumer.stop()

    async def run(self) -> None:
        """Consume forever; reconnect with back-off when the broker goes away."""
        delay = 1.0
        while True:
            try:
                await self._consume()
            except (KafkaError, OSError, TimeoutError) as exc:
                log.warning("status feed interrupted (%s); retrying in %.0fs", exc, delay)
                await asyncio.sleep(delay)
                delay = min(30.0, delay * 2)
