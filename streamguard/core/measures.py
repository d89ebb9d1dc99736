"""What each stream measures per slice, computed per batch with numpy.

Streams:

- ``pair``: primary and shadow predictions of the same request. Per slice: number of pairs,
  moments and a relative-error sketch of ``|shadow - primary|``, score histograms of both
  sides, decision flips at the policy's threshold, and scores outside the declared range.
- ``arm:<role>``: every prediction of a role (primary, shadow, canary). Per slice: events,
  halves that expired without a partner (the shadow's health), failed requests, moments and a
  relative-error sketch of latency (log milliseconds), and matured outcome exposures (moments
  of the outcome value: their mean is the click/conversion rate).

Every event counts once per tracked slice level, so a batch of ``n`` events with ``L`` levels
becomes ``n * L`` (row, value) pairs reduced with :func:`numpy.bincount`.
"""

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from streamguard.core.summary import Array, Field
from streamguard.policy import CanaryPolicy, ShadowPolicy
from streamguard.stats import FixedBins, LogBuckets, moments_by_group

__all__ = ["ArmMeasures", "PairMeasures"]

F64 = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]


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


@dataclass(frozen=True, slots=True)
class ArmMeasures:
    """Per-slice measurements of single predictions of one role, and of their outcomes."""

    latency: LogBuckets

    @classmethod
    def from_policy(cls, policy: CanaryPolicy) -> "ArmMeasures":
        """Latency sketch from 0.5 ms to 10 minutes at the policy's relative accuracy."""
        return cls(latency=LogBuckets(policy.latency_alpha, 0.5, 600_000.0))

    @property
    def fields(self) -> tuple[Field, ...]:
        """Summary fields of an arm stream."""
        return (
            Field("events", "count"),
            Field("unpaired", "count"),
            Field("errors", "count"),
            Field("latency", "moments"),  # of ln(latency_ms)
            Field("latency_sketch", "count", self.latency.n_buckets),
            Field("outcomes", "moments"),  # of the outcome value per matured exposure
        )

    def _zeros(self, n_rows: int) -> dict[str, Array]:
        return {f.name: np.zeros(f.shape(n_rows), f.dtype()) for f in self.fields}

    def events(
        self, index: I64, n_rows: int, errors: npt.NDArray[np.bool_], latency_ms: F64
    ) -> dict[str, Array]:
        """Per-row sums of a batch of predictions (``latency_ms`` NaN where not given)."""
        levels = index.shape[1]
        rows = index.ravel()
        out = self._zeros(n_rows)
        out["events"] = _count(rows, n_rows)
        out["errors"] = _count(rows, n_rows, np.repeat(errors, levels))
        timed = np.isfinite(latency_ms)
        if timed.any():
            keep = np.repeat(timed, levels)
            latency = np.repeat(latency_ms, levels)[keep]
            timed_rows = rows[keep]
            # Latency 0 is possible (cache hits); the log needs a floor, the sketch does not.
            out["latency"] = moments_by_group(np.log(np.maximum(latency, 1e-3)), timed_rows, n_rows)
            out["latency_sketch"] = _histogram(
                timed_rows, self.latency.index(latency), n_rows, self.latency.n_buckets
            )
        return out

    def unpaired(self, index: I64, n_rows: int) -> dict[str, Array]:
        """Per-row counts of halves that expired without a partner."""
        out = self._zeros(n_rows)
        out["unpaired"] = _count(index.ravel(), n_rows)
        return out

    def outcomes(self, index: I64, n_rows: int, values: F64) -> dict[str, Array]:
        """Per-row moments of the outcome values of matured exposures."""
        out = self._zeros(n_rows)
        out["outcomes"] = moments_by_group(np.repeat(values, index.shape[1]), index.ravel(), n_rows)
        return out
