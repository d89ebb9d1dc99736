"""Pairing primary and shadow halves: within and across batches, duplicates, expiry, capacity."""

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from streamguard.contracts import ROLE_PRIMARY, ROLE_SHADOW, PredictionBatch
from streamguard.core.pairing import PairingBuffer

P, S = ROLE_PRIMARY, ROLE_SHADOW


def batch(halves: list[tuple[str, int, float, float]]) -> PredictionBatch:
    """Halves as (request_id, role, ts, score); versions name the role."""
    n = len(halves)
    return PredictionBatch(
        event_id=[f"e{i}" for i in range(n)],
        request_id=[h[0] for h in halves],
        ts=np.array([h[2] for h in halves], dtype=np.float64),
        deployment=["d"] * n,
        model_version=["v-primary" if h[1] == P else "v-shadow" for h in halves],
        role=np.array([h[1] for h in halves], dtype=np.int8),
        score=np.array([h[3] for h in halves], dtype=np.float64),
        latency_ms=np.full(n, np.nan),
        slice=[{} for _ in halves],
    )


def match(buf: PairingBuffer, halves: list[tuple[str, int, float, float]], combos=None):
    b = batch(halves)
    ids = np.arange(len(halves), dtype=np.int64) if combos is None else np.array(combos)
    return buf.match(b, ids)


def test_pairs_within_one_batch() -> None:
    buf = PairingBuffer(ttl_s=30, max_pending=100)
    pairs = match(buf, [("r1", S, 2.0, 0.9), ("r2", P, 1.0, 0.1), ("r1", P, 1.0, 0.3)], [7, 8, 9])
    assert len(pairs) == 1
    assert pairs.primary.tolist() == [0.3]
    assert pairs.shadow.tolist() == [0.9]
    assert pairs.ts.tolist() == [2.0]  # the later half completes the pair
    assert pairs.version == ["v-shadow"]
    assert pairs.baseline_version == ["v-primary"]
    assert pairs.combo.tolist() == [9]  # the primary's slice
    assert pairs.duplicates == 0
    assert [h.request_id for h in buf.pending()] == ["r2"]


def test_pairs_across_batches_in_either_order() -> None:
    buf = PairingBuffer(ttl_s=30, max_pending=100)
    assert len(match(buf, [("a", P, 1.0, 0.1), ("b", S, 1.5, 0.6)], [1, 2])) == 0
    assert len(buf) == 2
    pairs = match(buf, [("b", P, 3.0, 0.4), ("a", S, 0.5, 0.2)], [3, 4])
    assert len(buf) == 0
    got = sorted(
        zip(
            pairs.primary.tolist(),
            pairs.shadow.tolist(),
            pairs.ts.tolist(),
            pairs.combo.tolist(),
            strict=True,
        )
    )
    # a: primary waited (slice 1); b: shadow waited, primary arrives (slice 3).
    assert got == [(0.1, 0.2, 1.0, 1), (0.4, 0.6, 3.0, 3)]
    assert sorted(pairs.version) == ["v-shadow", "v-shadow"]


def test_duplicate_halves_are_counted_not_paired() -> None:
    buf = PairingBuffer(ttl_s=30, max_pending=100)
    # Same role twice in one batch: the first is kept.
    pairs = match(buf, [("r", P, 1.0, 0.1), ("r", P, 1.1, 0.2)])
    assert (len(pairs), pairs.duplicates, len(buf)) == (0, 1, 1)
    # The same role again in a later batch, then its partner.
    pairs = match(buf, [("r", P, 1.2, 0.3), ("r", S, 1.3, 0.9)])
    assert (len(pairs), pairs.duplicates, len(buf)) == (1, 1, 0)
    assert pairs.primary.tolist() == [0.1]
    assert pairs.shadow.tolist() == [0.9]


def test_expiry_by_event_time_watermark() -> None:
    buf = PairingBuffer(ttl_s=10, max_pending=100)
    match(buf, [("old", P, 100.0, 0.1), ("edge", S, 105.0, 0.2), ("new", P, 112.0, 0.3)])
    assert buf.expire(watermark=110.0) == []  # nothing older than 100
    expired = buf.expire(watermark=115.0)  # limit 105: strictly older expires
    assert [(h.request_id, h.role, h.ts, h.score) for h in expired] == [("old", P, 100.0, 0.1)]
    expired = buf.expire(watermark=200.0)
    assert [h.request_id for h in expired] == ["edge", "new"]  # oldest first
    assert len(buf) == 0
    # An expired half's partner arriving later waits on its own, never pairs with a ghost.
    assert len(match(buf, [("old", S, 201.0, 0.5)])) == 0
    assert len(buf) == 1


def test_capacity_evicts_oldest_first() -> None:
    buf = PairingBuffer(ttl_s=1000, max_pending=3)
    match(buf, [(f"r{ts}", P, float(ts), 0.0) for ts in (5, 1, 4, 2, 3)])
    assert len(buf) == 5  # the bound is enforced by expire
    evicted = buf.expire(watermark=0.0)
    assert [h.request_id for h in evicted] == ["r1", "r2"]
    assert sorted(h.request_id for h in buf.pending()) == ["r3", "r4", "r5"]


def test_paired_halves_leave_no_stale_expiry() -> None:
    buf = PairingBuffer(ttl_s=1, max_pending=10)
    match(buf, [("r", P, 1.0, 0.1)])
    match(buf, [("r", S, 1.5, 0.2)])
    match(buf, [("r", P, 50.0, 0.3)])  # a new half for a reused request id
    assert buf.expire(watermark=10.0) == []  # the old heap entry must not evict the new half
    assert [h.ts for h in buf.pending()] == [50.0]


halves = st.tuples(
    st.sampled_from([f"r{i}" for i in range(8)]),
    st.sampled_from([P, S]),
    st.floats(0, 100),
)


@settings(max_examples=150)
@given(
    st.lists(st.lists(halves, max_size=8), max_size=10),
    st.floats(0.5, 50),
    st.integers(1, 6),
)
def test_nothing_is_lost(batches, ttl: float, max_pending: int) -> None:
    """Every half is paired, counted as a duplicate, waiting, or returned by expire."""
    buf = PairingBuffer(ttl_s=ttl, max_pending=max_pending)
    scores: dict[float, tuple[str, int]] = {}  # a unique score identifies each half
    watermark = -np.inf
    used: set[float] = set()
    n_in = paired = duplicates = expired = 0
    for raw in batches:
        with_scores = []
        for request_id, role, ts in raw:
            score = float(len(scores))
            scores[score] = (request_id, role)
            with_scores.append((request_id, role, ts, score))
        pairs = match(buf, with_scores)
        n_in += len(raw)
        paired += len(pairs)
        duplicates += pairs.duplicates
        for p, s in zip(pairs.primary.tolist(), pairs.shadow.tolist(), strict=True):
            assert scores[p][1] == P
            assert scores[s][1] == S
            assert scores[p][0] == scores[s][0]  # same request
            assert p not in used
            assert s not in used
            used.update((p, s))
        if raw:
            watermark = max(watermark, *(ts for _, _, ts in raw))
            out = buf.expire(watermark)
            expired += len(out)
            for half in out:
                # Expired by the watermark, or evicted (then the buffer is exactly full).
                assert half.ts < watermark - ttl or len(buf) == max_pending
                assert half.score not in used
                used.add(half.score)
            assert len(buf) <= max_pending
            assert all(h.ts >= watermark - ttl for h in buf.pending())
            if out and len(buf):  # oldest first: nothing left is older than what left
                assert max(h.ts for h in out) <= min(h.ts for h in buf.pending())
    pending = buf.pending()
    assert not {h.score for h in pending} & used
    assert n_in == 2 * paired + duplicates + len(pending) + expired
