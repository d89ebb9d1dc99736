"""The alert relay: consume the alerts topic and deliver every alert to each configured sink.

Delivery guarantees
-------------------
* **Nothing is lost while a receiver is down.** A message's offset is committed only after
  every sink has accepted the alert (2xx) or refused it for good (see
  :mod:`streamguard.delivery.sinks`). Until then the sink retries with capped back-off, later
  alerts of the partition wait behind it (so they arrive in order), and a relay that stops or
  crashes leaves the alert to its successor in the consumer group, which resumes from the
  committed offset.
* **At-least-once.** A relay that stops after a sink accepted an alert but before the commit
  (or while another sink still retries) delivers it again after the restart. Receivers
  deduplicate by ``alert_id`` (a request header, a field of the webhook body, an annotation
  for Alertmanager); Alertmanager itself merges alerts with equal labels.
* **Refused alerts are not retried forever.** A 4xx other than 408/429 is logged with the
  receiver's reason, counted per sink, and the offset moves on; so do messages that are not
  alerts (counted by reason in ``invalid``).
* A group without a committed offset starts at the earliest retained alert (7 days on the
  alerts topic), so a relay started after the worker still delivers what was published.

The consumer keeps polling while a partition waits for a receiver (the partition is paused),
so the relay stays in its group however long a receiver is away.
"""

import asyncio
import logging
from collections.abc import Mapping, Sequence
from typing import Any

import aiohttp

from streamguard.client._kafka import (
    GROUP_TIMINGS,
    AIOKafkaConsumer,
    CallbackListener,
    KafkaError,
    TopicPartition,
    leave_group_on_stop,
)
from streamguard.contracts import load_topic_specs
from streamguard.delivery.alertmanager import parse_alert
from streamguard.delivery.exceptions import AlertDecodeError, RelayError
from streamguard.delivery.sinks import HttpSink

__all__ = ["DEFAULT_GROUP", "AlertRelay"]

log = logging.getLogger(__name__)

#: Consumer group of the relay; relays of one group share the work and the committed offsets.
DEFAULT_GROUP = "streamguard-relay"


class AlertRelay:
    """Consumer-group member that delivers each alert of the alerts topic to every sink.

    Parameters
    ----------
    bootstrap
        Kafka bootstrap servers (``host:port,host:port``).
    sinks
        Where alerts go; at least one, with distinct names.
    group_id
        Consumer group; its committed offsets are where a restarted relay resumes.
    topic
        The alerts topic; the ``alerts`` topic of the specs when omitted.
    auto_offset_reset
        Where a group without committed offsets starts: ``earliest`` (default) or ``latest``.
    consumer_config
        Extra keyword arguments for ``AIOKafkaConsumer``.

    Raises
    ------
    ValueError
        Without sinks, or with two sinks of the same name.
    """

    def __init__(
        self,
        bootstrap: str,
        sinks: Sequence[HttpSink],
        group_id: str = DEFAULT_GROUP,
        topic: str | None = None,
        *,
        auto_offset_reset: str = "earliest",
        consumer_config: Mapping[str, Any] | None = None,
    ) -> None:
        if not sinks:
            raise ValueError("an alert relay needs at least one sink")
        names = [sink.name for sink in sinks]
        if len(set(names)) != len(names):
            raise ValueError(f"sink names must differ, got {names}")
        self.bootstrap = bootstrap
        self.group_id = group_id
        self.topic = topic or load_topic_specs()["alerts"].name
        self.sinks = {sink.name: sink for sink in sinks}
        self._config: dict[str, Any] = {
            "bootstrap_servers": bootstrap,
            "group_id": group_id,
            "enable_auto_commit": False,
            "auto_offset_reset": auto_offset_reset,
            **GROUP_TIMINGS,
            **(consumer_config or {}),
        }
        # Counters (read them directly or through stats()); the sinks count their own.
        self.received = 0  # messages read (a redelivery counts again)
        self.handled = 0  # alerts every sink has accepted or refused
        self.committed = 0  # offsets committed
        self.commit_errors = 0
        self.invalid: dict[str, int] = {}
        self._consumer: Any = None
        self._session: aiohttp.ClientSession | None = None
        self._poll_task: asyncio.Task[None] | None = None
        self._workers: dict[TopicPartition, asyncio.Task[None]] = {}
        self._commits: set[asyncio.Task[None]] = set()
        self._stopped = asyncio.Event()  # set by request_stop() or by a failed background task
        self._closed = False
        self._failure: BaseException | None = None

    # --- lifecycle ------------------------------------------------------------------------------

    async def start(self) -> None:
        """Connect to the broker and start relaying in the background.

        Raises
        ------
        RelayError
            When the broker cannot be reached.
        """
        if self._consumer is not None:
            raise RuntimeError("an AlertRelay starts once")
        self._consumer = AIOKafkaConsumer(**self._config)
        listener = CallbackListener(self._on_revoked, self._on_assigned)
        self._consumer.subscribe([self.topic], listener=listener)
        try:
            await self._consumer.start()
        except KafkaError as exc:
            await self._consumer.stop()
            self._closed = True
            raise RelayError(f"cannot reach Kafka at {self.bootstrap}: {exc}") from exc
        self._session = aiohttp.ClientSession()
        self._poll_task = asyncio.create_task(self._poll(), name=f"relay-poll-{self.group_id}")
        self._poll_task.add_done_callback(self._task_done)

    def request_stop(self) -> None:
        """Ask :meth:`run` to stop (safe to call from a signal handler)."""
        self._stopped.set()

    async def stop(self) -> None:
        """Stop delivering and leave the group; an alert in flight is not committed.

        A commit already sent is awaited, so an alert whose delivery was just confirmed is not
        delivered again by the next relay.
        """
        if self._consumer is None or self._closed:
            return
        self._closed = True
        self._stopped.set()
        tasks = [t for t in (self._poll_task, *self._workers.values()) if t is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._workers.clear()
        await asyncio.gather(*self._commits, return_exceptions=True)
        if self._session is not None:
            await self._session.close()
        leave_group_on_stop(self._consumer)
        await self._consumer.stop()

    async def run(self) -> None:
        """Start (unless started), relay until :meth:`request_stop` or a failure, then stop.

        Raises
        ------
        RelayError
            When the broker is unreachable at start or consuming failed.
        """
        if self._consumer is None:
            await self.start()
        try:
            await self._stopped.wait()
        finally:
            await self.stop()
        if isinstance(self._failure, KafkaError):
            raise RelayError(f"consuming {self.topic} failed: {self._failure!r}") from (
                self._failure
            )
        if self._failure is not None:
            raise self._failure

    async def __aenter__(self) -> "AlertRelay":
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    def stats(self) -> dict[str, Any]:
        """Relay counters, invalid messages by reason, and each sink's counters by name."""
        return {
            "received": self.received,
            "handled": self.handled,
            "committed": self.committed,
            "commit_errors": self.commit_errors,
            "invalid": dict(self.invalid),
            "busy_partitions": len(self._workers),
            "sinks": {name: sink.counters() for name, sink in self.sinks.items()},
        }

    def _task_done(self, task: asyncio.Task[None]) -> None:
        """A background task ended on its own: record why, and let run() return."""
        if task.cancelled():
            return
        exc = task.exception()
        if exc is not None:
            log.error("alert relay %s failed: %r", self.group_id, exc)
            self._failure = self._failure or exc
            self._stopped.set()

    # --- consuming ------------------------------------------------------------------------------

    async def _poll(self) -> None:
        """Fetch, and give each partition's records to its own worker.

        The partition is paused while its worker delivers, so polling goes on (the relay stays
        in its group while a receiver is down) and records of one partition never overtake each
        other.
        """
        while True:
            batches = await self._consumer.getmany(timeout_ms=200)
            for tp, records in batches.items():
                self._consumer.pause(tp)
                task = asyncio.create_task(self._drain(tp, records), name=f"relay-{tp}")
                task.add_done_callback(self._task_done)
                self._workers[tp] = task

    async def _on_revoked(self, revoked: set[TopicPartition]) -> None:
        # Stop work on partitions we are losing before they move: the next owner starts from the
        # last committed offset, so an alert not yet delivered everywhere is delivered again.
        tasks = [self._workers.pop(tp) for tp in revoked if tp in self._workers]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, *self._commits, return_exceptions=True)

    async def _on_assigned(self, assigned: set[TopicPartition]) -> None:
        log.info("alert relay %s assigned %d partitions", self.group_id, len(assigned))

    async def _drain(self, tp: TopicPartition, records: list[Any]) -> None:
        for record in records:
            await self._deliver(record)
            await self._commit(tp, record.offset + 1)
        if self._workers.get(tp) is asyncio.current_task():
            del self._workers[tp]
            self._consumer.resume(tp)

    async def _deliver(self, record: Any) -> None:
        """Deliver one message to every sink, concurrently; return when all have answered."""
        self.received += 1
        try:
            alert = parse_alert(record.value)
        except AlertDecodeError as exc:
            self.invalid[exc.reason] = self.invalid.get(exc.reason, 0) + 1
            log.warning(
                "skipping message at %s[%d] offset %d: %s",
                record.topic,
                record.partition,
                record.offset,
                exc,
            )
            return
        assert self._session is not None  # set by start() before polling begins
        # A sink that accepted is not asked again while another one retries; a TaskGroup
        # cancels the other deliveries if one of them fails unexpectedly.
        async with asyncio.TaskGroup() as group:
            for sink in self.sinks.values():
                group.create_task(sink.deliver(self._session, alert, record.value))
        self.handled += 1
        log.info("alert %s (%s) handled by every sink", alert.alert_id, alert.deployment)

    async def _commit(self, tp: TopicPartition, offset: int) -> None:
        # Shielded: a stop that arrives during the commit must not cancel it, or an alert
        # already delivered would be delivered again by the next relay. stop() awaits it.
        task = asyncio.create_task(self._send_commit(tp, offset))
        self._commits.add(task)
        task.add_done_callback(self._commits.discard)
        await asyncio.shield(task)

    async def _send_commit(self, tp: TopicPartition, offset: int) -> None:
        try:
            await self._consumer.commit({tp: offset})
        except KafkaError as exc:
            # Usually a rebalance: the alert was delivered; the partition's next owner may
            # deliver it again (at-least-once).
            self.commit_errors += 1
            log.warning("commit of %s at %d failed: %r", tp, offset, exc)
        else:
            self.committed += 1
