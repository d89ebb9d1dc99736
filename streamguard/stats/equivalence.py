"""Tests against a minimum effect: "larger than a tolerance", not "different from zero".

With a million requests a 1e-6 difference is highly significant and harmless. The tests here
put the tolerance into the null hypothesis, so they reject only a difference *beyond* it:

- :func:`interval_null_p` -- ``H0: |Δ| <= tol`` for a normal estimate of Δ (two-sided
  minimum-effect test; the p-value is the supremum over the null interval, Wellek, *Testing
  Statistical Hypotheses of Equivalence and Noninferiority*, 2nd ed., 2010, §1.6);
- :func:`exceedance_p` -- ``H0: μ <= tol`` for a normal estimate of a mean (one-sided);
- :func:`binomial_sf` -- the exact binomial upper tail, ``P(X >= k)``, ``X ~ Bin(n, p)``:
  ``H0: share <= p`` for a count of events (Clopper and Pearson, Biometrika 26(4), 1934, in
  test form);
- :func:`holm` -- Holm's step-down family-wise control (Holm, "A simple sequentially
  rejective multiple test procedure", Scand. J. Statist. 6(2), 1979).

Examples
--------
>>> round(float(interval_null_p(0.03, 0.01, 0.0)), 5)  # tolerance 0: the two-sided z test
0.0027
>>> float(interval_null_p(0.0005, 1e-6, 1e-3))  # far beyond significant, but within tolerance
1.0
>>> round(binomial_sf(3, 10, 0.1), 4)
0.0702
>>> holm([0.01, 0.04, 0.03, 0.2], alpha=0.05).tolist()
[True, False, False, False]
"""

import math
from statistics import NormalDist

import numpy as np
import numpy.typing as npt

from streamguard.stats.srm import log_gamma

__all__ = ["binomial_sf", "exceedance_p", "holm", "interval_null_p", "normal_quantile"]

F64 = npt.NDArray[np.float64]

_erfc = np.vectorize(math.erfc, otypes=[np.float64])


def _normal_sf(z: F64) -> F64:
    out: F64 = 0.5 * _erfc(z / math.sqrt(2.0))
    return out


def normal_quantile(p: float) -> float:
    """``Φ⁻¹(p)`` of the standard normal, for confidence bounds.

    >>> round(normal_quantile(0.975), 4)
    1.96
    """
    return NormalDist().inv_cdf(p)


def interval_null_p(estimate: npt.ArrayLike, se: npt.ArrayLike, tolerance: float) -> F64:
    """P-value of ``H0: |Δ| <= tolerance`` from an estimate ``Δ̂ ~ N(Δ, se²)``.

    ``p = Φ̄((|Δ̂| − tol)/se) + Φ̄((|Δ̂| + tol)/se)``, the probability of ``|Δ̂|`` at least as
    large as observed at the edge of the null interval, where it is largest; with tolerance
    0 it is the two-sided z test. An ``se`` of 0 gives 0 beyond the tolerance, else 1; NaN
    estimates or standard errors give NaN.
    """
    est = np.abs(np.asarray(estimate, dtype=np.float64))
    s = np.asarray(se, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        p = _normal_sf((est - tolerance) / s) + _normal_sf((est + tolerance) / s)
    exact = np.where(est > tolerance, 0.0, 1.0)
    out: F64 = np.where(s > 0, np.minimum(p, 1.0), np.where(s == 0, exact, np.nan))
    return np.where(np.isnan(est), np.nan, out)


def exceedance_p(mean: npt.ArrayLike, se: npt.ArrayLike, tolerance: float) -> F64:
    """One-sided p-value of ``H0: μ <= tolerance`` from ``μ̂ ~ N(μ, se²)``: ``Φ̄((μ̂ − tol)/se)``.

    An ``se`` of 0 gives 0 when ``μ̂ > tol``, else 1.

    >>> round(float(exceedance_p(0.0013, 0.0001, 0.001)), 5)
    0.00135
    """
    m = np.asarray(mean, dtype=np.float64)
    s = np.asarray(se, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        p = _normal_sf((m - tolerance) / s)
    out: F64 = np.where(s > 0, p, np.where(s == 0, np.where(m > tolerance, 0.0, 1.0), np.nan))
    return np.where(np.isnan(m), np.nan, out)


def _log_pmf(x: F64, n: int, p: float) -> F64:
    out: F64 = (
        log_gamma(n + 1.0)
        - log_gamma(x + 1.0)
        - log_gamma(n - x + 1.0)
        + x * math.log(p)
        + (n - x) * math.log1p(-p)
    )
    return out


def binomial_sf(k: int, n: int, p: float) -> float:
    """``P(X >= k)`` for ``X ~ Binomial(n, p)``, exact to about 1e-12, ``0 < p < 1``.

    The sum runs over the tail on the far side of the mean (``k`` above it: ``k..``; else
    ``1 −`` the lower tail ``..k−1``), truncated 40 standard deviations plus 50 terms out,
    where the terms have long stopped mattering; so a million trials cost at most a few
    thousand terms.

    Raises
    ------
    ValueError
        If ``p`` is not in ``(0, 1)`` or ``n < 0``.
    """
    if not 0.0 < p < 1.0 or n < 0:
        raise ValueError(f"need 0 < p < 1 and n >= 0, got p={p}, n={n}")
    if k <= 0:
        return 1.0
    if k > n:
        return 0.0
    width = int(40.0 * math.sqrt(n * p * (1.0 - p)) + 50.0)
    if k > n * p:
        x = np.arange(k, min(n, k + width) + 1, dtype=np.float64)
        return min(1.0, float(np.exp(_log_pmf(x, n, p)).sum()))
    x = np.arange(max(0, k - 1 - width), k, dtype=np.float64)
    return max(0.0, 1.0 - float(np.exp(_log_pmf(x, n, p)).sum()))


def holm(p_values: npt.ArrayLike, alpha: float) -> npt.NDArray[np.bool_]:
    """Holm's step-down: which hypotheses to reject with family-wise error at most ``alpha``.

    With the ``K`` non-NaN p-values sorted ascending, reject ``p_(1) … p_(j)`` for the largest
    ``j`` such that ``p_(i) <= α / (K − i + 1)`` for every ``i <= j``. Valid under any
    dependence, and uniformly more powerful than Bonferroni. NaN entries are not hypotheses
    (never rejected, not counted).

    Raises
    ------
    ValueError
        If ``alpha`` is not in ``(0, 1]``.
    """
    if not 0.0 < alpha <= 1.0:
        raise ValueError(f"alpha must be in (0, 1], got {alpha}")
    p = np.asarray(p_values, dtype=np.float64)
    flat = p.ravel()
    tested = np.flatnonzero(~np.isnan(flat))
    out = np.zeros(flat.shape, dtype=bool)
    k = len(tested)
    if k:
        order = tested[np.argsort(flat[tested], kind="stable")]
        passes = flat[order] <= alpha / (k - np.arange(k))
        stop = k if passes.all() else int(np.argmin(passes))
        out[order[:stop]] = True
    return out.reshape(p.shape)
