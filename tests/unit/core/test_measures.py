"""Per-slice pair measurements against a per-event oracle."""

from collections import defaultdict

import numpy as np
import pytest
from hypothesis import given, settings

from streamguard.core.measures import ArmMeasures
from streamguard.core.slices import MISSING, SliceCoder
from streamguard.core.summary import Array, Field, rollup
from streamguard.policy import CanaryPolicy
from tests.unit.core._pairs import MEASURES, SLICES, pair_batches


def labels_of(event: dict[str, str]) -> list[str]:
    platform = f"platform={event.get('platform', MISSING)}"
    tier = f"tier={event.get('tier', MISSING)}"
    return ["*", platform, tier, f"{platform},{tier}"]  # max_level=1 plus the full combination


def histogram(values: list[float]) -> np.ndarray:
    low, high = MEASURES.scores.lo, MEASURES.scores.hi
    edges = np.linspace(low, high, MEASURES.scores.bins + 1)
    counts, _ = np.histogram(np.clip(values, low, high), bins=edges)
    return counts


@settings(max_examples=60)
@given(pair_batches(min_size=1))
def test_contributions_match_a_per_event_oracle(batch) -> None:
    slices, primary, shadow = batch
    coder = SliceCoder(SLICES)
    rows = coder.rows(coder.encode(slices))
    got = MEASURES.contributions(rows.index, len(rows.labels), primary, shadow)
    assert set(got) == {f.name for f in MEASURES.fields}

    members: dict[str, list[int]] = defaultdict(list)
    for i, event in enumerate(slices):
        for label in labels_of(event):
            members[label].append(i)
    assert set(rows.labels) == set(members)
    threshold = MEASURES.decision_threshold
    for row, label in enumerate(rows.labels):
        idx = members[label]
        p = [float(primary[i]) for i in idx]
        s = [float(shadow[i]) for i in idx]
        dev = np.abs(np.array(s) - np.array(p))
        assert got["pairs"][row] == len(idx)
        flips = sum((a >= threshold) != (b >= threshold) for a, b in zip(p, s, strict=True))
        assert got["flips"][row] == flips
        outside = sum(not (0.0 <= a <= 1.0 and 0.0 <= b <= 1.0) for a, b in zip(p, s, strict=True))
        assert got["out_of_range"][row] == outside
        np.testing.assert_array_equal(got["primary_hist"][row], histogram(p))
        np.testing.assert_array_equal(got["shadow_hist"][row], histogram(s))
        n, mean, m2 = got["dev"][row]
        assert n == len(idx)
        assert mean == pytest.approx(dev.mean(), rel=1e-12, abs=1e-15)
        assert m2 == pytest.approx(dev.var() * len(idx), rel=1e-9, abs=1e-12)
        sketch = got["dev_sketch"][row]
        assert sketch.sum() == len(idx)
        np.testing.assert_array_equal(
            sketch, np.bincount(MEASURES.deviations.index(dev), minlength=len(sketch))
        )


def assert_same_sums(
    fields: tuple[Field, ...], got: dict[str, Array], want: dict[str, Array]
) -> None:
    """Counts equal; moments equal up to float rounding (they are summed in another order)."""
    for f in fields:
        if f.kind == "count":
            np.testing.assert_array_equal(got[f.name], want[f.name])
        else:
            np.testing.assert_array_equal(got[f.name][:, 0], want[f.name][:, 0])
            np.testing.assert_allclose(got[f.name], want[f.name], rtol=1e-12, atol=1e-12)


@settings(max_examples=60)
@given(pair_batches(min_size=1))
def test_sums_per_combination_rolled_up_equal_sums_per_level(batch) -> None:
    # What stage 1's settle does: each event once, per distinct slice combination, then
    # every combination's sums added to each of its levels' rows.
    slices, primary, shadow = batch
    coder = SliceCoder(SLICES)
    combos = coder.encode(slices)
    rows, parts = coder.rows(combos), coder.parts(combos)
    assert parts.labels == rows.labels
    np.testing.assert_array_equal(parts.table[parts.part], rows.index)
    n_parts, n_rows = len(parts.table), len(parts.labels)
    by_part = MEASURES.contributions(parts.part[:, None], n_parts, primary, shadow)
    want = MEASURES.contributions(rows.index, n_rows, primary, shadow)
    assert_same_sums(MEASURES.fields, rollup(MEASURES.fields, by_part, parts.table, n_rows), want)

    arms = ArmMeasures.from_policy(CanaryPolicy())
    errors, latency = primary > 0.5, np.where(shadow > 0.2, shadow * 100, np.nan)
    by_part = arms.events(parts.part[:, None], n_parts, errors, latency)
    want = arms.events(rows.index, n_rows, errors, latency)
    assert_same_sums(arms.fields, rollup(arms.fields, by_part, parts.table, n_rows), want)
    by_part = arms.outcomes(parts.part[:, None], n_parts, shadow)
    want = arms.outcomes(rows.index, n_rows, shadow)
    assert_same_sums(arms.fields, rollup(arms.fields, by_part, parts.table, n_rows), want)


def test_hand_computed_pairs() -> None:
    # Two requests in one slice: |0.75-0.25| = 0.5 (a flip at 0.5), |0.37-0.32| = 0.05.
    index = np.array([[0], [0]])
    got = MEASURES.contributions(index, 1, np.array([0.25, 0.32]), np.array([0.75, 0.37]))
    assert got["pairs"].tolist() == [2]
    assert got["flips"].tolist() == [1]
    assert got["out_of_range"].tolist() == [0]
    np.testing.assert_allclose(got["dev"][0], [2.0, 0.275, 2 * 0.225**2])
    assert got["primary_hist"][0].tolist() == [0, 0, 1, 1, 0, 0, 0, 0, 0, 0]
    assert got["shadow_hist"][0].tolist() == [0, 0, 0, 1, 0, 0, 0, 1, 0, 0]
    assert got["dev_sketch"][0].sum() == 2


ARMS = ArmMeasures.from_policy(CanaryPolicy())


def test_arm_events_count_events_errors_and_latency_per_row() -> None:
    index = np.array([[0, 1], [0, 2], [0, 1]])
    errors = np.array([False, True, True])
    latency = np.array([10.0, np.nan, 1000.0])
    got = ARMS.events(index, 3, errors, latency)
    assert set(got) == {f.name for f in ARMS.fields}
    assert got["events"].tolist() == [3, 2, 1]
    assert got["errors"].tolist() == [2, 1, 1]
    assert got["unpaired"].tolist() == [0, 0, 0]
    # Latency moments are of ln(ms), over the events that have a latency only.
    logs = np.log([10.0, 1000.0])
    np.testing.assert_allclose(
        got["latency"][0], [2, logs.mean(), ((logs - logs.mean()) ** 2).sum()]
    )
    np.testing.assert_allclose(
        got["latency"][1], [2, logs.mean(), ((logs - logs.mean()) ** 2).sum()]
    )
    assert got["latency"][2].tolist() == [0.0, 0.0, 0.0]
    assert got["latency_sketch"].sum(axis=1).tolist() == [2, 2, 0]
    assert got["outcomes"].tolist() == [[0.0, 0.0, 0.0]] * 3


def test_arm_latency_sketch_p99_within_its_relative_accuracy() -> None:
    rng = np.random.default_rng(3)
    latency = rng.lognormal(np.log(50.0), 0.6, 20_000)
    index = np.zeros((len(latency), 1), dtype=np.int64)
    got = ARMS.events(index, 1, np.zeros(len(latency), bool), latency)
    p99 = ARMS.latency.quantile(got["latency_sketch"], 0.99)[0]
    truth = np.quantile(latency, 0.99, method="inverted_cdf")
    assert abs(p99 - truth) <= CanaryPolicy().latency_alpha * truth * 1.0001


def test_arm_unpaired_and_outcomes_fill_only_their_fields() -> None:
    index = np.array([[0, 1], [0, 2], [0, 1]])
    unpaired = ARMS.unpaired(index, 3)
    assert unpaired["unpaired"].tolist() == [3, 2, 1]
    assert unpaired["events"].tolist() == [0, 0, 0]
    outcomes = ARMS.outcomes(index, 3, np.array([1.0, 0.0, 1.0]))
    np.testing.assert_allclose(outcomes["outcomes"][0], [3, 2 / 3, 2 / 3])
    np.testing.assert_allclose(outcomes["outcomes"][1], [2, 1.0, 0.0])
    assert outcomes["events"].tolist() == [0, 0, 0]
