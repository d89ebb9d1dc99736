"""Sample-ratio mismatch (SRM) of a multinomial mix: is the canary's slice mix as expected?

Counts put categories (slices, arms) on the LAST axis; any leading axes are independent rows
(e.g. one row per look). The expected shares ``p0`` broadcast against the counts.

- :func:`dirichlet_multinomial_log_bf` and :func:`srm_p_value` -- the sequential test of
  Lindon and Malek ("Anytime-Valid Inference for Multinomial Count Data",
  arXiv 2011.03567), valid under continuous monitoring.
- :func:`chi_square_p_value` -- the fixed-horizon Pearson χ² test, for reference (valid at
  one pre-planned look only).
- :func:`pearson_residuals` -- which category is off, and in which direction.
- :func:`log_gamma` -- ``ln Γ(x)`` in numpy, as the runtime code does not use scipy.

Validation of ``p0``: every expected share must be positive (a category with ``p0 = 0``
makes any count in it infinitely surprising; smooth such shares first, e.g. by adding a
pseudo-count to the baseline counts they come from). Each row of ``p0`` is divided by its
sum, so ``p0`` may be given as shares (rounding that misses 1 by a little is harmless) or as
positive weights such as baseline counts.

Examples
--------
>>> import numpy as np
>>> p0 = np.array([0.5, 0.3, 0.2])
>>> counts = np.array([[52, 29, 19], [70, 30, 0]])
>>> srm_p_value(counts, p0, concentration=100.0).round(5).tolist()
[1.0, 0.00051]
>>> chi_square_p_value(counts, p0).round(7).tolist()
[0.9215791, 8e-07]
"""

from __future__ import annotations

import math

import numpy as np
import numpy.typing as npt

__all__ = [
    "chi_square_p_value",
    "dirichlet_multinomial_log_bf",
    "log_gamma",
    "pearson_residuals",
    "srm_p_value",
]

_Float = npt.NDArray[np.float64]

# Stirling's series ln Γ(y) ≈ (y − ½) ln y − y + ½ ln 2π + Σ_k B_2k / (2k (2k − 1) y^(2k − 1))
# (Abramowitz & Stegun 6.1.40). For y >= 8 the first omitted term is below 1e-16.
_STIRLING_MIN = 8.0
_STIRLING = (
    1.0 / 12.0,
    -1.0 / 360.0,
    1.0 / 1260.0,
    -1.0 / 1680.0,
    1.0 / 1188.0,
    -691.0 / 360360.0,
    1.0 / 156.0,
    -3617.0 / 122400.0,
)
_HALF_LOG_2PI = 0.5 * math.log(2.0 * math.pi)
_EULER_GAMMA = 0.5772156649015329
_TAYLOR_TERMS = 30


def _zeta_minus_one(k: int) -> float:
    """``ζ(k) − 1`` for ``k >= 2``, by Euler–Maclaurin summation from n = 20 (error < 1e-20)."""
    n = 20
    head = math.fsum(float(j) ** -k for j in range(2, n))
    tail = float(n) ** (1 - k) / (k - 1) + 0.5 * float(n) ** -k
    # Σ_j B_2j / (2j)! · k (k + 1) ⋯ (k + 2j − 2) · n^(−k − 2j + 1), B_2 .. B_8.
    bernoulli = (1.0 / 6.0, -1.0 / 30.0, 1.0 / 42.0, -1.0 / 30.0)
    for j, b in enumerate(bernoulli, start=1):
        rising = math.prod(range(k, k + 2 * j - 1))
        tail += b / math.factorial(2 * j) * rising * float(n) ** (-k - 2 * j + 1)
    return head + tail


# Taylor series ln Γ(2 + ε) = (1 − γ) ε + Σ_{k≥2} (−1)^k (ζ(k) − 1) ε^k / k (A&S 6.1.33 shifted
# by ln Γ(2 + ε) = ln Γ(1 + ε) + ln(1 + ε)); for |ε| <= ½ the terms fall like 4^−k.
_TAYLOR = (
    1.0 - _EULER_GAMMA,
    *((-1.0) ** k * _zeta_minus_one(k) / k for k in range(2, _TAYLOR_TERMS + 1)),
)
_EPS = 1e-16
_MAX_ITER = 100_000
_TINY = 1e-300


def log_gamma(x: npt.ArrayLike) -> _Float:
    """``ln Γ(x)`` for ``x > 0``, elementwise, in numpy.

    Stirling's series with eight Bernoulli terms (Abramowitz & Stegun 6.1.40) for ``x >= 8``;
    below that the recurrence ``ln Γ(x) = ln Γ(x + m) − ln(x (x + 1) ⋯ (x + m − 1))`` shifts the
    argument up. On ``[½, 5/2]``, around the zeros of ``ln Γ`` at 1 and 2 where that
    subtraction would lose the relative accuracy, the Taylor series of ``ln Γ(2 + ε)`` in
    ``ε`` (coefficients from ``ζ(k) − 1``, A&S 6.1.33) is used, with
    ``ln Γ(1 + ε) = ln Γ(2 + ε) − ln(1 + ε)``. Relative error against
    ``scipy.special.gammaln`` is about 1e-13 or better over the whole domain.

    Parameters
    ----------
    x : array_like
        Arguments.

    Returns
    -------
    numpy.ndarray
        ``ln Γ(x)``; ``inf`` for ``x = inf``; NaN for ``x <= 0`` or NaN (outside the domain
        used here).

    Examples
    --------
    >>> import math
    >>> log_gamma([0.5, 1.0, 2.0, 10.0])
    array([ 0.57236494,  0.        ,  0.        , 12.80182748])
    >>> bool(abs(float(log_gamma(3.5)) - math.lgamma(3.5)) < 1e-14)
    True
    """
    arr = np.asarray(x, dtype=np.float64)
    ok = arr > 0
    y = np.where(ok & np.isfinite(arr), arr, _STIRLING_MIN)
    shift = np.ones_like(y)
    for _ in range(int(_STIRLING_MIN)):
        low = y < _STIRLING_MIN
        if not np.any(low):
            break
        shift = np.where(low, shift * y, shift)
        y = np.where(low, y + 1.0, y)
    inv = 1.0 / y
    inv2 = inv * inv
    series = np.zeros_like(y)
    for coefficient in reversed(_STIRLING):
        series = series * inv2 + coefficient
    result = np.array((y - 0.5) * np.log(y) - y + _HALF_LOG_2PI + series * inv - np.log(shift))
    near = ok & (arr >= 0.5) & (arr <= 2.5)
    if np.any(near):
        z = arr[near]
        eps = np.where(z < 1.5, z - 1.0, z - 2.0)
        taylor = np.zeros_like(eps)
        for coefficient in reversed(_TAYLOR):
            taylor = (taylor + coefficient) * eps
        result[near] = np.where(z < 1.5, taylor - np.log1p(eps), taylor)
    result = np.where(np.isposinf(arr), np.inf, result)
    return np.asarray(np.where(ok, result, np.nan), dtype=np.float64)


def _counts_and_shares(counts: npt.ArrayLike, p0: npt.ArrayLike) -> tuple[_Float, _Float]:
    """Validate, broadcast, and renormalise ``p0`` rows to sum to 1."""
    s = np.asarray(counts, dtype=np.float64)
    p = np.asarray(p0, dtype=np.float64)
    if s.ndim == 0 or p.ndim == 0:
        raise ValueError("counts and p0 must have a categories axis")
    if s.shape[-1] != p.shape[-1]:
        raise ValueError(f"counts and p0 categories differ: {s.shape} vs {p.shape}")
    if s.shape[-1] < 2:
        raise ValueError(f"need at least 2 categories, got {s.shape[-1]}")
    if not np.all(np.isfinite(s) & (s >= 0)):
        raise ValueError("counts must be finite and non-negative")
    if not np.all(np.isfinite(p) & (p > 0)):
        raise ValueError(
            "every expected share p0 must be positive and finite; smooth zero shares "
            "(e.g. add a pseudo-count to the baseline counts) before testing"
        )
    p = p / p.sum(axis=-1, keepdims=True)
    s, p = np.broadcast_arrays(s, p)
    return s, p


def dirichlet_multinomial_log_bf(
    counts: npt.ArrayLike, p0: npt.ArrayLike, concentration: float = 10_000.0
) -> _Float:
    """Log Bayes factor of a Dirichlet-multinomial alternative against the shares ``p0``.

    Lindon and Malek (arXiv 2011.03567): under the alternative the category probabilities
    are drawn once from ``Dirichlet(a)``, ``a = c · p0``; the marginal likelihood of the
    cumulative counts ``S`` is ``B(a + S) / B(a)`` times the multinomial coefficient, which
    cancels against the null likelihood ``∏ p0_k^S_k``::

        ln BF = ln B(a + S) − ln B(a) − Σ_k S_k ln p0_k,   ln B(a) = Σ_k ln Γ(a_k) − ln Γ(Σ_k a_k).

    Under the null the Bayes factor of cumulative counts is a non-negative martingale with
    mean 1 (exactly, no asymptotics), so ``P(BF_t ≥ 1/α for some t) ≤ α`` (Ville's
    inequality) however often one looks.

    The concentration ``c`` sets the prior's spread around ``p0`` (standard deviation of share
    ``k`` about ``sqrt(p0_k (1 − p0_k) / c)``): large ``c`` favours small imbalances and needs
    a sample comparable to ``c`` to gain evidence; small ``c`` reacts faster to gross ones
    (a missing category) but is weaker against subtle ones. Lindon and Malek's
    implementation (PyPI ``ssrm-test``) defaults to 10,000.

    Parameters
    ----------
    counts : array_like
        Cumulative counts, last axis = categories; non-negative.
    p0 : array_like
        Expected shares (or positive weights), broadcast against ``counts``; each row is
        renormalised to sum to 1. Every entry must be positive.
    concentration : float, default 10_000.0
        ``c > 0``.

    Returns
    -------
    numpy.ndarray
        ``ln BF`` over the leading axes; 0 for rows with no counts.

    Raises
    ------
    ValueError
        If categories differ, there are fewer than 2, counts are negative or not finite,
        any ``p0`` is not positive and finite, or ``concentration <= 0``.

    Examples
    --------
    >>> import numpy as np
    >>> dirichlet_multinomial_log_bf(np.array([[0, 0], [10, 0]]), [0.5, 0.5], 2.0).round(4)
    array([0.    , 4.5336])
    """
    if not (math.isfinite(concentration) and concentration > 0):
        raise ValueError(f"concentration must be positive and finite, got {concentration}")
    s, p = _counts_and_shares(counts, p0)
    a = concentration * p
    log_b_posterior = np.sum(log_gamma(a + s), axis=-1) - log_gamma(np.sum(a + s, axis=-1))
    log_b_prior = np.sum(log_gamma(a), axis=-1) - log_gamma(np.sum(a, axis=-1))
    null = np.sum(s * np.log(p), axis=-1)
    return np.asarray(log_b_posterior - log_b_prior - null, dtype=np.float64)


def srm_p_value(
    counts: npt.ArrayLike, p0: npt.ArrayLike, concentration: float = 10_000.0
) -> _Float:
    """Instantaneous sequential SRM p-value ``min(1, 1/BF)`` (Lindon and Malek).

    Keep the running minimum across looks (``p_t = min(p_{t−1}, 1/BF_t)``) with
    :func:`streamguard.stats.sequential.running_p`; that running minimum is the always-valid
    p-value. Fixed-horizon SRM checks conventionally alarm at p < 0.001.

    Parameters
    ----------
    counts, p0, concentration
        As for :func:`dirichlet_multinomial_log_bf`.

    Returns
    -------
    numpy.ndarray
        P-values in ``(0, 1]`` over the leading axes.

    Examples
    --------
    >>> import numpy as np
    >>> srm_p_value(np.array([[25, 25], [50, 0]]), [0.5, 0.5], 10.0)
    array([1.00000000e+00, 3.52901905e-11])
    """
    log_bf = dirichlet_multinomial_log_bf(counts, p0, concentration)
    with np.errstate(over="ignore"):
        return np.asarray(np.minimum(1.0, np.exp(-log_bf)), dtype=np.float64)


def pearson_residuals(counts: npt.ArrayLike, p0: npt.ArrayLike) -> _Float:
    """Pearson residuals ``(O − E) / sqrt(E)``, ``E = n · p0``: which category is off.

    Positive: more than expected. Their squares sum to the Pearson χ² statistic.

    Parameters
    ----------
    counts, p0 : array_like
        As for :func:`dirichlet_multinomial_log_bf`.

    Returns
    -------
    numpy.ndarray
        Same shape as the broadcast counts; NaN in rows with no counts.

    Examples
    --------
    >>> pearson_residuals([60, 40, 0], [0.5, 0.3, 0.2])
    array([ 1.41421356,  1.82574186, -4.47213595])
    """
    s, p = _counts_and_shares(counts, p0)
    n = s.sum(axis=-1, keepdims=True)
    expected = n * p
    ok = expected > 0
    safe = np.where(ok, expected, 1.0)
    return np.asarray(np.where(ok, (s - expected) / np.sqrt(safe), np.nan), dtype=np.float64)


def chi_square_p_value(counts: npt.ArrayLike, p0: npt.ArrayLike) -> _Float:
    """Fixed-horizon Pearson χ² goodness-of-fit p-value, ``df = K − 1``.

    ``X² = Σ_k (O_k − E_k)² / E_k`` and ``p = Q((K − 1)/2, X²/2)``, the regularized upper
    incomplete gamma function (the χ² survival function), computed by its power series or
    its continued fraction (Press et al., Numerical Recipes, §6.2). Valid at one pre-planned
    look: re-running it on cumulative counts at every look inflates the false-alarm rate,
    which is what :func:`srm_p_value` avoids.

    Parameters
    ----------
    counts, p0 : array_like
        As for :func:`dirichlet_multinomial_log_bf`.

    Returns
    -------
    numpy.ndarray
        P-values over the leading axes; NaN in rows with no counts.

    Examples
    --------
    >>> round(float(chi_square_p_value([60, 40], [0.5, 0.5])), 6)
    0.0455
    """
    s, p = _counts_and_shares(counts, p0)
    n = s.sum(axis=-1, keepdims=True)
    expected = n * p
    ok = expected[..., 0] > 0
    safe = np.where(expected > 0, expected, 1.0)
    statistic = np.sum((s - expected) ** 2 / safe, axis=-1)
    df = s.shape[-1] - 1
    q = _gamma_q(np.full(statistic.shape, df / 2.0), statistic / 2.0)
    return np.asarray(np.where(ok, q, np.nan), dtype=np.float64)


def _gamma_q(a: npt.ArrayLike, x: npt.ArrayLike) -> _Float:
    """Regularized upper incomplete gamma ``Q(a, x) = Γ(a, x) / Γ(a)``, elementwise.

    Series for ``P = 1 − Q`` when ``x < a + 1``, Lentz's continued fraction for ``Q``
    otherwise (Numerical Recipes §6.2). NaN where ``a <= 0``, ``x < 0`` or an input is NaN.
    """
    aa, xx = np.broadcast_arrays(np.asarray(a, dtype=np.float64), np.asarray(x, dtype=np.float64))
    out = np.full(aa.shape, np.nan)
    valid = (aa > 0) & np.isfinite(aa) & (xx >= 0)
    out[valid & (xx == 0)] = 1.0
    out[valid & np.isposinf(xx)] = 0.0
    inner = valid & (xx > 0) & np.isfinite(xx)
    series = inner & (xx < aa + 1)
    fraction = inner & ~series
    if np.any(series):
        out[series] = 1.0 - _gamma_p_series(aa[series], xx[series])
    if np.any(fraction):
        out[fraction] = _gamma_q_fraction(aa[fraction], xx[fraction])
    return out


def _log_prefactor(a: _Float, x: _Float) -> _Float:
    return np.asarray(a * np.log(x) - x - log_gamma(a), dtype=np.float64)


def _gamma_p_series(a: _Float, x: _Float) -> _Float:
    """``P(a, x) = e^−x x^a / Γ(a) · Σ_n x^n / (a (a + 1) ⋯ (a + n))``, for ``x < a + 1``."""
    term = 1.0 / a
    total = term.copy()
    denominator = a.copy()
    active = np.ones(a.shape, dtype=bool)
    for _ in range(_MAX_ITER):
        denominator = denominator + 1.0
        term = np.where(active, term * x / denominator, 0.0)
        total = total + term
        active = active & (np.abs(term) >= np.abs(total) * _EPS)
        if not np.any(active):
            break
    return np.asarray(np.minimum(total * np.exp(_log_prefactor(a, x)), 1.0), dtype=np.float64)


def _gamma_q_fraction(a: _Float, x: _Float) -> _Float:
    """``Q(a, x)`` by the modified Lentz continued fraction, for ``x >= a + 1``."""
    b = x + 1.0 - a
    c = np.full(a.shape, 1.0 / _TINY)
    d = 1.0 / b
    h = d.copy()
    active = np.ones(a.shape, dtype=bool)
    for i in range(1, _MAX_ITER):
        an = -i * (i - a)
        b = b + 2.0
        d = an * d + b
        d = np.where(np.abs(d) < _TINY, _TINY, d)
        c = b + an / c
        c = np.where(np.abs(c) < _TINY, _TINY, c)
        d = 1.0 / d
        step = np.where(active, d * c, 1.0)
        h = h * step
        active = active & (np.abs(step - 1.0) >= _EPS)
        if not np.any(active):
            break
    return np.asarray(np.exp(_log_prefactor(a, x)) * h, dtype=np.float64)
