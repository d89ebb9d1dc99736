"""Bin layouts that turn raw values into mergeable histogram counts.

Two layouts are provided:

- :class:`FixedBins` -- equal-width bins over a bounded range, for scores and probabilities.
- :class:`LogBuckets` -- relative-error log-spaced buckets for unbounded non-negative values
  such as latencies (Masson, Rim, Lee, "DDSketch: A Fast and Fully-Mergeable Quantile Sketch
  with Relative-Error Guarantees", VLDB 2019).

Both map values to bucket indices only; counting is ``np.bincount`` by the caller, and two
histograms with the same layout merge by adding their counts.

Examples
--------
>>> import numpy as np
>>> FixedBins(0.0, 1.0, 4).index(np.array([0.1, 0.5, 1.0]))
array([0, 2, 3])
>>> LogBuckets(0.01, 1.0, 1000.0).index(np.array([0.0, 1.0, 1000.0]))[:2]
array([0, 1])
"""

from __future__ import annotations

import math

import numpy as np
import numpy.typing as npt

__all__ = ["FixedBins", "LogBuckets"]


class FixedBins:
    """Equal-width bins over ``[lo, hi]``.

    Bin ``i`` covers ``[edges[i], edges[i+1])``; the last bin also holds ``hi``. Values below
    ``lo`` are counted in bin 0 and values above ``hi`` in the last bin, so no value is lost;
    use :meth:`outside` to count how many were clipped. NaN is treated as out of range: it is
    reported by :meth:`outside` and counted in the last bin.

    Parameters
    ----------
    lo, hi : float
        Range covered by the bins; ``hi`` must exceed ``lo``.
    bins : int
        Number of bins, at least 1.

    Attributes
    ----------
    lo, hi : float
        The range.
    bins : int
        Number of bins.
    edges : numpy.ndarray
        The ``bins + 1`` bin edges, ``edges[0] == lo`` and ``edges[-1] == hi``.

    Raises
    ------
    ValueError
        If ``hi <= lo``, a bound is not finite, or ``bins < 1``.

    Examples
    --------
    >>> import numpy as np
    >>> b = FixedBins(0.0, 1.0, 10)
    >>> b.edges[:3]
    array([0. , 0.1, 0.2])
    >>> b.index(np.array([-5.0, 0.0, 0.05, 0.1, 0.99, 1.0, 7.0]))
    array([0, 0, 0, 1, 9, 9, 9])
    >>> b.outside(np.array([-5.0, 0.0, 1.0, 7.0]))
    array([ True, False, False,  True])
    """

    def __init__(self, lo: float, hi: float, bins: int) -> None:
        if not (math.isfinite(lo) and math.isfinite(hi)):
            raise ValueError(f"bounds must be finite, got lo={lo}, hi={hi}")
        if hi <= lo:
            raise ValueError(f"hi must exceed lo, got lo={lo}, hi={hi}")
        if int(bins) != bins or bins < 1:
            raise ValueError(f"bins must be a positive integer, got {bins}")
        self.lo = float(lo)
        self.hi = float(hi)
        self.bins = int(bins)
        self.edges: npt.NDArray[np.float64] = np.linspace(self.lo, self.hi, self.bins + 1)

    def index(self, x: npt.ArrayLike) -> npt.NDArray[np.intp]:
        """Bin index of each value, same shape as ``x``.

        Parameters
        ----------
        x : array_like
            Values of any shape.

        Returns
        -------
        numpy.ndarray
            ``intp`` indices in ``[0, bins)``.

        Examples
        --------
        >>> import numpy as np
        >>> FixedBins(-1.0, 1.0, 2).index(np.array([[-2.0, -0.5], [0.0, 1.0]]))
        array([[0, 0],
               [1, 1]])
        """
        values = np.asarray(x, dtype=np.float64)
        # searchsorted against the stored edges (not floor((x-lo)/width)) so that a value equal
        # to an edge always lands in the bin that edge opens, whatever the rounding of width.
        idx = np.searchsorted(self.edges, values, side="right") - 1
        return np.clip(idx, 0, self.bins - 1).astype(np.intp, copy=False)

    def outside(self, x: npt.ArrayLike) -> npt.NDArray[np.bool_]:
        """Mask of values outside ``[lo, hi]`` (NaN counts as outside).

        Parameters
        ----------
        x : array_like
            Values of any shape.

        Returns
        -------
        numpy.ndarray
            Boolean mask, same shape as ``x``.

        Examples
        --------
        >>> import numpy as np
        >>> FixedBins(0.0, 1.0, 4).outside(np.array([0.5, 1.5, np.nan]))
        array([False,  True,  True])
        """
        values = np.asarray(x, dtype=np.float64)
        return np.asarray(~((values >= self.lo) & (values <= self.hi)))

    def __repr__(self) -> str:
        return f"FixedBins(lo={self.lo!r}, hi={self.hi!r}, bins={self.bins!r})"


class LogBuckets:
    """Relative-error log buckets for non-negative values (DDSketch layout).

    With ``gamma = (1 + alpha) / (1 - alpha)`` (Masson, Rim, Lee, DDSketch, VLDB 2019):

    - bucket 0 holds every value below ``min_value`` (zero, and negatives if any slip in);
      its representative value is 0.0;
    - bucket ``i >= 1`` holds ``(min_value * gamma**(i-1), min_value * gamma**i]``, except that
      bucket 1 also holds ``min_value`` itself, i.e. ``i = max(1, ceil(log_gamma(x /
      min_value)))``; its representative value is ``2 * min_value * gamma**i / (gamma + 1)``,
      within relative error ``alpha`` of every value in the bucket;
    - the last bucket ``n_buckets - 1`` is the one holding ``max_value``; larger values (and
      NaN) are clipped into it, so their relative error is not bounded.

    Counts from two streams with the same parameters merge by addition.

    Parameters
    ----------
    alpha : float
        Relative accuracy, in ``(0, 1)``.
    min_value : float
        Smallest value represented with relative error ``alpha``; must be positive.
    max_value : float
        Largest value represented with relative error ``alpha``; must exceed ``min_value``.

    Attributes
    ----------
    alpha, gamma, min_value, max_value : float
        The layout parameters.
    n_buckets : int
        Number of buckets including bucket 0.

    Raises
    ------
    ValueError
        If ``alpha`` is not in ``(0, 1)``, ``min_value <= 0`` or ``max_value <= min_value``.

    Examples
    --------
    >>> import numpy as np
    >>> lb = LogBuckets(alpha=0.01, min_value=1e-3, max_value=1e3)
    >>> lb.n_buckets
    692
    >>> x = np.array([0.0, 0.5, 12.0, 250.0])
    >>> rep = lb.values()[lb.index(x)]
    >>> bool(np.all(np.abs(rep[1:] - x[1:]) <= 0.01 * x[1:]))
    True
    """

    def __init__(self, alpha: float, min_value: float, max_value: float) -> None:
        if not 0.0 < alpha < 1.0:
            raise ValueError(f"alpha must be in (0, 1), got {alpha}")
        if not (math.isfinite(min_value) and min_value > 0.0):
            raise ValueError(f"min_value must be positive and finite, got {min_value}")
        if not (math.isfinite(max_value) and max_value > min_value):
            raise ValueError(f"max_value must be finite and exceed min_value, got {max_value}")
        self.alpha = float(alpha)
        self.gamma = (1.0 + self.alpha) / (1.0 - self.alpha)
        self.min_value = float(min_value)
        self.max_value = float(max_value)
        # log1p keeps ln(gamma) accurate for small alpha, where gamma is close to 1.
        log_gamma = math.log1p(2.0 * self.alpha / (1.0 - self.alpha))
        estimate = max(1, math.ceil(math.log(self.max_value / self.min_value) / log_gamma))
        # _bounds[i] is the inclusive upper end of bucket i >= 1 (_bounds[0] == min_value).
        # The log estimate can be one off at an exact power of gamma, so one spare bound is
        # computed and the last bucket is settled on the same floats index() searches.
        bounds = self.min_value * np.power(self.gamma, np.arange(estimate + 2, dtype=np.float64))
        last = max(1, int(np.searchsorted(bounds, self.max_value, side="left")))
        self._bounds: npt.NDArray[np.float64] = bounds[: last + 1]
        self.n_buckets = last + 1

    def index(self, x: npt.ArrayLike) -> npt.NDArray[np.intp]:
        """Bucket index of each value, same shape as ``x``.

        Parameters
        ----------
        x : array_like
            Values of any shape.

        Returns
        -------
        numpy.ndarray
            ``intp`` indices in ``[0, n_buckets)``.

        Examples
        --------
        >>> import numpy as np
        >>> lb = LogBuckets(0.5, 1.0, 100.0)  # gamma = 3
        >>> lb.index(np.array([0.0, 0.99, 1.0, 3.0, 3.01, 9.0, 1e9]))
        array([0, 0, 1, 1, 2, 2, 5])
        """
        values = np.asarray(x, dtype=np.float64)
        # Searching the stored bounds (rather than ceil(log_gamma(x / min_value))) puts a value
        # exactly on a bound in the bucket that bound closes, free of log rounding. NaN sorts
        # last, so it lands in the last bucket with the overflow.
        idx = np.clip(np.searchsorted(self._bounds, values, side="left"), 1, self.n_buckets - 1)
        return np.where(values < self.min_value, 0, idx).astype(np.intp)

    def values(self) -> npt.NDArray[np.float64]:
        """Representative value of each bucket (0.0 for bucket 0).

        Returns
        -------
        numpy.ndarray
            ``n_buckets`` floats, increasing from bucket 1 on.

        Examples
        --------
        >>> LogBuckets(0.5, 1.0, 100.0).values()
        array([  0. ,   1.5,   4.5,  13.5,  40.5, 121.5])
        """
        # 2u/(γ+1) for the bucket (u/γ, u] is at relative distance (γ−1)/(γ+1) = alpha from
        # both ends, the DDSketch representative.
        rep = 2.0 * self._bounds / (self.gamma + 1.0)
        rep[0] = 0.0
        return rep

    def quantile(self, counts: npt.ArrayLike, q: float) -> npt.NDArray[np.float64]:
        """Rank-based quantile of bucket counts, per row.

        As in DDSketch, the value of rank ``q * (n - 1)`` among the ``n`` counted values is
        located (the ``method="lower"`` quantile of the raw data) and its bucket's
        representative value is returned, so the result is within relative error ``alpha``
        of that raw value when it lies in ``[min_value, max_value]``.

        Parameters
        ----------
        counts : array_like
            Bucket counts, last axis of length ``n_buckets``; any leading axes.
        q : float
            Quantile level in ``[0, 1]``.

        Returns
        -------
        numpy.ndarray
            Array over the leading axes; NaN where a row's total count is 0.

        Raises
        ------
        ValueError
            If ``q`` is outside ``[0, 1]`` or the last axis has the wrong length.

        Examples
        --------
        >>> import numpy as np
        >>> lb = LogBuckets(0.5, 1.0, 100.0)
        >>> c = np.zeros((2, lb.n_buckets))
        >>> c[0, lb.index(np.array([2.0, 5.0, 50.0]))] += 1
        >>> lb.quantile(c, 0.5)
        array([4.5, nan])
        """
        if not 0.0 <= q <= 1.0:
            raise ValueError(f"q must be in [0, 1], got {q}")
        c = np.asarray(counts, dtype=np.float64)
        if c.ndim == 0 or c.shape[-1] != self.n_buckets:
            raise ValueError(f"last axis must have {self.n_buckets} buckets, got {c.shape}")
        cum = np.cumsum(c, axis=-1)
        total = cum[..., -1]
        # Clamped at 0 so fractional (weighted) totals below 1 still pick a non-empty bucket.
        rank = np.maximum(q * (total - 1.0), 0.0)
        # First bucket whose running count exceeds the rank, as DDSketch's key_at_rank.
        idx = np.argmax(cum > rank[..., None], axis=-1)
        out = self.values()[idx]
        return np.asarray(np.where(total > 0, out, np.nan), dtype=np.float64)

    def __repr__(self) -> str:
        return (
            f"LogBuckets(alpha={self.alpha!r}, min_value={self.min_value!r}, "
            f"max_value={self.max_value!r})"
        )
