"""What every stage's handlers share: the worker's settings, engine, topics, state and locks.

Split by stage (``predictions``, ``partials``, ``decisions``, ``training``) and assembled in
:class:`~streamguard.faust_app.runtime.lifecycle.Runtime`; this base holds what they all use:
per-partition input state (:class:`_Input`), restores on demand, dead letters and publishing.
"""

import asyncio
import logging
import math
import os
import time
from collections import defaultdict, deque
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from streamguard.contracts import Alert, Command, Rejected, TopicSpec, dead_letter
from streamguard.core.exceptions import AccountingError
from streamguard.core.pacing import Pacer
from streamguard.core.quarantine import Suspect, after_crash, prune
from streamguard.engine import Engine
from streamguard.faust_app.metrics import Metrics
from streamguard.faust_app.outbox import send_reliably
from streamguard.faust_app.state import StateStore, message_stamp
from streamguard.security import Publisher
from streamguard.settings import Settings

__all__ = ["RuntimeBase", "Topics"]

log = logging.getLogger("streamguard.worker")

#: (input topic role, stage, its partitions' state, its restore) of one stage.
Stage = tuple[str, str, dict[int, "_Input"], Callable[[Iterable[int]], Awaitable[None]]]


@dataclass
class Topics:
    """The Faust topic objects the runtime writes to."""

    partials: Any
    verdicts: Any
    control: Any
    alerts: Any
    deadletters: Any
    state: Any


@dataclass
class _Input:
    """Per input partition: where to resume, events held until a snapshot covers them."""

    resume: int = 0
    held: list[Any] = field(default_factory=list)
    last_offset: int = -1
    snapshot_at: float = 0.0
    dirty: bool = False
    highwater: int | None = None  # end of the partition at the last fetch (stage 1)
    caught_up_once: bool = False  # read to the partition's end since the restore (stage 1)
    last_message: Any = None  # the one at last_offset (stages 2, 3, leakage), for its stamp
    # Stage 2: Stage2.revision of the channel when its last snapshot was taken (or restored).
    saved_revision: int = 0
    # Stage 1: what it was accounting at each crash not yet behind ``resume`` (core.quarantine).
    suspects: list[Suspect] = field(default_factory=list)

    def last_stamp(self) -> list[int] | None:
        """Stamp of the message at ``last_offset``; None if none was read since the restore.

        Taken when a snapshot is saved, not per message: a CRC of every training batch read
        would cost the hot path what only a snapshot needs.
        """
        return None if self.last_message is None else _stamp(self.last_message)

    def covered(self) -> tuple[int, list[int] | None]:
        """The last input offset the state includes, and its stamp if read since the restore.

        With nothing read since the restore (the shutdown checkpoint saves every changed
        stage), that is what the restored snapshot covered, not -1 (a restore from offset 0).
        """
        offset = max(self.last_offset, self.resume - 1)
        return offset, self.last_stamp() if offset == self.last_offset else None


class _Stamped:
    """A topic whose sends carry ``timestamp`` (seconds) as the Kafka message timestamp.

    Verdicts carry their window's close time this way, out of band: stage 3, maybe on another
    worker, measures close-to-command latency from it, and the verdict messages stay equal to
    replay's.
    """

    def __init__(self, topic: Any, timestamp: float) -> None:
        self.topic = topic
        self.timestamp = timestamp

    def get_topic_name(self) -> str:
        name: str = self.topic.get_topic_name()
        return name

    async def send(self, *, key: bytes | None, value: bytes, partition: int | None) -> Any:
        return await self.topic.send(
            key=key, value=value, partition=partition, timestamp=self.timestamp
        )


def _release(held: list[Any], upto: int) -> list[Any]:
    """Acknowledge held events with offsets up to ``upto``; return the others."""
    keep = []
    for event in held:
        if event.message.offset <= upto:
            event.ack()
        else:
            keep.append(event)
    return keep


def _stamp(message: Any, value: bytes | None = None) -> list[int]:
    """:func:`message_stamp` of a Faust message (its timestamp is the record's ms / 1000).

    Snapshots carry the stamp of the last input message they cover, so that a restore can tell
    it from another message at the same offset of a log the broker lost and refilled.
    ``value`` stands for the message's bytes once the worker dropped them (stage 1).
    """
    ms = None if message.timestamp is None else round(message.timestamp * 1000)
    return message_stamp(ms, message.value if value is None else value)


class RuntimeBase:
    """The state and helpers the stages' handlers share (see the module docstring)."""

    def __init__(
        self,
        settings: Settings,
        engine: Engine,
        metrics: Metrics,
        *,
        specs: dict[str, TopicSpec],
        topics: Topics,
        store: StateStore,
        owned: Callable[[str], list[int]] = lambda topic: [],
        publisher: Publisher,
        rewind: Callable[[set[tuple[str, int]]], Awaitable[Any]] | None = None,
    ) -> None:
        self.settings = settings
        self.publisher = publisher
        self.engine = engine
        self.metrics = metrics
        self.specs = specs
        self.topics = topics
        self.store = store
        # Partitions of a topic this worker owns now: restores load all of them in one pass.
        self.owned = owned
        # Run on an assignment before its restores: reads lost logs from their start
        # (:func:`streamguard.faust_app.rewind.rewinder`).
        self.rewind = rewind
        self.stage1: dict[int, _Input] = {}
        self.stage2: dict[int, _Input] = {}
        self.stage3: dict[int, _Input] = {}
        self.leakage: dict[int, _Input] = {}
        self.control_offsets: dict[int, int] = {}
        self.stage3_deployments: dict[int, set[str]] = defaultdict(set)
        self.lock1 = asyncio.Lock()
        # Held while a flush stores its stage-1 snapshots, after it let go of ``lock1``.
        self.snapshot_lock1 = asyncio.Lock()
        self.lock2 = asyncio.Lock()
        self.lock3 = asyncio.Lock()
        self.lock_leakage = asyncio.Lock()
        self.evicted_recently: dict[str, float] = {}
        # The last messages left out (core.quarantine), for /health: what on-call should know.
        self.quarantined: deque[dict[str, Any]] = deque(maxlen=20)
        self.guard_failures: deque[dict[str, Any]] = deque(maxlen=20)  # latest last, for /health
        self._failures_logged: set[tuple[str, str, str]] = set()  # tracebacks logged already
        self.crashed: dict[str, tuple[float, str]] = {}  # agent -> (when, why)
        # One restore at a time per stage: the eager one after an assignment and an agent's
        # on a first message must not both rebuild a partition (the second would reset it).
        self.restoring = {
            stage: asyncio.Lock() for stage in ("stage1", "stage2", "stage3", "leakage")
        }
        # (topic, partition) assigned now; None while joining the group or rebalancing.
        self.assignment: set[tuple[str, int]] | None = None
        self._recovery: asyncio.Task[None] | None = None
        # The last window close's verdicts on their way to the broker (stage 2; each close's
        # send waits for the one before, so verdicts keep their order).
        self._verdicts_out: asyncio.Task[None] | None = None
        # How a background task that fails stops the process (faust_app.halt); tests replace it.
        self.exit_: Callable[[int], object] = os._exit
        # Caught-up partitions whose watermark passed a window's close since the last eager
        # flush; the eager flusher (:meth:`eager_flushes`) takes them all at once.
        self._closing: set[int] = set()
        self._closing_wake = asyncio.Event()
        self._lag_at = -math.inf  # when the window-lag gauges were last updated (monotonic)
        # Predictions partitions to leave unread while stage 2 is far behind (backpressure).
        self.pacer = Pacer(settings.max_ahead_s)
        # Applies a set of partitions to keep paused (the app's PartitionPauser); stage 2 calls
        # it as soon as it has caught up, so a paused partition need not wait for a flush tick.
        self.pause: Callable[[set[int]], Awaitable[int]] | None = None
        # Looked up on every message: built once.
        self._stage_of = {stage[1]: stage for stage in self._stages()}

    def _stages(self) -> tuple[Stage, ...]:
        """Every stage (the assembled runtime lists them; they need its restores)."""
        raise NotImplementedError

    async def repace(self, *, on_change: bool = False) -> None:
        """Apply backpressure now (stage 1's handlers answer)."""
        raise NotImplementedError

    async def _restored(self, stage: str, partition: int) -> _Input:
        """A partition's state, restored from its snapshot first when it is new here.

        Restores of one stage take turns (``restoring``), so an agent's first message waits
        for an eager restore in progress instead of running a second one.
        """
        _, _, inputs, restore = self._stage_of[stage]
        state = inputs.get(partition)
        if state is None:
            async with self.restoring[stage]:
                await restore([partition])
            state = inputs[partition]
        return state

    def _to_restore(self, role: str, wanted: Iterable[int], loaded: dict[int, _Input]) -> list[int]:
        owned = set(self.owned(self.specs[role].name)) | set(wanted)
        return sorted(p for p in owned if p not in loaded)

    def _inputs(self, role: str, keys: list[str]) -> dict[str, tuple[str, int]]:
        """Per snapshot key ``"<stage>/<p>[/<name>]"``, the input partition its offsets count."""
        return {key: (self.specs[role].name, int(key.split("/")[1])) for key in keys}

    async def _dead_letters(
        self, letters: list[tuple[int, Rejected]], topic: str, partition: int
    ) -> None:
        """Send each rejection, with the offset of its message, to the dead-letter topic."""
        for offset, rejected in letters:
            self.metrics.decode_failures.labels(rejected.reason).inc()
            record = dead_letter(rejected, topic, partition, offset, time.time())
            await send_reliably(
                self.metrics, self.topics.deadletters, record, key=rejected.reason.encode()
            )

    async def _refuse(self, stage: str, reason: str, detail: str, event: Any) -> None:
        """An internal topic's message this stage cannot use: counted, logged, dead-lettered.

        Skipped rather than raised: an exception stops the worker (halt), and every restart
        would stop again at the same message.
        """
        self.metrics.internal_errors.labels(stage).inc()
        message = event.message
        log.error(
            "%s: %s message at %s[%d]@%d skipped: %s",
            stage,
            reason,
            message.topic,
            message.partition,
            message.offset,
            detail,
        )
        rejected = Rejected(reason, detail[:1000], bytes(event.value or b""))
        await self._dead_letters([(message.offset, rejected)], message.topic, message.partition)

    async def _publish(
        self, command: Command, alert: Alert | None, closed_at: float | None = None
    ) -> None:
        """A command on the control topic, then its alert (both acknowledged by the broker).

        ``closed_at`` is the wall-clock close of the window whose verdict caused the command.
        """
        key = command.deployment.encode()
        now = time.time()
        await send_reliably(
            self.metrics,
            self.topics.control,
            self.publisher.command_bytes(command, now),
            key=key,
            wait=True,
        )
        self.metrics.commands.labels(command.action, command.guard).inc()
        if closed_at is not None:
            # Clamped: stage 2 may have run on a worker whose clock is ahead of this one.
            self.metrics.close_to_command.observe(max(0.0, time.time() - closed_at))
        if alert is None:  # a notice (``schemas``): nothing for on-call
            return
        await send_reliably(
            self.metrics,
            self.topics.alerts,
            self.publisher.alert_bytes(alert, now),
            key=key,
            wait=True,
        )
        log.warning("command %s %s: %s", command.action, command.command_id, alert.summary)

    # -- quarantine (core.quarantine) ----------------------------------------------------------

    def _suspects(
        self, stage: str, partition: int, record: dict[str, Any] | None, resume: int
    ) -> list[Suspect]:
        """The suspects a restore found for ``partition`` still ahead of ``resume``, logged
        (none if unreadable: counted, logged)."""
        if record is None:
            return []
        try:
            suspects = prune([Suspect.from_dict(s) for s in record["state"]], resume)
        except (KeyError, TypeError, ValueError, IndexError) as exc:
            self.metrics.internal_errors.labels("state").inc()
            log.error("%s partition %d: ignoring unreadable suspects: %s", stage, partition, exc)
            return []
        after = self.settings.quarantine_after
        for suspect in suspects:
            log.warning(
                "%s partition %d: accounting offsets %d-%d stopped a worker %d time(s) (%s); "
                "they are accounted one message at a time%s",
                stage,
                partition,
                suspect.first,
                suspect.last,
                suspect.crashes,
                suspect.error,
                ", and the message is left out if it is the one recorded"
                if 0 < after <= suspect.crashes
                else "",
            )
        return suspects

    def _record_crash(
        self,
        stage: str,
        key: str,
        state: _Input,
        exc: AccountingError,
        stamp: list[int] | None,
    ) -> None:
        """Store what a stage was accounting when it raised, before the worker stops.

        Blocking (:meth:`StateStore.save_now`): the state is half-changed, and no flush or
        snapshot may run while the record is sent. ``stamp`` is that of the message at
        ``exc.last``: a restore refuses the record once the partition holds another message
        there (the broker lost the log).
        """
        after = self.settings.quarantine_after
        if not after:
            return
        state.suspects = after_crash(state.suspects, exc.first, exc.last, exc.error, stamp)
        suspect = state.suspects[-1]  # after_crash puts this crash's last
        records = [s.to_dict() for s in state.suspects]
        stored = self.store.save_now(key, exc.last, records, stamp)
        log.critical(
            "%s partition %d: %s; %s (crash %d of offsets %d-%d; %s)",
            stage,
            exc.partition,
            exc,
            "recorded" if stored else "NOT recorded (the state topic did not take it)",
            suspect.crashes,
            suspect.first,
            suspect.last,
            f"the message is left out at the restart after crash {after}"
            if suspect.first == suspect.last
            else "next, they are accounted one at a time",
        )

    def _quarantine_letter(
        self, stage: str, state: _Input, message: Any, value: bytes | None
    ) -> Rejected:
        """The dead letter of a message left out, counted and logged."""
        suspect = next(s for s in state.suspects if s.first == message.offset)
        self.metrics.internal_errors.labels(f"{stage}_quarantine").inc()
        self.evicted_recently["quarantine"] = time.monotonic()  # /health: degraded a minute
        self.quarantined.append(
            {
                "topic": message.topic,
                "partition": message.partition,
                "offset": message.offset,
                "crashes": suspect.crashes,
                "error": suspect.error,
            }
        )
        detail = (
            f"accounting this message stopped {suspect.crashes} workers ({suspect.error}); "
            "left out of every statistic so the guard can run (a bug: please report it)"
        )
        log.error(
            "%s[%d]@%d quarantined: %s", message.topic, message.partition, message.offset, detail
        )
        return Rejected("quarantined", detail[:1000], value or b"")

    def agent_crashed(self, agent: str, exc: BaseException) -> None:
        """A stage raised: count it, log its traceback, and have /health say so for a minute.

        A failed restore is retried on the partition's next message; any other stage's
        exception then stops the worker (:mod:`streamguard.faust_app.halt`).
        """
        self.metrics.internal_errors.labels(f"{agent}_crash").inc()
        self.crashed[agent] = (time.monotonic(), f"{type(exc).__name__}: {exc}"[:300])
        log.exception("agent %s crashed", agent, exc_info=exc)
