"""Columnar batches of decoded events.

The decoder turns one Kafka message (a single event or a batch envelope) into column arrays, so
everything downstream works per batch with numpy instead of per event in Python.
"""

from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

__all__ = [
    "ROLES",
    "ROLE_CANARY",
    "ROLE_PRIMARY",
    "ROLE_SHADOW",
    "OutcomeBatch",
    "PredictionBatch",
    "TrainingBatch",
]

ROLE_PRIMARY = 0
ROLE_SHADOW = 1
ROLE_CANARY = 2
#: Role names by code; the code is the index.
ROLES: tuple[str, ...] = ("primary", "shadow", "canary")

F64 = npt.NDArray[np.float64]
I8 = npt.NDArray[np.int8]


@dataclass(slots=True)
class PredictionBatch:
    """Prediction events of one message, one list or array per field, all the same length."""

    event_id: list[str]
    request_id: list[str]
    ts: F64
    deployment: list[str]
    model_version: list[str]
    role: I8
    score: F64
    latency_ms: F64  # NaN where the event has no latency_ms
    #: Slice of each event; [] when the batch came in columns (see ``slice_columns``).
    slice: list[dict[str, str]]
    items: list[list[str] | None] = field(default_factory=list)  # [] when no event has items
    #: True where serving failed for the request; all False when no event says.
    error: npt.NDArray[np.bool_] = field(default_factory=lambda: np.zeros(0, dtype=bool))
    #: Traffic allocation id of each event, "" where absent; [] when no event has one.
    allocation: list[str] = field(default_factory=list)
    #: Request schema version of each event, "" where absent; [] when no event has one.
    feature_schema: list[str] = field(default_factory=list)
    #: Serving replica of each event, "" where absent; [] when no event has one.
    replica_id: list[str] = field(default_factory=list)
    #: Seconds since the replica started, NaN where absent; empty when no event says.
    replica_age_s: F64 = field(default_factory=lambda: np.zeros(0))
    #: False where the replica served before it was ready (True where absent); empty when no
    #: event says.
    replica_ready: npt.NDArray[np.bool_] = field(default_factory=lambda: np.zeros(0, dtype=bool))
    #: Execution-environment fingerprint of each event, "" where absent; [] when none has one.
    env_fingerprint: list[str] = field(default_factory=list)
    #: Slice dimensions of a columnar batch: one value per event, None where the event has
    #: none. Empty for batches decoded from rows, whose slices are in ``slice``.
    slice_columns: dict[str, list[str | None]] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.event_id)

    @classmethod
    def empty(cls) -> "PredictionBatch":
        """A batch with no events."""
        return cls([], [], np.empty(0), [], [], np.empty(0, np.int8), np.empty(0), np.empty(0), [])

    def slices(self) -> list[dict[str, str]]:
        """The slice of each event, as an object, whichever way the batch arrived."""
        if not self.slice_columns:
            return self.slice
        names = list(self.slice_columns)
        return [
            {name: value for name, value in zip(names, values, strict=True) if value is not None}
            for values in zip(*self.slice_columns.values(), strict=True)
        ]

    def errors(self) -> npt.NDArray[np.bool_]:
        """The error flags, one per event (False where not given)."""
        if len(self.error) == len(self):
            return self.error
        return np.zeros(len(self), dtype=bool)

    def ages(self) -> F64:
        """Replica ages, one per event (NaN where not given)."""
        if len(self.replica_age_s) == len(self):
            return self.replica_age_s
        return np.full(len(self), np.nan)

    def not_ready(self) -> npt.NDArray[np.bool_]:
        """True where the event says its replica was not ready (False where not given)."""
        if len(self.replica_ready) == len(self):
            return ~self.replica_ready
        return np.zeros(len(self), dtype=bool)

    def take(self, index: npt.NDArray[np.intp]) -> "PredictionBatch":
        """Return the events at ``index`` (in that order) as a new batch."""
        pick = index.tolist()
        return PredictionBatch(
            event_id=[self.event_id[i] for i in pick],
            request_id=[self.request_id[i] for i in pick],
            ts=self.ts[index],
            deployment=[self.deployment[i] for i in pick],
            model_version=[self.model_version[i] for i in pick],
            role=self.role[index],
            score=self.score[index],
            latency_ms=self.latency_ms[index],
            slice=[self.slice[i] for i in pick] if self.slice else [],
            items=[self.items[i] for i in pick] if self.items else [],
            error=self.error[index] if len(self.error) else self.error,
            allocation=[self.allocation[i] for i in pick] if self.allocation else [],
            feature_schema=[self.feature_schema[i] for i in pick] if self.feature_schema else [],
            replica_id=[self.replica_id[i] for i in pick] if self.replica_id else [],
            replica_age_s=(
                self.replica_age_s[index] if len(self.replica_age_s) else self.replica_age_s
            ),
            replica_ready=(
                self.replica_ready[index] if len(self.replica_ready) else self.replica_ready
            ),
            env_fingerprint=(
                [self.env_fingerprint[i] for i in pick] if self.env_fingerprint else []
            ),
            slice_columns={
                name: [values[i] for i in pick] for name, values in self.slice_columns.items()
            },
        )


@dataclass(slots=True)
class OutcomeBatch:
    """Outcome events of one message."""

    event_id: list[str]
    request_id: list[str]
    ts: F64
    deployment: list[str]
    value: F64

    def __len__(self) -> int:
        return len(self.event_id)

    @classmethod
    def empty(cls) -> "OutcomeBatch":
        """A batch with no events."""
        return cls([], [], np.empty(0), [], np.empty(0))

    def take(self, index: npt.NDArray[np.intp]) -> "OutcomeBatch":
        """Return the events at ``index`` (in that order) as a new batch."""
        pick = index.tolist()
        return OutcomeBatch(
            event_id=[self.event_id[i] for i in pick],
            request_id=[self.request_id[i] for i in pick],
            ts=self.ts[index],
            deployment=[self.deployment[i] for i in pick],
            value=self.value[index],
        )


@dataclass(slots=True)
class TrainingBatch:
    """Training examples of one message, with their feature timestamps flattened.

    ``feature_row[j]`` is the example (index into the per-example columns) that feature
    ``feature_name[j]`` with timestamp ``feature_ts[j]`` belongs to, so the leakage guard
    compares every feature with its label in one numpy expression.
    """

    event_id: list[str]
    pipeline: list[str]
    example_id: list[str]
    label_ts: F64
    feature_row: npt.NDArray[np.intp]
    feature_name: list[str]
    feature_ts: F64

    def __len__(self) -> int:
        return len(self.event_id)

    @classmethod
    def empty(cls) -> "TrainingBatch":
        """A batch with no examples."""
        return cls([], [], [], np.empty(0), np.empty(0, np.intp), [], np.empty(0))
