"""The whole engine in one process: what ``streamguard replay`` runs.

It wires the same three stages the Faust worker runs, with the same JSON encoding between them,
and routes each message to the partition Kafka's default partitioner would give its request id,
so a replay reproduces the worker's per-partition order, windows and commands.

Examples
--------
>>> import orjson
>>> pipe = Pipeline(Policy(), partitions=2)
>>> pipe.feed(b"not json")
>>> pipe.finish()
[]
>>> dict(pipe.rejected)
{'invalid_json': 1}
"""

import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

import orjson

from streamguard.contracts import (
    Alert,
    Command,
    Decoded,
    decode_message,
    load_topic_specs,
    parse_message,
    partition_for,
)
from streamguard.core.guard_failure import GuardFailure
from streamguard.core.partials import dumps
from streamguard.core.stage1 import Unit
from streamguard.core.stage1_watermarks import one_heartbeat
from streamguard.decisions import VerdictError, check_verdict
from streamguard.engine.build import Engine
from streamguard.guards import Verdict
from streamguard.policy import Policy

__all__ = ["Pipeline", "PipelineStats", "dumps", "route"]


def route(decoded: Decoded, partitions: int) -> int:
    """Partition of a message: that of its events' request id (envelopes hold one partition)."""
    if len(decoded.predictions):
        key = decoded.predictions.request_id[0]
    elif len(decoded.outcomes):
        key = decoded.outcomes.request_id[0]
    else:
        return 0
    return partition_for(key.encode(), partitions)


@dataclass(slots=True)
class PipelineStats:
    """Counters of a run."""

    messages: int = 0
    events: int = 0
    pairs: int = 0
    unpaired: int = 0
    late: int = 0
    late_pairs: int = 0
    duplicates: int = 0
    verdicts: int = 0
    guard_errors: int = 0  # error verdicts: a guard raised at a close (core.guard_failure)
    training_examples: int = 0
    leakage_violations: int = 0
    rejected: Counter[str] = field(default_factory=Counter)


class Pipeline:
    """Stage 1, stage 2 and the decider wired in-process.

    Parameters
    ----------
    policy
        The policy.
    partitions
        Partitions of the predictions topic to emulate (the worker's topic spec by default).
    flush_every
        Messages between flushes of stage 1; results do not depend on it, memory does.
    on_verdict
        Called with every verdict (the live table of the demo, tests).
    max_future_s
        Events later than wall clock + this are rejected, as in the worker.
    training_partitions
        Partitions of the training examples topic to emulate (its topic spec by default):
        training examples go to the leakage guard by the partition of their pipeline.
    runs
        Account consecutive one-event messages in runs, as the worker does (the default).
        False decodes and accounts each message alone: the same results, slower (benchmarks
        and tests compare the two).
    hold
        Hold data of windows that have not ended at a flush, as the worker's timer does (the
        default; see :meth:`flush`). False flushes every partition at every flush: the same
        verdicts and commands, slower (tests compare the two).
    """

    def __init__(
        self,
        policy: Policy,
        partitions: int,
        flush_every: int = 5000,
        on_verdict: Callable[[Verdict], None] | None = None,
        max_future_s: float = 300.0,
        *,
        training_partitions: int | None = None,
        runs: bool = True,
        hold: bool = True,
    ) -> None:
        self.runs = runs
        self.hold = hold
        self.partitions = partitions
        self.engine = Engine.create(policy, partitions)
        self.stage1 = self.engine.stage1
        self.stage2 = self.engine.stage2
        self.decider = self.engine.decider
        self.flush_every = flush_every
        self.on_verdict = on_verdict
        self.max_future_s = max_future_s
        self.stats = PipelineStats()
        self.commands: list[Command] = []
        self.alerts: list[Alert] = []  # every alert: those of commands, and notices
        self.notices: list[Alert] = []  # alerts that come with no command (shadow health)
        # The first failure of each (deployment, guard, signature): what replay reports.
        self.failures: dict[tuple[str, str, str], GuardFailure] = {}
        self._offsets = [-1] * partitions
        self.training_partitions = training_partitions or (
            load_topic_specs()["training_examples"].partitions
        )
        self._training_offsets = [-1] * self.training_partitions
        self._since_flush = 0

    @property
    def rejected(self) -> Counter[str]:
        """Dead-lettered messages and events by reason."""
        return self.stats.rejected

    def feed(self, value: bytes) -> None:
        """Process one message (one line of a recording).

        One-event predictions and outcomes are processed in runs, as the worker does
        (:meth:`streamguard.core.Stage1.feed`).
        """
        max_ts = time.time() + self.max_future_s
        parsed = parse_message(value, max_ts) if self.runs else decode_message(value, max_ts)
        self.stats.messages += 1
        if isinstance(parsed, Decoded):
            partition = route(parsed, self.partitions)
        else:
            request_id = parsed.get("request_id")
            key = request_id.encode() if type(request_id) is str else b""
            partition = partition_for(key, self.partitions) if key else 0
        self._offsets[partition] += 1
        self._count(self.stage1.feed(partition, self._offsets[partition], value, parsed, max_ts))
        if isinstance(parsed, Decoded) and len(parsed.training):
            self._training(parsed)
        self._since_flush += 1
        if self._since_flush >= self.flush_every:
            self.flush()

    def _count(self, units: list[Unit]) -> None:
        for unit in units:
            self.stats.events += unit.decoded.n_events
            for rejected in unit.decoded.rejected:
                self.stats.rejected[rejected.reason] += 1
            report = unit.report
            self.stats.pairs += report.pairs
            self.stats.unpaired += report.unpaired
            self.stats.late += report.late
            self.stats.late_pairs += report.late_pairs
            self.stats.duplicates += report.duplicates

    def _training(self, decoded: Decoded) -> None:
        """Training examples: to the leakage guard, by their pipeline's partition.

        An envelope holds one partition's examples (the emitter routes by pipeline), so the
        first example's pipeline routes the message, as Kafka's default partitioner would.
        """
        batch = decoded.training
        partition = partition_for(batch.pipeline[0].encode(), self.training_partitions)
        self._training_offsets[partition] += 1
        report = self.engine.leakage.process(partition, self._training_offsets[partition], batch)
        self.stats.training_examples += report.examples
        self.stats.leakage_violations += report.violations
        for command, alert in report.commands:
            self.commands.append(command)
            self.alerts.append(alert)

    def flush(self, final: bool = False) -> list[Command]:
        """Move stage 1's partials through stage 2 and the decider; return new commands.

        As the worker's flush timer does, a partition whose data since its last flush is all
        for windows that have not ended is held (:meth:`streamguard.core.Stage1.holdable`): its
        live watermark goes to stage 2 in the heartbeat, its data with a later flush, in about
        one flush per window instead of one per call. Windows close at the same watermarks,
        so verdicts and commands do not change; a flush costs a fixed amount per group,
        which made flushing every second of traffic most of an evaluation's time. ``final``
        flushes everything, as does every flush with ``hold=False``.
        """
        self._since_flush = 0
        max_ts = time.time() + self.max_future_s
        everything = list(range(self.partitions))
        for partition in everything:
            self._count(self.stage1.cut(partition, max_ts))
        holding = self.hold and not final
        held = [p for p in everything if self.stage1.holdable(p)] if holding else []
        flushed = [p for p in everything if p not in held]
        for partition in flushed:
            for _, partial in self.stage1.flush(partition):
                self.stage2.apply(orjson.loads(partial))
        beat = one_heartbeat(self.stage1.heartbeat(flushed), flushed, self.stage1.announce(held))
        self.stage2.apply(orjson.loads(dumps(beat)))
        new: list[Command] = []
        verdicts = self.stage2.advance(final=final)
        for failure in self.stage2.take_failures():
            self.stats.guard_errors += 1
            key = (failure.deployment, failure.guard, failure.signature)
            self.failures.setdefault(key, failure)
        for verdict in verdicts:
            self.stats.verdicts += 1
            if self.on_verdict is not None:
                self.on_verdict(verdict)
            sent = orjson.loads(dumps(verdict.to_dict()))
            try:
                check_verdict(sent)  # as the worker's stage 3 does, so replay decides alike
            except VerdictError:
                self.stats.rejected["bad_verdict"] += 1
                continue
            decisions = self.decider.decide(sent)
            for command, alert in decisions.commands:
                self.commands.append(command)
                if alert is not None:  # notices (``schemas``) have no alert
                    self.alerts.append(alert)
                new.append(command)
            self.alerts.extend(decisions.notices)
            self.notices.extend(decisions.notices)
        return new

    def finish(self) -> list[Command]:
        """Flush everything and close every open window; return all commands."""
        self.flush(final=True)
        return self.commands
