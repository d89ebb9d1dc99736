"""Quantiles and coarse regrouping of fixed-bin histogram counts.

Histograms are kept at a fine, fixed resolution so they merge by addition across partitions
and windows. Drift statistics such as PSI are conventionally computed on bins at the
reference's quantiles (deciles); :func:`quantile_groups` and :func:`regroup` derive those
coarse bins from the fine counts without the raw data.

Examples
--------
>>> import numpy as np
>>> ref = np.array([1.0, 1.0, 1.0, 1.0])
>>> groups = quantile_groups(ref, 2)
>>> groups
array([0, 0, 1, 1])
>>> regroup(np.array([5, 0, 1, 2]), groups, 2)
array([5., 3.])
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

__all__ = ["quantile_from_counts", "quantile_groups", "regroup"]


def quantile_from_counts(
    counts: npt.ArrayLike, edges: npt.ArrayLike, q: float
) -> npt.NDArray[np.float64]:
    """Quantile of fixed-bin counts, interpolating linearly inside the bin.

    Mass is assumed uniform within each bin. With ``N`` the row total and ``t = q * N``, the
    result lies in the first non-empty bin ``j`` whose cumulative count reaches ``t``, at
    ``edges[j] + (t - C[j-1]) / counts[j] * (edges[j+1] - edges[j])``. Thus ``q = 0`` gives
    the left edge of the first non-empty bin and ``q = 1`` the right edge of the last one.
    The result lies in the same bin as the raw-data quantile by the inverted-CDF definition
    (``numpy.quantile(..., method="inverted_cdf")``), so the error against it is at most one
    bin width; other definitions (numpy's default, linear) interpolate across empty bins and
    can differ by more.

    Parameters
    ----------
    counts : array_like
        Bin counts, last axis = bins, any leading axes.
    edges : array_like
        Bin edges, shape ``(bins + 1,)`` or broadcastable to ``(..., bins + 1)``.
    q : float
        Quantile level in ``[0, 1]``.

    Returns
    -------
    numpy.ndarray
        Quantiles over the leading axes; NaN for rows whose total is 0.

    Raises
    ------
    ValueError
        If ``q`` is outside ``[0, 1]`` or ``edges`` does not have ``bins + 1`` entries.

    Examples
    --------
    >>> import numpy as np
    >>> edges = np.array([0.0, 1.0, 2.0, 3.0])
    >>> quantile_from_counts(np.array([[1, 2, 1], [0, 0, 0]]), edges, 0.5)
    array([1.5, nan])
    >>> float(quantile_from_counts(np.array([0, 4, 0]), edges, 0.25))
    1.25
    """
    if not 0.0 <= q <= 1.0:
        raise ValueError(f"q must be in [0, 1], got {q}")
    c = np.asarray(counts, dtype=np.float64)
    e = np.asarray(edges, dtype=np.float64)
    if c.ndim == 0 or e.ndim == 0 or e.shape[-1] != c.shape[-1] + 1:
        raise ValueError(f"edges must have bins + 1 entries, got {e.shape} for {c.shape}")
    lead = np.broadcast_shapes(c.shape[:-1], e.shape[:-1])
    c = np.broadcast_to(c, (*lead, c.shape[-1]))
    e = np.broadcast_to(e, (*lead, e.shape[-1]))
    cum = np.cumsum(c, axis=-1)
    total = cum[..., -1]
    target = q * total
    # The last non-empty bin always reaches the total, so the mask has a True in every
    # non-empty row; requiring counts > 0 skips empty bins at q = 0.
    j = np.argmax((cum >= target[..., None]) & (c > 0), axis=-1)[..., None]
    count_j = np.take_along_axis(c, j, axis=-1)[..., 0]
    before = np.take_along_axis(cum, j, axis=-1)[..., 0] - count_j
    left = np.take_along_axis(e, j, axis=-1)[..., 0]
    right = np.take_along_axis(e, j + 1, axis=-1)[..., 0]
    with np.errstate(divide="ignore", invalid="ignore"):
        frac = np.clip((target - before) / count_j, 0.0, 1.0)
    out = left + frac * (right - left)
    return np.asarray(np.where(total > 0, out, np.nan), dtype=np.float64)


def quantile_groups(reference: npt.ArrayLike, k: int) -> npt.NDArray[np.intp]:
    """Assign fine bins to at most ``k`` coarse groups of about equal reference mass.

    With ``C_j`` the cumulative reference fraction through fine bin ``j`` (``C_{-1} = 0``),
    bin ``j`` goes to group ``min(k - 1, floor(k * (C_{j-1} + C_j) / 2))``: the group of the
    reference quantile at the bin's mid-mass. Groups are non-decreasing along the last axis.
    A fine bin holding more than ``1/k`` of the mass leaves some group numbers unused; those
    groups are empty on both sides and contribute nothing to :func:`~.divergence.psi`.
    Rows with zero total put every bin in group 0.

    Parameters
    ----------
    reference : array_like
        Fine-bin reference counts, last axis = bins, any leading axes.
    k : int
        Number of coarse groups (10 for deciles), at least 1.

    Returns
    -------
    numpy.ndarray
        ``intp`` group numbers in ``[0, k)``, same shape as ``reference``.

    Raises
    ------
    ValueError
        If ``k < 1``.

    Examples
    --------
    >>> import numpy as np
    >>> quantile_groups(np.array([[1, 1, 1, 1, 1, 1, 1, 1], [0, 0, 0, 0, 0, 0, 0, 0]]), 4)
    array([[0, 0, 1, 1, 2, 2, 3, 3],
           [0, 0, 0, 0, 0, 0, 0, 0]])
    """
    if int(k) != k or k < 1:
        raise ValueError(f"k must be a positive integer, got {k}")
    r = np.asarray(reference, dtype=np.float64)
    if r.ndim == 0:
        raise ValueError("reference must have a bins axis")
    cum = np.cumsum(r, axis=-1)
    total = cum[..., -1:]
    with np.errstate(divide="ignore", invalid="ignore"):
        frac = np.where(total > 0, cum / total, 0.0)
    prev = np.concatenate([np.zeros_like(frac[..., :1]), frac[..., :-1]], axis=-1)
    groups = np.minimum(k - 1, np.floor(k * (prev + frac) / 2.0))
    # Rounding in the cumulative sum could push a fraction a hair below 0.
    return np.clip(groups, 0, k - 1).astype(np.intp)


def regroup(counts: npt.ArrayLike, groups: npt.ArrayLike, k: int) -> npt.NDArray[np.float64]:
    """Sum fine-bin counts into ``k`` coarse groups, per row.

    Parameters
    ----------
    counts : array_like
        Fine-bin counts, last axis = bins, any leading axes.
    groups : array_like
        Group of each fine bin, in ``[0, k)``; broadcastable against ``counts`` (e.g. one
        1-D grouping shared by all rows, or one grouping per row).
    k : int
        Number of groups.

    Returns
    -------
    numpy.ndarray
        float64 sums, shape ``(..., k)`` over the broadcast leading axes (sums of integer
        counts are exact up to 2**53).

    Raises
    ------
    ValueError
        If ``k < 1``, ``groups`` is not integer or a group number is outside ``[0, k)``.

    Examples
    --------
    >>> import numpy as np
    >>> regroup(np.array([[1, 2, 3], [4, 5, 6]]), np.array([0, 0, 1]), 3)
    array([[3., 3., 0.],
           [9., 6., 0.]])
    """
    if int(k) != k or k < 1:
        raise ValueError(f"k must be a positive integer, got {k}")
    c = np.asarray(counts)
    g = np.asarray(groups)
    if c.ndim == 0 or g.ndim == 0:
        raise ValueError("counts and groups must have a bins axis")
    if not np.issubdtype(g.dtype, np.integer):
        raise ValueError(f"groups must be integers, got {g.dtype}")
    c, g = np.broadcast_arrays(c, g)
    if g.size and (g.min() < 0 or g.max() >= k):
        raise ValueError(f"group numbers must be in [0, {k})")
    lead = c.shape[:-1]
    rows = int(np.prod(lead, dtype=np.int64))
    # One bincount over row * k + group sums every row at once.
    flat = (np.arange(rows, dtype=np.intp)[:, None] * k + g.reshape(rows, -1)).ravel()
    weights = c.reshape(rows, -1).ravel().astype(np.float64)
    sums = np.bincount(flat, weights=weights, minlength=rows * k)
    return sums.reshape((*lead, k))
