"""Many slices at once: false-discovery-rate control and a mix-adjusted comparison.

- :func:`benjamini_hochberg` -- BH step-up on p-values (Benjamini and Hochberg, "Controlling
  the false discovery rate", JRSS-B 57(1), 1995).
- :func:`e_benjamini_hochberg` -- e-BH on e-values (Wang and Ramdas, "False discovery rate
  control with e-values", JRSS-B 84(3), 2022), valid under any dependence between slices.
- :func:`post_stratified_difference` -- canary minus baseline reweighted to the population
  mix of strata (Miratrix, Sekhon and Yu, "Adjusting treatment effect estimates by
  post-stratification in randomized experiments", JRSS-B 75(2), 2013), which removes
  Simpson's paradox caused by a canary whose traffic mix differs from the baseline's.

The testing functions treat every entry of their input (any shape) as one hypothesis of a
single family. NaN marks a slice without a test (no data yet): it is never rejected and does
not count in the number of hypotheses ``K``. Keep the global (all traffic) test apart from
the slice family.

Examples
--------
>>> import numpy as np
>>> benjamini_hochberg(np.array([0.001, 0.02, 0.04, np.nan, 0.5]), alpha=0.05)
array([ True,  True, False, False, False])
>>> e_benjamini_hochberg(np.array([200.0, 30.0, 1.0, np.nan]), alpha=0.05)
array([ True,  True, False, False])
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

__all__ = [
    "PostStratified",
    "benjamini_hochberg",
    "e_benjamini_hochberg",
    "post_stratified_difference",
]

_Float = npt.NDArray[np.float64]
_Bool = npt.NDArray[np.bool_]


def _check_alpha(alpha: float) -> None:
    if not 0.0 < alpha <= 1.0:
        raise ValueError(f"alpha must be in (0, 1], got {alpha}")


def benjamini_hochberg(p_values: npt.ArrayLike, alpha: float) -> _Bool:
    """Benjamini–Hochberg step-up: which hypotheses to reject at FDR level ``alpha``.

    With the ``K`` non-NaN p-values sorted ascending, ``p_(1) <= … <= p_(K)``, reject the
    ``k*`` smallest, ``k* = max{k : p_(k) <= k α / K}`` (none if no ``k`` qualifies). Every
    p-value ``<= p_(k*)`` is rejected, so ties are treated alike. Controls the FDR at ``α``
    for independent or positively dependent (PRDS) p-values; under arbitrary dependence use
    :func:`e_benjamini_hochberg`. Always-valid p-values (running minima) stay valid at a
    data-dependent look, but a stopping rule that watches all slices makes them dependent,
    so the FDR guarantee of BH at such a look is not assured; e-BH needs no such assumption.

    Parameters
    ----------
    p_values : array_like
        P-values, any shape; NaN entries are not hypotheses (never rejected, not counted in
        ``K``).
    alpha : float
        Target false discovery rate, in ``(0, 1]``.

    Returns
    -------
    numpy.ndarray
        Boolean rejections, same shape as ``p_values``.

    Raises
    ------
    ValueError
        If ``alpha`` is not in ``(0, 1]`` or a p-value is outside ``[0, 1]``.

    Examples
    --------
    >>> benjamini_hochberg([0.01, 0.04, 0.03, 0.2], alpha=0.05)
    array([ True, False, False, False])
    >>> benjamini_hochberg([0.01, 0.025, 0.03, 0.2], alpha=0.05)
    array([ True,  True,  True, False])
    """
    _check_alpha(alpha)
    p = np.asarray(p_values, dtype=np.float64)
    finite = ~np.isnan(p)
    if np.any((p[finite] < 0) | (p[finite] > 1)):
        raise ValueError("p-values must be in [0, 1]")
    ordered = np.sort(p[finite])
    k = ordered.size
    if k == 0:
        return np.zeros(p.shape, dtype=bool)
    passing = np.nonzero(ordered <= alpha * np.arange(1, k + 1) / k)[0]
    if passing.size == 0:
        return np.zeros(p.shape, dtype=bool)
    threshold = ordered[passing[-1]]
    return np.asarray(finite & (np.where(finite, p, np.inf) <= threshold), dtype=bool)


def e_benjamini_hochberg(e_values: npt.ArrayLike, alpha: float) -> _Bool:
    """e-BH (Wang and Ramdas 2022): which hypotheses to reject at FDR level ``alpha``.

    With the ``K`` non-NaN e-values sorted descending, ``e_(1) >= … >= e_(K)``, reject the
    ``k*`` largest, ``k* = max{k : e_(k) >= K / (α k)}`` (none if no ``k`` qualifies). It
    controls the FDR at ``α`` under arbitrary dependence between the e-values. Use e-values of
    the current look (e.g. the mSPRT's ``Λ_t = exp(log_lr)`` or a Bayes factor), not running
    maxima of them: a running maximum is not an e-value at a stopping time, and Wang and
    Ramdas's guarantee is lost (see also arXiv 2501.19360).

    e-BH on ``e = 1/p`` makes exactly the decisions of BH on ``p`` (the two inequalities
    coincide); note ``1/p`` is not itself a valid e-value for a uniform ``p``.

    Parameters
    ----------
    e_values : array_like
        Non-negative e-values (``inf`` allowed), any shape; NaN entries are not hypotheses.
    alpha : float
        Target false discovery rate, in ``(0, 1]``.

    Returns
    -------
    numpy.ndarray
        Boolean rejections, same shape as ``e_values``.

    Raises
    ------
    ValueError
        If ``alpha`` is not in ``(0, 1]`` or an e-value is negative.

    Examples
    --------
    >>> e_benjamini_hochberg([90.0, 45.0, 10.0, 1.0], alpha=0.05)
    array([ True,  True, False, False])
    """
    _check_alpha(alpha)
    e = np.asarray(e_values, dtype=np.float64)
    finite = ~np.isnan(e)
    if np.any(e[finite] < 0):
        raise ValueError("e-values must be non-negative")
    ordered = -np.sort(-e[finite])
    k = ordered.size
    if k == 0:
        return np.zeros(e.shape, dtype=bool)
    passing = np.nonzero(ordered >= k / (alpha * np.arange(1, k + 1)))[0]
    if passing.size == 0:
        return np.zeros(e.shape, dtype=bool)
    threshold = ordered[passing[-1]]
    return np.asarray(finite & (np.where(finite, e, -np.inf) >= threshold), dtype=bool)


@dataclass(frozen=True)
class PostStratified:
    """Result of :func:`post_stratified_difference`, arrays over the leading axes.

    Attributes
    ----------
    estimate : numpy.ndarray
        ``Σ_covered w̃_s (ȳ_c,s − ȳ_b,s)``; NaN without covered strata.
    variance : numpy.ndarray
        ``Σ_covered w̃_s² (s²_c,s / n_c,s + s²_b,s / n_b,s)``; NaN without covered strata.
    covered_weight : numpy.ndarray
        Share of the total weight in covered strata, in ``[0, 1]``.
    uncovered : numpy.ndarray
        Boolean mask over strata (shape of the weights): either arm has fewer than ``min_n``.
    n_canary, n_baseline : numpy.ndarray
        Observation totals over covered strata.
    """

    estimate: _Float
    variance: _Float
    covered_weight: _Float
    uncovered: _Bool
    n_canary: _Float
    n_baseline: _Float


def post_stratified_difference(
    canary: npt.ArrayLike,
    baseline: npt.ArrayLike,
    weights: npt.ArrayLike,
    min_n: int,
) -> PostStratified:
    """Canary minus baseline mean, reweighted to the population mix of strata.

    Post-stratification (Miratrix, Sekhon and Yu 2013): with population shares ``w_s``,
    ``τ̂ = Σ_s w_s (ȳ_c,s − ȳ_b,s)`` and ``Var(τ̂) ≈ Σ_s w_s² (s²_c,s / n_c,s + s²_b,s / n_b,s)``
    (their variance conditional on the stratum sizes, without finite-population terms).
    Comparing the pooled means instead mixes the arms' differences with their different
    stratum mixes and can even reverse the sign (Simpson's paradox).

    A stratum is *uncovered* when either arm has fewer than ``min_n`` observations there: it
    cannot be reweighted, so the estimate is over the covered strata with their weights
    renormalised to sum to 1 (``w̃_s = w_s / Σ_covered w``), and ``covered_weight`` reports how
    much of the population that estimate speaks for. Sample variances are unbiased
    (``ddof = 1``); with ``min_n < 2`` a covered stratum with a single observation in an arm
    makes ``variance`` NaN.

    Parameters
    ----------
    canary, baseline : array_like
        Per-stratum moments, shape ``(..., S, 3)`` with last axis ``(n, mean, m2)``.
    weights : array_like
        Non-negative population weights of the strata, shape ``(..., S)`` (need not sum to 1).
    min_n : int
        Minimum observations per arm for a stratum to be covered; at least 1.

    Returns
    -------
    PostStratified
        Estimate, variance, covered weight, uncovered mask and covered sample sizes. Without
        covered strata (or when they all have weight 0): estimate and variance NaN and
        covered weight 0.

    Raises
    ------
    ValueError
        If shapes do not match, a weight is negative or not finite, a row of weights sums to
        0, or ``min_n < 1``.

    Examples
    --------
    >>> import numpy as np
    >>> canary = np.array([[100.0, 0.11, 9.79], [900.0, 0.51, 224.91], [3.0, 1.0, 0.0]])
    >>> baseline = np.array([[900.0, 0.10, 81.0], [100.0, 0.50, 25.0], [500.0, 0.2, 80.0]])
    >>> r = post_stratified_difference(canary, baseline, [0.45, 0.45, 0.1], min_n=30)
    >>> round(float(r.estimate), 4), float(r.covered_weight), r.uncovered.tolist()
    (0.01, 0.9, [False, False, True])
    """
    if min_n < 1:
        raise ValueError(f"min_n must be at least 1, got {min_n}")
    c = np.asarray(canary, dtype=np.float64)
    b = np.asarray(baseline, dtype=np.float64)
    w = np.asarray(weights, dtype=np.float64)
    if c.ndim < 2 or c.shape[-1] != 3 or b.shape != c.shape:
        raise ValueError(
            f"canary and baseline must both have shape (..., S, 3), got {c.shape}, {b.shape}"
        )
    if w.shape != c.shape[:-1]:
        try:
            w = np.broadcast_to(w, c.shape[:-1])
        except ValueError:
            raise ValueError(
                f"weights shape {w.shape} does not match strata {c.shape[:-1]}"
            ) from None
    if not np.all(np.isfinite(w) & (w >= 0)):
        raise ValueError("weights must be finite and non-negative")
    total = w.sum(axis=-1)
    if np.any(total <= 0):
        raise ValueError("each row of weights must have a positive sum")
    nc, nb = c[..., 0], b[..., 0]
    covered = (nc >= min_n) & (nb >= min_n)
    cw = np.where(covered, w, 0.0)
    covered_total = cw.sum(axis=-1)
    has = covered_total > 0
    wt = cw / np.where(has, covered_total, 1.0)[..., None]
    diff = np.where(covered, c[..., 1] - b[..., 1], 0.0)
    with np.errstate(divide="ignore", invalid="ignore"):
        var_c = c[..., 2] / ((nc - 1) * nc)
        var_b = b[..., 2] / ((nb - 1) * nb)
        # A stratum with n = 1 in an arm has no variance estimate: NaN propagates if covered.
        per_stratum = np.where(covered, np.where((nc >= 2) & (nb >= 2), var_c + var_b, np.nan), 0.0)
    estimate = np.where(has, np.sum(wt * diff, axis=-1), np.nan)
    variance = np.where(has, np.sum(wt * wt * per_stratum, axis=-1), np.nan)
    return PostStratified(
        estimate=np.asarray(estimate, dtype=np.float64),
        variance=np.asarray(variance, dtype=np.float64),
        covered_weight=np.asarray(covered_total / total, dtype=np.float64),
        uncovered=np.asarray(~covered, dtype=bool),
        n_canary=np.asarray(np.where(covered, nc, 0.0).sum(axis=-1), dtype=np.float64),
        n_baseline=np.asarray(np.where(covered, nb, 0.0).sum(axis=-1), dtype=np.float64),
    )
