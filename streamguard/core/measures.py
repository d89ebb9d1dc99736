"""What each stream measures per slice, computed per batch with numpy.

Streams:

- ``pair``: primary and shadow predictions of the same request. Per slice: number of pairs,
  moments and a relative-error sketch of ``|shadow - primary|``, score histograms of both
  sides, decision flips at the policy's threshold, and scores outside the declared range.
- ``arm:<role>``: every prediction of a role (primary, shadow, canary). Per slice: events and
  halves that expired without a partner (the shadow's health).

Every event counts once per tracked slice level, so a batch of ``n`` events with ``L`` levels
becomes ``n * L`` (row, value) pairs reduced with :func:`numpy.bincount`.
"""

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from streamguard.core.summary import Array, Field
from streamguard.policy import ShadowPolicy
from streamguard.stats import FixedBins, LogBuckets, moments_by_group

__all__ = ["ARM_FIELDS", "PairMeasures", "arm_contributions"]

F64 = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]

ARM_FIELDS = (Field("events", "count"), Field("unpaired", "count"))


def _histogram(rows: I64, bins: npt.NDArray[np.intp], n_rows: int, width: int) -> I64:
    flat = np.bincount(rows * width + bins, minlength=n_rows * width)
    return flat.reshape(n_rows, width).astype(np.int64, copy=False)


def _count(rows: I64, n_rows: int, weights: npt.NDArray[np.bool_] | None = None) -> I64:
    if weights is None:
        return np.bincount(rows, minlength=n_rows).astype(np.int64, copy=False)
    return np.bincount(rows, weights=weights, minlength=n_rows).astype(np.int64)


@dataclass(frozen=True, slots=True)
class PairMeasures:
    """Binning of the pair stream, fixed by the deployment's shadow policy."""

    scores: FixedBins
    deviations: LogBuckets
    decision_threshold: float

    @classmethod
    def from_policy(cls, policy: ShadowPolicy) -> "PairMeasures":
        """Bins from a shadow policy (score range, bins, sketch accuracy)."""
        low, high = policy.score_range
        width = high - low
        return cls(
            scores=FixedBins(low, high, policy.score_bins),
            deviations=LogBuckets(policy.dev_alpha, policy.dev_min * width, width),
            decision_threshold=policy.decision_threshold,
        )

    @property
    def fields(self) -> tuple[Field, ...]:
        """Summary fields of the pair stream."""
        return (
            Field("pairs", "count"),
            Field("dev", "moments"),
            Field("dev_sketch", "count", self.deviations.n_buckets),
            Field("primary_hist", "count", self.scores.bins),
            Field("shadow_hist", "count", self.scores.bins),
            Field("flips", "count"),
            Field("out_of_range", "count"),
        )

    def contributions(self, index: I64, n_rows: int, primary: F64, shadow: F64) -> dict[str, Array]:
        """Per-row sums of a batch of pairs.

        Parameters
        ----------
        index
            Slice rows of each pair, shape (pairs, levels), values in ``[0, n_rows)``.
        primary, shadow
            Scores of each pair.
        """
        levels = index.shape[1]
        rows = index.ravel()
        dev = np.abs(shadow - primary)
        threshold = self.decision_threshold
        flips = (primary >= threshold) != (shadow >= threshold)
        outside = self.scores.outside(primary) | self.scores.outside(shadow)
        return {
            "pairs": _count(rows, n_rows),
            "dev": moments_by_group(np.repeat(dev, levels), rows, n_rows),
            "dev_sketch": _histogram(
                rows,
                np.repeat(self.deviations.index(dev), levels),
                n_rows,
                self.deviations.n_buckets,
            ),
            "primary_hist": _histogram(
                rows, np.repeat(self.scores.index(primary), levels), n_rows, self.scores.bins
            ),
            "shadow_hist": _histogram(
                rows, np.repeat(self.scores.index(shadow), levels), n_rows, self.scores.bins
            ),
            "flips": _count(rows, n_rows, np.repeat(flips, levels)),
            "out_of_range": _count(rows, n_rows, np.repeat(outside, levels)),
        }


def arm_contributions(index: I64, n_rows: int, *, unpaired: bool = False) -> dict[str, Array]:
    """Per-row counts of a batch of events of one role (or of expired unpaired halves)."""
    counts = _count(index.ravel(), n_rows)
    empty = np.zeros(n_rows, dtype=np.int64)
    return (
        {"events": empty, "unpaired": counts} if unpaired else {"events": counts, "unpaired": empty}
    )
