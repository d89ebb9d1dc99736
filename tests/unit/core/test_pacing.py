"""Backpressure from stage 2 to stage 1 (streamguard.core.pacing)."""

import math

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from streamguard.core.pacing import Pacer

watermarks = st.dictionaries(
    st.integers(0, 15), st.floats(-1e6, 1e6, allow_nan=False), min_size=1, max_size=16
)


def test_a_partition_pauses_beyond_the_bound_and_resumes_within_half_of_it() -> None:
    pacer = Pacer(max_ahead_s=60.0)
    assert pacer.update({0: 100.0, 1: 160.0}, low=100.0) == set()  # exactly at the bound
    assert pacer.update({0: 100.0, 1: 160.5}, low=100.0) == {1}
    assert pacer.update({0: 130.5, 1: 161.0}, low=130.5) == {1}  # 30.5 s ahead: still held
    assert pacer.update({0: 131.0, 1: 161.0}, low=131.0) == set()  # 30 s: resumed
    assert pacer.pauses == 1


@pytest.mark.parametrize("low", [-math.inf, math.nan, math.inf])
def test_an_unknown_low_watermark_pauses_nothing(low: float) -> None:
    pacer = Pacer(max_ahead_s=10.0)
    pacer.update({0: 0.0, 1: 500.0}, low=0.0)
    assert pacer.update({0: 0.0, 1: 500.0}, low=low) == set()
    assert pacer.paused == set()


def test_zero_turns_pacing_off_and_a_revoked_partition_is_forgotten() -> None:
    assert Pacer(max_ahead_s=0.0).update({0: 0.0, 1: 1e9}, low=0.0) == set()
    pacer = Pacer(max_ahead_s=10.0)
    assert pacer.update({0: 0.0, 1: 50.0, 2: 60.0}, low=0.0) == {1, 2}
    assert pacer.update({0: 0.0, 2: 60.0}, low=0.0) == {2}


@pytest.mark.parametrize("bad", [-1.0, math.nan, math.inf])
def test_a_bound_that_cannot_work_is_refused(bad: float) -> None:
    with pytest.raises(ValueError, match="max_ahead_s"):
        Pacer(bad)


@given(
    st.lists(st.tuples(watermarks, st.floats(-1e6, 1e6, allow_nan=False)), min_size=1),
    st.floats(1.0, 1e4),
)
@example([({0: 1.2920924194467055e-244}, -1.0)], 1.0)
def test_pausing_follows_the_bound_at_every_look(
    looks: list[tuple[dict[int, float], float]], max_ahead: float
) -> None:
    pacer = Pacer(max_ahead)
    before: set[int] = set()
    for marks, low in looks:
        paused = pacer.update(marks, low)
        assert paused <= set(marks)
        for partition, mark in marks.items():
            # The bounds as the pacer computes them (low + S): ``mark - low > S`` differs from
            # ``mark > low + S`` by a rounding at the bound (mark 1.3e-244, low -1, S 1: CI,
            # 2026-11-25).
            if mark > low + max_ahead:
                assert partition in paused  # beyond the bound: never read on
            elif mark <= low + max_ahead / 2:
                assert partition not in paused  # within half of it: never held
            else:  # in between: as it was (the hysteresis)
                assert (partition in paused) == (partition in before)
        # Stage 2's low watermark is never that of a paused partition: the slowest reads on.
        assert all(marks[p] > low for p in paused)
        before = paused
