"""Stage 1's state: per source partition, per deployment, per partial group; and its report.

Kept apart from :mod:`streamguard.core.stage1` (which accounts messages into this state) so
the side streams (:mod:`streamguard.core.stage1_streams`) and the partial encoder
(:mod:`streamguard.core.stage1_flush`) can use it without the accounting.
"""

import math
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from streamguard.contracts import ROLE_CANARY, ROLES, Decoded, PredictionBatch, Rejected
from streamguard.contracts.runs import Run
from streamguard.core.environments import ENV_PAIR_STREAM, ENV_STREAM, EnvMeasures
from streamguard.core.feature_schemas import SCHEMA_FIELDS, SCHEMA_STREAM
from streamguard.core.measures import ArmMeasures, PairMeasures
from streamguard.core.outcomes import OutcomeJoin
from streamguard.core.pairing import PairingBuffer
from streamguard.core.replicas import REPLICA_STREAM, ReplicaMeasures
from streamguard.core.slices import SliceCoder
from streamguard.core.summary import Array, Registry, Table, rollup
from streamguard.policy import DeploymentPolicy

__all__ = [
    "F64",
    "HOLD_MAX",
    "I64",
    "PAIR_STREAM",
    "PENDING_MAX",
    "ROLLUP_MIN",
    "DeploymentState",
    "Group",
    "Source",
    "Stage1Report",
    "Unit",
    "arm_stream",
    "arm_versions",
    "by_version_window",
    "defer",
    "defer_outcomes",
    "factorize",
    "group_of",
    "merge",
    "settle",
    "window_of",
]

PAIR_STREAM = "pair"

#: Events (or pairs) a group collects before it summarises them without waiting for a flush:
#: bounds the memory of a replay that flushes rarely.
PENDING_MAX = 1 << 16
#: Events a partition may hold unflushed while they all belong to windows that have not ended
#: (:meth:`streamguard.core.Stage1.holdable`): bounds the raw columns and item ids waiting.
HOLD_MAX = 1 << 16
#: Collected events from which :func:`settle` summarises per slice combination and rolls up.
ROLLUP_MIN = 2048

I64 = npt.NDArray[np.int64]
F64 = npt.NDArray[np.float64]


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
class Group:
    """One partial group's summary, and the raw columns not yet summarised into it.

    Events of an arm (slice combination, error flag, latency), the outcomes of its matured
    exposures (combination, value) and pairs (combination, primary and shadow score) are only
    collected as they come: :func:`settle` summarises them together at the flush, or once
    :data:`PENDING_MAX` are waiting. numpy costs a few microseconds per call whatever the
    length, so summarising each message's few hundred events at once cost more than the
    events themselves.
    """

    registry: Registry
    table: Table
    baseline_version: str = ""
    pairs: bool = False  # a pair group (else an arm's): which summary settle computes
    pending: list[tuple[I64, npt.NDArray[Any], F64]] = field(default_factory=list)
    outcomes: list[tuple[I64, F64]] = field(default_factory=list)  # of matured exposures
    pending_n: int = 0


@dataclass(slots=True)
class DeploymentState:
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
class Source:
    partition: int
    watermark: float = -math.inf
    offset_lo: int = -1  # the partial covers (offset_lo, offset_hi]
    offset_hi: int = -1
    # What the last flush covered: heartbeats report these, never the live values, so a
    # watermark never reaches stage 2 before the data it covers.
    flushed_watermark: float = -math.inf
    flushed_offset: int = -1
    # The watermark a heartbeat alone last told stage 2 (Stage1.announce), above the flushed one
    # while the data since the flush is all for windows it leaves open.
    announced_watermark: float = -math.inf
    # The watermark at which Stage1.ending last looked for a window end (not snapshotted).
    end_checked: float = -math.inf
    # Offsets at which partials were flushed since the last stored snapshot (cleared by
    # Stage1.snapshot_stored): recorded before they are sent, so that after a restore the same
    # partials (same bytes, same stamps) are flushed again at the same offsets and stage 2 can
    # drop those it already has.
    boundaries: list[int] = field(default_factory=list)
    replay: deque[int] = field(default_factory=deque)  # boundaries still to reproduce
    # Offsets left out (quarantined, Stage1.skip) since the last stored snapshot, recorded with
    # the boundaries: a restart must leave them out again to reproduce the same partials.
    skipped: list[int] = field(default_factory=list)
    replay_skips: set[int] = field(default_factory=set)  # recorded ones still to reach
    outbox: list[tuple[str, bytes]] = field(default_factory=list)  # reproduced partials
    run: Run = field(default_factory=Run)  # one-event messages read and not yet processed
    unflushed: int = 0  # events accounted since the last flush (Stage1.holdable)
    deployments: dict[str, DeploymentState] = field(default_factory=dict)
    groups: dict[tuple[str, str, str, int], Group] = field(default_factory=dict)
    # (deployment, items:<role>, version, window, slice) -> item ids exposed since the last flush
    items: dict[tuple[str, str, str, int, str], list[str]] = field(default_factory=dict)


def window_of(ts: npt.NDArray[np.float64], window_s: int) -> I64:
    return np.floor(ts / window_s).astype(np.int64)


def arm_versions(batch: PredictionBatch) -> list[str]:
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


def factorize(values: list[str]) -> tuple[I64, list[str]]:
    """Integer codes of strings with few distinct values (deployments, versions)."""
    names = sorted(set(values))
    if len(names) == 1:
        return np.zeros(len(values), dtype=np.int64), names
    codes = {name: i for i, name in enumerate(names)}
    return np.fromiter(map(codes.__getitem__, values), np.int64, len(values)), names


def by_version_window(
    windows: I64, versions: list[str], chosen: npt.NDArray[np.bool_]
) -> Iterator[tuple[str, int, I64]]:
    """``(version, window, positions)`` of the ``chosen`` events, per (version, window)."""
    codes, names = factorize(versions)
    keys = windows * len(names) + codes
    for key in np.unique(keys[chosen]).tolist():
        idx = np.flatnonzero((keys == key) & chosen)
        yield names[key % len(names)], int(windows[idx[0]]), idx


def group_of(source: Source, state: DeploymentState, key: tuple[str, str, str, int]) -> Group:
    """The partial group of ``key`` (deployment, stream, version, window), made on first use."""
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
        group = source.groups[key] = Group(Registry(), Table(fields), pairs=key[1] == PAIR_STREAM)
    return group


def defer(
    group: Group, state: DeploymentState, combos: I64, first: npt.NDArray[Any], second: F64
) -> None:
    """Collect events (``combos``, errors, latencies) or pairs (``combos``, primary, shadow
    scores) for :func:`settle`; settles at once when :data:`PENDING_MAX` are waiting."""
    group.pending.append((combos, first, second))
    _collected(group, state, len(combos))


def defer_outcomes(group: Group, state: DeploymentState, combos: I64, values: F64) -> None:
    """Collect the outcome values of matured exposures (an arm group's) for :func:`settle`."""
    group.outcomes.append((combos, values))
    _collected(group, state, len(combos))


def _collected(group: Group, state: DeploymentState, n: int) -> None:
    group.pending_n += n
    if group.pending_n >= PENDING_MAX:
        settle(group, state)


def settle(group: Group, state: DeploymentState) -> None:
    """Summarise the group's collected events, pairs and outcomes into its table.

    Each kind is summarised in arrival order. Where the collection is cut (flushes,
    :data:`PENDING_MAX`) depends only on the sequence of messages, so a replay after a
    restore settles, and rounds, exactly as the first pass.
    """
    group.pending_n = 0
    if group.pending:
        combos, first, second = _joined(group.pending)
        group.pending = []
        measure = state.measures.contributions if group.pairs else state.arms.events
        labels, contribution = _summarised(group, state, combos, measure, first, second)
        merge(group, labels, contribution, state)
    if group.outcomes:
        combos, values = _joined(group.outcomes)
        group.outcomes = []
        labels, contribution = _summarised(group, state, combos, state.arms.outcomes, values)
        merge(group, labels, contribution, state)


def _summarised(
    group: Group, state: DeploymentState, combos: I64, measure: Any, *columns: Any
) -> tuple[list[str], dict[str, Array]]:
    """Slice labels and per-label sums of ``measure`` over events with these ``combos``.

    Small collections are summarised per slice level, each event repeated once per level.
    From :data:`ROLLUP_MIN` events on, once per distinct combination and then rolled up to
    the levels (8 with three dimensions), which touches each event once but costs a fixed
    ~0.2 ms more (measured: equal at ~2,000 events, half the time at 4,000). The choice
    depends only on the count, so a replay rounds as the first pass.
    """
    if len(combos) < ROLLUP_MIN:
        rows = state.coder.rows(combos)
        return rows.labels, measure(rows.index, len(rows.labels), *columns)
    parts = state.coder.parts(combos)
    by_part = measure(parts.part[:, None], len(parts.table), *columns)
    return parts.labels, rollup(group.table.fields, by_part, parts.table, len(parts.labels))


def _joined(chunks: list[Any]) -> tuple[Any, ...]:
    """Columns of collected chunks (tuples of arrays), each concatenated."""
    if len(chunks) == 1:
        return tuple(chunks[0])
    return tuple(np.concatenate(column) for column in zip(*chunks, strict=True))


def merge(
    group: Group, labels: list[str], contribution: dict[str, Array], state: DeploymentState
) -> None:
    """Add per-label contributions to a group, within the deployment's slice limit."""
    rows = group.registry.rows_for(labels, limit=state.policy.slices.max_slices)
    keep = rows >= 0
    if not keep.all():
        contribution = {k: v[keep] for k, v in contribution.items()}
        rows = rows[keep]
    group.table.add(rows, contribution)
