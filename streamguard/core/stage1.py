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
import math
from collections import defaultdict, deque
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from streamguard.contracts import (
    ROLE_CANARY,
    ROLE_SHADOW,
    ROLES,
    Decoded,
    OutcomeBatch,
    PredictionBatch,
    Rejected,
)
from streamguard.contracts.runs import DecodedRun, Run, decode_run
from streamguard.core.environments import ENV_PAIR_STREAM, ENV_STREAM, EnvMeasures
from streamguard.core.feature_schemas import SCHEMA_FIELDS, SCHEMA_STREAM, schema_counts
from streamguard.core.items import count_items, exposures_by_slice, item_levels, item_stream
from streamguard.core.measures import ArmMeasures, PairMeasures
from streamguard.core.outcomes import Matured, OutcomeJoin
from streamguard.core.pairing import Half, PairingBuffer, Pairs
from streamguard.core.partials import (
    HEADER_RESERVE,
    MAX_PARTIAL_BYTES,
    dumps,
    encode_group,
    pack,
)
from streamguard.core.replicas import REPLICA_STREAM, ReplicaMeasures, replica_rows
from streamguard.core.run_order import (
    add_report,
    in_order,
    last_advance,
    pairable,
    pieces,
    single,
    watermarks,
)
from streamguard.core.slices import ROOT, SliceCoder
from streamguard.core.summary import Array, Registry, Table
from streamguard.policy import DeploymentPolicy, Policy

__all__ = [
    "MAX_PARTIAL_BYTES",
    "PAIR_STREAM",
    "Stage1",
    "Stage1Report",
    "Unit",
    "arm_stream",
    "dumps",
]

PAIR_STREAM = "pair"

I64 = npt.NDArray[np.int64]


def arm_stream(role: int) -> str:
    """Stream name of a role's single predictions, e.g. ``arm:canary``."""
    return f"arm:{ROLES[role]}"


@dataclass(slots=True)
class Stage1Report:
    """What one message did, for metrics."""

    predictions: int = 0
    outcomes: int = 0
    pairs: int = 0
    unpaired: int = 0
    duplicates: int = 0
    late: int = 0  # single predictions whose window had closed
    late_pairs: int = 0  # completed pairs whose window had closed
    matured: int = 0  # exposures whose outcome join window closed
    evicted_halves: int = 0  # halves dropped because the pairing buffer was full
    evicted_exposures: int = 0  # exposures matured early because the join buffer was full
    unmatched_outcomes: int = 0  # outcomes for no open exposure
    skipped_offsets: int = 0  # messages at or below an offset already processed
    one_by_one: int = 0  # messages of runs accounted one at a time (see core.run_order)


@dataclass(slots=True)
class Unit:
    """One unit stage 1 processed: a message decoded alone, or a run of one-event messages.

    ``rejected_at`` holds the offset of the message of each of ``decoded.rejected``.
    """

    first: int
    last: int
    decoded: Decoded
    report: Stage1Report
    rejected_at: list[int]

    def letters(self) -> list[tuple[int, Rejected]]:
        """``(offset, rejection)`` for the dead-letter topic."""
        return list(zip(self.rejected_at, self.decoded.rejected, strict=True))


@dataclass(slots=True)
class _Group:
    registry: Registry
    table: Table
    baseline_version: str = ""


@dataclass(slots=True)
class _Deployment:
    name: str
    policy: DeploymentPolicy
    coder: SliceCoder
    pairing: PairingBuffer
    measures: PairMeasures
    arms: ArmMeasures
    join: OutcomeJoin
    replicas: ReplicaMeasures
    envs: EnvMeasures
    late: int = 0
    touched: bool = False
    # Pairing starts at the partition's first shadow prediction: a deployment without a
    # shadow must not fill the buffer with primaries that can never pair.
    shadowed: bool = False


@dataclass(slots=True)
class _Source:
    partition: int
    watermark: float = -math.inf
    offset_lo: int = -1  # the partial covers (offset_lo, offset_hi]
    offset_hi: int = -1
    # What the last flush covered: heartbeats report these, never the live values, so a
    # watermark never reaches stage 2 before the data it covers.
    flushed_watermark: float = -math.inf
    flushed_offset: int = -1
    # Offsets at which partials were flushed since the last snapshot: recorded before they are
    # sent, so that after a restore the same partials (same bytes, same stamps) are flushed
    # again at the same offsets and stage 2 can drop those it already has.
    boundaries: list[int] = field(default_factory=list)
    replay: deque[int] = field(default_factory=deque)  # boundaries still to reproduce
    outbox: list[tuple[str, bytes]] = field(default_factory=list)  # reproduced partials
    run: Run = field(default_factory=Run)  # one-event messages read and not yet processed
    deployments: dict[str, _Deployment] = field(default_factory=dict)
    groups: dict[tuple[str, str, str, int], _Group] = field(default_factory=dict)
    # (deployment, items:<role>, version, window, slice) -> item ids exposed since the last flush
    items: dict[tuple[str, str, str, int, str], list[str]] = field(default_factory=dict)


def _window(ts: npt.NDArray[np.float64], window_s: int) -> I64:
    return np.floor(ts / window_s).astype(np.int64)


def _arm_versions(batch: PredictionBatch) -> list[str]:
    """Version key of each event's arm: a canary's includes its allocation, when given.

    A new allocation (for example the fixed, stratified one) then starts a fresh canary arm,
    so its statistics restart; the baseline's arm is keyed by model version only.
    """
    if not batch.allocation:
        return batch.model_version
    canary = (batch.role == ROLE_CANARY).tolist()
    return [
        f"{version}@{allocation}" if is_canary and allocation else version
        for version, allocation, is_canary in zip(
            batch.model_version, batch.allocation, canary, strict=True
        )
    ]


def _factorize(values: list[str]) -> tuple[I64, list[str]]:
    """Integer codes of strings with few distinct values (deployments, versions)."""
    names = sorted(set(values))
    if len(names) == 1:
        return np.zeros(len(values), dtype=np.int64), names
    codes = {name: i for i, name in enumerate(names)}
    return np.fromiter(map(codes.__getitem__, values), np.int64, len(values)), names


class Stage1:
    """Pairing and partial summaries for the source partitions one worker owns."""

    def __init__(self, policy: Policy, max_partial_bytes: int = MAX_PARTIAL_BYTES) -> None:
        self.policy = policy
        # One size for every flush, including those reproduced after a restore: the same data
        # must split into the same parts with the same stamps.
        self.max_partial_bytes = max_partial_bytes
        self._sources: dict[int, _Source] = {}

    # -- ownership -----------------------------------------------------------------------------

    def partitions(self) -> list[int]:
        """Source partitions with state."""
        return sorted(self._sources)

    def drop(self, partition: int) -> None:
        """Forget a partition (revoked from this worker)."""
        self._sources.pop(partition, None)

    def watermark(self, partition: int) -> float:
        """Largest event time seen in ``partition`` (``-inf`` before any event)."""
        source = self._sources.get(partition)
        return source.watermark if source else -math.inf

    def pending(self, partition: int) -> int:
        """Halves waiting for a partner in ``partition``."""
        source = self._sources.get(partition)
        if source is None:
            return 0
        return sum(len(d.pairing) for d in source.deployments.values())

    # -- processing ----------------------------------------------------------------------------

    def _source(self, partition: int) -> _Source:
        source = self._sources.get(partition)
        if source is None:
            source = self._sources[partition] = _Source(partition)
        return source

    def _deployment(self, source: _Source, name: str) -> _Deployment:
        state = source.deployments.get(name)
        if state is None:
            policy = self.policy.for_deployment(name)
            state = source.deployments[name] = _Deployment(
                name=name,
                policy=policy,
                coder=SliceCoder(policy.slices),
                pairing=PairingBuffer(policy.pair_ttl_s, policy.max_pending),
                measures=PairMeasures.from_policy(policy.shadow),
                arms=ArmMeasures.from_policy(policy.canary),
                join=OutcomeJoin(policy.canary.outcome_join_s, policy.canary.max_exposures),
                replicas=ReplicaMeasures.from_policy(policy.cold_start),
                envs=EnvMeasures.from_policy(policy.determinism),
            )
        return state

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
        if isinstance(parsed, Decoded):
            units = self._run(source, max_ts)
            report = self.process(partition, offset, parsed)
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

    def _run(self, source: _Source, max_ts: float) -> list[Unit]:
        run, source.run = source.run, Run()
        if not len(run):
            return []
        decoded = decode_run(run, max_ts)
        report = self._process_run(source, run.offsets, decoded)
        return [Unit(run.offsets[0], run.offsets[-1], decoded.decoded, report, decoded.rejected_at)]

    def process(self, partition: int, offset: int, decoded: Decoded) -> Stage1Report:
        """Account one message of ``partition`` at ``offset``."""
        report = Stage1Report()
        source = self._source(partition)
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
        self._reproduce(source, offset)
        return report

    def _process_run(self, source: _Source, offsets: list[int], run: DecodedRun) -> Stage1Report:
        """Account a run of one-event messages as one message at a time would (see run_order)."""
        if offsets[0] <= source.offset_hi:  # replayed after a restore: skip as one by one would
            report = Stage1Report()
            for k, offset in enumerate(offsets):
                add_report(report, self.process(source.partition, offset, single(run, k)))
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
                    add_report(report, self.process(source.partition, offsets[k], single(run, k)))
        self._reproduce(source, offsets[-1])
        return report

    @staticmethod
    def _cover(source: _Source, first: int, last: int) -> None:
        """Extend the partition's unflushed range to the messages ``first`` to ``last``."""
        if source.offset_hi < 0:  # the first message: offset_lo may legitimately be -1
            source.offset_lo = first - 1
        source.offset_hi = last

    def _reproduce(self, source: _Source, offset: int) -> None:
        """Flush at recorded boundaries up to ``offset`` (a restored partition replaying)."""
        while source.replay and source.replay[0] <= offset:
            source.replay.popleft()
            source.outbox.extend(self._flush(source))

    def _account(
        self,
        source: _Source,
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
        report.predictions += len(predictions)
        report.outcomes += len(outcomes)
        if len(predictions):
            codes, names = _factorize(predictions.deployment)
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
        advanced = watermark > previous
        for state in source.deployments.values():
            full = (
                len(state.pairing) > state.pairing.max_pending
                or len(state.join) > state.join.max_pending
            )
            if not (advanced or full):
                continue
            evicted = (state.pairing.evicted, state.join.evicted)
            expired = state.pairing.expire(watermark)
            if expired:
                report.unpaired += len(expired)
                self._unpaired(source, state, expired)
            matured = state.join.mature(watermark)
            if matured:
                report.matured += len(matured)
                self._matured(source, state, matured)
            report.evicted_halves += state.pairing.evicted - evicted[0]
            report.evicted_exposures += state.join.evicted - evicted[1]

    def _predictions(
        self,
        source: _Source,
        state: _Deployment,
        batch: PredictionBatch,
        watermark: float | npt.NDArray[np.float64],
        report: Stage1Report,
    ) -> None:
        policy = state.policy
        state.touched = True
        deployment = batch.deployment[0]
        windows = _window(batch.ts, policy.window_s)
        late = (windows + 1) * policy.window_s + policy.allowed_lateness_s <= watermark
        on_time = ~late
        n_late = int(late.sum())
        # Single predictions feed the per-role arms (traffic mix, canary metrics, shadow health).
        combos = (
            state.coder.encode_columns(batch.slice_columns, len(batch))
            if batch.slice_columns
            else state.coder.encode(batch.slice)
        )
        arm_versions = _arm_versions(batch)
        versions, version_names = _factorize(arm_versions)
        errors = batch.errors()
        keys = (windows * len(version_names) + versions) * len(ROLES) + batch.role
        item_positions = item_levels(state.coder.levels, policy.popularity.slice_level)
        for key in np.unique(keys[on_time]).tolist():
            idx = np.flatnonzero((keys == key) & on_time)
            role = key % len(ROLES)
            version = version_names[(key // len(ROLES)) % len(version_names)]
            window = int(windows[idx[0]])
            rows = state.coder.rows(combos[idx])
            group = self._group(source, state, (deployment, arm_stream(role), version, window))
            contribution = state.arms.events(
                rows.index, len(rows.labels), errors[idx], batch.latency_ms[idx]
            )
            self._merge(group, rows.labels, contribution, state)
            if batch.items and policy.popularity.enabled:
                exposed = [batch.items[i] for i in idx.tolist()]
                stream = item_stream(ROLES[role])
                ids = [item for ranked in exposed if ranked for item in ranked]
                if ids:
                    items_key = (deployment, stream, version, window, ROOT)
                    source.items.setdefault(items_key, []).extend(ids)
                    for label, slice_ids in exposures_by_slice(
                        exposed, rows.index, rows.labels, item_positions
                    ):
                        items_key = (deployment, stream, version, window, label)
                        source.items.setdefault(items_key, []).extend(slice_ids)
        if batch.feature_schema:
            self._schemas(source, state, batch, windows, on_time)
        if policy.cold_start.enabled and (
            batch.replica_id or len(batch.replica_age_s) or len(batch.replica_ready)
        ):
            self._replicas(source, state, batch, windows, on_time)
        if batch.env_fingerprint and policy.determinism.enabled:
            self._environments(source, state, batch, windows, on_time & ~errors, combos=combos)
        # Served predictions (primary and canary, late or not) open outcome exposures.
        served = np.flatnonzero(batch.role != ROLE_SHADOW)
        if len(served):
            everyone = len(served) == len(batch)
            picked = served.tolist()
            state.join.expose(
                batch.request_id if everyone else [batch.request_id[i] for i in picked],
                batch.role[served],
                arm_versions if everyone else [arm_versions[i] for i in picked],
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

    def _schemas(
        self,
        source: _Source,
        state: _Deployment,
        batch: PredictionBatch,
        windows: I64,
        on_time: npt.NDArray[np.bool_],
    ) -> None:
        """Count each model version's predictions and errors per request schema.

        Only events that name their schema count (in a batch, the others hold "").
        """
        on_time = on_time & (np.asarray(batch.feature_schema, dtype=object) != "")
        errors = batch.errors()
        codes, names = _factorize(batch.feature_schema)
        versions, version_names = _factorize(batch.model_version)
        keys = windows * len(version_names) + versions
        for key in np.unique(keys[on_time]).tolist():
            idx = np.flatnonzero((keys == key) & on_time)
            labels, contribution = schema_counts(codes[idx], errors[idx], names)
            if labels:
                version = version_names[key % len(version_names)]
                group_key = (state.name, SCHEMA_STREAM, version, int(windows[idx[0]]))
                self._merge(self._group(source, state, group_key), labels, contribution, state)

    def _replicas(
        self,
        source: _Source,
        state: _Deployment,
        batch: PredictionBatch,
        windows: I64,
        on_time: npt.NDArray[np.bool_],
    ) -> None:
        """Served predictions into the ``replica`` stream, per (version, window).

        An event counts when it names its replica, gives its age, or says it was not ready:
        judged per event, so a batch counts what its events would count one by one.
        """
        ids = np.asarray(batch.replica_id or [""] * len(batch), dtype=str)
        ages, not_ready = batch.ages(), batch.not_ready()
        informed = (ids != "") | np.isfinite(ages) | not_ready
        served = on_time & (batch.role != ROLE_SHADOW) & informed
        if not served.any():
            return
        limit = state.policy.cold_start.max_replicas
        versions, version_names = _factorize(batch.model_version)
        keys = windows * len(version_names) + versions
        for key in np.unique(keys[served]).tolist():
            idx = np.flatnonzero((keys == key) & served)
            version = version_names[key % len(version_names)]
            window = int(windows[idx[0]])
            group = self._group(
                source, state, (batch.deployment[0], REPLICA_STREAM, version, window)
            )
            rows, labels, _ = replica_rows(ids[idx].tolist(), limit)
            # "*" and "~overflow" come first, so they always have rows 0 and 1; replicas
            # beyond the cap of this flush's group are folded into "~overflow".
            group_rows = group.registry.rows_for(labels, limit=limit + 2)
            group_rows[group_rows < 0] = group_rows[1]
            mapped = np.where(rows >= 0, group_rows[np.maximum(rows, 0)], -1)
            n_rows = len(group.registry)
            contribution = state.replicas.contributions(
                mapped, n_rows, batch.latency_ms[idx], ages[idx], not_ready[idx]
            )
            group.table.add(np.arange(n_rows, dtype=np.int64), contribution)

    def _environments(
        self,
        source: _Source,
        state: _Deployment,
        batch: PredictionBatch,
        windows: I64,
        chosen: npt.NDArray[np.bool_],
        *,
        combos: I64,
    ) -> None:
        """Scores with a fingerprint into the ``env`` stream, per (version, window).

        Every role counts (a shadow of the primary's version in another environment too);
        failed predictions do not: their score is a fallback.
        """
        chosen = chosen & (np.asarray(batch.env_fingerprint, dtype=str) != "")
        versions, version_names = _factorize(batch.model_version)
        keys = windows * len(version_names) + versions
        for key in np.unique(keys[chosen]).tolist():
            idx = np.flatnonzero((keys == key) & chosen)
            version = version_names[key % len(version_names)]
            slices = state.coder.rows(combos[idx])
            finest = slices.index[:, -1]  # the full combination: the strata
            rows, labels = state.envs.score_rows(
                [batch.env_fingerprint[i] for i in idx.tolist()], finest, slices.labels
            )
            contribution = state.envs.score_contributions(rows, len(labels), batch.score[idx])
            group_key = (state.name, ENV_STREAM, version, int(windows[idx[0]]))
            self._merge(self._group(source, state, group_key), labels, contribution, state)

    def _env_pairs(
        self, source: _Source, state: _Deployment, pairs: Pairs, idx: I64, window: int
    ) -> None:
        """Pairs of the primary's own version whose halves ran in different environments."""
        if not pairs.primary_env:
            return
        version = pairs.version[int(idx[0])]  # one shadow version per group
        same = np.asarray(pairs.baseline_version, dtype=object)[idx] == version
        p_env = np.asarray(pairs.primary_env, dtype=str)[idx]
        s_env = np.asarray(pairs.shadow_env, dtype=str)[idx]
        cross = np.flatnonzero(same & (p_env != s_env) & (p_env != "") & (s_env != ""))
        if not len(cross):
            return
        contribution, labels = state.envs.pair_contributions(
            p_env[cross].tolist(),
            s_env[cross].tolist(),
            pairs.primary[idx[cross]],
            pairs.shadow[idx[cross]],
        )
        group_key = (state.name, ENV_PAIR_STREAM, version, window)
        self._merge(self._group(source, state, group_key), labels, contribution, state)

    def _pairs(
        self,
        source: _Source,
        state: _Deployment,
        pairs: Pairs,
        watermark: float | npt.NDArray[np.float64],
        report: Stage1Report,
    ) -> int:
        policy = state.policy
        windows = _window(pairs.ts, policy.window_s)
        on_time = (windows + 1) * policy.window_s + policy.allowed_lateness_s > watermark
        versions, version_names = _factorize(pairs.version)
        keys = windows * len(version_names) + versions
        for key in np.unique(keys[on_time]).tolist():
            idx = np.flatnonzero((keys == key) & on_time)
            version = version_names[key % len(version_names)]
            window = int(windows[idx[0]])
            rows = state.coder.rows(pairs.combo[idx])
            group = self._group(source, state, (pairs.deployment[0], PAIR_STREAM, version, window))
            # The baseline of the pair completed last (in a run, pairs with waiting halves
            # come after those within it, whatever their messages' order).
            group.baseline_version = pairs.baseline_version[int(idx[np.argmax(pairs.at[idx])])]
            contribution = state.measures.contributions(
                rows.index, len(rows.labels), pairs.primary[idx], pairs.shadow[idx]
            )
            self._merge(group, rows.labels, contribution, state)
            if policy.determinism.enabled:
                self._env_pairs(source, state, pairs, idx, window)
        report.pairs += int(on_time.sum())
        return int((~on_time).sum())

    def _unpaired(self, source: _Source, state: _Deployment, halves: list[Half]) -> None:
        # Attributed to the window in which they expired (the watermark's), which is never late.
        window = math.floor(source.watermark / state.policy.window_s)
        by_key: dict[tuple[int, str], list[Half]] = defaultdict(list)
        for half in halves:
            by_key[(half.role, half.model_version)].append(half)
        for (role, version), group_halves in sorted(by_key.items()):
            combos = np.fromiter((h.combo for h in group_halves), np.int64, len(group_halves))
            rows = state.coder.rows(combos)
            key = (group_halves[0].deployment, arm_stream(role), version, window)
            group = self._group(source, state, key)
            contribution = state.arms.unpaired(rows.index, len(rows.labels))
            self._merge(group, rows.labels, contribution, state)

    def _matured(self, source: _Source, state: _Deployment, matured: Matured) -> None:
        # Counted in the window in which their join window closed, which is never late.
        window = math.floor(source.watermark / state.policy.window_s)
        deployment = state.name
        for role, version, positions in matured.groups():
            rows = state.coder.rows(matured.combo[positions])
            group = self._group(source, state, (deployment, arm_stream(role), version, window))
            contribution = state.arms.outcomes(
                rows.index, len(rows.labels), matured.value[positions]
            )
            self._merge(group, rows.labels, contribution, state)

    def _group(self, source: _Source, state: _Deployment, key: tuple[str, str, str, int]) -> _Group:
        group = source.groups.get(key)
        if group is None:
            if key[1] == PAIR_STREAM:
                fields = state.measures.fields
            elif key[1] == SCHEMA_STREAM:
                fields = SCHEMA_FIELDS
            elif key[1] == REPLICA_STREAM:
                fields = state.replicas.fields
            elif key[1] in (ENV_STREAM, ENV_PAIR_STREAM):
                fields = state.envs.fields_of(key[1])
            else:
                fields = state.arms.fields
            group = source.groups[key] = _Group(Registry(), Table(fields))
        return group

    @staticmethod
    def _merge(
        group: _Group, labels: list[str], contribution: dict[str, Array], state: _Deployment
    ) -> None:
        """Add per-label contributions to a group, within the deployment's slice limit."""
        rows = group.registry.rows_for(labels, limit=state.policy.slices.max_slices)
        keep = rows >= 0
        if not keep.all():
            contribution = {k: v[keep] for k, v in contribution.items()}
            rows = rows[keep]
        group.table.add(rows, contribution)

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
            out.extend(self._flush(source))
        return out

    def _flush(self, source: _Source) -> list[tuple[str, bytes]]:
        max_bytes = self.max_partial_bytes
        partition = source.partition
        if source.offset_hi <= source.offset_lo:
            return []
        by_deployment: dict[str, list[bytes]] = defaultdict(list)
        for (deployment, stream, version, window), group in sorted(
            source.groups.items(), key=lambda kv: kv[0]
        ):
            n = len(group.registry)
            header = {
                "window": window,
                "stream": stream,
                "version": version,
                "baseline_version": group.baseline_version,
            }
            by_deployment[deployment].extend(
                encode_group(
                    header,
                    group.registry.labels,
                    {k: v[:n] for k, v in group.table.arrays.items()},
                    max_bytes // 2,
                )
            )
        for (deployment, stream, version, window, label), ids in sorted(source.items.items()):
            settings = source.deployments[deployment].policy.popularity
            top_k = settings.flush_top_k if label == ROOT else settings.slice_flush_top_k
            record = count_items(ids, top_k, settings.hll_precision)
            # An items group names the slice it counts; none means the whole deployment.
            header = {
                "window": window,
                "stream": stream,
                "version": version,
                "baseline_version": "",
                "slices": [] if label == ROOT else [label],
                "fields": {},
            }
            by_deployment[deployment].append(dumps({**header, "items": record}))
        out: list[tuple[str, bytes]] = []
        watermark = None if source.watermark == -math.inf else source.watermark
        for name, state in sorted(source.deployments.items()):
            if not (state.touched or name in by_deployment):
                continue
            # Leave room for the message header around the groups.
            parts = pack(by_deployment.get(name, []), max_bytes - HEADER_RESERVE)
            for index, groups in enumerate(parts):
                head = dumps(
                    {
                        "schema_version": 1,
                        "kind": "partial",
                        "deployment": name,
                        "source": {
                            "partition": partition,
                            "offset_lo": source.offset_lo,
                            "offset_hi": source.offset_hi,
                            "part": index,
                            "parts": len(parts),
                        },
                        "watermark": watermark,
                        "late": state.late if index == 0 else 0,
                    }
                )
                out.append((name, head[:-1] + b',"groups":[' + b",".join(groups) + b"]}"))
            state.late = 0
            state.touched = False
        source.groups.clear()
        source.items.clear()
        source.offset_lo = source.offset_hi
        source.flushed_watermark = source.watermark
        source.flushed_offset = source.offset_hi
        # Recorded even when nothing went out: the units processed up to here end here, and a
        # replay must cut its runs of one-event messages at the same offsets.
        source.boundaries.append(source.offset_hi)
        return out

    # -- snapshots ------------------------------------------------------------------------------

    def snapshot(self, partition: int) -> dict[str, Any]:
        """State of ``partition`` right after :meth:`flush` (nothing left to send).

        Raises
        ------
        ValueError
            If measurements are waiting to be flushed (they are not part of a snapshot).
        """
        source = self._sources.get(partition)
        if source is None:
            return {"partition": partition, "offset": -1, "deployments": {}}
        if (
            source.groups
            or source.items
            or source.offset_hi > source.offset_lo
            or source.replay
            or source.outbox
            or len(source.run)
        ):
            raise ValueError(f"partition {partition} has unflushed measurements")
        # Boundaries up to here are covered by this snapshot; progress records list later ones.
        source.boundaries = []
        return {
            "partition": partition,
            "offset": source.offset_hi,
            "watermark": source.watermark,
            "flushed_offset": source.flushed_offset,
            "flushed_watermark": source.flushed_watermark,
            "deployments": {
                name: {
                    "coder": state.coder.snapshot(),
                    "pairing": state.pairing.snapshot(),
                    "join": state.join.snapshot(),
                    "shadowed": state.shadowed,
                }
                for name, state in sorted(source.deployments.items())
            },
        }

    def settled(self, partition: int) -> bool:
        """True when ``partition`` has nothing waiting: no replay left, nothing unflushed."""
        source = self._sources.get(partition)
        return source is None or not (
            source.groups
            or source.items
            or source.offset_hi > source.offset_lo
            or source.replay
            or source.outbox
            or len(source.run)
        )

    def progress(self, partition: int) -> dict[str, Any]:
        """The flush boundaries since the last snapshot; store it before sending the partials.

        A restored partition still replaying lists the recorded boundaries it has not reached
        yet too: a second restart before it reaches them must still flush and cut there.
        """
        source = self._sources.get(partition)
        boundaries = list(source.boundaries) + list(source.replay) if source else []
        return {
            "partition": partition,
            "offset": boundaries[-1] if boundaries else -1,
            "boundaries": boundaries,
        }

    def restore(
        self,
        partition: int,
        snapshot: dict[str, Any] | None,
        progress: dict[str, Any] | None = None,
    ) -> int:
        """Rebuild ``partition`` from a snapshot and the last progress record.

        Returns the first offset to read. Processing from there flushes again exactly at the
        recorded boundaries, so the partials sent before the restart are reproduced byte for
        byte (stage 2 drops those it already applied and applies any that were lost).
        """
        self._sources.pop(partition, None)
        if snapshot is None or int(snapshot["offset"]) < 0:
            source = self._source(partition)
            offset = -1
        else:
            offset = int(snapshot["offset"])
            source = self._sources[partition] = _Source(
                partition,
                watermark=float(snapshot["watermark"]),
                offset_lo=offset,
                offset_hi=offset,
                flushed_watermark=float(snapshot["flushed_watermark"]),
                flushed_offset=int(snapshot["flushed_offset"]),
            )
            for name, saved in snapshot["deployments"].items():
                state = self._deployment(source, name)
                state.coder.restore(saved["coder"])
                state.pairing.restore(saved["pairing"])
                state.join.restore(saved["join"])
                state.shadowed = bool(saved["shadowed"])
        if progress is not None:
            source.replay = deque(sorted(int(b) for b in progress["boundaries"] if int(b) > offset))
        return offset + 1

    def heartbeat(
        self, partitions: list[int] | None = None, caught_up: dict[int, bool] | None = None
    ) -> dict[str, Any]:
        """Watermark and offset each owned partition had at its last flush.

        Sent to every stage-2 partition after the partials of that flush. ``caught_up`` says
        which partitions have no unread messages: only those may be treated as idle by stage 2
        (a partition with a backlog is slow, not idle). Unknown means caught up (replay).
        """
        known = caught_up or {}
        entries: list[dict[str, Any]] = []
        for partition in sorted(self._sources if partitions is None else partitions):
            source = self._sources.get(partition)
            entry: dict[str, Any] = {"partition": partition, "watermark": None, "offset": -1}
            if source is not None:
                flushed = source.flushed_watermark
                entry["watermark"] = None if flushed == -math.inf else flushed
                entry["offset"] = source.flushed_offset
            entry["caught_up"] = known.get(partition, True)
            entries.append(entry)
        return {"schema_version": 1, "kind": "heartbeat", "sources": entries}
