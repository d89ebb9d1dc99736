"""Popularity concentration of item exposures, and its amplification over windows.

A recommender that shows popular items makes them more popular, and a model retrained on
that traffic amplifies the bias. These functions measure, for one window, how concentrated
the exposures (how often each item was recommended) are, and across windows whether the
concentration grows and whether exposure flows to what was already exposed:

- :func:`gini` -- Gini index of the exposure counts (RecBole ``GiniIndex``).
- :func:`normalized_entropy` -- Shannon entropy of the exposure shares over ``ln n``.
- :func:`top_share` -- share of exposures going to the top ``fraction`` of items.
- :func:`catalogue_coverage` -- distinct exposed items over the catalogue size.
- :func:`elasticity` -- rich-get-richer slope of log share in window t+1 on window t.
- :func:`concentration_trend` -- least-squares slope of a measure over successive windows.

Measures take exposure COUNTS of distinct items, one window, as a 1-D array (e.g. the
counters of a :class:`~streamguard.stats.heavy_hitters.SpaceSaving` sketch, or exact counts).
Zero entries are ignored unless ``catalogue_size`` is given, in which case the catalogue's
never-exposed items count as zeros, as RecBole does over its whole item set. Gini and top
share rise and entropy falls with concentration. When the counts are only a sketch's head,
the measures describe that head (``top_share`` can take the stream ``total`` to stay exact
whenever the top items are tracked).

Definitions, and where they come from:

- RecBole (Zhao et al., CIKM 2021), ``recbole/evaluator/metrics.py``: ``GiniIndex`` is
  ``Σ_i (2i − n − 1) x_(i) / (n Σ x)`` over all ``n`` catalogue items sorted ascending
  (never-recommended items are zeros), which :func:`gini` computes with ``catalogue_size``.
  Its ``ShannonEntropy`` is ``−Σ p ln p`` divided by the number of distinct recommended
  items (not by ``ln n``), a different normalisation from :func:`normalized_entropy`'s.
- Microsoft Recommenders (``recommenders/evaluation/python_evaluation.py``):
  ``distributional_coverage`` is ``−Σ p log₂ p``, unnormalised (Shani & Gunawardana,
  "Evaluating Recommendation Systems", 2011, eq. 21); :func:`normalized_entropy` times
  ``log₂ n`` gives it back. Its ``catalog_coverage`` is distinct recommended items over
  distinct training items, as :func:`catalogue_coverage` with the catalogue size.
- Elliot (Anelli et al., SIGIR 2021) reports the same Gini index, Shannon entropy and item
  coverage families.

Examples
--------
>>> import numpy as np
>>> even, skewed = np.array([10, 10, 10, 10]), np.array([37, 1, 1, 1])
>>> float(gini(even)), float(gini(skewed))
(0.0, 0.675)
>>> float(normalized_entropy(even)) > float(normalized_entropy(skewed))
True
>>> float(top_share(skewed, fraction=0.25))
0.925
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

__all__ = [
    "ElasticityFit",
    "catalogue_coverage",
    "concentration_trend",
    "elasticity",
    "gini",
    "normalized_entropy",
    "top_share",
]

_Float = npt.NDArray[np.float64]


def _exposed(counts: npt.ArrayLike, catalogue_size: int | None) -> tuple[_Float, int]:
    """Positive counts of one window and the number of items ``n`` they are spread over."""
    x = np.asarray(counts, dtype=np.float64)
    if x.ndim != 1:
        raise ValueError(f"counts must be 1-D (one window), got shape {x.shape}")
    if not np.all(np.isfinite(x)) or np.any(x < 0):
        raise ValueError("counts must be finite and non-negative")
    positive = x[x > 0]
    if catalogue_size is None:
        return positive, int(positive.size)
    if int(catalogue_size) != catalogue_size or catalogue_size < x.size:
        raise ValueError(
            f"catalogue_size must be an integer >= the number of counts ({x.size}), "
            f"got {catalogue_size}"
        )
    return positive, int(catalogue_size)


def gini(counts: npt.ArrayLike, catalogue_size: int | None = None) -> float:
    """Gini index of item exposure counts (RecBole ``GiniIndex``).

    With the ``n`` items' counts sorted ascending, ``x_(1) ≤ … ≤ x_(n)``,
    ``G = Σ_i (2i − n − 1) x_(i) / (n Σ_i x_i)``; equivalently the mean absolute difference
    ``Σ_i Σ_j |x_i − x_j| / (2 n² mean)``. 0 when every item has the same exposure,
    ``(n − 1) / n`` when one item has all of it. ``n`` is ``catalogue_size`` when given (the
    never-exposed catalogue items enter as zeros, as RecBole does over its whole item set),
    else the number of exposed items (positive counts).

    Parameters
    ----------
    counts : array_like
        1-D exposure counts of distinct items.
    catalogue_size : int, optional
        Number of items in the catalogue, ``>= len(counts)``.

    Returns
    -------
    float
        ``G`` in ``[0, (n − 1)/n]``; NaN when there is no exposure.

    Raises
    ------
    ValueError
        If counts are not 1-D, negative or not finite, or ``catalogue_size`` is too small.

    Examples
    --------
    >>> float(gini([0, 0, 5]))
    0.0
    >>> float(gini([0, 0, 5], catalogue_size=3))
    0.6666666666666666
    >>> float(gini([1, 2, 3, 4]))
    0.25
    """
    x, n = _exposed(counts, catalogue_size)
    total = float(x.sum())
    if total == 0.0:
        return math.nan
    xs = np.sort(x)
    i = np.arange(n - xs.size + 1, n + 1, dtype=np.float64)  # zeros take ranks 1..n−m
    return float(np.sum((2.0 * i - n - 1.0) * xs) / (n * total))


def normalized_entropy(counts: npt.ArrayLike, catalogue_size: int | None = None) -> float:
    """Shannon entropy of the exposure shares divided by its maximum, ``ln n``.

    ``H = −Σ p_i ln p_i`` over exposed items with ``p_i = x_i / Σ x``, and the result is
    ``H / ln n`` with ``n = catalogue_size`` when given, else the number of exposed items:
    1 when exposure is even over the ``n`` items, towards 0 as it concentrates. Defined as 0
    when ``n = 1``. Microsoft Recommenders' ``distributional_coverage`` is the unnormalised
    ``H`` in bits, i.e. this value times ``log₂ n``.

    Parameters
    ----------
    counts : array_like
        1-D exposure counts of distinct items.
    catalogue_size : int, optional
        Number of items in the catalogue, ``>= len(counts)``.

    Returns
    -------
    float
        In ``[0, 1]``; NaN when there is no exposure.

    Raises
    ------
    ValueError
        As :func:`gini`.

    Examples
    --------
    >>> float(normalized_entropy([5, 5, 0]))
    1.0
    >>> round(float(normalized_entropy([5, 5, 0], catalogue_size=4)), 6)
    0.5
    """
    x, n = _exposed(counts, catalogue_size)
    total = float(x.sum())
    if total == 0.0:
        return math.nan
    if n <= 1:
        return 0.0
    p = x / total
    return float(-np.sum(p * np.log(p)) / math.log(n))


def top_share(
    counts: npt.ArrayLike,
    fraction: float = 0.01,
    catalogue_size: int | None = None,
    total: float | None = None,
) -> float:
    """Share of exposures going to the ``⌈fraction · n⌉`` most exposed items.

    ``n`` is ``catalogue_size`` when given, else the number of exposed items. The
    denominator is the sum of ``counts`` unless ``total`` is given, which is how to use a
    sketch's head: pass its top counters and the stream's exact total (the head must then
    contain the top ``⌈fraction · n⌉`` items). The product ``fraction · n`` is rounded up
    after removing float noise (``0.07 · 100`` counts as 7).

    Parameters
    ----------
    counts : array_like
        1-D exposure counts of distinct items.
    fraction : float, default 0.01
        Fraction of the items in the top, in ``(0, 1]``.
    catalogue_size : int, optional
        Number of items in the catalogue, ``>= len(counts)``.
    total : float, optional
        Total exposures of the window, if ``counts`` is only part of them; positive.

    Returns
    -------
    float
        In ``[0, 1]`` (clipped to 1 if ``total`` is below the top's sum); NaN when there is
        no exposure.

    Raises
    ------
    ValueError
        As :func:`gini`, or if ``fraction`` is outside ``(0, 1]`` or ``total <= 0``.

    Examples
    --------
    >>> float(top_share([50, 30, 10, 10], fraction=0.5))
    0.8
    >>> float(top_share([50, 30], fraction=0.5, catalogue_size=4, total=200))
    0.4
    """
    if not 0.0 < fraction <= 1.0:
        raise ValueError(f"fraction must be in (0, 1], got {fraction}")
    x, n = _exposed(counts, catalogue_size)
    denominator = float(x.sum()) if total is None else float(total)
    if total is not None and not (math.isfinite(denominator) and denominator > 0.0):
        raise ValueError(f"total must be positive and finite, got {total}")
    if denominator == 0.0:
        return math.nan
    k = min(max(1, math.ceil(fraction * n - 1e-9)), x.size)
    head = np.partition(x, x.size - k)[x.size - k :] if k else x
    return min(float(head.sum()) / denominator, 1.0)


def catalogue_coverage(distinct_items: float, catalogue_size: int) -> float:
    """Fraction of the catalogue that was exposed at least once.

    Distinct exposed items (exact, or a :class:`~streamguard.stats.heavy_hitters.
    DistinctCounter` estimate) over the catalogue size, clipped to 1 because an estimate can
    overshoot. Microsoft Recommenders' ``catalog_coverage`` and Elliot's/RecBole's item
    coverage, over a window.

    Parameters
    ----------
    distinct_items : float
        Number of distinct exposed items, ``>= 0``.
    catalogue_size : int
        Number of items in the catalogue, ``>= 1``.

    Returns
    -------
    float
        In ``[0, 1]``.

    Raises
    ------
    ValueError
        If ``distinct_items`` is negative or not finite, or ``catalogue_size < 1``.

    Examples
    --------
    >>> catalogue_coverage(2500.0, 10_000)
    0.25
    """
    if not (math.isfinite(distinct_items) and distinct_items >= 0):
        raise ValueError(f"distinct_items must be finite and >= 0, got {distinct_items}")
    if catalogue_size < 1:
        raise ValueError(f"catalogue_size must be at least 1, got {catalogue_size}")
    return min(float(distinct_items) / float(catalogue_size), 1.0)


@dataclass(frozen=True)
class ElasticityFit:
    """Least-squares fit ``ln share_{t+1} = intercept + slope · ln share_t`` over head items.

    Attributes
    ----------
    slope : float
        The elasticity; above 1 means the rich get richer. NaN if undefined.
    intercept : float
        The intercept (depends on how shares are normalised; the slope does not).
    r2 : float
        Coefficient of determination; NaN if undefined.
    n_items : int
        Number of items in the fit.
    """

    slope: float
    intercept: float
    r2: float
    n_items: int


def elasticity(
    previous: Mapping[str, float], current: Mapping[str, float], head: int = 100
) -> ElasticityFit:
    """Rich-get-richer elasticity of exposure from one window to the next.

    Each window's shares are its values normalised by their sum over the items it tracks
    (e.g. a heavy-hitter sketch's counters). The fit uses the ``head`` items with the
    largest previous value (ties: smallest key) that also have a positive value in
    ``current``, and regresses ``ln share_{t+1}`` on ``ln share_t`` by ordinary least
    squares. A slope of 1 keeps the shape of the distribution (exposure proportional to past
    exposure); above 1, exposure goes increasingly to what was already exposed
    (homogenisation, rich get richer); below 1, it spreads out. Normalisation only moves
    the intercept.

    Two cautions. Counts are noisy, and noise in ``ln share_t`` attenuates the slope towards 0
    (errors in variables) and selecting the head on the previous window adds regression to
    the mean, so a stable but sampled distribution gives a slope slightly below 1: compare a
    canary's slope with the baseline's over the same windows rather than with 1. And keep
    ``head`` well inside the sketch capacity, so that head items are still tracked in the
    next window (items that fall out are left out of the fit).

    Parameters
    ----------
    previous, current : mapping of str to float
        Exposure counts (or shares) per item in windows ``t`` and ``t + 1``; non-negative.
    head : int, default 100
        Number of top previous items to consider, at least 1.

    Returns
    -------
    ElasticityFit
        Slope, intercept and ``r2`` are NaN with fewer than 3 items, or when the previous
        shares are all equal (``r2`` also when the current ones are).

    Raises
    ------
    ValueError
        If ``head < 1`` or a value is negative or not finite.

    Examples
    --------
    >>> prev = {"a": 8.0, "b": 4.0, "c": 2.0, "d": 1.0}
    >>> fit = elasticity(prev, {k: v**2 for k, v in prev.items()})
    >>> round(fit.slope, 9), fit.n_items
    (2.0, 4)
    >>> round(elasticity(prev, prev).slope, 9)
    1.0
    """
    if head < 1:
        raise ValueError(f"head must be at least 1, got {head}")
    for window in (previous, current):
        values = np.fromiter(window.values(), dtype=np.float64, count=len(window))
        if not np.all(np.isfinite(values)) or np.any(values < 0):
            raise ValueError("exposure values must be finite and non-negative")
    prev_total = math.fsum(previous.values())
    cur_total = math.fsum(current.values())
    ranked = sorted(
        ((item, v) for item, v in previous.items() if v > 0), key=lambda kv: (-kv[1], kv[0])
    )[:head]
    pairs = [(v, current[item]) for item, v in ranked if current.get(item, 0.0) > 0]
    nan = math.nan
    if len(pairs) < 3:
        return ElasticityFit(nan, nan, nan, len(pairs))
    arr = np.array(pairs, dtype=np.float64)
    x = np.log(arr[:, 0] / prev_total)
    y = np.log(arr[:, 1] / cur_total)
    dx = x - x.mean()
    dy = y - y.mean()
    sxx = float(dx @ dx)
    if sxx <= 1e-24 * max(1.0, float(x @ x)):
        return ElasticityFit(nan, nan, nan, len(pairs))
    slope = float(dx @ dy) / sxx
    intercept = float(y.mean() - slope * x.mean())
    syy = float(dy @ dy)
    residual = y - (intercept + slope * x)
    r2 = 1.0 - float(residual @ residual) / syy if syy > 0.0 else nan
    return ElasticityFit(slope, intercept, r2, len(pairs))


def concentration_trend(values: Sequence[float]) -> float:
    """Least-squares slope per window of a measure over successive windows.

    ``values[t]`` is the measure (Gini, normalised entropy, top share…) in window ``t``;
    non-finite values (windows without exposure) are skipped but keep their position.
    Amplification shows as the canary's trend exceeding the baseline's over the same
    windows, e.g. ``concentration_trend(canary_gini) − concentration_trend(baseline_gini)``.

    Parameters
    ----------
    values : sequence of float
        One value per window, oldest first.

    Returns
    -------
    float
        Change per window; NaN with fewer than 2 finite values.

    Examples
    --------
    >>> round(concentration_trend([0.50, 0.52, float("nan"), 0.56]), 12)
    0.02
    >>> concentration_trend([0.5])
    nan
    """
    y = np.asarray(values, dtype=np.float64)
    if y.ndim != 1:
        raise ValueError(f"values must be 1-D, got shape {y.shape}")
    t = np.arange(y.size, dtype=np.float64)
    finite = np.isfinite(y)
    if np.count_nonzero(finite) < 2:
        return math.nan
    t, y = t[finite], y[finite]
    dt = t - t.mean()
    return float(dt @ (y - y.mean()) / (dt @ dt))
