"""Tests for streamguard.stats.heavy_hitters against exact counts on skewed (zipf) streams."""

import itertools
import json
import math
import os
import subprocess
import sys
from collections import Counter
from functools import cache
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from streamguard.stats import heavy_hitters
from streamguard.stats.heavy_hitters import CountMin, DistinctCounter, SpaceSaving, hash64

CATALOGUE = 1_000_000
EVENTS = 200_000
MASK = (1 << 64) - 1


@cache
def zipf_stream(a: float, n: int = EVENTS, seed: int = 0) -> tuple[str, ...]:
    """``n`` item exposures, zipf(a) popularity over a catalogue of 1M shuffled item ids."""
    rng = np.random.default_rng(seed)
    ids = rng.permutation(CATALOGUE)
    ranks = (rng.zipf(a, n) - 1) % CATALOGUE
    return tuple(f"item-{i}" for i in ids[ranks])


def feed(sketch: SpaceSaving | CountMin, items: tuple[str, ...], batch: int = 20_000) -> None:
    for start in range(0, len(items), batch):
        sketch.update_many(items[start : start + batch])


# --- hash -----------------------------------------------------------------------------------


def fnv1a64(data: bytes) -> int:
    h = 0xCBF29CE484222325
    for byte in data:
        h = ((h ^ byte) * 0x100000001B3) & MASK
    return h


def fmix64(h: int) -> int:
    h ^= h >> 33
    h = (h * 0xFF51AFD7ED558CCD) & MASK
    h ^= h >> 33
    h = (h * 0xC4CEB9FE1A85EC53) & MASK
    return h ^ (h >> 33)


def test_reference_fnv_matches_published_vectors() -> None:
    # Test vectors of the FNV reference (Noll's fnv test suite): "", "a", "foobar".
    assert fnv1a64(b"") == 0xCBF29CE484222325
    assert fnv1a64(b"a") == 0xAF63DC4C8601EC8C
    assert fnv1a64(b"foobar") == 0x85944171F73967E8


@settings(max_examples=100)
@given(st.lists(st.text(max_size=30), max_size=40))
def test_hash64_matches_pure_python_reference(items: list[str]) -> None:
    got = hash64(items)
    assert got.dtype == np.uint64
    assert got.tolist() == [fmix64(fnv1a64(s.encode("utf-8"))) for s in items]


def test_hash64_fixed_values() -> None:
    # Computed once from the documented algorithm (fmix64 of FNV-1a-64 of the UTF-8 bytes).
    assert hash64(["streamguard", "", "é"]).tolist()[:2] == [
        0xFE557C571AFD365F,
        0xEFD01F60BA992926,
    ]
    assert int(hash64(["é"])[0]) == fmix64(fnv1a64("é".encode()))


_CHILD = """
import importlib.util, json, sys
spec = importlib.util.spec_from_file_location("hh", sys.argv[1])
hh = importlib.util.module_from_spec(spec)
spec.loader.exec_module(hh)
items = [f"item-{i % 97}-{'x' * (i % 13)}" for i in range(3000)] + ["é", ""]
cm = hh.CountMin(257, 3, seed=11)
cm.update_many(items)
ss = hh.SpaceSaving(20)
ss.update_many(items)
hll = hh.DistinctCounter(8)
hll.update_many(items)
print(json.dumps([hh.hash64(items).tolist(), cm.to_dict(), ss.to_dict(), hll.to_dict()]))
"""


def test_sketches_identical_across_processes_with_different_hash_seeds() -> None:
    path = str(Path(heavy_hitters.__file__))
    outputs = []
    for seed in ("1", "2"):
        env = {**os.environ, "PYTHONHASHSEED": seed}
        done = subprocess.run(
            [sys.executable, "-c", _CHILD, path], env=env, capture_output=True, check=True
        )
        outputs.append(json.loads(done.stdout))
    assert outputs[0] == outputs[1]
    items = [f"item-{i % 97}-{'x' * (i % 13)}" for i in range(3000)] + ["é", ""]
    cm = CountMin(257, 3, seed=11)
    cm.update_many(items)
    assert outputs[0][0] == hash64(items).tolist()
    assert outputs[0][1] == cm.to_dict()


# --- SpaceSaving ----------------------------------------------------------------------------


def naive_space_saving(stream: list[tuple[str, int]], k: int) -> list[tuple[str, int, int]]:
    """Metwally et al.'s algorithm by linear scans: evict the smallest (count, item)."""
    counters: dict[str, list[int]] = {}
    for item, c in stream:
        if c == 0:
            continue
        if item in counters:
            counters[item][0] += c
        elif len(counters) < k:
            counters[item] = [c, 0]
        else:
            victim = min(counters, key=lambda x: (counters[x][0], x))
            floor = counters.pop(victim)[0]
            counters[item] = [floor + c, floor]
    return sorted(((x, c, e) for x, (c, e) in counters.items()), key=lambda t: (-t[1], t[0]))


def residual_bound(exact: Counter[str], k: int) -> float:
    """Berinde et al.'s tail bound, min over j < k of (N − (sum of the j largest)) / (k − j)."""
    top = np.array(sorted(exact.values(), reverse=True)[:k], dtype=np.float64)
    head = np.concatenate([[0.0], np.cumsum(top)])
    n = float(sum(exact.values()))
    j = np.arange(min(k, top.size + 1))
    return float(np.min((n - head[j]) / (k - j)))


def assert_space_saving_guarantees(sketch: SpaceSaving, exact: Counter[str]) -> float:
    """Check every bound against exact counts; return the largest error over N/k."""
    n = sum(exact.values())
    assert sketch.total == n
    bound = n / sketch.capacity
    counters = sketch.counters()
    assert len(counters) <= sketch.capacity
    tracked = {item for item, _, _ in counters}
    floor = sketch.min_count()
    assert floor <= bound
    for item, count, error in counters:
        assert 0 <= error <= bound
        assert count - error <= exact[item] <= count
        assert sketch.estimate(item) == count
        assert sketch.bounds(item) == (count - error, count)
    for item, true in exact.items():
        if item not in tracked:
            assert true <= floor
            assert sketch.bounds(item) == (0, floor)
            assert true <= bound  # so every item above N/k is tracked
    max_error = max((e for _, _, e in counters), default=0)
    # The tighter residual ("tail") bound of Berinde, Indyk, Cormode, Strauss (PODS 2009),
    # proven for one-by-one updates, also holds for batches and merges here.
    tail = residual_bound(exact, sketch.capacity) if n else 0.0
    assert max_error <= tail
    assert floor <= tail
    return max_error / bound if n else 0.0


weighted_streams = st.lists(
    st.tuples(st.sampled_from("abcdefghijklmnop"), st.integers(0, 5)), max_size=120
)


@settings(max_examples=150)
@given(weighted_streams, st.integers(1, 6))
def test_space_saving_update_matches_naive_reference(stream: list[tuple[str, int]], k: int) -> None:
    sketch = SpaceSaving(k)
    for item, c in stream:
        sketch.update(item, c)
    assert sketch.counters() == naive_space_saving(stream, k)
    exact: Counter[str] = Counter()
    for item, c in stream:
        exact[item] += c
    assert_space_saving_guarantees(sketch, +exact)


@settings(max_examples=150)
@given(weighted_streams, st.integers(1, 6), st.lists(st.integers(0, 120), max_size=6))
def test_space_saving_batches_keep_the_guarantees(
    stream: list[tuple[str, int]], k: int, cuts: list[int]
) -> None:
    sketch = SpaceSaving(k)
    bounds = [0, *sorted(cuts), len(stream)]
    for lo, hi in itertools.pairwise(bounds):
        part = stream[lo:hi]
        sketch.update_many([item for item, _ in part], [c for _, c in part])
    exact: Counter[str] = Counter()
    for item, c in stream:
        exact[item] += c
    assert_space_saving_guarantees(sketch, +exact)


def test_single_item_batches_equal_sequential_updates() -> None:
    stream = zipf_stream(1.3)[:3000]
    one, many = SpaceSaving(50), SpaceSaving(50)
    for item in stream:
        one.update(item)
        many.update_many([item])
    assert one.counters() == many.counters()
    assert one.counters() == naive_space_saving([(x, 1) for x in stream], 50)


@pytest.mark.parametrize("a", [1.1, 1.5, 2.0])
@pytest.mark.parametrize("k", [100, 1000])
def test_space_saving_bounds_on_zipf_streams(a: float, k: int) -> None:
    stream = zipf_stream(a)
    sketch = SpaceSaving(k)
    feed(sketch, stream)
    exact = Counter(stream)
    ratio = assert_space_saving_guarantees(sketch, exact)
    # Skewed streams sit far inside the worst case (measured 0.0 to 0.09 of N/k here).
    assert ratio <= 0.25
    # And the head is ranked right: the sketch's top 10 are the true top 10, in order.
    assert [item for item, _ in sketch.top(10)] == [item for item, _ in exact.most_common(10)]


@settings(max_examples=10, deadline=None)
@given(st.integers(0, EVENTS), st.sampled_from([1.1, 1.3, 2.0]))
def test_space_saving_merge_of_halves(split: int, a: float) -> None:
    stream = zipf_stream(a)
    left, right = SpaceSaving(200), SpaceSaving(200)
    feed(left, stream[:split])
    feed(right, stream[split:])
    merged = left.merge(right)
    assert merged.total == left.total + right.total == EVENTS
    assert assert_space_saving_guarantees(merged, Counter(stream)) <= 1.0
    assert right.merge(left).to_dict() == merged.to_dict()


def test_space_saving_tree_of_merges_over_partitions_and_windows() -> None:
    stream = zipf_stream(1.2)
    parts = []
    for p in range(8):
        sketch = SpaceSaving(300)
        feed(sketch, stream[p::8], batch=5000)
        parts.append(sketch)
    while len(parts) > 1:
        parts = [parts[i].merge(parts[i + 1]) for i in range(0, len(parts), 2)]
    assert assert_space_saving_guarantees(parts[0], Counter(stream)) <= 1.0
    # Updating after a merge keeps the guarantees too.
    extra = zipf_stream(1.2, n=20_000, seed=1)
    feed(parts[0], extra)
    assert assert_space_saving_guarantees(parts[0], Counter(stream) + Counter(extra)) <= 1.0


def test_space_saving_round_trips_through_json() -> None:
    sketch = SpaceSaving(100)
    feed(sketch, zipf_stream(1.5)[:50_000])
    restored = SpaceSaving.from_dict(json.loads(json.dumps(sketch.to_dict())))
    assert restored.to_dict() == sketch.to_dict()
    assert restored.min_count() == sketch.min_count()
    # Both continue identically.
    more = zipf_stream(1.5)[50_000:60_000]
    feed(sketch, more)
    feed(restored, more)
    assert restored.to_dict() == sketch.to_dict()


def test_space_saving_validation() -> None:
    with pytest.raises(ValueError, match="capacity"):
        SpaceSaving(0)
    sketch = SpaceSaving(2)
    with pytest.raises(ValueError, match="non-negative"):
        sketch.update("a", -1)
    with pytest.raises(ValueError, match="length"):
        sketch.update_many(["a", "b"], [1])
    with pytest.raises(ValueError, match="capacities"):
        sketch.merge(SpaceSaving(3))
    bad = {**sketch.to_dict(), "counters": [["a", 1, 2]]}
    with pytest.raises(ValueError, match="error"):
        SpaceSaving.from_dict(bad)
    with pytest.raises(ValueError, match="space_saving"):
        SpaceSaving.from_dict({**sketch.to_dict(), "kind": "count_min"})
    assert sketch.top(5) == []
    assert sketch.min_count() == 0


def test_space_saving_memory_stays_bounded_over_a_huge_catalogue() -> None:
    # 2M exposures drawn uniformly from a 10M-item catalogue: ~1.8M distinct items.
    rng = np.random.default_rng(7)
    ids = rng.integers(0, 10_000_000, 2_000_000)
    sketch = SpaceSaving(1000)
    sizes = []
    for start in range(0, ids.size, 200_000):
        sketch.update_many([f"item-{i}" for i in ids[start : start + 200_000]])
        assert len(sketch.counters()) <= 1000
        sizes.append(len(json.dumps(sketch.to_dict())))
    assert len(sketch.counters()) == 1000
    assert sketch.total == 2_000_000
    assert sketch.min_count() <= 2_000_000 / 1000
    # ~25 bytes per counter whatever the stream length: only the counts' digits grow.
    assert max(sizes) < 40_000
    assert max(sizes) < 1.2 * sizes[0]


# --- Count-Min ------------------------------------------------------------------------------


@pytest.mark.parametrize(("width", "depth"), [(500, 2), (2000, 3), (4096, 5)])
@pytest.mark.parametrize("a", [1.1, 1.5])
def test_count_min_error_bound_on_zipf_streams(width: int, depth: int, a: float) -> None:
    stream = zipf_stream(a)
    sketch = CountMin(width, depth, seed=3)
    feed(sketch, stream)
    exact = Counter(stream)
    items = list(exact)
    truth = np.array([exact[x] for x in items])
    got = sketch.estimate_many(items)
    assert sketch.total == len(stream)
    assert np.all(got >= truth)  # never underestimates
    over = got - truth
    fraction = float(np.mean(over > math.e * len(stream) / width))
    assert fraction <= math.exp(-depth) + 0.01
    # Each row's expected overestimate is at most N/width (Markov's inequality's input).
    assert float(over.mean()) <= len(stream) / width


@settings(max_examples=10, deadline=None)
@given(st.integers(0, 50_000))
def test_count_min_merge_equals_building_on_the_union(split: int) -> None:
    stream = zipf_stream(1.3)[:50_000]
    left, right, whole = (CountMin(1024, 4, seed=9) for _ in range(3))
    feed(left, stream[:split], batch=7000)
    feed(right, stream[split:], batch=7000)
    feed(whole, stream, batch=7000)
    merged = left.merge(right)
    np.testing.assert_array_equal(merged.table, whole.table)
    assert merged.total == whole.total == len(stream)


def test_count_min_weights_single_updates_and_round_trip() -> None:
    a, b = CountMin(64, 3), CountMin(64, 3)
    a.update_many(["x", "y", "x", "z"], [2, 0, 3, 1])
    for item, c in [("x", 5), ("z", 1)]:
        b.update(item, c)
    np.testing.assert_array_equal(a.table, b.table)
    assert a.estimate("x") >= 5
    assert a.total == b.total == 6
    restored = CountMin.from_dict(json.loads(json.dumps(a.to_dict())))
    np.testing.assert_array_equal(restored.table, a.table)
    assert restored.estimate_many(["x", "z"]).tolist() == a.estimate_many(["x", "z"]).tolist()
    with pytest.raises(ValueError, match="differ"):
        a.merge(CountMin(64, 3, seed=1))
    with pytest.raises(ValueError, match="width"):
        CountMin(0, 3)
    with pytest.raises(ValueError, match="shape"):
        CountMin.from_dict({**a.to_dict(), "table": [[0] * 64]})


def test_count_min_seeds_give_different_rows() -> None:
    items = [f"i{i}" for i in range(2000)]
    cols = [CountMin(1 << 16, 2, seed=s)._columns(hash64(items)) for s in (0, 1)]
    assert not np.array_equal(cols[0][0], cols[0][1])
    assert not np.array_equal(cols[0], cols[1])
    # Roughly uniform columns: 2000 items in 16 buckets, each near 125.
    buckets = np.bincount(CountMin(16, 1)._columns(hash64(items))[0], minlength=16)
    assert buckets.min() > 80
    assert buckets.max() < 170


# --- HyperLogLog ----------------------------------------------------------------------------


@pytest.mark.parametrize("n", [10_000, 100_000, 1_000_000])
def test_distinct_counter_within_three_standard_errors(n: int) -> None:
    counter = DistinctCounter()
    items = [f"user-{i}/item-{i * 7919 % 1_000_003}" for i in range(n)]
    for start in range(0, n, 250_000):
        counter.update_many(items[start : start + 250_000])
    counter.update_many(items[: n // 10])  # duplicates change nothing
    se = counter.relative_standard_error
    assert se == pytest.approx(1.04 / 64)
    for method in ("flajolet", "ertl"):
        assert abs(counter.estimate(method) / n - 1) < 3 * se


def test_distinct_counter_merge_is_exactly_the_union() -> None:
    left = [f"a{i}" for i in range(60_000)]
    right = [f"a{i}" for i in range(40_000, 130_000)]
    one, two, union = DistinctCounter(), DistinctCounter(), DistinctCounter()
    one.update_many(left)
    two.update_many(right)
    union.update_many(left + right)
    merged = one.merge(two)
    np.testing.assert_array_equal(merged.registers, union.registers)
    assert merged.estimate() == union.estimate()
    assert abs(merged.estimate() / 130_000 - 1) < 3 * merged.relative_standard_error


def test_distinct_counter_small_range_and_round_trip() -> None:
    counter = DistinctCounter(14)
    counter.update_many([str(i) for i in range(100)])
    assert counter.estimate() == pytest.approx(100, abs=2)  # linear counting is near exact
    restored = DistinctCounter.from_dict(json.loads(json.dumps(counter.to_dict())))
    np.testing.assert_array_equal(restored.registers, counter.registers)
    assert restored.estimate() == counter.estimate()
    counter.update("100")
    assert counter.estimate() >= restored.estimate()
    with pytest.raises(ValueError, match="precision"):
        DistinctCounter(3)
    with pytest.raises(ValueError, match="precisions"):
        counter.merge(DistinctCounter(12))
    with pytest.raises(ValueError, match="method"):
        counter.estimate("bogus")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="registers"):
        DistinctCounter.from_dict({**counter.to_dict(), "registers": [0] * 10})


def test_distinct_counter_rho_uses_the_bits_after_the_index() -> None:
    # Register value = 1 + leading zeros of the hash's low 64 − p bits, capped at 64 − p + 1.
    items = [f"k{i}" for i in range(5000)]
    p = 10
    counter = DistinctCounter(p)
    counter.update_many(items)
    expected = np.zeros(1 << p, dtype=np.uint8)
    for h in hash64(items).tolist():
        rest = (h << p) & MASK
        rho = min(64 - rest.bit_length() + 1, 64 - p + 1)
        expected[h >> (64 - p)] = max(expected[h >> (64 - p)], rho)
    np.testing.assert_array_equal(counter.registers, expected)
