"""The popularity guard on synthetic windows of item exposures (no stages, no broker)."""

from typing import Any

import numpy as np
import pytest

from streamguard.core.items import ItemWindow, count_items
from streamguard.core.snapshot import pack, unpack
from streamguard.exceptions import ConfigError
from streamguard.guards.popularity import PopularityGuard, weighted_gini, window_measures
from streamguard.policy import DeploymentPolicy, PopularityPolicy, parse_policy
from streamguard.stats.concentration import gini

CATALOGUE = 400
PER_WINDOW = 600  # requests per arm and window, 10 items each


def exposures(rng: np.random.Generator, exponent: float, requests: int) -> list[str]:
    """Ranked lists of 10 distinct items per request, Zipf weights (rank+1)^-exponent."""
    ranks = np.log(np.arange(1, CATALOGUE + 1, dtype=np.float64))
    keys = -exponent * ranks[None, :] + rng.gumbel(size=(requests, CATALOGUE))
    top = np.argpartition(-keys, 9, axis=1)[:, :10]
    return [f"item-{j}" for j in top.ravel().tolist()]


def item_window(ids: list[str], parts: int = 3) -> ItemWindow:
    """A stage-2 window merged from ``parts`` flushes (as partials from several partitions)."""
    window = ItemWindow(2048, 12)
    for chunk in np.array_split(np.arange(len(ids)), parts):
        window.add(count_items([ids[i] for i in chunk.tolist()], 512, 12))
    return window


class Context:
    """A GuardContext over prepared item windows of one canary and one baseline.

    ``slices`` maps a slice label to its (canary, baseline) windows.
    """

    deployment = "home-ranker"
    window_s = 10
    horizon_windows = 30

    def __init__(
        self,
        canary: dict[int, ItemWindow],
        baseline: dict[int, ItemWindow],
        slices: dict[str, tuple[dict[int, ItemWindow], dict[int, ItemWindow]]] | None = None,
    ) -> None:
        self.window = max(canary)
        self._items = {("items:canary", "v2", "*"): canary, ("items:primary", "v1", "*"): baseline}
        for label, (c, b) in (slices or {}).items():
            self._items[("items:canary", "v2", label)] = c
            self._items[("items:primary", "v1", label)] = b
        self._state: dict[str, dict[Any, Any]] = {}

    def versions(self, stream: str) -> list[str]:
        return {"arm:canary": ["v2"], "arm:primary": ["v1"]}.get(stream, [])

    def item_windows(
        self, stream: str, version: str, slice_: str = "*"
    ) -> list[tuple[int, ItemWindow]]:
        windows = self._items.get((stream, version, slice_), {})
        return sorted((i, w) for i, w in windows.items() if i <= self.window)

    def item_slices(self, stream: str, version: str) -> list[str]:
        return sorted(k[2] for k in self._items if k[:2] == (stream, version) and k[2] != "*")

    def untracked_slices(self) -> int:
        return 0

    def state(self, guard: str) -> dict[Any, Any]:
        return self._state.setdefault(guard, {})

    # Unused by this guard.
    def horizon(self, stream: str, version: str) -> Any:
        raise NotImplementedError

    def closed_window(self, stream: str, version: str) -> Any:
        return None

    def baseline_version(self, stream: str, version: str) -> str:
        return "v1"


def run(canary_exponents: list[float], seed: int) -> list[Any]:
    """Verdicts at each window close, the canary drawing with the given exponents."""
    rng = np.random.default_rng(seed)
    canary: dict[int, ItemWindow] = {}
    baseline: dict[int, ItemWindow] = {}
    guard = PopularityGuard(lambda _: DeploymentPolicy())
    verdicts = []
    for i, exponent in enumerate(canary_exponents):
        canary[i] = item_window(exposures(rng, exponent, PER_WINDOW))
        baseline[i] = item_window(exposures(rng, 1.0, 2 * PER_WINDOW))
        verdicts.append(guard.evaluate(Context(canary, baseline)))
    return verdicts


@pytest.mark.parametrize("seed", range(4))
def test_a_canary_sharpening_from_zipf_1_to_2_is_paused(seed: int) -> None:
    verdicts = run([1.0] * 4 + list(np.linspace(1.0, 2.0, 12)), seed)
    paused = [v for v in verdicts if v is not None and v.findings]
    assert paused, "the sharpening canary was never paused"
    finding = paused[0].findings[0]
    assert (paused[0].guard, finding.action, finding.slice) == ("popularity", "pause", "*")
    assert finding.statistic == "gini_slope_gap"
    assert finding.value is not None
    assert finding.value > 0.005
    stats = finding.stats
    assert stats["gini.canary"] > stats["gini.baseline"]
    assert stats["entropy.canary"] < stats["entropy.baseline"]
    assert stats["top_share.canary"] > stats["top_share.baseline"]
    gainers = finding.extra["gainers"]
    assert gainers
    assert gainers[0]["item"] in {f"item-{j}" for j in range(5)}
    assert set(finding.extra["trend"]) == {"canary", "baseline"}
    assert len(finding.extra["measures"]["canary"]) >= 6


def run_sliced(exponents: dict[str, list[float]], seed: int, share: dict[str, float]) -> list[Any]:
    """Verdicts at each window close over slices with their own canary exponents.

    ``share[label]`` is the slice's share of the requests; the whole deployment's windows
    merge all slices' exposures, as stage 2's would.
    """
    rng = np.random.default_rng(seed)
    guard = PopularityGuard(lambda _: DeploymentPolicy())
    canary: dict[int, ItemWindow] = {}
    baseline: dict[int, ItemWindow] = {}
    slices: dict[str, tuple[dict[int, ItemWindow], dict[int, ItemWindow]]] = {
        label: ({}, {}) for label in exponents
    }
    verdicts = []
    for i in range(len(next(iter(exponents.values())))):
        all_c: list[str] = []
        all_b: list[str] = []
        for label, series in exponents.items():
            c = exposures(rng, series[i], int(4 * PER_WINDOW * share[label]))
            b = exposures(rng, 1.0, int(4 * PER_WINDOW * share[label]))
            slices[label][0][i], slices[label][1][i] = item_window(c), item_window(b)
            all_c += c
            all_b += b
        canary[i], baseline[i] = item_window(all_c), item_window(all_b)
        verdicts.append(guard.evaluate(Context(canary, baseline, slices)))
    return verdicts


SHARES = {"platform=android": 0.3, "platform=ios": 0.3, "platform=web": 0.4}


@pytest.mark.parametrize("seed", range(3))
def test_a_canary_sharpening_in_one_slice_is_paused_for_that_slice(seed: int) -> None:
    ramp = [1.0] * 4 + list(np.linspace(1.0, 2.0, 12))
    flat = [1.0] * len(ramp)
    verdicts = run_sliced(
        {"platform=android": ramp, "platform=ios": flat, "platform=web": flat}, seed, SHARES
    )
    findings = [f for v in verdicts if v is not None for f in v.findings]
    assert all(len(v.findings) <= 1 for v in verdicts if v is not None)  # one pause per verdict
    named = {f.slice for f in findings} | {
        s for f in findings for s in f.extra.get("also_breaching", [])
    }
    assert "platform=android" in named
    assert named <= {"platform=android", "*"}  # the healthy platforms never breach
    sliced = [v.slices for v in verdicts if v is not None and len(v.slices) == 1 + len(SHARES)]
    android = [r for rows in sliced for r in rows if r.slice == "platform=android"]
    assert any(r.state == "pause" for r in android)
    paused = next(r for r in android if r.state == "pause")
    assert paused.stats["gini.canary"] is not None
    assert paused.stats["gini.baseline"] is not None
    assert paused.stats["gini.canary"] > paused.stats["gini.baseline"]
    judged = verdicts[-1]
    assert judged is not None
    assert {r.slice for r in judged.slices} == {"*", *SHARES}
    assert judged.extra["popularity"]["slices_judged"] == 3


@pytest.mark.parametrize("seed", range(4))
def test_healthy_slices_are_not_paused(seed: int) -> None:
    flat = [1.0] * 20
    verdicts = run_sliced(dict.fromkeys(SHARES, flat), 100 + seed, SHARES)
    judged = [v for v in verdicts if v is not None and len(v.slices) == 1 + len(SHARES)]
    assert judged
    assert all(not v.findings for v in verdicts if v is not None)


def test_bonferroni_holds_the_family_level() -> None:
    from scipy.stats import norm

    from streamguard.guards.popularity import _bonferroni

    assert _bonferroni(3.0, 1) == pytest.approx(3.0)
    assert _bonferroni(3.0, 10) == pytest.approx(norm.isf(norm.sf(3.0) / 10))


@pytest.mark.parametrize("seed", range(6))
def test_a_canary_with_the_baseline_distribution_is_not_paused(seed: int) -> None:
    verdicts = run([1.0] * 24, seed)
    judged = [v for v in verdicts if v is not None and v.slices[0].state != "insufficient"]
    assert judged
    assert all(not v.findings for v in verdicts if v is not None)


def test_too_few_exposures_are_insufficient_never_judged() -> None:
    rng = np.random.default_rng(0)
    canary = {i: item_window(exposures(rng, 1.0 + 0.1 * i, 20)) for i in range(12)}
    baseline = {i: item_window(exposures(rng, 1.0, 20)) for i in range(12)}
    verdict = PopularityGuard(lambda _: DeploymentPolicy()).evaluate(Context(canary, baseline))
    assert verdict is not None
    assert verdict.slices[0].state == "insufficient"
    assert verdict.findings == []


def test_weighted_gini_is_the_gini_of_the_expanded_counts() -> None:
    rng = np.random.default_rng(3)
    values = rng.integers(1, 50, 30).astype(np.float64)
    weights = rng.integers(1, 5, 30).astype(np.float64)
    expanded = np.repeat(values, weights.astype(int))
    assert weighted_gini(values, weights) == pytest.approx(gini(expanded), abs=1e-12)


def test_window_measures_are_exact_while_every_item_is_tracked() -> None:
    rng = np.random.default_rng(5)
    ids = exposures(rng, 1.2, 300)
    window = item_window(ids)
    _, counts = np.unique(ids, return_counts=True)
    measures = window_measures(window, PopularityPolicy(), catalogue=CATALOGUE)
    assert measures["gini"] == pytest.approx(gini(counts), abs=1e-12)
    assert measures["exposures"] == len(ids)
    assert measures["distinct"] == pytest.approx(counts.size, rel=0.05)


def test_count_items_is_exact_and_cut_to_the_top_k() -> None:
    ids = ["a"] * 5 + ["b"] * 3 + ["c"] * 3 + ["d"]
    record = count_items(ids, 2, 8)
    assert record["counts"] == [5, 3]
    assert record["ids"][0] == "a"
    assert record["ids"][1] in {"b", "c"}
    assert (record["total"], record["distinct"]) == (12, 4)


def test_item_windows_merge_exactly_and_survive_a_snapshot() -> None:
    rng = np.random.default_rng(7)
    ids = exposures(rng, 1.0, 200)
    window = item_window(ids, parts=5)
    back = unpack(pack({"w": window.to_dict()}))["w"]
    restored = ItemWindow.from_dict(back)
    assert restored.counts()[0] == window.counts()[0]
    assert np.array_equal(restored.counts()[1], window.counts()[1])
    assert restored.total == window.total == len(ids)
    assert restored.distinct() == window.distinct()
    expected = dict(zip(*np.unique(ids, return_counts=True), strict=True))
    assert dict(zip(*window.counts(), strict=True)) == expected


def test_policy_file_configures_the_popularity_guard() -> None:
    policy = parse_policy(
        "[defaults.guards.popularity]\ntrend_windows = 20\ngini_slope_margin = 0.01\n"
        "catalogue_size = 10000000\n"
    )
    settings = policy.defaults.popularity
    assert (settings.trend_windows, settings.gini_slope_margin) == (20, 0.01)
    assert settings.catalogue_size == 10_000_000
    assert settings.sketch_capacity == 2048
    with pytest.raises(ConfigError, match=r"popularity\.nope"):
        parse_policy("[defaults.guards.popularity]\nnope = 1\n")
