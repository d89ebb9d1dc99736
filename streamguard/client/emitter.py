"""Send prediction and outcome events from serving fleets to the predictions topic.

:meth:`Emitter.for_training_examples` sends training examples from training pipelines to the
training examples topic instead, routed by ``pipeline`` (the leakage guard counts a pipeline's
examples on one partition).

Delivery guarantees
-------------------
* Routing: every event goes to partition ``partition_for(request_id, n)``, so the primary and
  shadow halves of a request always share a partition (the worker pairs them there). A
  training-examples emitter routes by ``pipeline`` the same way.
* Batching: a partition's events leave as one envelope ``{"schema_version": 1, "events": [...]}``
  once ``max_batch_events``, ``max_batch_bytes`` or ``linger_s`` is reached; within a partition,
  envelopes are sent one at a time and in emit order. With ``columnar=True`` a batch of
  prediction events leaves as one columnar batch instead (``"kind": "prediction_columns"``, one
  array per field: smaller, and decoded by the worker without per-event work); a batch that
  holds anything else (outcomes, explicit nulls) still leaves as a row envelope.
* At-least-once within a bound: a failed send is retried with capped exponential back-off up to
  ``max_send_attempts`` times (about 7 s of retrying with the defaults). An envelope whose ack
  was lost can therefore be written twice, at two offsets; its events keep their event_id, so a
  consumer can tell. Events never acknowledged are counted in ``events_dropped``; nothing is
  lost without a counter moving.
* Back-pressure: :meth:`Emitter.emit` never blocks; when ``max_buffered_events`` are waiting it
  returns False and counts a drop. :meth:`Emitter.emit_wait` waits for room instead.

Call :meth:`Emitter.emit` from the event loop's thread: the buffers are not locked.
"""

import asyncio
import contextlib
import logging
import time
from collections.abc import Mapping
from types import TracebackType
from typing import Any

import orjson

from streamguard.client._kafka import AIOKafkaProducer
from streamguard.client.batching import (
    ENVELOPE_OVERHEAD,
    ENVELOPE_PREFIX,
    ENVELOPE_SUFFIX,
    Batch,
    PartitionBuffer,
)
from streamguard.client.sending import send_with_retries
from streamguard.contracts import load_topic_specs, partition_for
from streamguard.contracts.columns import encode_columns

__all__ = ["ENVELOPE_OVERHEAD", "Emitter", "EmitterError"]

log = logging.getLogger(__name__)

_NEW, _RUNNING, _STOPPING, _STOPPED = "new", "running", "stopping", "stopped"
_ROUTE_CACHE_SIZE = 8192


class EmitterError(RuntimeError):
    """The emitter cannot run: the topic is missing or the emitter is not started."""


class Emitter:
    """Buffered, partition-aware producer of prediction and outcome events.

    Parameters
    ----------
    bootstrap
        Kafka bootstrap servers, ``host:port[,host:port]``.
    topic
        Topic to produce to; the ``predictions`` topic of the specs when omitted.
    max_batch_events
        Largest number of events in one envelope.
    max_batch_bytes
        Largest serialized envelope, in bytes (Kafka's default message limit is 1 MiB).
    linger_s
        Longest time an event waits for its envelope to fill.
    max_buffered_events
        Events accepted but not yet acknowledged (or dropped) beyond which ``emit`` drops.
    batch
        True: envelopes. False: each event is its own message keyed by its request_id (to
        compare in benchmarks; on retry, order within a partition is not kept in this mode).
    max_send_attempts
        Attempts per envelope (or per event in single mode) before its events are dropped.
    retry_backoff_s, max_backoff_s
        First delay between attempts, doubled after each failure up to the maximum.
    producer_config
        Extra keyword arguments for ``AIOKafkaProducer`` (compression, security, timeouts).
    key_field
        The event field that routes an event (and keys its message): ``request_id`` for
        predictions and outcomes, ``pipeline`` for training examples.
    columnar
        Send batches of predictions as columnar batches (``prediction_columns``) rather than
        row envelopes. Off by default: workers from before columnar batches dead-letter them.

    Examples
    --------
    In a serving process (needs a broker, so not run as a doctest)::

        async with Emitter("127.0.0.1:9092") as emitter:
            if not emitter.emit(prediction_event):
                ...  # dropped and counted: the buffer is full
    """

    def __init__(
        self,
        bootstrap: str,
        topic: str | None = None,
        *,
        max_batch_events: int = 1000,
        max_batch_bytes: int = 900_000,
        linger_s: float = 0.05,
        max_buffered_events: int = 100_000,
        batch: bool = True,
        max_send_attempts: int = 8,
        retry_backoff_s: float = 0.1,
        max_backoff_s: float = 2.0,
        producer_config: Mapping[str, Any] | None = None,
        key_field: str = "request_id",
        columnar: bool = False,
    ) -> None:
        if max_batch_events < 1 or max_buffered_events < 1 or max_send_attempts < 1:
            raise ValueError(
                "max_batch_events, max_buffered_events, max_send_attempts must be >= 1"
            )
        if max_batch_bytes <= ENVELOPE_OVERHEAD:
            raise ValueError(
                f"max_batch_bytes must exceed the envelope's {ENVELOPE_OVERHEAD} bytes"
            )
        self.bootstrap = bootstrap
        self.topic = topic or load_topic_specs()["predictions"].name
        self.max_batch_events = max_batch_events
        self.max_batch_bytes = max_batch_bytes
        self.linger_s = linger_s
        self.max_buffered_events = max_buffered_events
        self.batch = batch
        self.columnar = columnar
        self.max_send_attempts = max_send_attempts
        self.retry_backoff_s = retry_backoff_s
        self.max_backoff_s = max_backoff_s
        self._producer_config = dict(producer_config or {})
        self.key_field = key_field
        # Counters (read them directly or through stats()).
        self.events_emitted = 0  # accepted into a buffer
        self.events_sent = 0  # acknowledged by the broker
        self.envelopes_sent = 0  # Kafka messages acknowledged (one per event in single mode)
        self.events_dropped = 0  # refused by emit() or given up after retries
        self.drops_buffer_full = 0
        self.drops_oversized = 0
        self.drops_send_failed = 0
        self.drops_stopping = 0
        self.send_errors = 0  # failed send attempts, retried or not
        self._state = _NEW
        self._producer: Any = None
        self._partitions: list[PartitionBuffer] = []
        self._tasks: list[asyncio.Task[None]] = []
        self._buffered = 0
        self._routes: dict[bytes, int] = {}  # recent request_id -> partition
        self._room = asyncio.Event()
        self._progress = asyncio.Condition()

    @classmethod
    def for_training_examples(cls, bootstrap: str, **options: Any) -> "Emitter":
        """An emitter of training examples: the training examples topic, routed by pipeline.

        ``options`` are the other keyword arguments of the constructor.
        """
        topic = options.pop("topic", None) or load_topic_specs()["training_examples"].name
        return cls(bootstrap, topic, key_field="pipeline", **options)

    # --- lifecycle ------------------------------------------------------------------------------

    @property
    def n_partitions(self) -> int:
        """Partition count of the topic, read from the broker by :meth:`start`."""
        return len(self._partitions)

    async def start(self) -> None:
        """Connect, read the topic's partition count and start one sender task per partition.

        Raises
        ------
        EmitterError
            If the topic does not exist or its partitions are not numbered ``0..n-1``.
        """
        if self._state != _NEW:
            raise EmitterError(f"an emitter starts once; this one is {self._state}")
        config: dict[str, Any] = {
            "bootstrap_servers": self.bootstrap,
            "acks": "all",
            "linger_ms": 0,  # batching happens here, in envelopes; don't wait twice
            # The key (a request_id inside the envelope) is smaller than the envelope itself.
            "max_request_size": max(1 << 20, 2 * self.max_batch_bytes + 1024),
        }
        config.update(self._producer_config)
        producer = AIOKafkaProducer(**config)
        await producer.start()
        try:
            found = set(await producer.partitions_for(self.topic))
        except Exception as exc:
            await producer.stop()
            raise EmitterError(f"cannot read partitions of topic {self.topic}: {exc!r}") from exc
        if not found or found != set(range(len(found))):
            await producer.stop()
            raise EmitterError(f"topic {self.topic} has partitions {sorted(found)}, not 0..n-1")
        self._producer = producer
        self._partitions = [PartitionBuffer(i, asyncio.Event()) for i in range(len(found))]
        self._room.set()
        self._state = _RUNNING
        self._tasks = [
            asyncio.create_task(self._run_partition(p), name=f"emitter-{self.topic}-{p.index}")
            for p in self._partitions
        ]

    async def stop(self, timeout_s: float | None = None) -> None:
        """Refuse new events, send everything buffered, then close the producer.

        Parameters
        ----------
        timeout_s
            Longest wait for the final flush; events still buffered then count as dropped.
        """
        if self._state != _RUNNING:
            return
        self._state = _STOPPING
        try:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.flush(), timeout_s)
        finally:
            for task in self._tasks:
                task.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)
            left = self._buffered  # includes an interrupted in-flight batch, maybe delivered
            if left:
                log.error("emitter stopped with %d events unacknowledged; counted as dropped", left)
                self.events_dropped += left
                self.drops_send_failed += left
            self._state = _STOPPED
            # Release anyone still waiting in flush() or emit_wait(): nothing more will be sent.
            self._buffered = 0
            for part in self._partitions:
                part.finished = part.accepted
            self._room.set()
            async with self._progress:
                self._progress.notify_all()
            await self._producer.stop()

    async def __aenter__(self) -> "Emitter":
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    # --- emitting -------------------------------------------------------------------------------

    def emit(self, event: dict[str, Any]) -> bool:
        """Buffer one event for its request's partition; never waits.

        Returns
        -------
        bool
            False when the event was dropped (buffer full, event larger than an envelope, or
            the emitter stopping); the drop is counted.

        Raises
        ------
        EmitterError
            If :meth:`start` has not completed.
        ValueError
            If the event has no non-empty string ``request_id``.
        TypeError
            If the event is not JSON-serializable.
        """
        if self._state != _RUNNING:
            if self._state == _NEW:
                raise EmitterError("Emitter.emit() before start()")
            return self._drop("stopping")
        if self._buffered >= self.max_buffered_events:
            self._room.clear()
            return self._drop("buffer_full")
        request_id = event.get(self.key_field)
        if type(request_id) is not str or not request_id:
            raise ValueError(
                f"event needs a non-empty string {self.key_field}, got {request_id!r:.60}"
            )
        data = orjson.dumps(event)  # serialized now: exact sizes, and later mutation is harmless
        if len(data) + ENVELOPE_OVERHEAD > self.max_batch_bytes:
            return self._drop("oversized")
        key = request_id.encode()
        index = self._routes.get(key)
        if index is None:
            # partition_for is pure Python (~4 µs); the halves of a request come close together.
            if len(self._routes) >= _ROUTE_CACHE_SIZE:
                self._routes.clear()
            index = self._routes[key] = partition_for(key, len(self._partitions))
        part = self._partitions[index]
        if part.open and part.open_bytes + 1 + len(data) + ENVELOPE_OVERHEAD > self.max_batch_bytes:
            part.seal()
        if not part.open:
            part.opened_at = time.monotonic()
            part.wake.set()  # the sender starts the linger clock
            part.open_bytes = len(data)
        else:
            part.open_bytes += 1 + len(data)
        part.open.append((key, data))
        part.accepted += 1
        if len(part.open) >= self.max_batch_events:
            part.seal()
        self._buffered += 1
        self.events_emitted += 1
        return True

    async def emit_wait(self, event: dict[str, Any]) -> bool:
        """Like :meth:`emit`, but wait for room in the buffer instead of dropping.

        Returns False only for an oversized event or a stopping emitter.
        """
        while self._state == _RUNNING and self._buffered >= self.max_buffered_events:
            self._room.clear()
            await self._room.wait()
        return self.emit(event)

    async def flush(self) -> None:
        """Send every event emitted so far and wait until each is acknowledged or dropped."""
        targets = [p.accepted for p in self._partitions]
        for part in self._partitions:
            part.seal()
        async with self._progress:
            await self._progress.wait_for(
                lambda: all(p.finished >= t for p, t in zip(self._partitions, targets, strict=True))
            )

    def stats(self) -> dict[str, int]:
        """Counters and the current number of buffered events."""
        return {
            "events_emitted": self.events_emitted,
            "events_sent": self.events_sent,
            "envelopes_sent": self.envelopes_sent,
            "events_dropped": self.events_dropped,
            "drops_buffer_full": self.drops_buffer_full,
            "drops_oversized": self.drops_oversized,
            "drops_send_failed": self.drops_send_failed,
            "drops_stopping": self.drops_stopping,
            "send_errors": self.send_errors,
            "buffered": self._buffered,
        }

    def _drop(self, reason: str) -> bool:
        self.events_dropped += 1
        counter = f"drops_{reason}"
        setattr(self, counter, getattr(self, counter) + 1)
        return False

    # --- sending --------------------------------------------------------------------------------

    async def _run_partition(self, part: PartitionBuffer) -> None:
        """Send this partition's batches one at a time, in order; seal open ones on linger."""
        while True:
            if part.sealed:
                batch = part.sealed.popleft()
                await self._send(part.index, batch)
                await self._finished(part, len(batch.events))
                continue
            if part.open:
                remaining = part.opened_at + self.linger_s - time.monotonic()
                if remaining <= 0:
                    part.seal()
                    continue
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(remaining):
                        await part.wake.wait()
            else:
                await part.wake.wait()
            part.wake.clear()  # no await since the wait returned: no wake-up can be missed

    async def _finished(self, part: PartitionBuffer, n: int) -> None:
        part.finished += n
        self._buffered -= n
        if self._buffered < self.max_buffered_events:
            self._room.set()
        async with self._progress:
            self._progress.notify_all()

    async def _send(self, partition: int, batch: Batch) -> None:
        if self.batch:
            value = ENVELOPE_PREFIX + b",".join(data for _, data in batch.events) + ENVELOPE_SUFFIX
            if self.columnar:
                value = self._columns(value) or value
            sent = await self._with_retries(partition, [(batch.events[0][0], value)])
            self.envelopes_sent += sent
            self.events_sent += len(batch.events) if sent else 0
            if not sent:
                self._give_up(partition, len(batch.events))
        else:
            sent = await self._with_retries(partition, batch.events)
            self.envelopes_sent += sent
            self.events_sent += sent
            if sent < len(batch.events):
                self._give_up(partition, len(batch.events) - sent)

    def _columns(self, envelope: bytes) -> bytes | None:
        """The envelope's events as a columnar batch, when they are all predictions and fit."""
        columns = encode_columns(orjson.loads(envelope)["events"])
        if columns is None or len(columns) > self.max_batch_bytes:
            return None
        return columns

    def _give_up(self, partition: int, n: int) -> None:
        log.error("dropped %d events for partition %d after failed sends", n, partition)
        self.events_dropped += n
        self.drops_send_failed += n

    async def _with_retries(self, partition: int, messages: list[tuple[bytes, bytes]]) -> int:
        """Send messages to one partition, retrying the failed ones; return how many were acked."""
        return await send_with_retries(
            self._producer,
            self.topic,
            partition,
            messages,
            attempts=self.max_send_attempts,
            backoff_s=self.retry_backoff_s,
            max_backoff_s=self.max_backoff_s,
            on_errors=self._count_send_errors,
        )

    def _count_send_errors(self, n: int) -> None:
        self.send_errors += n
