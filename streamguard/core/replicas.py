"""Serving replicas: per-replica latency of young and warm replicas, and not-ready traffic.

Prediction events may carry ``replica_id``, ``replica_age_s`` and ``replica_ready``. Stage 1
counts served predictions (primary and canary) that carry them (a replica id, an age, or
``replica_ready: false``; ``replica_ready: true`` alone says nothing) in the ``replica`` stream,
one group per (deployment, model version, window), with one row per replica
(``replica=<id>``), a row ``*`` for all of them, and a row ``~overflow`` for the replicas
beyond ``max_replicas`` (never a replica id: those rows always start with ``replica=``).

Per row: requests, requests served while not ready, requests of *young* replicas
(``replica_age_s < young_age_s``) and of *warm* ones, and for each of the two the moments of
log latency and a relative-error latency sketch (:class:`~streamguard.stats.LogBuckets`,
DDSketch: Masson, Rim, Lee, VLDB 2019), which merges by addition. A batch is reduced with
``np.unique`` over the replica ids and ``np.bincount`` over (row, bucket), with no per-event
Python work.

Memory per (version, window) is bounded by ``max_replicas + 2`` rows; stage 2 keeps the rows
of replicas seen within the horizon and folds any excess into ``~overflow``.

Examples
--------
>>> import numpy as np
>>> m = ReplicaMeasures.from_policy(ColdStartPolicy())
>>> rows, labels, overflow = replica_rows(["a", "b", "a", ""], limit=1)
>>> labels, rows.tolist(), overflow
(['*', '~overflow', 'replica=a'], [[0, 2], [0, 1], [0, 2], [0, -1]], 1)
>>> out = m.contributions(rows, 3, np.array([10.0, 50, 12, 9]), np.array([5.0, 300, 7, 1]),
...                       np.array([False, False, True, False]))
>>> out["events"].tolist(), out["young"].tolist(), out["not_ready"].tolist()
([4, 1, 2], [3, 0, 2], [1, 0, 1])
"""

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from streamguard.core.summary import Array, Field
from streamguard.policy import ColdStartPolicy
from streamguard.stats import LogBuckets, moments_by_group

__all__ = [
    "ALL_ROW",
    "OVERFLOW_ROW",
    "REPLICA_PREFIX",
    "REPLICA_STREAM",
    "ReplicaMeasures",
    "replica_rows",
]

#: Stream of per-replica serving measurements.
REPLICA_STREAM = "replica"
#: Label of the row holding every replica's requests.
ALL_ROW = "*"
#: Label of the row holding the requests of replicas beyond the cap.
OVERFLOW_ROW = "~overflow"
#: Labels of replica rows are ``replica=<id>``.
REPLICA_PREFIX = "replica="

F64 = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]


def replica_rows(replica_ids: list[str], limit: int) -> tuple[I64, list[str], int]:
    """Row index of each event for a fresh group: ``*``, its replica (or ``~overflow``).

    Returns the ``(events, 2)`` row matrix (second column ``-1`` for events without a replica
    id), the labels of the rows, and the number of replicas beyond ``limit`` (folded into
    ``~overflow``; the first ``limit`` replicas in sorted order of their ids keep a row).
    """
    ids = np.asarray(replica_ids, dtype=object)
    names, inverse = np.unique(ids.astype(str), return_inverse=True)
    named = names != ""
    first_named = int(np.argmax(named)) if named.any() else len(names)
    replica_names = names[first_named:].tolist()
    kept = replica_names[:limit]
    overflow = len(replica_names) - len(kept)
    # Row of each distinct name: "" -> -1, kept replicas -> 2.., the rest -> 1 (overflow).
    name_rows = np.full(len(names), -1, dtype=np.int64)
    name_rows[first_named : first_named + len(kept)] = np.arange(2, 2 + len(kept))
    name_rows[first_named + len(kept) :] = 1
    rows = np.stack([np.zeros(len(ids), dtype=np.int64), name_rows[inverse]], axis=1)
    labels = [ALL_ROW, OVERFLOW_ROW, *(REPLICA_PREFIX + name for name in kept)]
    return rows, labels, overflow


def _count(rows: I64, n_rows: int, weights: npt.NDArray[np.bool_] | None = None) -> I64:
    if weights is None:
        return np.bincount(rows, minlength=n_rows).astype(np.int64, copy=False)
    return np.bincount(rows, weights=weights, minlength=n_rows).astype(np.int64)


@dataclass(frozen=True, slots=True)
class ReplicaMeasures:
    """Per-replica measurements of the ``replica`` stream, fixed by the cold-start policy."""

    latency: LogBuckets
    young_age_s: float

    @classmethod
    def from_policy(cls, policy: ColdStartPolicy) -> "ReplicaMeasures":
        """Latency sketch from 0.5 ms to 10 minutes at the policy's relative accuracy."""
        return cls(LogBuckets(policy.latency_alpha, 0.5, 600_000.0), policy.young_age_s)

    @property
    def fields(self) -> tuple[Field, ...]:
        """Summary fields of the replica stream."""
        width = self.latency.n_buckets
        return (
            Field("events", "count"),
            Field("not_ready", "count"),
            Field("young", "count"),
            Field("warm", "count"),
            Field("young_latency", "moments"),  # of ln(latency_ms), timed young requests
            Field("young_sketch", "count", width),
            Field("warm_latency", "moments"),
            Field("warm_sketch", "count", width),
        )

    def contributions(
        self, rows: I64, n_rows: int, latency_ms: F64, age_s: F64, not_ready: npt.NDArray[np.bool_]
    ) -> dict[str, Array]:
        """Per-row sums of a batch.

        Parameters
        ----------
        rows
            Rows of each event, shape ``(events, levels)``; ``-1`` entries are skipped.
        n_rows
            Rows of the group.
        latency_ms, age_s, not_ready
            Per event; latency or age NaN where not given (the request is then counted in
            ``events`` only, or not as young or warm).
        """
        levels = rows.shape[1]
        flat = rows.ravel()
        keep = flat >= 0
        flat = flat[keep]

        def spread(values: npt.NDArray[np.generic]) -> npt.NDArray[np.generic]:
            return np.repeat(values, levels)[keep]

        latency = spread(latency_ms).astype(np.float64)
        age = spread(age_s).astype(np.float64)
        young = age < self.young_age_s
        warm = age >= self.young_age_s
        timed = np.isfinite(latency)
        out: dict[str, Array] = {
            "events": _count(flat, n_rows),
            "not_ready": _count(flat, n_rows, spread(not_ready).astype(bool)),
            "young": _count(flat, n_rows, young),
            "warm": _count(flat, n_rows, warm),
        }
        width = self.latency.n_buckets
        for phase, mask in (("young", young & timed), ("warm", warm & timed)):
            chosen = latency[mask]
            phase_rows = flat[mask]
            out[f"{phase}_latency"] = moments_by_group(
                np.log(np.maximum(chosen, 1e-3)), phase_rows, n_rows
            )
            sketch = np.bincount(
                phase_rows * width + self.latency.index(chosen), minlength=n_rows * width
            )
            out[f"{phase}_sketch"] = sketch.reshape(n_rows, width).astype(np.int64, copy=False)
        return out
