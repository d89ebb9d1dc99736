"""Stage 1: per source partition, pair predictions and accumulate partial summaries.

For every message of a predictions partition (in offset order), stage 1

1. pairs primary and shadow predictions of each request (:class:`PairingBuffer`),
2. assigns pairs and single predictions to event-time windows, counting as *late* those whose
   window closed before this message (``window_end + allowed_lateness <= watermark``), where the
   watermark is the largest event time seen earlier in the same partition,
3. adds per-slice measurements to the partial summary of (deployment, stream, version, window).

:meth:`Stage1.flush` turns the accumulated summaries into partial messages stamped with the
source partition and the offset range ``(offset_lo, offset_hi]`` they cover, plus the
partition's watermark. Every decision depends only on the partition's own order of messages,
so the same input gives the same partials however the work is spread over workers.
"""

import itertools
from typing import Any

import numpy as np
import numpy.typing as npt

from streamguard.contracts import (
    ROLE_SHADOW,
    ROLES,
    Decoded,
    OutcomeBatch,
    PredictionBatch,
)
from streamguard.contracts.runs import DecodedRun, Run, decode_run
from streamguard.core.exceptions import AccountingError
from streamguard.core.items import exposures_by_slice, item_levels, item_stream
from streamguard.core.pairing import Pairs
from streamguard.core.partials import MAX_PARTIAL_BYTES, dumps
from streamguard.core.run_order import (
    add_report,
    in_order,
    last_advance,
    pairable,
    pieces,
    single,
    watermarks,
)
from streamguard.core.slices import ROOT
from streamguard.core.stage1_expiry import settle
from streamguard.core.stage1_flush import encode_partials
from streamguard.core.stage1_partitions import Partitions
from streamguard.core.stage1_state import (
    PAIR_STREAM,
    DeploymentState,
    Source,
    Stage1Report,
    Unit,
    arm_stream,
    arm_versions,
    by_version_window,
    defer,
    factorize,
    group_of,
    window_of,
)
from streamguard.core.stage1_streams import (
    count_env_pairs,
    count_environments,
    count_replicas,
    count_schemas,
)

__all__ = [
    "MAX_PARTIAL_BYTES",
    "PAIR_STREAM",
    "Stage1",
    "Stage1Report",
    "Unit",
    "arm_stream",
    "dumps",
]


class Stage1(Partitions):
    """Pairing and partial summaries for the source partitions one worker owns.

    Built as :class:`~streamguard.core.stage1_partitions.Partitions` is (the policy and the
    largest partial in bytes), which holds the state, its snapshots and restores.
    """

    # -- processing ----------------------------------------------------------------------------

    def feed(
        self, partition: int, offset: int, value: bytes | None, parsed: Any, max_ts: float
    ) -> list[Unit]:
        """Take the message at ``offset``; return the units this processed (maybe none).

        ``parsed`` is :func:`streamguard.contracts.parse_message` of ``value``. A one-event
        prediction or outcome joins the partition's run (:mod:`streamguard.contracts.runs`),
        which is processed as one unit when it is full, when it reaches a flush boundary a
        restored partition must reproduce, before any other message, and at :meth:`cut`
        (every flush). The cuts are thus a function of the log and of the recorded
        boundaries only, and a replay after a restore cuts its runs where the first pass did.
        """
        source = self._source(partition)
        if source.replay_skips and offset in source.replay_skips:
            return self.skip(partition, offset, max_ts)  # left out before this restart
        if isinstance(parsed, Decoded):
            units = self._run(source, max_ts)
            report = self.process(partition, offset, parsed, value)
            units.append(Unit(offset, offset, parsed, report, [offset] * len(parsed.rejected)))
            return units
        source.run.add(offset, value or b"", parsed)
        boundary = source.replay[0] if source.replay else None
        if source.run.full() or (boundary is not None and offset >= boundary):
            return self._run(source, max_ts)
        return []

    def cut(self, partition: int, max_ts: float) -> list[Unit]:
        """Process the partition's run now (before a flush), unless it is being replayed.

        A run replaying toward a recorded boundary is cut there and nowhere else.
        """
        source = self._sources.get(partition)
        if source is None or source.replay:
            return []
        return self._run(source, max_ts)

    def skippable(self, partition: int, offset: int) -> bool:
        """Whether the message at ``offset`` may be left out (:meth:`skip`).

        Not when a recorded flush boundary at or after it is still to be reproduced, unless it
        was left out then too: that flush once sent partials holding the message, so it was
        accounted then, and the partials reproduced without it would differ from those stage 2
        already has.
        """
        source = self._sources.get(partition)
        if source is None or not source.replay or source.replay[-1] < offset:
            return True
        return offset in source.replay_skips

    def skip(self, partition: int, offset: int, max_ts: float) -> list[Unit]:
        """Leave the message at ``offset`` out (quarantined: :mod:`~streamguard.core.quarantine`).

        The run before it is processed first, as before any message accounted alone; then its
        offset counts as read, so partials and snapshots cover it: a restart from a later
        snapshot does not read it again (one from an earlier one leaves it out again).
        """
        if not self.skippable(partition, offset):
            raise ValueError(f"partition {partition}: offset {offset} was accounted before")
        source = self._source(partition)
        units = self._run(source, max_ts)
        source.replay_skips.discard(offset)
        if offset > source.offset_hi:
            source.skipped.append(offset)
            self._cover(source, offset, offset)
            self._reproduce(source, offset)
        return units

    def _run(self, source: Source, max_ts: float) -> list[Unit]:
        run, source.run = source.run, Run()
        if not len(run):
            return []
        try:
            decoded = decode_run(run, max_ts)
            report = self._process_run(source, run.offsets, decoded)
        except Exception as exc:  # which messages: only stage 1 knows, at a flush's cut
            first, last = run.offsets[0], run.offsets[-1]
            raise AccountingError(source.partition, first, last, exc, run.values[-1]) from exc
        # Outside the messages' accounting: a flush at a recorded boundary is not their doing.
        # A run ends at the first offset at or past a boundary, so this is where one message
        # at a time would flush.
        self._reproduce(source, run.offsets[-1])
        return [Unit(run.offsets[0], run.offsets[-1], decoded.decoded, report, decoded.rejected_at)]

    def process(
        self, partition: int, offset: int, decoded: Decoded, value: bytes | None = None
    ) -> Stage1Report:
        """Account one message of ``partition`` at ``offset`` (``value``: its bytes, if known).

        Raises
        ------
        AccountingError
            When accounting it raised (from that exception), naming the message.
        """
        source = self._source(partition)
        try:
            report = self._one(source, offset, decoded)
        except Exception as exc:  # the worker records the message before it stops
            raise AccountingError(partition, offset, offset, exc, value) from exc
        if not report.skipped_offsets:
            self._reproduce(source, offset)
        return report

    def _one(self, source: Source, offset: int, decoded: Decoded) -> Stage1Report:
        """Account one message, without the flushes a restored partition reproduces."""
        report = Stage1Report()
        if offset <= source.offset_hi:
            report.skipped_offsets = 1
            return report
        self._cover(source, offset, offset)
        watermark = source.watermark
        self._account(
            source,
            decoded.predictions,
            decoded.outcomes,
            watermark,
            max(watermark, decoded.max_ts),
            report=report,
        )
        return report

    def _process_run(self, source: Source, offsets: list[int], run: DecodedRun) -> Stage1Report:
        """Account a run of one-event messages as one message at a time would (see run_order)."""
        if offsets[0] <= source.offset_hi:  # replayed after a restore: skip as one by one would
            report = Stage1Report()
            for k, offset in enumerate(offsets):
                add_report(report, self._one(source, offset, single(run, k)))
            return report
        report = Stage1Report()
        predictions, outcomes = run.decoded.predictions, run.decoded.outcomes
        ts = np.full(len(offsets), -np.inf)
        ts[run.prediction_at] = predictions.ts
        ts[run.outcome_at] = outcomes.ts
        before, after = watermarks(ts, source.watermark)
        for name in sorted(set(predictions.deployment) | set(outcomes.deployment)):
            self._deployment(source, name)
        sizes = {state.policy.window_s for state in source.deployments.values()}
        bounds = pieces(after, sizes)
        whole = len(bounds) == 2
        for lo, hi in itertools.pairwise(bounds):
            p_lo, p_hi = np.searchsorted(run.prediction_at, [lo, hi]).tolist()
            o_lo, o_hi = np.searchsorted(run.outcome_at, [lo, hi]).tolist()
            piece_predictions = (
                predictions if whole else predictions.take(np.arange(p_lo, p_hi, dtype=np.intp))
            )
            piece_outcomes = (
                outcomes if whole else outcomes.take(np.arange(o_lo, o_hi, dtype=np.intp))
            )
            prediction_at = run.prediction_at[p_lo:p_hi]
            outcome_at = run.outcome_at[o_lo:o_hi]
            settled = last_advance(before, after, lo, hi)
            if in_order(
                source.deployments,
                piece_predictions,
                piece_outcomes,
                at=(prediction_at, outcome_at),
                before=before,
                end=(float(after[hi - 1]), settled),
            ):
                self._cover(source, offsets[lo], offsets[hi - 1])
                self._account(
                    source,
                    piece_predictions,
                    piece_outcomes,
                    before[prediction_at],
                    float(after[hi - 1]),
                    report=report,
                )
            else:
                report.one_by_one += hi - lo
                for k in range(lo, hi):
                    add_report(report, self._one(source, offsets[k], single(run, k)))
        return report

    @staticmethod
    def _cover(source: Source, first: int, last: int) -> None:
        """Extend the partition's unflushed range to the messages ``first`` to ``last``."""
        if source.offset_hi < 0:  # the first message: offset_lo may legitimately be -1
            source.offset_lo = first - 1
        source.offset_hi = last

    def _reproduce(self, source: Source, offset: int) -> None:
        """Flush at recorded boundaries up to ``offset`` (a restored partition replaying)."""
        while source.replay and source.replay[0] <= offset:
            source.replay.popleft()
            source.outbox.extend(encode_partials(source, self.max_partial_bytes))

    def _account(
        self,
        source: Source,
        predictions: PredictionBatch,
        outcomes: OutcomeBatch,
        before: float | npt.NDArray[np.float64],
        watermark: float,
        *,
        report: Stage1Report,
    ) -> None:
        """Account events, then expire and mature what the new ``watermark`` passes.

        ``before`` is the watermark before the message: one value for the events of one
        message, or one per prediction for a piece of a run (each judged by its own message's).
        """
        previous = source.watermark
        source.unflushed += len(predictions) + len(outcomes)
        report.predictions += len(predictions)
        report.outcomes += len(outcomes)
        if len(predictions):
            codes, names = factorize(predictions.deployment)
            for code, name in enumerate(names):
                idx = None if len(names) == 1 else np.flatnonzero(codes == code)
                batch = predictions if idx is None else predictions.take(idx)
                own = before if idx is None or isinstance(before, float) else before[idx]
                self._predictions(source, self._deployment(source, name), batch, own, report)
        if len(outcomes):
            for name in sorted(set(outcomes.deployment)):
                pick = [i for i, d in enumerate(outcomes.deployment) if d == name]
                join = self._deployment(source, name).join
                report.unmatched_outcomes += join.outcome(
                    [outcomes.request_id[i] for i in pick], outcomes.value[pick].tolist()
                )
        source.watermark = watermark
        settle(source, advanced=watermark > previous, report=report)

    def _predictions(
        self,
        source: Source,
        state: DeploymentState,
        batch: PredictionBatch,
        watermark: float | npt.NDArray[np.float64],
        report: Stage1Report,
    ) -> None:
        policy = state.policy
        state.touched = True
        deployment = batch.deployment[0]
        windows = window_of(batch.ts, policy.window_s)
        late = (windows + 1) * policy.window_s + policy.allowed_lateness_s <= watermark
        on_time = ~late
        n_late = int(late.sum())
        # Single predictions feed the per-role arms (traffic mix, canary metrics, shadow health).
        combos = (
            state.coder.encode_columns(batch.slice_columns, len(batch))
            if batch.slice_columns
            else state.coder.encode(batch.slice)
        )
        arm_keys = arm_versions(batch)
        versions, version_names = factorize(arm_keys)
        errors = batch.errors()
        keys = (windows * len(version_names) + versions) * len(ROLES) + batch.role
        item_positions = item_levels(state.coder.levels, policy.popularity.slice_level)
        for key in np.unique(keys[on_time]).tolist():
            idx = np.flatnonzero((keys == key) & on_time)
            role = key % len(ROLES)
            version = version_names[(key // len(ROLES)) % len(version_names)]
            window = int(windows[idx[0]])
            group = group_of(source, state, (deployment, arm_stream(role), version, window))
            defer(group, state, combos[idx], errors[idx], batch.latency_ms[idx])
            if batch.items and policy.popularity.enabled:
                exposed = [batch.items[i] for i in idx.tolist()]
                stream = item_stream(ROLES[role])
                ids = [item for ranked in exposed if ranked for item in ranked]
                if ids:
                    rows = state.coder.rows(combos[idx])
                    items_key = (deployment, stream, version, window, ROOT)
                    source.items.setdefault(items_key, []).extend(ids)
                    for label, slice_ids in exposures_by_slice(
                        exposed, rows.index, rows.labels, item_positions
                    ):
                        items_key = (deployment, stream, version, window, label)
                        source.items.setdefault(items_key, []).extend(slice_ids)
        if batch.feature_schema:
            count_schemas(source, state, batch, windows, on_time)
        if policy.cold_start.enabled and (
            batch.replica_id or len(batch.replica_age_s) or len(batch.replica_ready)
        ):
            count_replicas(source, state, batch, windows, on_time)
        if batch.env_fingerprint and policy.determinism.enabled:
            count_environments(source, state, batch, windows, on_time & ~errors, combos=combos)
        # Served predictions (primary and canary, late or not) open outcome exposures.
        served = np.flatnonzero(batch.role != ROLE_SHADOW)
        if len(served):
            everyone = len(served) == len(batch)
            picked = served.tolist()
            state.join.expose(
                batch.request_id if everyone else [batch.request_id[i] for i in picked],
                batch.role[served],
                arm_keys if everyone else [arm_keys[i] for i in picked],
                combos[served],
                batch.ts[served],
            )
        # Pairs: every primary and shadow prediction, late or not, may complete a pair, except
        # a shadow that failed (error: true): its score is a fallback, not the candidate's
        # answer, so its primary stays unpaired and counts against the slice's pairing rate.
        per_event = isinstance(watermark, np.ndarray)
        paired = np.flatnonzero(pairable(state, batch, per_event, errors))
        state.shadowed = state.shadowed or bool((batch.role == ROLE_SHADOW).any())
        if len(paired):
            everything = len(paired) == len(batch)
            pairs = state.pairing.match(
                batch if everything else batch.take(paired),
                combos if everything else combos[paired],
            )
            report.duplicates += pairs.duplicates
            if len(pairs):
                # A pair is judged by the watermark before the message that completed it.
                completed: float | npt.NDArray[np.float64] = watermark
                if isinstance(watermark, np.ndarray):
                    completed = (watermark if everything else watermark[paired])[pairs.at]
                report.late_pairs += self._pairs(source, state, pairs, completed, report)
        state.late += n_late
        report.late += n_late

    def _pairs(
        self,
        source: Source,
        state: DeploymentState,
        pairs: Pairs,
        watermark: float | npt.NDArray[np.float64],
        report: Stage1Report,
    ) -> int:
        policy = state.policy
        windows = window_of(pairs.ts, policy.window_s)
        on_time = (windows + 1) * policy.window_s + policy.allowed_lateness_s > watermark
        for version, window, idx in by_version_window(windows, pairs.version, on_time):
            group = group_of(source, state, (pairs.deployment[0], PAIR_STREAM, version, window))
            # The baseline of the pair completed last (in a run, pairs with waiting halves
            # come after those within it, whatever their messages' order).
            group.baseline_version = pairs.baseline_version[int(idx[np.argmax(pairs.at[idx])])]
            defer(group, state, pairs.combo[idx], pairs.primary[idx], pairs.shadow[idx])
            if policy.determinism.enabled:
                count_env_pairs(source, state, pairs, idx, window)
        report.pairs += int(on_time.sum())
        return int((~on_time).sum())

    # -- flushing ------------------------------------------------------------------------------

    def flush(self, partition: int) -> list[tuple[str, bytes]]:
        """Encoded partial messages ``(deployment, value)`` for ``partition``; resets them.

        A deployment's partial is split into parts of at most ``max_partial_bytes`` (a group
        with many slices is split by rows); every part carries ``part`` and ``parts`` so stage 2 can
        deduplicate each one by ``(offset_hi, part)``. While a restored partition replays up to
        its recorded flush boundaries, only the partials reproduced at those boundaries go out.
        """
        source = self._sources.get(partition)
        if source is None:
            return []
        out, source.outbox = source.outbox, []
        if not source.replay:
            out.extend(encode_partials(source, self.max_partial_bytes))
        return out

    def requeue(self, partition: int, partials: list[tuple[str, bytes]]) -> None:
        """Put partials from :meth:`flush` back, to go out first at the next flush.

        For partials whose progress record could not be stored: sent without it, a crash
        could not reproduce their cuts. Until they are sent the partition is not settled, so
        no snapshot claims them.
        """
        source = self._sources.get(partition)
        if source is not None:  # else dropped (revoked): its next owner replays them
            source.outbox[:0] = partials
