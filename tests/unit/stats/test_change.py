"""Tests for streamguard.stats.change: oracles, the false-alarm bound by simulation, power.

The simulations draw healthy (no change) canary/baseline windows, Bernoulli at the rates the
canary guard judges (1 % errors, 8 % clicks) and normal (log latency), with the guard's
counting rule (``min_samples`` in both arms, harmful side only). They check the two things the
guarantee rests on: ``E[R] <= K``, here at most half the starts with enough samples (each Λ has
mean 1 and is symmetric in the estimate, up to the normal approximation), and Markov's bound on
``P(ln R >= t)`` from that mean. Each prints what it measured (``-s``).
"""

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from streamguard.stats.change import (
    SCALES,
    change_statistic,
    change_threshold,
    suffix_moments,
)

K = 6
MIN_SAMPLES = 200


def raw_moments(values: np.ndarray) -> np.ndarray:
    return np.array([len(values), values.mean(), ((values - values.mean()) ** 2).sum()])


def oracle_log_lr(c: np.ndarray, b: np.ndarray, tau: float) -> float:
    """ln Λ of one mSPRT from raw values, with numpy's mean and var(ddof=1)."""
    delta = c.mean() - b.mean()
    v = c.var(ddof=1) / len(c) + b.var(ddof=1) / len(b)
    t2 = tau * tau
    return 0.5 * math.log(v / (v + t2)) + t2 * delta * delta / (2 * v * (v + t2))


@settings(max_examples=60, deadline=None)
@given(
    sizes=st.lists(st.integers(1, 40), min_size=1, max_size=8),
    seed=st.integers(0, 2**32 - 1),
)
def test_suffix_moments_equal_numpy_on_the_concatenated_windows(
    sizes: list[int], seed: int
) -> None:
    rng = np.random.default_rng(seed)
    windows = [rng.normal(3.0, 2.0, n) for n in sizes]
    got = suffix_moments(np.stack([raw_moments(w) for w in windows]))
    for j in range(len(windows)):
        expected = raw_moments(np.concatenate(windows[len(windows) - 1 - j :]))
        np.testing.assert_allclose(got[j], expected, rtol=1e-9, atol=1e-9)


def test_the_statistic_is_the_sum_over_starts_of_the_scale_mixture() -> None:
    rng = np.random.default_rng(7)
    canary = [rng.normal(0.0 if w < 4 else 0.5, 1.0, 120) for w in range(K)]
    baseline = [rng.normal(0.0, 1.0, 300) for _ in range(K)]
    tau = 0.1
    c = suffix_moments(np.stack([raw_moments(w) for w in canary]))
    b = suffix_moments(np.stack([raw_moments(w) for w in baseline]))
    got = change_statistic(c, b, tau)
    terms = []
    for j in range(K):
        cj, bj = np.concatenate(canary[K - 1 - j :]), np.concatenate(baseline[K - 1 - j :])
        terms.append(np.mean([math.exp(oracle_log_lr(cj, bj, tau * s)) for s in SCALES]))
    assert float(got.log_stat) == pytest.approx(math.log(sum(terms)), rel=1e-9)
    assert int(got.start) == int(np.argmax(terms))
    best = np.concatenate(canary[K - 1 - int(got.start) :]).mean()
    best -= np.concatenate(baseline[K - 1 - int(got.start) :]).mean()
    assert float(got.delta) == pytest.approx(best, rel=1e-9)


def test_starts_that_do_not_count_only_lower_the_statistic() -> None:
    rng = np.random.default_rng(3)
    c = suffix_moments(np.stack([raw_moments(rng.normal(0.3, 1, 200)) for _ in range(K)]))
    b = suffix_moments(np.stack([raw_moments(rng.normal(0.0, 1, 200)) for _ in range(K)]))
    everything = change_statistic(c, b, 0.1)
    mask = np.zeros(K, dtype=bool)
    mask[[1, 4]] = True
    some = change_statistic(c, b, 0.1, mask)
    assert float(some.log_stat) < float(everything.log_stat)
    assert int(some.start) in (1, 4)
    none = change_statistic(c, b, 0.1, np.zeros(K, dtype=bool))
    assert none.log_stat == -np.inf
    assert int(none.start) == -1
    assert math.isnan(float(none.delta))


def test_threshold_formula_and_its_errors() -> None:
    assert change_threshold(300, 6, 1e-7) == pytest.approx(math.log(300 * 6 / 1e-7))
    for bad in [(0, 6, 1e-6), (3, 0, 1e-6), (3, 6, 0.0), (3, 6, 1.0), (3, 6, math.nan)]:
        with pytest.raises(ValueError, match="must be"):
            change_threshold(*bad)
    with pytest.raises(ValueError, match="scales"):
        change_statistic(np.zeros((1, 3)), np.zeros((1, 3)), 0.1, scales=())
    with pytest.raises(ValueError, match="shape"):
        suffix_moments(np.zeros(3))


def null_log_stats(  # noqa: PLR0917 - a test helper, called with all six in one place
    rng: np.random.Generator, draw: str, n_canary: int, p: float, looks: int, tau: float
) -> np.ndarray:
    """``ln R`` at ``looks`` independent looks on healthy windows, with the guard's counting."""
    n_baseline = 3 * n_canary
    if draw == "bernoulli":
        xc = rng.binomial(n_canary, p, size=(K, looks)) / n_canary
        xb = rng.binomial(n_baseline, p, size=(K, looks)) / n_baseline
        c = np.stack([np.full_like(xc, n_canary), xc, n_canary * xc * (1 - xc)], axis=-1)
        b = np.stack([np.full_like(xb, n_baseline), xb, n_baseline * xb * (1 - xb)], axis=-1)
    else:  # normal log latency, sd 0.6: moments from the sampling distributions
        mc = rng.normal(0, 0.6 / math.sqrt(n_canary), (K, looks))
        mb = rng.normal(0, 0.6 / math.sqrt(n_baseline), (K, looks))
        sc = 0.36 * rng.chisquare(n_canary - 1, (K, looks))
        sb = 0.36 * rng.chisquare(n_baseline - 1, (K, looks))
        c = np.stack([np.full_like(mc, n_canary), mc, sc], axis=-1)
        b = np.stack([np.full_like(mb, n_baseline), mb, sb], axis=-1)
    cs, bs = suffix_moments(c), suffix_moments(b)
    counts = (cs[..., 0] >= MIN_SAMPLES) & (bs[..., 0] >= MIN_SAMPLES) & (cs[..., 1] > bs[..., 1])
    return change_statistic(cs, bs, tau, counts).log_stat


@pytest.mark.parametrize(
    ("draw", "n_canary", "p", "tau"),
    [
        ("bernoulli", 40, 0.01, 0.005),  # a small slice: only the longest starts count
        ("bernoulli", 750, 0.01, 0.005),  # the whole canary of the evaluation's traffic
        ("bernoulli", 100, 0.08, 0.008),  # clicks
        ("bernoulli", 750, 0.08, 0.008),
        ("normal", 100, 0.0, 0.0953),  # log latency
    ],
)
def test_healthy_windows_stay_within_the_markov_bound(
    draw: str, n_canary: int, p: float, tau: float
) -> None:
    rng = np.random.default_rng(n_canary)
    log_stat = null_log_stats(rng, draw, n_canary, p, 400_000, tau)
    # Terms that do not count add 0, so E[R] <= K. Tighter: a start with too few samples never
    # counts, and Λ is symmetric in the estimate, so the harmful side holds half its mean:
    # E[R] = starts / 2 in the normal model (the plug-in variance only lowers it).
    starts = sum((j + 1) * n_canary >= MIN_SAMPLES for j in range(K))
    mean = float(np.mean(np.exp(np.minimum(log_stat, 50.0))))
    rates = {t: float(np.mean(log_stat >= t)) for t in (2.0, 4.0, 6.0)}
    print(f"{draw} n={n_canary} p={p}: mean R {mean:.3f} (starts / 2 = {starts / 2}); {rates}")
    assert mean <= starts / 2
    for t, rate in rates.items():
        assert rate <= starts / 2 * math.exp(-t)  # Markov on that mean
    # At a guard-sized threshold nothing of 400,000 looks comes near it.
    assert float(np.max(log_stat)) < change_threshold(3, K, 1e-6)


def test_a_tenfold_error_rate_crosses_within_one_full_window_after_long_health() -> None:
    def window(n: float, p: float) -> np.ndarray:
        return np.array([n, p, n * p * (1 - p)])

    threshold = change_threshold(3, K, 0.05 * 10 / 86_400 / 2)  # the guard's default budget
    baseline = suffix_moments(np.stack([window(2250, 0.01)] * K))
    healthy = suffix_moments(np.stack([window(750, 0.01)] * K))
    assert float(change_statistic(healthy, baseline, 0.005).log_stat) < threshold
    bad = suffix_moments(np.stack([window(750, 0.01)] * (K - 1) + [window(750, 0.10)]))
    result = change_statistic(bad, baseline, 0.005)
    assert float(result.log_stat) >= threshold
    assert int(result.start) == 0  # the change is dated to the last window
    assert float(result.delta) == pytest.approx(0.09)


def test_overwhelming_evidence_is_infinite_never_lost() -> None:
    from streamguard.stats.change import _log_mean_exp

    x = np.array([[1.0, -np.inf, -np.inf], [np.inf, 2.0, -np.inf]])
    got = _log_mean_exp(x)
    assert got[0] == np.inf
    assert got[1] == pytest.approx(2.0 - math.log(2))
    assert got[2] == -np.inf
