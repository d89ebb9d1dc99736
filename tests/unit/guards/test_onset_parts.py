"""Onset series snapshotted in blocks: restored exactly, and written once per block."""

import math
import pickle
import random

from hypothesis import given, settings
from hypothesis import strategies as st

from streamguard.core.snapshot import Part, pack, split, unpack
from streamguard.guards.onset_parts import BLOCK, restore_tracker, snapshot_tracker
from streamguard.stats.onset import OnsetTracker


@settings(max_examples=80, deadline=None)
@given(
    size=st.integers(2, 400),
    length=st.integers(0, 900),
    seed=st.integers(0, 2**32 - 1),
    cuts=st.lists(st.integers(0, 900), max_size=6),
    repickle=st.booleans(),
    reset_at=st.one_of(st.none(), st.integers(0, 900)),
)
def test_a_tracker_saved_in_blocks_is_restored_exactly(
    *, size: int, length: int, seed: int, cuts: list[int], repickle: bool, reset_at: int | None
) -> None:
    # Values drawn from a seed: hypothesis' own lists stay short, and the blocks need length.
    rng = random.Random(seed)
    values = [math.nan if rng.random() < 0.1 else rng.uniform(0.0, 5.0) for _ in range(length)]
    tracker, parts = OnsetTracker(max_history=size), {}
    for i, v in enumerate(values):
        if i == reset_at:
            tracker.reset()
        tracker.update(10.0 * i, v)
        if i in cuts:  # snapshots along the way keep their cache, as the guard's do
            snapshot_tracker(tracker, parts)
            if repickle:  # stage 2 put the state back after a failure: a new object
                tracker, parts = pickle.loads(pickle.dumps(tracker)), {}  # noqa: S301
    saved = snapshot_tracker(tracker, parts)
    again = restore_tracker(unpack(pack(saved)))
    # The same bytes from the restored tracker: the series decides them, not its past.
    again_parts: dict[int, Part] = {}
    assert pack(snapshot_tracker(again, again_parts)) == pack(saved)
    assert again.history == tracker.history
    assert again.snapshot() == tracker.snapshot()
    assert len(saved["tail"]) < BLOCK
    # Restored, it carries on as the original does.
    assert [again.update(1e6 + i, 1.0) for i in range(5)] == [
        tracker.update(1e6 + i, 1.0) for i in range(5)
    ]
    assert again.onset() == tracker.onset()
    for i in range(3 * BLOCK):  # and on from there, each with its own cache
        again.update(2e6 + i, 0.5)
        tracker.update(2e6 + i, 0.5)
        if i % 50 == 0:
            mine, theirs = snapshot_tracker(again, again_parts), snapshot_tracker(tracker, parts)
            assert pack(mine) == pack(theirs)


def test_older_snapshots_with_the_whole_history_are_read() -> None:
    tracker = OnsetTracker()
    for i in range(300):
        tracker.update(10.0 * i, (i % 5) / 5)
    old = {k: v for k, v in tracker.snapshot().items() if k != "appended"}
    assert restore_tracker(old).history == tracker.history


def _round(trackers: list[OnsetTracker], caches: list[dict[int, Part]]) -> tuple[bytes, dict]:
    return split([snapshot_tracker(t, c) for t, c in zip(trackers, caches, strict=True)])


def test_a_snapshot_round_writes_only_the_tail_and_new_blocks() -> None:
    rng = random.Random(3)
    trackers = [OnsetTracker() for _ in range(20)]
    caches: list[dict[int, Part]] = [{} for _ in trackers]
    for t in trackers:
        for i in range(720):
            t.update(10.0 * i, rng.random())
    _, first_parts = _round(trackers, caches)
    for t in trackers:
        t.update(7200.0, rng.random())  # one more window
    second, second_parts = _round(trackers, caches)
    assert set(second_parts) <= set(first_parts)  # no new block: nothing new to write
    whole = pack([t.snapshot() for t in trackers])
    assert len(second) * 5 < len(whole)  # the main record is the tails and part names
    for t in trackers:  # a block completes: one new part per tracker
        for i in range(1, BLOCK):
            t.update(7200.0 + 10.0 * i, rng.random())
    _, third_parts = _round(trackers, caches)
    assert len(set(third_parts) - set(first_parts)) == len(trackers)


def test_a_reset_tracker_never_reuses_a_block_made_before() -> None:
    tracker, parts = OnsetTracker(), {}
    for i in range(300):
        tracker.update(10.0 * i, 0.1)
    snapshot_tracker(tracker, parts)  # blocks 0 and 1 made, of values 0.1
    tracker.reset()
    for i in range(300):
        tracker.update(10.0 * (300 + i), 0.9)
    again = restore_tracker(unpack(pack(snapshot_tracker(tracker, parts))))
    assert again.history == tracker.history
    assert {x for _, x in again.history} == {0.9}
