"""Tests for streamguard.stats.concentration against straightforward reference formulas."""

import math
from collections import Counter

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from scipy.stats import entropy as scipy_entropy

from streamguard.stats.concentration import (
    ElasticityFit,
    catalogue_coverage,
    concentration_trend,
    elasticity,
    gini,
    normalized_entropy,
    top_share,
)
from streamguard.stats.heavy_hitters import DistinctCounter, SpaceSaving

count_arrays = hnp.arrays(np.int64, st.integers(1, 40), elements=st.integers(0, 1000))


def recbole_gini_loop(counts: list[float], num_items: int) -> float:
    """RecBole's GiniIndex written as a loop: ascending counts take the top ranks of 1..n."""
    exposed = sorted(c for c in counts if c > 0)
    first_rank = num_items - len(exposed) + 1
    total = sum(exposed)
    acc = 0.0
    for offset, x in enumerate(exposed):
        i = first_rank + offset
        acc += (2 * i - num_items - 1) * x
    return acc / (num_items * total)


def mean_difference_gini(x: np.ndarray) -> float:
    """O(n²) mean absolute difference: Σ_i Σ_j |x_i − x_j| / (2 n² mean)."""
    n = x.size
    total = 0.0
    for a in x:
        for b in x:
            total += abs(a - b)
    return total / (2 * n * n * float(x.mean()))


@settings(max_examples=150)
@given(count_arrays, st.integers(0, 30))
def test_gini_matches_recbole_loop_and_mean_difference(counts: np.ndarray, extra: int) -> None:
    if counts.sum() == 0:
        assert math.isnan(gini(counts))
        return
    exposed = counts[counts > 0]
    got = gini(counts)
    assert got == pytest.approx(recbole_gini_loop(counts.tolist(), exposed.size), abs=1e-12)
    assert got == pytest.approx(mean_difference_gini(exposed.astype(float)), abs=1e-12)
    # Over a catalogue, never-exposed items are zeros (RecBole's whole item set).
    size = counts.size + extra
    with_catalogue = gini(counts, catalogue_size=size)
    assert with_catalogue == pytest.approx(recbole_gini_loop(counts.tolist(), size), abs=1e-12)
    padded = np.concatenate([counts, np.zeros(extra)]).astype(float)
    assert with_catalogue == pytest.approx(mean_difference_gini(padded), abs=1e-12)
    assert 0.0 <= got <= (exposed.size - 1) / exposed.size + 1e-12
    assert gini(counts * 7) == pytest.approx(got, abs=1e-12)  # scale-free


def test_gini_boundaries() -> None:
    assert gini(np.full(50, 3)) == pytest.approx(0.0, abs=1e-15)
    for n in (1, 2, 10, 1000):
        assert gini([42], catalogue_size=n) == pytest.approx((n - 1) / n)
        assert gini([0] * (n - 1) + [5], catalogue_size=n) == pytest.approx((n - 1) / n)
    assert math.isnan(gini([0, 0]))
    with pytest.raises(ValueError, match="catalogue_size"):
        gini([1, 2, 3], catalogue_size=2)
    with pytest.raises(ValueError, match="non-negative"):
        gini([1, -1])
    with pytest.raises(ValueError, match="1-D"):
        gini([[1, 2], [3, 4]])


@settings(max_examples=150)
@given(count_arrays, st.integers(0, 30))
def test_normalized_entropy_matches_scipy(counts: np.ndarray, extra: int) -> None:
    exposed = counts[counts > 0]
    if exposed.size == 0:
        assert math.isnan(normalized_entropy(counts))
        return
    h = scipy_entropy(exposed)  # natural log, normalises the counts itself
    size = counts.size + extra
    expected = h / math.log(exposed.size) if exposed.size > 1 else 0.0
    assert normalized_entropy(counts) == pytest.approx(expected, abs=1e-12)
    expected_catalogue = h / math.log(size) if size > 1 else 0.0
    got = normalized_entropy(counts, catalogue_size=size)
    assert got == pytest.approx(expected_catalogue, abs=1e-12)
    assert -1e-12 <= got <= 1.0 + 1e-12
    # Times log2(n): Microsoft Recommenders' distributional_coverage, −Σ p log2 p.
    p = exposed / exposed.sum()
    if size > 1:
        assert got * math.log2(size) == pytest.approx(-np.sum(p * np.log2(p)), abs=1e-9)


@settings(max_examples=150)
@given(count_arrays, st.floats(0.001, 1.0), st.integers(0, 30))
def test_top_share_matches_sorting(counts: np.ndarray, fraction: float, extra: int) -> None:
    exposed = np.sort(counts[counts > 0])[::-1]
    if exposed.size == 0:
        assert math.isnan(top_share(counts, fraction))
        return
    k = math.ceil(fraction * exposed.size - 1e-9)
    expected = exposed[: max(k, 1)].sum() / exposed.sum()
    assert top_share(counts, fraction) == pytest.approx(expected, abs=1e-12)
    size = counts.size + extra
    k = max(1, math.ceil(fraction * size - 1e-9))
    expected = exposed[:k].sum() / exposed.sum()
    assert top_share(counts, fraction, catalogue_size=size) == pytest.approx(expected, abs=1e-12)
    total = 3.0 * exposed.sum()
    assert top_share(counts, fraction, catalogue_size=size, total=total) == pytest.approx(
        expected / 3.0, abs=1e-12
    )


def test_top_share_rounding_and_validation() -> None:
    counts = np.arange(100, 0, -1)  # 100 items, 100..1
    # 0.07 · 100 is 7.000000000000001 in floating point: still the top 7 items.
    assert top_share(counts, 0.07) == pytest.approx(counts[:7].sum() / counts.sum())
    assert top_share(counts, 0.075) == pytest.approx(counts[:8].sum() / counts.sum())
    assert top_share(counts, 1.0) == 1.0
    assert top_share([5, 5], 0.5, total=4) == 1.0  # clipped
    with pytest.raises(ValueError, match="fraction"):
        top_share(counts, 0.0)
    with pytest.raises(ValueError, match="total"):
        top_share(counts, 0.1, total=0)


def test_catalogue_coverage() -> None:
    assert catalogue_coverage(0, 10) == 0.0
    assert catalogue_coverage(250, 1000) == 0.25
    assert catalogue_coverage(1010.0, 1000) == 1.0  # an estimate can overshoot
    with pytest.raises(ValueError, match="catalogue_size"):
        catalogue_coverage(1, 0)
    with pytest.raises(ValueError, match="distinct_items"):
        catalogue_coverage(-1, 10)
    with pytest.raises(ValueError, match="distinct_items"):
        catalogue_coverage(math.nan, 10)


def zipf_counts(
    s: float, n_items: int = 10_000, events: int = 200_000, seed: int = 0
) -> np.ndarray:
    """Exposure counts of a multinomial sample from a Zipf law p_r ∝ r^(−s) (s = 1 allowed)."""
    rng = np.random.default_rng(seed)
    p = np.arange(1, n_items + 1, dtype=float) ** -s
    return rng.multinomial(events, p / p.sum())


def test_stronger_zipf_is_more_concentrated_on_every_measure() -> None:
    flat, steep = zipf_counts(1.0), zipf_counts(2.0)
    size = 10_000
    assert gini(steep, size) > gini(flat, size) + 0.1
    assert normalized_entropy(steep, size) < normalized_entropy(flat, size) - 0.1
    assert top_share(steep, 0.01, size) > top_share(flat, 0.01, size) + 0.1
    assert catalogue_coverage(int(np.count_nonzero(steep)), size) < catalogue_coverage(
        int(np.count_nonzero(flat)), size
    )
    # Sanity on the flat case: under Zipf(1) the top 1% (100 of 10k items) get about
    # H(100)/H(10000) = 5.19/9.79 of the exposures.
    assert top_share(flat, 0.01, size) == pytest.approx(5.187 / 9.788, abs=0.01)


def test_measures_from_a_sketch_head_bracket_the_exact_values() -> None:
    counts = zipf_counts(1.2, n_items=10_000, events=100_000, seed=3)
    stream = [f"i{i}" for i, c in enumerate(counts) for _ in range(c)]
    np.random.default_rng(4).shuffle(stream)
    sketch, distinct = SpaceSaving(500), DistinctCounter()
    for start in range(0, len(stream), 10_000):
        sketch.update_many(stream[start : start + 10_000])
        distinct.update_many(stream[start : start + 10_000])
    head = sketch.counters()[:100]  # top 1% of the 10k catalogue
    upper = top_share([c for _, c, _ in head], 0.01, 10_000, total=sketch.total)
    lower = top_share([c - e for _, c, e in head], 0.01, 10_000, total=sketch.total)
    exact = top_share(counts, 0.01, 10_000)
    assert lower <= exact <= upper
    assert upper - lower < 0.01
    coverage = catalogue_coverage(distinct.estimate(), 10_000)
    assert coverage == pytest.approx(np.count_nonzero(counts) / 10_000, rel=0.05)


def test_elasticity_recovers_a_known_slope() -> None:
    rng = np.random.default_rng(0)
    previous = {f"i{i}": float(v) for i, v in enumerate(rng.pareto(1.5, 500) + 1.0)}
    current = {k: 3.0 * v**1.5 for k, v in previous.items()}
    fit = elasticity(previous, current, head=100)
    assert isinstance(fit, ElasticityFit)
    assert fit.slope == pytest.approx(1.5, abs=1e-9)
    assert fit.r2 == pytest.approx(1.0, abs=1e-12)
    assert fit.n_items == 100
    stable = elasticity(previous, {k: 0.5 * v for k, v in previous.items()}, head=100)
    assert stable.slope == pytest.approx(1.0, abs=1e-9)
    # The intercept is ln(share ratio) of the fitted line: exact for proportional windows.
    assert stable.intercept == pytest.approx(0.0, abs=1e-9)
    spread = elasticity(previous, {k: v**0.5 for k, v in previous.items()}, head=100)
    assert spread.slope == pytest.approx(0.5, abs=1e-9)


def test_elasticity_uses_the_previous_head_present_in_both_windows() -> None:
    previous = {"a": 100.0, "b": 50.0, "c": 25.0, "d": 12.0, "e": 6.0, "f": 3.0}
    current = {"a": 10_000.0, "b": 2500.0, "c": 625.0, "d": 144.0, "e": 1.0, "z": 1e6}
    fit = elasticity(previous, current, head=4)  # a..d; e, f and z play no part in the slope
    assert fit.n_items == 4
    x = np.log([100.0, 50.0, 25.0, 12.0])
    y = np.log([10_000.0, 2500.0, 625.0, 144.0])
    slope, _ = np.polyfit(x, y, 1)
    assert fit.slope == pytest.approx(slope, abs=1e-9)
    dropped = elasticity(previous, {k: v for k, v in current.items() if k != "b"}, head=4)
    assert dropped.n_items == 3
    too_few = elasticity(previous, {"a": 1.0, "b": 2.0}, head=10)
    assert too_few.n_items == 2
    assert math.isnan(too_few.slope)
    assert math.isnan(too_few.r2)
    flat = elasticity({"a": 1.0, "b": 1.0, "c": 1.0}, {"a": 1.0, "b": 2.0, "c": 3.0})
    assert math.isnan(flat.slope)
    with pytest.raises(ValueError, match="head"):
        elasticity(previous, current, head=0)
    with pytest.raises(ValueError, match="non-negative"):
        elasticity({"a": -1.0}, current)


def test_elasticity_of_a_sampled_stable_distribution_is_close_to_one() -> None:
    # Two independent windows from the same Zipf(1.2) law: sampling noise attenuates the slope
    # slightly below 1 (errors in variables), a rich-get-richer model pushes it above.
    before = Counter({f"i{i}": c for i, c in enumerate(zipf_counts(1.2, seed=1)) if c})
    after = Counter({f"i{i}": c for i, c in enumerate(zipf_counts(1.2, seed=2)) if c})
    fit = elasticity(before, after, head=100)
    assert 0.9 < fit.slope < 1.02
    assert fit.r2 > 0.95
    richer = zipf_counts(1.2, seed=2).astype(float) ** 1.3
    amplified = {f"i{i}": c for i, c in enumerate(richer) if c}
    assert elasticity(before, amplified, head=100).slope > 1.15


@settings(max_examples=100)
@given(st.lists(st.floats(-10, 10, allow_nan=False) | st.just(math.nan), max_size=20))
def test_concentration_trend_matches_polyfit(values: list[float]) -> None:
    t = np.array([i for i, v in enumerate(values) if math.isfinite(v)], dtype=float)
    y = np.array([v for v in values if math.isfinite(v)])
    got = concentration_trend(values)
    if t.size < 2:
        assert math.isnan(got)
        return
    slope, _ = np.polyfit(t, y, 1)
    assert got == pytest.approx(slope, abs=1e-9)


def test_canary_amplification_shows_in_trends() -> None:
    # Canary concentrates a bit more every window; baseline stays put.
    canary = [gini(zipf_counts(1.0 + 0.05 * w, seed=w), 10_000) for w in range(6)]
    baseline = [gini(zipf_counts(1.0, seed=10 + w), 10_000) for w in range(6)]
    assert concentration_trend(canary) > 0.01
    assert abs(concentration_trend(baseline)) < 0.005
