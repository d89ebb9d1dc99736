"""Tests for streamguard.stats.page_hinkley, with river's PageHinkley(mode="up") as oracle."""

import json
import subprocess
import sys
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from river import drift

from streamguard.stats.page_hinkley import PageHinkley

values = st.lists(st.floats(0.0, 10.0), min_size=1, max_size=120)
params = st.fixed_dictionaries(
    {
        "min_instances": st.integers(1, 10),
        "delta": st.sampled_from([0.0, 0.005, 0.1, 0.25, 1.0]),
        "threshold": st.sampled_from([0.5, 1.0, 3.0, 10.0]),
    }
)


def river_state(ph: Any) -> dict[str, Any]:
    """river 0.26's private fields, named as in PageHinkley.snapshot (min_increase raw)."""
    return {
        "n": ph._x_mean.n,
        "mean": ph._x_mean.get(),
        "sum_increase": ph._sum_increase,
        "sum_decrease": ph._sum_decrease,
        "min_increase": ph._min_increase,
        "max_decrease": ph._max_decrease,
        "drift_detected": ph.drift_detected,
    }


def our_state(ph: PageHinkley) -> dict[str, Any]:
    return {
        "n": ph.n,
        "mean": ph.mean,
        "sum_increase": ph.sum_increase,
        "sum_decrease": ph.sum_decrease,
        "min_increase": ph.min_increase,
        "max_decrease": ph.max_decrease,
        "drift_detected": ph.drift_detected,
    }


def assert_matches_river(xs: list[float], **kwargs: Any) -> int:
    """Feed both detectors; states must be equal after every value. Returns the alarm count."""
    ours = PageHinkley(**kwargs)
    theirs = drift.PageHinkley(mode="up", **kwargs)
    assert our_state(ours) == river_state(theirs)
    alarms = 0
    for x in xs:
        got = ours.update(x)
        theirs.update(x)
        assert our_state(ours) == river_state(theirs)
        assert got is ours.drift_detected
        alarms += got
    return alarms


@settings(max_examples=200)
@given(values, params)
def test_matches_river_exactly(xs: list[float], kwargs: dict[str, Any]) -> None:
    assert_matches_river(xs, **kwargs)


@settings(max_examples=50)
@given(st.lists(st.sampled_from([0.1, 0.2, 5.0, 9.0]), min_size=1, max_size=120))
def test_matches_river_through_many_alarms(xs: list[float]) -> None:
    # Few distinct levels, low threshold: alarms (and the resets after them) happen often.
    assert_matches_river(xs, min_instances=2, delta=0.05, threshold=0.5)


def test_matches_river_on_a_long_series_with_steps() -> None:
    rng = np.random.default_rng(7)
    levels = rng.uniform(0.0, 3.0, 40)
    x = np.concatenate([rng.normal(level, 0.3, rng.integers(20, 200)) for level in levels])
    x = np.clip(x, 0.0, 10.0)
    alarms = assert_matches_river([float(v) for v in x], min_instances=6, delta=0.25, threshold=3.0)
    assert alarms >= 5  # the resets after alarms are exercised too
    non_default_alpha = {"min_instances": 6, "delta": 0.1, "threshold": 2.0, "alpha": 0.99}
    assert_matches_river([float(v) for v in x[:2000]], **non_default_alpha)


@settings(max_examples=100)
@given(values, params, st.data())
def test_snapshot_restore_continues_identically(
    xs: list[float], kwargs: dict[str, Any], data: st.DataObject
) -> None:
    cut = data.draw(st.integers(0, len(xs)))
    straight = PageHinkley(**kwargs)
    expected = [straight.update(x) for x in xs]
    first = PageHinkley(**kwargs)
    head = [first.update(x) for x in xs[:cut]]
    snap = json.loads(json.dumps(first.snapshot(), allow_nan=False))
    resumed = PageHinkley.restore(snap, **kwargs)
    assert our_state(resumed) == our_state(first)
    tail = [resumed.update(x) for x in xs[cut:]]
    assert head + tail == expected
    assert our_state(resumed) == our_state(straight)


def test_snapshot_of_a_fresh_detector() -> None:
    assert PageHinkley().snapshot() == {
        "n": 0.0,
        "mean": 0.0,
        "sum_increase": 0.0,
        "sum_decrease": 0.0,
        "min_increase": None,
        "max_decrease": -1.0,
        "drift_detected": False,
    }


@pytest.mark.parametrize("x", [float("nan"), float("inf"), -float("inf")])
def test_rejects_non_finite_values(x: float) -> None:
    ph = PageHinkley()
    with pytest.raises(ValueError, match="finite"):
        ph.update(x)
    assert ph.n == 0.0


@pytest.mark.parametrize("alpha", [0.0, -0.5, 1.5, float("nan")])
def test_rejects_bad_alpha(alpha: float) -> None:
    with pytest.raises(ValueError, match="alpha"):
        PageHinkley(alpha=alpha)


def test_worker_runtime_imports_neither_river_nor_scipy() -> None:
    # river and scipy cost about 70 MB of the worker's memory; only the tests may use them.
    code = (
        "import sys, streamguard.stats, streamguard.faust_app.runtime, streamguard.cli.main\n"
        "print(sorted({m.split('.')[0] for m in sys.modules} & {'river', 'scipy'}))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120
    )
    assert out.stdout.strip() == "[]"
