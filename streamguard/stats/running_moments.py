"""A single stream's ``(n, mean, m2)``, updated one value or one batch at a time.

The array functions of :mod:`streamguard.stats.moments` do the merging; this is the river-style
object around them, for callers that follow one stream.
"""

from __future__ import annotations

import math

import numpy as np
import numpy.typing as npt

from streamguard.stats.moments import merge_moments

__all__ = ["Moments"]

_Float = npt.NDArray[np.float64]


class Moments:
    """Single-stream ``(n, mean, m2)`` accumulator in the style of ``river.stats.Var``.

    :meth:`update` is Welford's one-value update; :meth:`update_many` and :meth:`merge`
    use the exact parallel combination of Chan, Golub, LeVeque 1979 (see
    :func:`merge_moments`). All three modify the accumulator in place and return it, so calls
    chain.

    Examples
    --------
    >>> import numpy as np
    >>> m = Moments().update(1.0).update(2.0).update_many(np.array([3.0, 4.0]))
    >>> m.n, m.mean, round(m.variance(), 4)
    (4, 2.5, 1.6667)
    >>> other = Moments.from_array(np.array([1.0, 10.0, 0.0]))
    >>> m.merge(other).to_array()
    array([ 5.,  4., 50.])
    """

    __slots__ = ("_m2", "_mean", "_n")

    def __init__(self) -> None:
        self._n = 0.0
        self._mean = 0.0
        self._m2 = 0.0

    @property
    def n(self) -> int:
        """Number of values seen.

        Examples
        --------
        >>> Moments().update(1.0).update(2.0).n
        2
        """
        return int(self._n)

    @property
    def mean(self) -> float:
        """Running mean; NaN before the first value.

        Examples
        --------
        >>> Moments().mean
        nan
        >>> Moments().update(1.0).update(2.0).mean
        1.5
        """
        return self._mean if self._n > 0 else math.nan

    @property
    def m2(self) -> float:
        """Sum of squared deviations from the mean.

        Examples
        --------
        >>> Moments().update(1.0).update(3.0).m2
        2.0
        """
        return self._m2

    def variance(self, ddof: int = 1) -> float:
        """Variance ``m2 / (n − ddof)``; NaN when ``n <= ddof``.

        Parameters
        ----------
        ddof : int, default 1
            Delta degrees of freedom.

        Returns
        -------
        float
            The variance.

        Examples
        --------
        >>> Moments().update(1.0).update(3.0).variance(ddof=0)
        1.0
        """
        return self._m2 / (self._n - ddof) if self._n > ddof else math.nan

    def update(self, x: float) -> Moments:
        """Add one value (Welford 1962).

        Parameters
        ----------
        x : float
            The value.

        Returns
        -------
        Moments
            ``self``.

        Examples
        --------
        >>> Moments().update(5.0).mean
        5.0
        """
        self._n += 1.0
        delta = x - self._mean
        self._mean += delta / self._n
        self._m2 += delta * (x - self._mean)
        return self

    def update_many(self, values: npt.ArrayLike) -> Moments:
        """Add a batch of values (exact two-pass moments of the batch, then a merge).

        Parameters
        ----------
        values : array_like
            Values, any shape (flattened).

        Returns
        -------
        Moments
            ``self``.

        Examples
        --------
        >>> import numpy as np
        >>> Moments().update_many(np.array([1.0, 2.0, 3.0])).to_array()
        array([3., 2., 2.])
        """
        x = np.asarray(values, dtype=np.float64).ravel()
        if x.size == 0:
            return self
        mean = float(np.mean(x))
        batch = np.array([float(x.size), mean, float(np.sum((x - mean) ** 2))])
        self._set(merge_moments(self.to_array(), batch))
        return self

    def merge(self, other: Moments) -> Moments:
        """Fold in another accumulator's values (Chan, Golub, LeVeque 1979).

        Parameters
        ----------
        other : Moments
            Moments of values disjoint from this one's; left unchanged.

        Returns
        -------
        Moments
            ``self``.

        Examples
        --------
        >>> a = Moments().update(1.0)
        >>> a.merge(Moments().update(3.0)).to_array()
        array([2., 2., 2.])
        """
        self._set(merge_moments(self.to_array(), other.to_array()))
        return self

    def to_array(self) -> _Float:
        """The ``(3,)`` array ``(n, mean, m2)``.

        Returns
        -------
        numpy.ndarray
            A new array.

        Examples
        --------
        >>> Moments().to_array()
        array([0., 0., 0.])
        """
        return np.array([self._n, self._mean, self._m2], dtype=np.float64)

    @classmethod
    def from_array(cls, m: npt.ArrayLike) -> Moments:
        """Accumulator holding the moments ``m`` of shape ``(3,)``.

        Parameters
        ----------
        m : array_like
            ``(n, mean, m2)``.

        Returns
        -------
        Moments
            A new accumulator.

        Raises
        ------
        ValueError
            If ``m`` is not of shape ``(3,)`` or has a negative ``n`` or ``m2``.

        Examples
        --------
        >>> import numpy as np
        >>> Moments.from_array(np.array([2.0, 1.5, 0.5])).variance()
        0.5
        """
        arr = np.asarray(m, dtype=np.float64)
        if arr.shape != (3,):
            raise ValueError(f"expected shape (3,), got {arr.shape}")
        if arr[0] < 0 or arr[2] < 0:
            raise ValueError(f"n and m2 must be non-negative, got {arr}")
        new = cls()
        new._set(arr)
        return new

    def _set(self, arr: _Float) -> None:
        self._n, self._mean, self._m2 = (float(v) for v in arr)

    def __repr__(self) -> str:
        return f"Moments(n={self.n}, mean={self._mean!r}, m2={self._m2!r})"
