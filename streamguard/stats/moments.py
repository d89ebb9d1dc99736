"""Mergeable first and second moments stored as ``(n, mean, m2)`` arrays.

``m2 = Σ (x − mean)²``. Summaries of disjoint parts combine exactly with the parallel update
of Chan, Golub, LeVeque ("Updating formulae and a pairwise algorithm for computing sample
variances", Stanford CS report STAN-CS-79-773, 1979), so partitions, windows and slices
merge without the raw values, and a parent minus its children gives the complement.

The functions work elementwise over any leading axes; the last axis is the three moment
components. :class:`~streamguard.stats.running_moments.Moments` is the single-stream
accumulator built on them.

Examples
--------
>>> import numpy as np
>>> a = moments_by_group(np.array([1.0, 2.0, 3.0, 10.0]), np.array([0, 0, 0, 1]), 2)
>>> a
array([[ 3.,  2.,  2.],
       [ 1., 10.,  0.]])
>>> merge_moments(a[0], a[1])
array([ 4.,  4., 50.])
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

__all__ = [
    "merge_moments",
    "merge_moments_by_group",
    "moment_mean",
    "moment_variance",
    "moments_by_group",
    "subtract_moments",
]

_Float = npt.NDArray[np.float64]


def _as_moments(m: npt.ArrayLike) -> _Float:
    arr = np.asarray(m, dtype=np.float64)
    if arr.ndim == 0 or arr.shape[-1] != 3:
        raise ValueError(f"moments must have a last axis of (n, mean, m2), got shape {arr.shape}")
    return arr


def moments_by_group(values: npt.ArrayLike, groups: npt.ArrayLike, n_groups: int) -> _Float:
    """Exact ``(n, mean, m2)`` of ``values`` per group, by two passes of ``np.bincount``.

    The second pass sums squared deviations from each group's own mean rather than using
    ``Σx² − n·mean²``, which cancels catastrophically when the mean is large.

    Parameters
    ----------
    values : array_like
        Values, any shape (flattened).
    groups : array_like
        Integer group of each value in ``[0, n_groups)``, same shape as ``values``.
    n_groups : int
        Number of groups.

    Returns
    -------
    numpy.ndarray
        Shape ``(n_groups, 3)``; empty groups are ``(0, 0, 0)``.

    Raises
    ------
    ValueError
        If shapes differ, ``groups`` is not integer, or a group is outside ``[0, n_groups)``.

    Examples
    --------
    >>> import numpy as np
    >>> moments_by_group(np.array([1.0, 3.0, 5.0]), np.array([2, 2, 0]), 3)
    array([[1., 5., 0.],
           [0., 0., 0.],
           [2., 2., 2.]])
    """
    x = np.asarray(values, dtype=np.float64).ravel()
    g = np.asarray(groups)
    if g.size != x.size or np.asarray(values).shape != g.shape:
        raise ValueError(f"values and groups must have the same shape, got {x.shape}, {g.shape}")
    if not np.issubdtype(g.dtype, np.integer):
        raise ValueError(f"groups must be integers, got {g.dtype}")
    g = g.ravel()
    if g.size and (g.min() < 0 or g.max() >= n_groups):
        raise ValueError(f"group numbers must be in [0, {n_groups})")
    n = np.bincount(g, minlength=n_groups).astype(np.float64)
    sums = np.bincount(g, weights=x, minlength=n_groups)
    mean = np.divide(sums, n, out=np.zeros(n_groups), where=n > 0)
    m2 = np.bincount(g, weights=(x - mean[g]) ** 2, minlength=n_groups)
    return np.stack([n, mean, m2], axis=-1)


def merge_moments(a: npt.ArrayLike, b: npt.ArrayLike) -> _Float:
    """Moments of the union of two disjoint parts (Chan, Golub, LeVeque 1979).

    ``n = n_a + n_b``, ``δ = mean_b − mean_a``, ``mean = mean_a + δ n_b / n``,
    ``m2 = m2_a + m2_b + δ² n_a n_b / n``. Elementwise over broadcast leading axes. Where one
    side is empty (``n = 0``) the other side is returned unchanged, bit for bit.

    Parameters
    ----------
    a, b : array_like
        Moments, last axis ``(n, mean, m2)``.

    Returns
    -------
    numpy.ndarray
        Merged moments, broadcast shape of ``a`` and ``b``.

    Examples
    --------
    >>> import numpy as np
    >>> merge_moments(np.array([2.0, 1.0, 0.0]), np.array([[2.0, 3.0, 0.0], [0.0, 0.0, 0.0]]))
    array([[4., 2., 4.],
           [2., 1., 0.]])
    """
    ma, mb = np.broadcast_arrays(_as_moments(a), _as_moments(b))
    na, mean_a, m2a = ma[..., 0], ma[..., 1], ma[..., 2]
    nb, mean_b, m2b = mb[..., 0], mb[..., 1], mb[..., 2]
    n = na + nb
    safe_n = np.where(n > 0, n, 1.0)
    delta = mean_b - mean_a
    mean = mean_a + delta * (nb / safe_n)
    m2 = m2a + m2b + delta * delta * (na * nb / safe_n)
    merged = np.stack([n, mean, m2], axis=-1)
    # Exact pass-through for an empty side, so merging with "nothing" never perturbs a sum.
    merged = np.where((nb <= 0)[..., None], ma, merged)
    return np.asarray(np.where((na <= 0)[..., None], mb, merged), dtype=np.float64)


def merge_moments_by_group(moments: npt.ArrayLike, groups: npt.ArrayLike, n_groups: int) -> _Float:
    """Moments of the union of disjoint parts, per group: many parts merged at once.

    The closed form of repeated :func:`merge_moments` (Chan, Golub, LeVeque 1979): per group
    ``n = Σ n_i``, ``mean = Σ n_i mean_i / n`` and ``m2 = Σ (m2_i + n_i (mean_i − mean)²)``
    (the between-parts term is taken around the group's own mean, so it does not cancel).
    Stage 1 summarises a batch once per distinct slice combination and rolls those parts up to
    every slice level with it, instead of repeating each value once per level.

    Parameters
    ----------
    moments : array_like
        Parts, shape ``(parts, 3)``: ``(n, mean, m2)`` each; empty parts (``n = 0``) add nothing.
    groups : array_like
        Integer group of each part in ``[0, n_groups)``.
    n_groups : int
        Number of groups.

    Returns
    -------
    numpy.ndarray
        Shape ``(n_groups, 3)``; groups without values are ``(0, 0, 0)``.

    Examples
    --------
    >>> import numpy as np
    >>> parts = moments_by_group(np.array([1.0, 2.0, 3.0, 10.0]), np.array([0, 0, 0, 1]), 2)
    >>> merge_moments_by_group(parts, np.array([0, 0]), 1)
    array([[ 4.,  4., 50.]])
    """
    m = _as_moments(moments).reshape(-1, 3)
    g = np.asarray(groups).ravel()
    if g.size != len(m):
        raise ValueError(f"one group per part: {g.size} groups for {len(m)} parts")
    n_part, mean_part = m[:, 0], m[:, 1]
    n = np.bincount(g, weights=n_part, minlength=n_groups)
    sums = np.bincount(g, weights=n_part * mean_part, minlength=n_groups)
    mean = np.divide(sums, n, out=np.zeros(n_groups), where=n > 0)
    between = n_part * (mean_part - mean[g]) ** 2
    m2 = np.bincount(g, weights=m[:, 2] + between, minlength=n_groups)
    return np.stack([n, mean, m2], axis=-1)


def subtract_moments(total: npt.ArrayLike, part: npt.ArrayLike) -> _Float:
    """Moments of ``total`` with the disjoint sub-part ``part`` removed (inverse of merging).

    With ``n_r = n_t − n_p``: ``mean_r = mean_t + (mean_t − mean_p) n_p / n_r`` and
    ``m2_r = m2_t − m2_p − (mean_p − mean_r)² n_p n_r / n_t``, solving Chan, Golub, LeVeque's
    merge for the remainder. Used for complements, e.g. a slice minus its child slices.
    Subtraction loses accuracy when the remainder is small next to the total (its error scales
    with the total's ``m2``), so tiny negative ``m2`` from rounding is clamped to 0.

    Parameters
    ----------
    total, part : array_like
        Moments, last axis ``(n, mean, m2)``; ``part`` must be a subset of ``total``.

    Returns
    -------
    numpy.ndarray
        Moments of the remainder; ``(0, 0, 0)`` where ``n_r <= 0``, and ``total`` unchanged
        where ``part`` is empty.

    Examples
    --------
    >>> import numpy as np
    >>> subtract_moments(np.array([4.0, 4.0, 50.0]), np.array([1.0, 10.0, 0.0]))
    array([3., 2., 2.])
    """
    mt, mp = np.broadcast_arrays(_as_moments(total), _as_moments(part))
    nt, mean_t, m2t = mt[..., 0], mt[..., 1], mt[..., 2]
    n_p, mean_p, m2p = mp[..., 0], mp[..., 1], mp[..., 2]
    nr = nt - n_p
    ok = nr > 0
    safe_nr = np.where(ok, nr, 1.0)
    safe_nt = np.where(nt > 0, nt, 1.0)
    mean_r = mean_t + (mean_t - mean_p) * (n_p / safe_nr)
    delta = mean_p - mean_r
    m2r = np.maximum(m2t - m2p - delta * delta * (n_p * nr / safe_nt), 0.0)
    rest = np.stack([nr, mean_r, m2r], axis=-1)
    rest = np.where(ok[..., None], rest, 0.0)
    return np.asarray(np.where((n_p <= 0)[..., None], mt, rest), dtype=np.float64)


def moment_mean(m: npt.ArrayLike) -> _Float:
    """Mean from moments; NaN where ``n == 0``.

    Parameters
    ----------
    m : array_like
        Moments, last axis ``(n, mean, m2)``.

    Returns
    -------
    numpy.ndarray
        Array over the leading axes.

    Examples
    --------
    >>> import numpy as np
    >>> moment_mean(np.array([[3.0, 2.0, 2.0], [0.0, 0.0, 0.0]]))
    array([ 2., nan])
    """
    arr = _as_moments(m)
    return np.asarray(np.where(arr[..., 0] > 0, arr[..., 1], np.nan), dtype=np.float64)


def moment_variance(m: npt.ArrayLike, ddof: int = 1) -> _Float:
    """Variance ``m2 / (n − ddof)`` from moments; NaN where ``n <= ddof``.

    Parameters
    ----------
    m : array_like
        Moments, last axis ``(n, mean, m2)``.
    ddof : int, default 1
        Delta degrees of freedom (1: sample variance, 0: population variance).

    Returns
    -------
    numpy.ndarray
        Array over the leading axes.

    Examples
    --------
    >>> import numpy as np
    >>> moment_variance(np.array([[3.0, 2.0, 2.0], [1.0, 5.0, 0.0]]))
    array([ 1., nan])
    >>> round(float(moment_variance(np.array([3.0, 2.0, 2.0]), ddof=0)), 4)
    0.6667
    """
    arr = _as_moments(m)
    n = arr[..., 0]
    ok = n > ddof
    var = arr[..., 2] / np.where(ok, n - ddof, 1.0)
    return np.asarray(np.where(ok, var, np.nan), dtype=np.float64)
