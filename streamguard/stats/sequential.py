"""Always-valid tests for a difference of means (canary minus baseline).

A canary is compared with its baseline again and again as data arrive. A fixed-horizon
z-test re-run at every look raises false alarms far more often than its nominal level; the
mixture sequential probability ratio test (mSPRT) of Johari, Pekelis and Walsh ("Always
Valid Inference: Continuous Monitoring of A/B Tests", Operations Research 70(3), 2022) gives
p-values and confidence sequences that stay valid however often, and whenever, one looks.

Inputs are summary moments with the last axis ``(n, mean, m2)``, ``m2 = Σ (x − mean)²``, as
in :mod:`streamguard.stats.moments`, cumulative since the comparison started; any leading
axes are independent rows (slices, metrics). Results are arrays over the leading axes.

The model. With ``Δ̂ = mean_c − mean_b`` approximately ``N(θ, v)``, ``v = s²_c/n_c + s²_b/n_b``,
the likelihood ratio of "θ drawn from the mixing prior ``N(θ0, τ²)``" against "θ = θ0" is
the ratio of two normal densities of ``Δ̂``, ``N(θ0, v + τ²)`` over ``N(θ0, v)``::

    Λ = sqrt(v / (v + τ²)) · exp( τ² (Δ̂ − θ0)² / (2 v (v + τ²)) ).

Under ``θ = θ0`` the mixture likelihood ratio is a non-negative martingale with mean 1, so by
Ville's inequality ``P(Λ_t ≥ 1/α for some t) ≤ α``: ``1/Λ`` kept as a running minimum
(:func:`running_p`) is an always-valid p-value.

When is that guarantee real? It is exact for normal observations with known variances when
the allocation ratio ``n_c / n_b`` stays fixed, because ``Δ̂ / v`` is then a Brownian motion
with drift θ in the "information time" ``1 / v``. In practice it is asymptotic: it relies on

- independent observations whose distribution in each arm does not change while monitoring
  (a drifting baseline is a real difference as far as the test is concerned);
- the central limit theorem for each arm's mean (poor with few observations or very rare
  events, so callers should wait for a minimum sample before acting);
- the plug-in variance ``v`` (unbiased sample variances) in place of the known variance the
  mSPRT assumes; and
- a roughly stable allocation ratio.

The simulations in ``tests/unit/stats/test_sequential.py`` measure the false-alarm rate for
Bernoulli and normal data with 20–50 observations per arm per look over 200 looks.

The mixing scale ``τ`` (in the metric's own units) should be about the smallest difference
worth catching: the test is most powerful for effects near ``τ``. The price of a small ``τ``
is paid early: while ``v ≫ τ²`` (few data), ``ln Λ ≈ τ² Δ̂² / (2 v²)`` grows slowly even for
a gross effect, e.g. 50 all-failing canary requests against 50 all-passing baseline ones
give only ``p ≈ 0.15`` with ``τ = 0.02``; evidence builds once ``v`` falls towards ``τ²``.

Examples
--------
>>> import numpy as np
>>> n = 4000.0  # 0/1 outcomes: m2 = n p (1 - p)
>>> canary = np.array([[n, 0.12, n * 0.12 * 0.88], [n, 0.10, n * 0.10 * 0.90]])
>>> baseline = np.array([n, 0.10, n * 0.10 * 0.90])
>>> result = msprt(canary, baseline, tau=0.02)
>>> result.p_value.round(4)
array([0.0793, 1.    ])
>>> running_p([0.01, np.nan], result.p_value).round(4)
array([0.01, 1.  ])
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

__all__ = ["Msprt", "confidence_sequence", "msprt", "normal_mixture_p_value", "running_p"]

_Float = npt.NDArray[np.float64]


@dataclass(frozen=True)
class Msprt:
    """Result of :func:`msprt`, arrays over the inputs' leading axes.

    Attributes
    ----------
    delta : numpy.ndarray
        ``mean_c − mean_b``; NaN for rows without evidence (see :func:`msprt`).
    variance : numpy.ndarray
        The variance ``v`` of ``delta`` used in ``log_lr`` (after the zero-variance rule of
        :func:`msprt`); NaN for rows without evidence.
    log_lr : numpy.ndarray
        ``ln Λ``, the log mixture likelihood ratio (an e-value on the log scale); 0 for rows
        without evidence.
    p_value : numpy.ndarray
        ``min(1, 1/Λ)`` at this look only; keep the running minimum with :func:`running_p`.
    """

    delta: _Float
    variance: _Float
    log_lr: _Float
    p_value: _Float


def _moments(m: npt.ArrayLike, name: str) -> _Float:
    arr = np.asarray(m, dtype=np.float64)
    if arr.ndim == 0 or arr.shape[-1] != 3:
        raise ValueError(f"{name} must have a last axis of (n, mean, m2), got shape {arr.shape}")
    return arr


def _positive(value: float | npt.ArrayLike, name: str) -> _Float:
    arr = np.asarray(value, dtype=np.float64)
    with np.errstate(over="ignore", under="ignore"):
        square = arr * arr
    # τ² must be a positive finite number too (|τ| within about 1e-154 .. 1e154).
    if not np.all(np.isfinite(square) & (arr > 0) & (square > 0)):
        raise ValueError(f"{name} must be positive and finite, got {value!r}")
    return arr


def msprt(
    canary: npt.ArrayLike,
    baseline: npt.ArrayLike,
    tau: float | npt.ArrayLike,
    theta0: float = 0.0,
) -> Msprt:
    """Mixture SPRT of ``mean_c − mean_b = θ0`` from cumulative moments (Johari et al. 2022).

    ``Δ̂ = mean_c − mean_b``, ``v = s²_c/n_c + s²_b/n_b`` with unbiased (``ddof = 1``) sample
    variances, and with the mixing prior ``N(θ0, τ²)``::

        ln Λ = ½ ln(v / (v + τ²)) + τ² (Δ̂ − θ0)² / (2 v (v + τ²)),   p = min(1, 1/Λ).

    Rows without evidence give ``delta = variance = NaN``, ``log_lr = 0`` and ``p_value = 1``
    (never an error or a warning): either arm has ``n < 2``, a value is not finite, or every
    value in both arms is the same.

    Zero variance with different means. If each arm is constant (``m2 = 0`` in both, e.g.
    all-0 against all-1 Bernoulli outcomes) the plug-in ``v`` is 0 although the means differ.
    Then ``v`` is replaced by the pooled (null-hypothesis) variance of the classical
    two-sample test: the sample variance of both arms merged, times ``1/n_c + 1/n_b``. It is
    positive whenever the means differ, and for 0/1 data it is the pooled two-proportion
    variance ``p̄ (1 − p̄) (1/n_c + 1/n_b)`` (up to the factor ``n / (n − 1)``). If only one
    arm is constant, the larger of the plug-in and the pooled variance is used: a canary with
    no error in its first 200 requests has a plug-in variance of 0 for a rate that is not 0,
    and against a 1 % baseline that looked like overwhelming evidence.

    Parameters
    ----------
    canary, baseline : array_like
        Cumulative moments, last axis ``(n, mean, m2)``; leading axes broadcast.
    tau : float or array_like
        Standard deviation of the mixing prior, in the metric's units (about the smallest
        difference worth catching); broadcasts over the leading axes. Must be positive.
    theta0 : float, default 0.0
        Difference under the null hypothesis.

    Returns
    -------
    Msprt
        ``delta``, ``variance``, ``log_lr`` and the instantaneous ``p_value``.

    Raises
    ------
    ValueError
        If an input lacks the ``(n, mean, m2)`` axis or ``tau`` is not positive and finite.

    Examples
    --------
    >>> import numpy as np
    >>> r = msprt(np.array([1000.0, 0.5, 250.0]), np.array([1000.0, 0.4, 240.0]), tau=0.05)
    >>> round(float(r.delta), 6), round(float(r.variance), 6), round(float(r.log_lr), 3)
    (0.1, 0.00049, 7.618)
    >>> float(r.p_value) < 0.001
    True
    >>> msprt(np.array([1.0, 3.0, 0.0]), np.array([50.0, 0.0, 9.0]), tau=0.1).p_value
    array(1.)
    """
    c, b = np.broadcast_arrays(_moments(canary, "canary"), _moments(baseline, "baseline"))
    t = _positive(tau, "tau")
    nc, mc, m2c = c[..., 0], c[..., 1], np.maximum(c[..., 2], 0.0)
    nb, mb, m2b = b[..., 0], b[..., 1], np.maximum(b[..., 2], 0.0)
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        enough = (nc >= 2) & (nb >= 2)
        safe_nc = np.where(enough, nc, 2.0)
        safe_nb = np.where(enough, nb, 2.0)
        delta = mc - mb
        v = m2c / ((safe_nc - 1) * safe_nc) + m2b / ((safe_nb - 1) * safe_nb)
        # Pooled variance of both arms merged (Chan et al. merge), for constant arms only.
        n = safe_nc + safe_nb
        pooled_m2 = m2c + m2b + delta * delta * safe_nc * safe_nb / n
        pooled_v = pooled_m2 / (n - 1) * (1 / safe_nc + 1 / safe_nb)
        v = np.where((m2c > 0) & (m2b > 0), v, np.maximum(v, pooled_v))
    valid = enough & np.isfinite(delta) & np.isfinite(v) & (v > 0)
    log_lr = _log_lr(delta, v, t, theta0, valid)
    with np.errstate(over="ignore"):
        p_value = np.minimum(1.0, np.exp(-log_lr))
    return Msprt(
        delta=np.asarray(np.where(valid, delta, np.nan), dtype=np.float64),
        variance=np.asarray(np.where(valid, v, np.nan), dtype=np.float64),
        log_lr=log_lr,
        p_value=np.asarray(p_value, dtype=np.float64),
    )


def _log_lr(
    delta: _Float, v: _Float, tau: _Float, theta0: float, valid: npt.NDArray[np.bool_]
) -> _Float:
    """``ln Λ = −½ ln((v + τ²)/v) + ½ (Δ̂ − θ0)²/v · τ²/(v + τ²)`` where ``valid``, else 0.

    Written so that extreme variances (subnormal or huge next to ``τ²``) give ±inf rather
    than NaN, and without warnings.
    """
    safe_v = np.where(valid, v, 1.0)
    d = np.where(valid, delta - theta0, 0.0)
    t2 = np.broadcast_to(tau * tau, safe_v.shape)
    with np.errstate(over="ignore", under="ignore"):
        z2 = (d / np.sqrt(safe_v)) ** 2
        shrink = t2 / (safe_v + t2)
        evidence = np.where(shrink > 0, 0.5 * z2 * shrink, 0.0)
        log_lr = evidence - 0.5 * _log_ratio(safe_v, t2)
    return np.asarray(np.where(valid, log_lr, 0.0), dtype=np.float64)


def _log_ratio(v: _Float, t2: _Float) -> _Float:
    """``ln((v + τ²)/v)`` for ``v > 0``: ``log1p(τ²/v)``, or a difference of logs on overflow."""
    with np.errstate(over="ignore"):
        ratio = t2 / v
        direct = np.log1p(ratio)
    return np.asarray(
        np.where(np.isfinite(ratio), direct, np.log(v + t2) - np.log(v)), dtype=np.float64
    )


def normal_mixture_p_value(
    delta: npt.ArrayLike,
    variance: npt.ArrayLike,
    tau: float | npt.ArrayLike,
    theta0: float = 0.0,
) -> _Float:
    """Instantaneous mSPRT p-value ``min(1, 1/Λ)`` from an estimate and its variance.

    The same normal-mixture likelihood ratio as :func:`msprt`, for a difference estimate that
    does not come from two moment summaries, e.g. the post-stratified difference of
    :func:`~streamguard.stats.multiple.post_stratified_difference`. Validity over time needs
    the estimate's variance to shrink like ``1/n`` with a fixed estimand: an estimator whose
    weights move with the observed traffic mix is only approximately covered. Keep the running
    minimum with :func:`running_p`.

    Parameters
    ----------
    delta, variance : array_like
        Estimate and its variance (broadcast together).
    tau : float or array_like
        Mixing scale, as for :func:`msprt`; must be positive.
    theta0 : float, default 0.0
        Difference under the null hypothesis.

    Returns
    -------
    numpy.ndarray
        P-values; 1 (no evidence) where ``delta`` or ``variance`` is not finite or
        ``variance <= 0``.

    Raises
    ------
    ValueError
        If ``tau`` is not positive and finite.

    Examples
    --------
    >>> round(float(normal_mixture_p_value(0.1, 0.00049049, tau=0.05)), 6)
    0.000492
    >>> normal_mixture_p_value([0.1, float("nan")], [0.0, 0.1], tau=0.05)
    array([1., 1.])
    """
    t = _positive(tau, "tau")
    d, v = np.broadcast_arrays(
        np.asarray(delta, dtype=np.float64), np.asarray(variance, dtype=np.float64)
    )
    valid = np.isfinite(d) & np.isfinite(v) & (v > 0)
    log_lr = _log_lr(d, v, t, theta0, valid)
    with np.errstate(over="ignore"):
        return np.asarray(np.minimum(1.0, np.exp(-log_lr)), dtype=np.float64)


def confidence_sequence(
    delta: npt.ArrayLike,
    variance: npt.ArrayLike,
    tau: float | npt.ArrayLike,
    alpha: float,
) -> tuple[_Float, _Float]:
    """Always-valid ``(1 − α)`` bounds for the true difference, from the mSPRT mixture.

    The confidence sequence is the set of ``θ0`` that :func:`msprt` has not rejected at level
    α, i.e. where ``Λ(θ0) < 1/α``. Taking logs::

        ½ ln(v / (v + τ²)) + τ² (Δ̂ − θ0)² / (2 v (v + τ²)) < ln(1/α)
        ⇔ (Δ̂ − θ0)² < v (v + τ²) / τ² · (2 ln(1/α) + ln((v + τ²) / v)),

    so the bounds are ``Δ̂ ± sqrt(v (v + τ²) / τ² · (2 ln(1/α) + ln((v + τ²) / v)))``. This is
    the two-sided normal-mixture boundary of Howard, Ramdas, McAuliffe and Sekhon
    ("Time-uniform, nonparametric, nonasymptotic confidence sequences", Annals of Statistics
    49(2), 2021), ``|S_t| ≤ sqrt((V_t + ρ) ln((V_t + ρ) / (ρ α²)))``, written for the mean
    difference: with ``S_t = (Δ̂ − θ)/v``, ``V_t = 1/v`` and ``ρ = 1/τ²`` the two agree. The
    probability that the true difference is ever outside the bounds is at most α under the
    assumptions listed in the module docstring. Unlike the running p-value, the bounds of
    successive looks are not intersected here; callers may keep the running intersection.

    Parameters
    ----------
    delta, variance : array_like
        ``Msprt.delta`` and ``Msprt.variance`` (broadcast together).
    tau : float or array_like
        The mixing scale used for the test; must be positive.
    alpha : float
        Level, in ``(0, 1)``.

    Returns
    -------
    tuple of numpy.ndarray
        ``(lower, upper)``; NaN where ``delta`` or ``variance`` is NaN or ``variance <= 0``.

    Raises
    ------
    ValueError
        If ``tau`` is not positive or ``alpha`` is not in ``(0, 1)``.

    Examples
    --------
    >>> lo, hi = confidence_sequence(0.1, 0.00049049, tau=0.05, alpha=0.05)
    >>> round(float(lo), 4), round(float(hi), 4)
    (0.0324, 0.1676)
    >>> confidence_sequence([0.1, float("nan")], [0.0, 0.01], tau=0.05, alpha=0.05)[0]
    array([nan, nan])
    """
    if not 0.0 < alpha < 1.0:
        raise ValueError(f"alpha must be in (0, 1), got {alpha}")
    t = _positive(tau, "tau")
    d, v = np.broadcast_arrays(
        np.asarray(delta, dtype=np.float64), np.asarray(variance, dtype=np.float64)
    )
    ok = np.isfinite(d) & np.isfinite(v) & (v > 0)
    safe_v = np.where(ok, v, 1.0)
    t2 = np.broadcast_to(t * t, safe_v.shape)
    with np.errstate(over="ignore"):
        half = np.sqrt(
            safe_v * (safe_v / t2 + 1.0) * (2 * math.log(1 / alpha) + _log_ratio(safe_v, t2))
        )
    lower = np.where(ok, d - half, np.nan)
    upper = np.where(ok, d + half, np.nan)
    return np.asarray(lower, dtype=np.float64), np.asarray(upper, dtype=np.float64)


def running_p(previous: npt.ArrayLike, current: npt.ArrayLike) -> _Float:
    """Always-valid p-value: the running minimum ``min(previous, current)``.

    ``p_t = min(p_{t−1}, 1/Λ_t)`` (Johari et al. 2022): once a difference is detected it stays
    detected. A NaN on either side counts as 1 (no evidence yet), so a first look can pass
    ``previous = NaN``.

    Parameters
    ----------
    previous, current : array_like
        P-values of the previous look (running) and of this look (instantaneous).

    Returns
    -------
    numpy.ndarray
        Elementwise minimum, broadcast shape.

    Examples
    --------
    >>> running_p([0.3, float("nan"), 0.2], [0.5, 0.4, float("nan")])
    array([0.3, 0.4, 0.2])
    """
    prev = np.asarray(previous, dtype=np.float64)
    cur = np.asarray(current, dtype=np.float64)
    return np.asarray(
        np.minimum(np.where(np.isnan(prev), 1.0, prev), np.where(np.isnan(cur), 1.0, cur)),
        dtype=np.float64,
    )
