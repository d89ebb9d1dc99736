"""Change detection on the last few windows: a window-limited Shiryaev-Roberts sum of mSPRTs.

The canary guard's cumulative mSPRT (:mod:`streamguard.stats.sequential`) judges a canary on
everything since it started. That is what makes its error guarantee hold over the canary's
whole life, and also what slows it down after an abrupt failure: ten minutes of healthy
history dilute the first window of a tenfold error rate. A change detector asks instead
whether the data *since some recent window* differ.

For each of the last ``K`` windows as a candidate start ``k``, :func:`msprt` on the data of
windows ``k..n`` only (canary and baseline summed over those windows) gives a mixture
likelihood ratio ``Λ_{k:n}``. The statistic is their sum::

    R_n = Σ_{k = n−K+1}^{n} Λ_{k:n},    alarm when R_n ≥ A.

This is the Shiryaev-Roberts statistic (Roberts, "A comparison of some control chart
procedures", Technometrics 8(3), 1966; Pollak, "Optimal detection of a change in
distribution", Annals of Statistics 13(1), 1985) limited to the last ``K`` starts, as Lai
limits the generalized likelihood ratio to a window ("Information bounds and quick
detection of parameter changes in stochastic systems", IEEE Trans. Inf. Theory 44(7), 1998).
Summing likelihood ratios (e-processes) started at different times is the "e-detector" of
Shin, Ramdas & Rinaldo ("E-detectors: a nonparametric framework for sequential change
detection", New England Journal of Statistics in Data Science, 2023).

The guarantee. With no difference between canary and baseline in any of the last ``K``
windows, each ``Λ_{k:n}`` has mean 1 under the normal model with known variances (a
normal-mixture likelihood ratio, see :mod:`streamguard.stats.sequential`), so
``E[R_n] ≤ K`` and by Markov's inequality ``P(R_n ≥ A) ≤ K / A`` at each look (a marginal
bound per look, not conditional on the looks before). Over ``L`` looks and ``m`` tests, the
expected number of false alarms is at most ``L · m · K / A`` (linearity of expectation: no
independence between looks or tests is needed). :func:`change_threshold`
turns a budget of expected false alarms per look into ``ln A``. This is a rate, not a
probability over a lifetime: like every change detector (CUSUM included), a detector that
keeps watching will eventually cry wolf, which is why it may only pause a rollout and the
cumulative test alone rolls back. Dropping terms (a start with too few samples, an estimate
on the harmless side) only lowers ``R_n`` and keeps the bound.

The same approximations as the mSPRT's apply (normal estimates, plug-in variances), and here
at a far smaller tail probability: ``ln A`` is typically 15-20, where a normal approximation
of a rare binary event's count is poor. The simulations in
``tests/unit/stats/test_change.py`` measure the statistic on healthy Bernoulli data (1 %,
8 %) with the canary guard's minimum sample, against the bound up to ``ln R = 6`` and against
a guard-sized threshold (nothing in 400,000 looks comes near it); they cannot see the tail at
``e^-15`` itself. For rare events the plug-in variance of the canary's own rate makes the
test conservative: a few errors in a small slice raise the variance with the mean.

Examples
--------
A tenfold error rate in the last window, after five healthy ones (750 canary and 2,250
baseline requests per window, errors at 1 %):

>>> import numpy as np
>>> def window(n, p):
...     return np.array([n, p, n * p * (1 - p)])
>>> canary = [window(750, 0.01)] * 5 + [window(750, 0.10)]
>>> baseline = [window(2250, 0.01)] * 6
>>> c, b = suffix_moments(np.stack(canary)), suffix_moments(np.stack(baseline))
>>> result = change_statistic(c, b, tau=0.005)
>>> threshold = change_threshold(tests=3, windows=6, alarms_per_look=0.05 / 8640 / 2)
>>> round(threshold, 2), round(float(result.log_stat), 2), int(result.start)
(15.64, 28.83, 0)
>>> float(result.log_stat) >= threshold
True
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from streamguard.stats.moments import merge_moments
from streamguard.stats.sequential import msprt

__all__ = ["SCALES", "Change", "change_statistic", "change_threshold", "suffix_moments"]

_Float = npt.NDArray[np.float64]
#: Multiples of the smallest effect worth catching mixed into each likelihood ratio.
SCALES = (1.0, 4.0, 16.0)


@dataclass(frozen=True)
class Change:
    """Window-limited Shiryaev-Roberts statistic per row.

    Attributes
    ----------
    log_stat : numpy.ndarray
        ``ln R_n``; ``-inf`` where no start counts.
    start : numpy.ndarray
        Index of the start with the largest ``Λ`` (0 = the latest window alone, ``K − 1`` = all
        ``K``); ``-1`` where no start counts.
    delta, variance : numpy.ndarray
        The difference estimate and its variance from that start (NaN where none).
    """

    log_stat: _Float
    start: npt.NDArray[np.int64]
    delta: _Float
    variance: _Float


def suffix_moments(windows: npt.ArrayLike) -> _Float:
    """Moments of the last 1, 2, ..., K windows from per-window moments.

    Parameters
    ----------
    windows : array_like
        Shape ``(K, ..., 3)``, oldest window first, last axis ``(n, mean, m2)``.

    Returns
    -------
    numpy.ndarray
        Same shape; entry ``j`` merges the last ``j + 1`` windows.

    Examples
    --------
    >>> import numpy as np
    >>> w = np.array([[2.0, 1.0, 0.0], [2.0, 3.0, 0.0]])
    >>> suffix_moments(w).tolist()
    [[2.0, 3.0, 0.0], [4.0, 2.0, 4.0]]
    """
    w = np.asarray(windows, dtype=np.float64)
    if w.ndim < 2 or w.shape[-1] != 3:
        raise ValueError(f"windows must have shape (K, ..., 3), got {w.shape}")
    out = np.empty_like(w)
    total = w[-1]
    out[0] = total
    for j in range(1, w.shape[0]):  # K is a handful of windows, each step vectorised over rows
        total = merge_moments(total, w[-1 - j])
        out[j] = total
    return out


def change_statistic(
    canary: npt.ArrayLike,
    baseline: npt.ArrayLike,
    tau: float | npt.ArrayLike,
    counts: npt.ArrayLike | None = None,
    scales: tuple[float, ...] = SCALES,
) -> Change:
    """``ln Σ_k Λ_{k:n}`` over the candidate starts, per row.

    Each ``Λ_{k:n}`` is the mean of the mSPRT likelihood ratios at mixing scales
    ``τ · s`` for ``s`` in ``scales``: a mean of likelihood ratios with mean 1 has mean 1, so
    the guarantee holds, and a gross effect on a few windows is caught at the larger scales
    where the smallest alone (``τ`` = the smallest effect worth catching) grows slowly.

    Parameters
    ----------
    canary, baseline : array_like
        Suffix moments, shape ``(K, ..., 3)`` as from :func:`suffix_moments`.
    tau : float or array_like
        Mixing scale of :func:`~streamguard.stats.sequential.msprt`, broadcast over the rows
        (not over the starts).
    counts : array_like of bool, optional
        Shape ``(K, ...)``: which starts may count (e.g. enough samples in both arms, an
        estimate on the harmful side). All by default.
    scales : tuple of float, default (1, 4, 16)
        Multiples of ``tau`` mixed with equal weights.

    Returns
    -------
    Change
    """
    if not scales or min(scales) <= 0:
        raise ValueError(f"scales must be positive, got {scales!r}")
    c = np.asarray(canary, dtype=np.float64)
    b = np.asarray(baseline, dtype=np.float64)
    t = np.broadcast_to(np.asarray(tau, dtype=np.float64), c.shape[1:-1])
    results = [msprt(c, b, t * s) for s in scales]
    result = results[0]  # delta and variance do not depend on the scale
    log_lr = _log_mean_exp(np.stack([r.log_lr for r in results]))
    valid = np.isfinite(result.delta)
    if counts is not None:
        valid &= np.asarray(counts, dtype=bool)
    terms = np.where(valid, log_lr, -np.inf)
    log_stat = _log_mean_exp(terms) + math.log(terms.shape[0])
    finite = ~np.isneginf(log_stat)
    start = np.where(finite, terms.argmax(axis=0), -1)
    at = np.maximum(start, 0)[None]
    delta = np.take_along_axis(result.delta, at, axis=0)[0]
    variance = np.take_along_axis(result.variance, at, axis=0)[0]
    return Change(
        log_stat=np.asarray(log_stat, dtype=np.float64),
        start=np.asarray(start, dtype=np.int64),
        delta=np.where(finite, delta, np.nan),
        variance=np.where(finite, variance, np.nan),
    )


def _log_mean_exp(x: _Float) -> _Float:
    """``ln mean(exp(x))`` over the first axis, stable.

    ``-inf`` where every entry is, ``+inf`` where any entry is (overwhelming evidence must not
    vanish as NaN).
    """
    top = x.max(axis=0)
    finite = np.isfinite(top)
    with np.errstate(invalid="ignore"):
        shifted = np.exp(x - np.where(finite, top, 0.0)[None])
        mean = shifted.mean(axis=0)
        value = top + np.log(np.where(finite, mean, 1.0))
    return np.asarray(np.where(finite, value, top), dtype=np.float64)


def change_threshold(tests: int, windows: int, alarms_per_look: float) -> float:
    """``ln A`` keeping the expected false alarms per look within ``alarms_per_look``.

    ``m`` tests of ``K`` starts each: ``A = m · K / alarms_per_look`` (module docstring).

    Examples
    --------
    >>> round(change_threshold(tests=3, windows=6, alarms_per_look=1e-6), 3)
    16.706
    """
    if tests < 1 or windows < 1:
        raise ValueError(f"tests and windows must be at least 1, got {tests} and {windows}")
    if not (0 < alarms_per_look < 1) or not math.isfinite(alarms_per_look):
        raise ValueError(f"alarms_per_look must be in (0, 1), got {alarms_per_look!r}")
    return math.log(tests) + math.log(windows) - math.log(alarms_per_look)
