"""What the popularity guard measures in one scope (the whole deployment or a slice).

Per arm and window, the concentration measures of its item exposures
(:func:`window_measures`, with :func:`weighted_gini` for the head items plus an even tail
block); over the trend windows, the least-squares Gini slope (:func:`slope`) and the
rich-get-richer elasticity, fitted on both arms thinned to the smaller arm's size. The
judgement of those measures is :mod:`streamguard.guards.popularity`'s.
"""

import math
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from streamguard.core.items import ItemWindow
from streamguard.core.slices import ROOT
from streamguard.core.verdict import clean_float
from streamguard.policy import PopularityPolicy
from streamguard.stats import concentration
from streamguard.stats.heavy_hitters import DistinctCounter, hash64

__all__ = [
    "MEASURES",
    "Scope",
    "clean",
    "scope_of",
    "shares",
    "slope",
    "weighted_gini",
    "window_measures",
]

F64 = npt.NDArray[np.float64]
MEASURES = ("gini", "entropy", "top_share", "coverage")


def weighted_gini(values: F64, weights: F64) -> float:
    """Gini index (RecBole's) of ``weights[i]`` items each with count ``values[i]``.

    With the values sorted ascending and ``C_i`` the cumulative weight up to and including
    ``i`` (``N`` in all), ``G = Σ w_i x_i (2 C_i − w_i − N) / (N Σ w_i x_i)``, which for unit
    weights is ``Σ (2i − n − 1) x_(i) / (n Σ x)``.
    """
    order = np.argsort(values, kind="stable")
    x, w = values[order], weights[order]
    n = float(w.sum())
    mass = float(np.dot(w, x))
    if n <= 0 or mass <= 0:
        return math.nan
    c = np.cumsum(w)
    return float(np.sum(w * x * (2.0 * c - w - n)) / (n * mass))


def window_measures(
    window: ItemWindow, settings: PopularityPolicy, catalogue: float
) -> dict[str, float]:
    """Concentration measures of one arm's window (head counts plus an even tail block)."""
    _, head = window.counts()
    total = float(window.total)
    distinct = max(window.distinct(), float(head.size))
    tail_items = max(round(distinct) - head.size, 0)
    tail_mass = max(total - float(head.sum()), 0.0)
    values, weights = head, np.ones(head.size)
    if tail_items and tail_mass > 0:
        values = np.append(head, tail_mass / tail_items)
        weights = np.append(weights, float(tail_items))
    n = float(weights.sum())
    if total <= 0 or n <= 0:
        nan = math.nan
        return {
            "gini": nan,
            "entropy": nan,
            "top_share": nan,
            "coverage": nan,
            "exposures": 0.0,
            "distinct": 0.0,
        }
    p = values / float(np.dot(weights, values))
    entropy = float(-np.sum(weights * p * np.log(p)) / math.log(n)) if n > 1 else 0.0
    top = concentration.top_share(
        head, settings.top_fraction, catalogue_size=max(round(distinct), head.size), total=total
    )
    return {
        "gini": weighted_gini(values, weights),
        "entropy": entropy,
        "top_share": top,
        "coverage": concentration.catalogue_coverage(distinct, max(1, math.ceil(catalogue))),
        "exposures": total,
        "distinct": distinct,
    }


def slope(x: F64, y: F64) -> tuple[float, float]:
    """Least-squares slope of ``y`` on ``x`` and its standard error (NaN below 3 points)."""
    if x.size < 3:
        return math.nan, math.nan
    dx = x - x.mean()
    sxx = float(dx @ dx)
    if sxx <= 0:
        return math.nan, math.nan
    b = float(dx @ (y - y.mean())) / sxx
    residual = y - y.mean() - b * dx
    se = math.sqrt(float(residual @ residual) / (x.size - 2) / sxx)
    return b, se


def clean(values: dict[str, float]) -> dict[str, float | None]:
    return {k: clean_float(v) for k, v in values.items()}


def shares(window: ItemWindow) -> dict[str, float]:
    names, counts = window.counts()
    total = float(window.total) or 1.0
    return {name: float(c) / total for name, c in zip(names, counts.tolist(), strict=True)}


def _smaller(arms: dict[str, dict[int, ItemWindow]], i: int) -> float:
    """Exposures of the smaller arm in window ``i`` (where both have it)."""
    totals = [float(a[i].total) for a in arms.values() if i in a]
    return min(totals) if totals else 0.0


def _thinned(window: ItemWindow, total: float, seed: int) -> dict[str, float]:
    """Shares of ``window`` after binomial thinning of its counts to about ``total`` exposures.

    The elasticity fit takes logs of counts, and small counts bias it upwards (Jensen's
    inequality hits the tail items hardest), so an arm with ten times fewer exposures gets a
    steeper slope from sampling alone. Both arms are fitted at the smaller arm's size. The
    seed comes from the window, so the worker and replay thin identically.
    """
    names, counts = window.counts()
    have = float(window.total)
    if have <= total or have <= 0:
        return shares(window)
    rng = np.random.default_rng(seed)
    kept = rng.binomial(np.asarray(counts, dtype=np.int64), total / have)
    return {name: float(c) / total for name, c in zip(names, kept.tolist(), strict=True) if c}


@dataclass(slots=True)
class Scope:
    """What one scope (the whole deployment or a slice) looks like over the trend windows."""

    label: str
    arms: dict[str, dict[int, ItemWindow]]
    measures: dict[str, dict[int, dict[str, float]]]
    judged: list[int]
    trend: dict[str, dict[str, float | None]]
    fitted: dict[str, tuple[float, float]]
    elasticities: dict[str, tuple[float, float]]  # arm -> (mean, standard error)

    @property
    def exposures(self) -> int:
        return int(sum(self.measures["canary"][i]["exposures"] for i in self.judged))


def _catalogue(arms: dict[str, dict[int, ItemWindow]], settings: PopularityPolicy) -> float:
    """The catalogue size, or the distinct items either arm exposed over the horizon."""
    if settings.catalogue_size:
        return float(settings.catalogue_size)
    union = DistinctCounter(settings.hll_precision)
    for windows in arms.values():
        for w in windows.values():
            np.maximum(union.registers, w.registers, out=union.registers)
    return max(union.estimate(), 1.0)


def scope_of(
    label: str, arms: dict[str, dict[int, ItemWindow]], settings: PopularityPolicy, first: int
) -> Scope:
    """Measures, Gini trends and elasticities of both arms of one scope."""
    catalogue = _catalogue(arms, settings)
    measures = {
        arm: {i: window_measures(w, settings, catalogue) for i, w in windows.items() if i >= first}
        for arm, windows in arms.items()
    }
    judged = sorted(
        i
        for i in measures["canary"]
        if i in measures["baseline"]
        and min(measures["canary"][i]["exposures"], measures["baseline"][i]["exposures"])
        >= settings.min_exposures
    )
    x = np.array(judged, dtype=np.float64)
    trend: dict[str, dict[str, float | None]] = {}
    fitted: dict[str, tuple[float, float]] = {}
    elasticities: dict[str, tuple[float, float]] = {}
    # Seeds come from the window and the scope, so the worker and replay thin alike.
    salt = 0 if label == ROOT else int(hash64([label])[0] % (1 << 31))
    for arm in ("canary", "baseline"):
        gini = np.array([measures[arm][i]["gini"] for i in judged], dtype=np.float64)
        fitted[arm] = b, se = slope(x, gini)
        fits = [
            concentration.elasticity(
                _thinned(arms[arm][i - 1], _smaller(arms, i - 1), i - 1 + salt),
                _thinned(arms[arm][i], _smaller(arms, i), i + salt),
                settings.head_items,
            ).slope
            for i in judged
            if i - 1 in arms[arm] and i - 1 >= first - 1
        ]
        fits = [f for f in fits if math.isfinite(f)]
        # Standard error of the mean from the spread of the per-window fits: small arms give
        # noisy fits (a healthy 10 % canary once reached 1.16 by noise alone).
        mean, err = (
            (float(np.mean(fits)), float(np.std(fits, ddof=1) / math.sqrt(len(fits))))
            if len(fits) >= 2
            else (math.nan, math.nan)
        )
        elasticities[arm] = (mean, err)
        trend[arm] = {
            "gini_slope": clean_float(b),
            "gini_slope_se": clean_float(se),
            "elasticity": clean_float(mean),
            "elasticity_se": clean_float(err),
            "elasticity_windows": len(fits),
        }
    return Scope(label, arms, measures, judged, trend, fitted, elasticities)
