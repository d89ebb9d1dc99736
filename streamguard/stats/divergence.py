"""Distances between a reference histogram P and a current histogram Q on the same bins.

Every function takes bin COUNTS (last axis = bins, any leading axes, broadcast against each
other, e.g. one reference row against many current rows), normalises each row to
proportions inside, and returns an array over the leading axes. A row where either side
totals 0 has no distribution to compare and gives NaN.

Examples
--------
>>> import numpy as np
>>> ref = np.array([10, 20, 30, 40])
>>> cur = np.array([[10, 20, 30, 40], [40, 30, 20, 10]])
>>> total_variation(ref, cur)
array([0. , 0.4])
>>> ks_statistic(ref, cur)
array([0. , 0.4])
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

__all__ = ["js_distance", "ks_statistic", "psi", "total_variation", "wasserstein1"]

_Float = npt.NDArray[np.float64]


def _proportions(
    reference: npt.ArrayLike, current: npt.ArrayLike
) -> tuple[_Float, _Float, npt.NDArray[np.bool_]]:
    """Broadcast both count arrays, normalise rows, and flag rows with a zero total."""
    r = np.asarray(reference, dtype=np.float64)
    c = np.asarray(current, dtype=np.float64)
    if r.ndim == 0 or c.ndim == 0:
        raise ValueError("counts must have a bins axis")
    if r.shape[-1] != c.shape[-1]:
        raise ValueError(f"reference and current bins differ: {r.shape} vs {c.shape}")
    r, c = np.broadcast_arrays(r, c)
    r_total = r.sum(axis=-1, keepdims=True)
    c_total = c.sum(axis=-1, keepdims=True)
    valid = (r_total > 0) & (c_total > 0)
    # Divide by 1 in invalid rows so no warnings are raised; they are masked to NaN later.
    p = r / np.where(valid, r_total, 1.0)
    q = c / np.where(valid, c_total, 1.0)
    return p, q, valid[..., 0]


def _masked(values: _Float, valid: npt.NDArray[np.bool_]) -> _Float:
    return np.asarray(np.where(valid, values, np.nan), dtype=np.float64)


def psi(reference: npt.ArrayLike, current: npt.ArrayLike, eps: float = 1e-4) -> _Float:
    """Population Stability Index, ``Σ (q_i − p_i) ln(q_i / p_i)``.

    ``p`` and ``q`` are the row proportions; any proportion that is exactly 0 is replaced by
    ``eps`` (and the rest are left as they are, not renormalised), as Evidently's
    ``get_binned_data`` does with 0.0001 (``evidently/calculations/stattests/utils.py``). A
    bin empty on both sides therefore contributes exactly 0. Common reading: < 0.1 no shift,
    0.1–0.25 moderate, > 0.25 major. Compute it on reference-quantile bins (see
    :func:`~streamguard.stats.histogram.quantile_groups`) for the conventional value.

    Parameters
    ----------
    reference, current : array_like
        Bin counts, last axis = bins.
    eps : float, default 1e-4
        Replacement for zero proportions; must be positive.

    Returns
    -------
    numpy.ndarray
        PSI per row, ``>= 0``; NaN where either side totals 0.

    Raises
    ------
    ValueError
        If ``eps <= 0`` or the bins differ.

    Examples
    --------
    >>> import numpy as np
    >>> round(float(psi(np.array([50, 50]), np.array([25, 75]))), 6)
    0.274653
    >>> psi(np.array([[1, 1], [0, 0]]), np.array([1, 0]))
    array([4.60431847,        nan])
    """
    if not eps > 0.0:
        raise ValueError(f"eps must be positive, got {eps}")
    p, q, valid = _proportions(reference, current)
    p = np.where(p == 0.0, eps, p)
    q = np.where(q == 0.0, eps, q)
    return _masked(np.sum((q - p) * np.log(q / p), axis=-1), valid)


def js_distance(reference: npt.ArrayLike, current: npt.ArrayLike) -> _Float:
    """Base-2 Jensen–Shannon distance, in ``[0, 1]``.

    ``sqrt(JSD)`` with ``JSD = ½ KL(P‖M) + ½ KL(Q‖M)``, ``M = (P + Q) / 2``, in bits (Lin,
    "Divergence measures based on the Shannon entropy", IEEE Trans. Inf. Theory 1991). This is
    ``scipy.spatial.distance.jensenshannon(p, q, base=2)`` and the value Evidently's
    ``jensenshannon`` drift test reports (default threshold 0.1). Terms with a zero
    proportion contribute 0 (``0 ln 0 = 0``).

    Parameters
    ----------
    reference, current : array_like
        Bin counts, last axis = bins.

    Returns
    -------
    numpy.ndarray
        Distance per row; NaN where either side totals 0.

    Examples
    --------
    >>> import numpy as np
    >>> js_distance(np.array([1, 0]), np.array([[0, 1], [1, 0], [1, 1]])).round(6)
    array([1.      , 0.      , 0.557923])
    """
    p, q, valid = _proportions(reference, current)
    m = 0.5 * (p + q)
    # m > 0 wherever p > 0 or q > 0; elsewhere the term is 0 and the divisor a dummy 1.
    safe_m = np.where(m > 0.0, m, 1.0)
    with np.errstate(divide="ignore", invalid="ignore"):
        kl_p = np.where(p > 0.0, p * np.log(p / safe_m), 0.0)
        kl_q = np.where(q > 0.0, q * np.log(q / safe_m), 0.0)
    jsd = 0.5 * np.sum(kl_p + kl_q, axis=-1) / np.log(2.0)
    # Rounding can leave a divergence a hair outside [0, 1]; the true value cannot be.
    return _masked(np.sqrt(np.clip(jsd, 0.0, 1.0)), valid)


def ks_statistic(reference: npt.ArrayLike, current: npt.ArrayLike) -> _Float:
    """Kolmogorov–Smirnov statistic ``max |F_P − F_Q|`` over the bin edges.

    ``F`` is the cumulative proportion through each bin. This equals the two-sample KS
    statistic of the raw data exactly when every value sits at its bin's left edge (e.g. the
    data are discretised to the bins); otherwise it is a lower bound, as the raw CDFs may
    differ more inside a bin.

    Parameters
    ----------
    reference, current : array_like
        Bin counts, last axis = bins.

    Returns
    -------
    numpy.ndarray
        Statistic per row, in ``[0, 1]``; NaN where either side totals 0.

    Examples
    --------
    >>> import numpy as np
    >>> float(ks_statistic(np.array([3, 1, 0]), np.array([1, 1, 2])))
    0.5
    """
    p, q, valid = _proportions(reference, current)
    diff = np.abs(np.cumsum(p, axis=-1) - np.cumsum(q, axis=-1))
    return _masked(np.max(diff, axis=-1), valid)


def wasserstein1(reference: npt.ArrayLike, current: npt.ArrayLike, edges: npt.ArrayLike) -> _Float:
    """Wasserstein-1 (earth mover's) distance on the bin grid, ``Σ_i |F_P − F_Q|_i Δx_i``.

    ``F`` is the cumulative proportion through bin ``i`` and ``Δx_i = edges[i+1] − edges[i]``.
    This is exact when all mass sits at the bins' left edges, and, for equal-width bins,
    whenever all mass sits at the same relative position in its bin (e.g. bin centres).
    Otherwise it approximates the raw-data distance: moving each value to its bin's left edge
    moves each distribution by at most the widest bin, so the error is at most twice the
    widest bin width. Values clipped into the end bins are counted where they were binned.

    Parameters
    ----------
    reference, current : array_like
        Bin counts, last axis = bins.
    edges : array_like
        Bin edges, shape ``(bins + 1,)`` or broadcastable to ``(..., bins + 1)``.

    Returns
    -------
    numpy.ndarray
        Distance per row in the units of ``edges``; NaN where either side totals 0.

    Raises
    ------
    ValueError
        If ``edges`` does not have ``bins + 1`` entries.

    Examples
    --------
    >>> import numpy as np
    >>> edges = np.array([0.0, 1.0, 2.0, 3.0])
    >>> float(wasserstein1(np.array([1, 0, 0]), np.array([0, 0, 1]), edges))
    2.0
    """
    p, q, valid = _proportions(reference, current)
    e = np.asarray(edges, dtype=np.float64)
    if e.ndim == 0 or e.shape[-1] != p.shape[-1] + 1:
        raise ValueError(f"edges must have bins + 1 entries, got {e.shape} for {p.shape}")
    widths = np.diff(e, axis=-1)
    diff = np.abs(np.cumsum(p, axis=-1) - np.cumsum(q, axis=-1))
    return _masked(np.sum(diff * widths, axis=-1), valid)


def total_variation(reference: npt.ArrayLike, current: npt.ArrayLike) -> _Float:
    """Total variation distance ``½ Σ |q_i − p_i|``, in ``[0, 1]``.

    Parameters
    ----------
    reference, current : array_like
        Bin counts, last axis = bins.

    Returns
    -------
    numpy.ndarray
        Distance per row; NaN where either side totals 0.

    Examples
    --------
    >>> import numpy as np
    >>> float(total_variation(np.array([1, 1]), np.array([1, 3])))
    0.25
    """
    p, q, valid = _proportions(reference, current)
    return _masked(0.5 * np.sum(np.abs(q - p), axis=-1), valid)
