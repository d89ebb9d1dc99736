"""Receive pause / rollback / resume commands from the control topic.

Delivery guarantees
-------------------
* At-least-once to the handler: a message's offset is committed only after the handler returned
  for it (or after it was rejected, filtered out or recognised as a duplicate). A subscriber that
  stops or crashes before that leaves the command to the next member of its group.
* Never skipped: a handler that raises is called again with capped exponential back-off until it
  succeeds or the subscriber is stopped; later commands of that partition wait behind it.
* Once per process: commands are deduplicated by ``command_id`` (an LRU of the last
  ``dedup_capacity`` handled ids), so a re-published decision reaches the handler once. After a
  restart, a command handled but not yet committed can reach the new process again.
* In order per deployment: the topic is keyed by deployment, a partition's messages are handled
  one at a time, and partitions are handled independently of each other (one blocked
  deployment does not hold up the others on other partitions).
* Invalid messages (not JSON, not a valid command, or refused by ``verify``) are counted by
  reason in :meth:`ControlSubscriber.stats`, logged, committed, and never reach the handler.

Signatures
----------
Every consumer checks each command itself; topic ACLs are a second line, not the first. With a
keyring, the subscriber verifies each command's Ed25519 signature, key id, issuer, audience and
validity period (with ``clock_skew_s`` of tolerance) before anything else looks at it
(:mod:`streamguard.security`). Refused commands are counted by reason (``unsigned``,
``malformed_signature``, ``unknown_key``, ``bad_signature`` for forged or tampered ones,
``wrong_issuer``, ``wrong_audience``, ``expired``, ``not_yet_valid``), logged once per reason
and command id, committed, and never reach the handler. A command whose id was already handled
is a replay (or a redelivery): it is counted in ``duplicates``, logged once as ``replay``, and
dropped.

Request schemas
---------------
The worker publishes a signed ``schemas`` notice whenever a model version has served a new
request schema (``feature_schema`` of its prediction events) without errors. Notices are
verified and deduplicated like commands but do not reach the handler; the subscriber keeps them,
and :meth:`ControlSubscriber.accepted_schemas` answers which schemas a rollback target accepts,
so serving can keep a dual read path while a new schema rolls out. A group member only sees
the notices after its group's committed offset: ``preload_schemas=True`` first reads the whole
control topic for them.

Schema versions 1 (unsigned) and 2 (signed) are read, and later versions tolerantly
(:func:`streamguard.client.validate.validate_any_command`), so rolling streamguard forward or
back does not strand a consumer. Unsigned commands pass only when signatures are not required.
"""

import asyncio
import logging
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Collection, Hashable, Iterable, Mapping
from typing import Any, TypeVar

from streamguard.client._kafka import (
    GROUP_TIMINGS,
    AIOKafkaConsumer,
    CallbackListener,
    KafkaError,
    TopicPartition,
    leave_group_on_stop,
)
from streamguard.client.reader import read_all
from streamguard.client.validate import DecodeError, parse_json, validate_any_command
from streamguard.client.verification import (
    Verifier,
    accept_all,
    authenticate,
    claimed_id,
    control_topic,
    signature_policy,
)
from streamguard.contracts import Command
from streamguard.contracts.commands import NOTICE_ACTION
from streamguard.security import KeyRing

__all__ = ["ControlSubscriber", "Handler"]

log = logging.getLogger(__name__)

_T = TypeVar("_T")

#: What the subscriber calls for each command.
Handler = Callable[[Command], Awaitable[None]]


class ControlSubscriber:
    """Consumer-group member that hands each control command to ``handler`` once, in order.

    Parameters
    ----------
    bootstrap
        Kafka bootstrap servers.
    handler
        Coroutine function applying one command; raising means "not applied, try again".
    group_id
        Consumer group; members of one group share the partitions and the committed offsets.
    topic
        Control topic; the ``control`` topic of the specs when omitted.
    deployments
        Deployments to act on; commands for others are skipped (and committed). None: all.
        Every member of a group must use the same filter: partitions are shared by the group,
        so a command one member skips is skipped for the whole group.
    verify
        Called with each valid, authentic command's JSON object; a returned string rejects the
        message with reason ``unverified``. Exceptions are retried like handler failures.
    keyring
        Public keys commands may be signed with (:func:`streamguard.security.load_keyring`).
    audiences
        Audiences accepted: the deployments or fleet names commands are addressed to. None: a
        command is accepted for the deployment it names (its ``aud`` equals its
        ``deployment``).
    require_signature
        True: refuse unsigned commands (needs a keyring). False: accept unsigned (schema
        version 1) commands; signed ones are still verified if a keyring is given. None
        (default): required exactly when a keyring is given; without one the subscriber
        accepts unsigned commands and says so loudly in the log at start.
    clock_skew_s
        Tolerance, in seconds, between the signer's clock and ``clock`` for expiry and issue
        times.
    issuers
        Accepted issuers; None accepts the issuer each keyring entry is registered for.
    clock
        Current epoch seconds (tests pass a fake clock).
    dedup_capacity
        Number of recently handled command ids remembered for deduplication.
    retry_backoff_s, max_backoff_s
        First delay between handler attempts, doubled after each failure up to the maximum.
    auto_offset_reset
        Where a group without committed offsets starts: ``earliest`` (default, so a new
        subscriber sees commands still retained) or ``latest``.
    consumer_config
        Extra keyword arguments for ``AIOKafkaConsumer``.
    """

    def __init__(
        self,
        bootstrap: str,
        handler: Handler,
        group_id: str,
        topic: str | None = None,
        deployments: set[str] | None = None,
        *,
        verify: Verifier = accept_all,
        keyring: KeyRing | None = None,
        audiences: Collection[str] | None = None,
        require_signature: bool | None = None,
        clock_skew_s: float = 30.0,
        issuers: Collection[str] | None = None,
        clock: Callable[[], float] = time.time,
        dedup_capacity: int = 100_000,
        retry_backoff_s: float = 0.1,
        max_backoff_s: float = 5.0,
        auto_offset_reset: str = "earliest",
        consumer_config: Mapping[str, Any] | None = None,
        preload_schemas: bool = False,
    ) -> None:
        self.bootstrap = bootstrap
        self.preload_schemas = preload_schemas
        self.group_id = group_id
        self.topic = control_topic(topic)
        self.deployments = frozenset(deployments) if deployments is not None else None
        self.dedup_capacity = dedup_capacity
        self.retry_backoff_s = retry_backoff_s
        self.max_backoff_s = max_backoff_s
        self._handler = handler
        self._verify = verify
        self._signatures = signature_policy(
            keyring,
            audiences=audiences,
            require_signature=require_signature,
            clock_skew_s=clock_skew_s,
            issuers=issuers,
            clock=clock,
        )
        self._config: dict[str, Any] = {
            "bootstrap_servers": bootstrap,
            "group_id": group_id,
            "enable_auto_commit": False,
            "auto_offset_reset": auto_offset_reset,
            **GROUP_TIMINGS,
            **(consumer_config or {}),
        }
        # Counters (read them directly or through stats()).
        self.commands_handled = 0
        self.duplicates = 0
        self.filtered = 0
        self.handler_errors = 0
        self.commit_errors = 0
        self.notices = 0
        self.rejected: dict[str, int] = {}
        self._accepted: dict[tuple[str, str], frozenset[str]] = {}
        self._seen: OrderedDict[str, None] = OrderedDict()
        self._logged: OrderedDict[Hashable, None] = OrderedDict()
        self._consumer: Any = None
        self._poll_task: asyncio.Task[None] | None = None
        self._workers: dict[TopicPartition, asyncio.Task[None]] = {}
        self._stopped = asyncio.Event()  # set by stop() or by a failed background task
        self._closed = False
        self._failure: BaseException | None = None

    # --- lifecycle ------------------------------------------------------------------------------

    async def start(self) -> None:
        """Join the group and start consuming in the background."""
        if self._consumer is not None:
            raise RuntimeError("a ControlSubscriber starts once")
        if not self._signatures.require_signature:
            log.warning(
                "INSECURE: control subscriber %s accepts UNSIGNED commands (%s); anything that "
                "can write to %s can pause or roll back your models",
                self.group_id,
                "signatures of signed ones are verified"
                if self._signatures.verifies
                else "no keyring: nothing is verified",
                self.topic,
            )
        if self.preload_schemas:
            commands = await read_all(
                self.bootstrap,
                30.0,
                None,
                self.topic,
                signatures=self._signatures,
                verify=self._verify,
            )
            self.learn(commands)
        self._consumer = AIOKafkaConsumer(**self._config)
        listener = CallbackListener(self._on_revoked, self._on_assigned)
        self._consumer.subscribe([self.topic], listener=listener)
        await self._consumer.start()
        self._poll_task = asyncio.create_task(self._poll(), name=f"control-poll-{self.group_id}")
        self._poll_task.add_done_callback(self._task_done)

    async def stop(self) -> None:
        """Stop handling and leave the group; nothing further is committed."""
        if self._consumer is None or self._closed:
            return
        self._closed = True
        self._stopped.set()
        tasks = [t for t in (self._poll_task, *self._workers.values()) if t is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._workers.clear()
        leave_group_on_stop(self._consumer)
        await self._consumer.stop()

    async def run(self) -> None:
        """Start, then handle commands until :meth:`stop` is called or consuming fails.

        Raises
        ------
        Exception
            Whatever stopped the consumer (a broker error, or a bug in this module).
        """
        await self.start()
        try:
            await self._stopped.wait()
        finally:
            await self.stop()
        if self._failure is not None:
            raise self._failure

    async def __aenter__(self) -> "ControlSubscriber":
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    def accepted_schemas(self, deployment: str, model_version: str) -> frozenset[str] | None:
        """Request schemas ``model_version`` has served without errors, per the worker.

        None when no notice about that version was seen (unknown, not "accepts nothing").
        """
        return self._accepted.get((deployment, model_version))

    def learn(self, commands: Iterable[Command]) -> None:
        """Take the ``schemas`` notices among ``commands`` (authentic ones: verify first)."""
        for command in commands:
            if command.action != NOTICE_ACTION:
                continue
            key = (command.deployment, command.model_version)
            raw = command.evidence.get("accepted", [])
            schemas = frozenset(str(s) for s in raw) if isinstance(raw, list) else frozenset()
            self._accepted[key] = self._accepted.get(key, frozenset()) | schemas

    def stats(self) -> dict[str, Any]:
        """Counters, rejections by reason, and the partitions currently being handled."""
        return {
            "commands_handled": self.commands_handled,
            "notices": self.notices,
            "duplicates": self.duplicates,
            "filtered": self.filtered,
            "handler_errors": self.handler_errors,
            "commit_errors": self.commit_errors,
            "rejected": dict(self.rejected),
            "rejected_total": sum(self.rejected.values()),
            "busy_partitions": len(self._workers),
            "signatures_required": self._signatures.require_signature,
        }

    def _task_done(self, task: asyncio.Task[None]) -> None:
        """A background task ended on its own: record why, and let run() return."""
        if task.cancelled():
            return
        exc = task.exception()
        if exc is not None:
            log.error("control subscriber %s failed: %r", self.group_id, exc)
            self._failure = self._failure or exc
            self._stopped.set()

    # --- consuming ------------------------------------------------------------------------------

    async def _poll(self) -> None:
        """Fetch, and give each partition's records to its own worker.

        A partition is paused while its worker runs, so the consumer keeps polling (and stays in
        the group) while a handler is being retried, and records of one partition never
        overtake each other.
        """
        while True:
            batches = await self._consumer.getmany(timeout_ms=200)
            for tp, records in batches.items():
                self._consumer.pause(tp)
                task = asyncio.create_task(self._drain(tp, records), name=f"control-{tp}")
                task.add_done_callback(self._task_done)
                self._workers[tp] = task

    async def _on_revoked(self, revoked: set[TopicPartition]) -> None:
        # Stop work on partitions we are losing before they move: the new owner starts from
        # the last committed offset, so an unfinished command is redelivered, not lost.
        tasks = [self._workers.pop(tp) for tp in revoked if tp in self._workers]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def _on_assigned(self, assigned: set[TopicPartition]) -> None:
        log.info("control subscriber %s assigned %d partitions", self.group_id, len(assigned))

    async def _drain(self, tp: TopicPartition, records: list[Any]) -> None:
        uncommitted: int | None = None
        for record in records:
            if await self._process(record):
                await self._commit(tp, record.offset + 1)
                uncommitted = None
            else:
                uncommitted = record.offset + 1
        if uncommitted is not None:
            await self._commit(tp, uncommitted)
        if self._workers.get(tp) is asyncio.current_task():
            del self._workers[tp]
            self._consumer.resume(tp)

    async def _commit(self, tp: TopicPartition, offset: int) -> None:
        try:
            await self._consumer.commit({tp: offset})
        except KafkaError as exc:
            # Usually a rebalance: the handler ran, the partition's next owner may run it again.
            self.commit_errors += 1
            log.warning("commit of %s at %d failed: %r", tp, offset, exc)

    def _log_once(self, key: Hashable | None, level: int, message: str, *args: object) -> None:
        """Log, unless ``key`` was logged recently: a redelivered bad command logs once."""
        if key is not None:
            if key in self._logged:
                self._logged.move_to_end(key)
                return
            self._logged[key] = None
            if len(self._logged) > self.dedup_capacity:
                self._logged.popitem(last=False)
        log.log(level, message, *args)

    def _reject(self, exc: DecodeError, where: str, command_id: str | None) -> None:
        self.rejected[exc.reason] = self.rejected.get(exc.reason, 0) + 1
        key = (exc.reason, command_id) if command_id is not None else None
        message = "rejected control message %s: %s: %s"
        self._log_once(key, logging.WARNING, message, where, exc.reason, exc.detail)

    async def _process(self, record: Any) -> bool:
        """Handle one record; True if the handler ran (so its offset is committed right away)."""
        where = f"{record.topic}[{record.partition}]@{record.offset}"
        raw: object = None
        try:
            raw = parse_json(record.value)
            command = validate_any_command(raw)
        except DecodeError as exc:
            self._reject(exc, where, claimed_id(raw))
            return False
        assert isinstance(raw, dict)  # validate_any_command accepted it, so it is an object
        # Filter before authenticating: commands for other fleets' deployments are not ours to
        # judge (their audience is not ours), and dropping one needs no trust in it.
        if self.deployments is not None and command.deployment not in self.deployments:
            self.filtered += 1
            return False

        async def check() -> None:
            authenticate(raw, command, self._signatures, self._verify)

        try:
            await self._retrying(check, f"verify {where}")
        except DecodeError as exc:
            self._reject(exc, where, command.command_id)
            return False
        # Only authentic commands reach this check, so a forged copy of a handled command is
        # counted as forged, not as a replay.
        if command.command_id in self._seen:
            self._seen.move_to_end(command.command_id)
            self.duplicates += 1
            self._log_once(
                ("replay", command.command_id),
                logging.INFO,
                "dropped control message %s: replay: command %s was already handled",
                where,
                command.command_id,
            )
            return False
        if command.action == NOTICE_ACTION:  # for accepted_schemas(), not for the handler
            self.learn([command])
            self.notices += 1
        else:
            await self._retrying(
                lambda: self._handler(command), f"handler for {command.command_id} ({where})"
            )
            self.commands_handled += 1
        self._seen[command.command_id] = None
        if len(self._seen) > self.dedup_capacity:
            self._seen.popitem(last=False)
        return True

    async def _retrying(self, step: Callable[[], Awaitable[_T]], what: str) -> _T:
        """Await ``step()`` until it succeeds; DecodeError is an answer, not a failure."""
        attempt = 0
        while True:
            try:
                return await step()
            except DecodeError:
                raise
            except Exception as exc:
                attempt += 1
                self.handler_errors += 1
                delay = min(self.retry_backoff_s * 2 ** (attempt - 1), self.max_backoff_s)
                log.warning("%s failed (attempt %d, retry in %.2fs): %r", what, attempt, delay, exc)
                await asyncio.sleep(delay)
