"""Stage 2: exactly-once merging of partials, and windows that wait for every partition."""

import copy
import math
import random
from typing import Any

import numpy as np
import orjson
import pytest

from streamguard.core import PAIR_STREAM, PartialError, Stage1, Stage2
from streamguard.core.partials import group_fields
from streamguard.core.snapshot import pack, unpack
from streamguard.core.summary import FrozenTable
from streamguard.guards import Verdict, default_guards
from streamguard.guards.base import GuardContext
from streamguard.policy import Policy, parse_policy
from streamguard.sim import ShadowDeviation, TrafficGenerator
from tests.unit.core._events import decoded, pair, partition_of, prediction, sim_messages

POLICY = parse_policy(
    """
    [defaults]
    window_s = 10
    horizon_s = 60
    allowed_lateness_s = 5
    [defaults.guards.shadow]
    min_pairs = 100
    """
)


class Recorder:
    """A guard that records which windows closed and the pairs it saw in each."""

    name = "recorder"

    def __init__(self) -> None:
        self.closed: list[tuple[str, int, int]] = []

    def evaluate(self, ctx: GuardContext) -> Verdict | None:
        window = ctx.closed_window(PAIR_STREAM, "v2")
        pairs = 0
        if window is not None:
            labels, arrays = window
            pairs = int(arrays["pairs"][labels.index("*")])
        self.closed.append((ctx.deployment, ctx.window, pairs))
        return None


def feed(stage1: Stage1, stage2: Stage2, partition: int, offset: int, events: list) -> None:
    stage1.process(partition, offset, decoded(events))
    for _, raw in stage1.flush(partition):
        stage2.apply(orjson.loads(raw))


def beat(stage1: Stage1, stage2: Stage2, partitions: list[int]) -> None:
    stage2.apply(orjson.loads(orjson.dumps(stage1.heartbeat(partitions))))


# --- (d) windows close only when every source has passed -----------------------------------------


def test_window_waits_for_every_partition() -> None:
    recorder = Recorder()
    stage1, stage2 = Stage1(POLICY), Stage2(POLICY, n_sources=2, guards=[recorder])
    feed(stage1, stage2, 0, 0, pair("a", 101.0))
    feed(stage1, stage2, 1, 0, pair("b", 102.0))
    # Partition 0 races ahead; window 10 ([100, 110)) needs both watermarks >= 115.
    feed(stage1, stage2, 0, 1, [prediction("c", "canary", 400.0)])
    assert stage2.advance() == []
    assert recorder.closed == []
    feed(stage1, stage2, 1, 1, [prediction("d", "canary", 114.99)])
    stage2.advance()
    assert recorder.closed == []
    assert stage2.last_closed_end("d") == 100.0  # window 9 (no data) closed, window 10 open
    feed(stage1, stage2, 1, 2, [prediction("e", "canary", 115.0)])
    stage2.advance()
    assert recorder.closed == [("d", 10, 2)]
    assert stage2.last_closed_end("d") == 110.0
    assert stage2.source_watermarks() == [400.0, 115.0]


def test_partition_without_data_holds_every_window() -> None:
    recorder = Recorder()
    stage1, stage2 = Stage1(POLICY), Stage2(POLICY, n_sources=3, guards=[recorder])
    feed(stage1, stage2, 0, 0, pair("a", 101.0))
    feed(stage1, stage2, 1, 0, [prediction("c", "canary", 900.0)])
    feed(stage1, stage2, 0, 1, [prediction("c", "canary", 900.0)])
    beat(stage1, stage2, [0, 1, 2])  # partition 2: watermark None
    assert stage2.low_watermark() == -math.inf
    stage2.advance()
    assert recorder.closed == []
    # A heartbeat for partition 2 (caught up, no events) releases the window.
    stage2.apply(
        {"kind": "heartbeat", "sources": [{"partition": 2, "watermark": 120.0, "offset": 0}]}
    )
    stage2.advance()
    assert recorder.closed[0][1:] == (10, 1)


def test_open_windows_are_counted_and_hold_their_cells_not_dense_rows() -> None:
    stage1, stage2 = Stage1(POLICY), Stage2(POLICY, n_sources=2, guards=[])
    events = []
    for i in range(300):  # 300 slices, one pair each, in windows 10, 11 and 12
        slice_ = {"platform": f"p{i}", "region": f"r{i % 7}", "tier": f"t{i % 3}"}
        events += pair(f"q{i}", 100.0 + i / 10, slice_=slice_)
    feed(stage1, stage2, 0, 0, events)
    feed(stage1, stage2, 0, 1, [prediction("later", "canary", 400.0)])
    stage2.advance()  # partition 1 has sent nothing: every window stays open
    windows, held = stage2.open_windows("d")
    assert windows == 4  # 10, 11, 12 and the canary's 40
    pair_stream = stage2._deployment("d").streams[(PAIR_STREAM, "v2")]
    rows = len(pair_stream.registry)
    assert rows > 150
    dense_row = sum(
        8 * max(f.width, 1) * (3 if f.kind == "moments" else 1) for f in pair_stream.fields
    )
    assert held < 3 * rows * dense_row / 10  # dense, the pair stream alone was 3 × rows × 3.5 KB
    assert stage2.open_windows("unknown") == (0, 0)
    feed(stage1, stage2, 1, 0, [prediction("e", "canary", 415.0)])
    stage2.advance()  # the low watermark is 400 now: 10, 11 and 12 close; 40 and 41 are open
    assert stage2.open_windows("d")[0] == 2


def test_idle_partition_stops_holding_windows() -> None:
    recorder = Recorder()
    stage1 = Stage1(POLICY)
    stage2 = Stage2(POLICY, n_sources=2, guards=[recorder], idle_timeout_s=30.0)

    def progress(offset: int, events: list, now: float) -> None:
        stage1.process(0, offset, decoded(events))
        for _, raw in stage1.flush(0):
            stage2.apply(orjson.loads(raw), now=now)

    progress(0, pair("a", 101.0), now=1000.0)
    stage2.advance(now=1000.0)  # the idle clock starts
    progress(1, [prediction("c", "canary", 200.0)], now=1025.0)
    stage2.advance(now=1025.0)
    assert recorder.closed == []  # partition 1 has said nothing for 25 s: not idle yet
    stage2.advance(now=1031.0)
    assert recorder.closed[0][1:] == (10, 1)
    assert stage2.last_closed_end("d") == 190.0  # as far as partition 0's watermark allows


def test_windows_close_in_order_with_empty_windows_in_the_horizon() -> None:
    recorder = Recorder()
    stage1, stage2 = Stage1(POLICY), Stage2(POLICY, n_sources=1, guards=[recorder])
    feed(stage1, stage2, 0, 0, pair("a", 101.0))
    feed(stage1, stage2, 0, 1, pair("b", 131.0))
    feed(stage1, stage2, 0, 2, [prediction("c", "canary", 1000.0)])
    stage2.advance()
    windows = [w for _, w, _ in recorder.closed]
    assert windows == sorted(windows)
    assert windows[:4] == [10, 11, 12, 13]
    # Data windows and the windows after them while their data is in the 6-window horizon.
    assert windows[-1] == 13 + 6 - 1
    assert {w: n for _, w, n in recorder.closed}[13] == 1


def test_late_partial_for_a_closed_window_is_dropped_and_counted() -> None:
    recorder = Recorder()
    stage1, stage2 = Stage1(POLICY), Stage2(POLICY, n_sources=1, guards=[recorder])
    feed(stage1, stage2, 0, 0, [*pair("a", 101.0), prediction("c", "canary", 200.0)])
    stage2.advance()
    closed = list(recorder.closed)
    # A partial claiming data for window 10 after it closed (a worker with another clock).
    message = {
        "schema_version": 1,
        "kind": "partial",
        "deployment": "d",
        "source": {"partition": 0, "offset_lo": 0, "offset_hi": 1},
        "watermark": 200.0,
        "late": 0,
        "groups": [],
    }
    other = Stage1(POLICY)
    other.process(0, 0, decoded(pair("z", 102.0)))
    (raw,) = [r for _, r in other.flush(0)]
    message["groups"] = orjson.loads(raw)["groups"]
    report = stage2.apply(message)
    assert report.applied == 1
    assert report.late_at_merge == 1
    stage2.advance()
    assert recorder.closed == closed


def test_bad_partials_raise_partial_error() -> None:
    stage2 = Stage2(POLICY, n_sources=1, guards=[])
    with pytest.raises(PartialError):
        stage2.apply({"kind": "verdict"})
    with pytest.raises(PartialError):
        stage2.apply(
            {"kind": "heartbeat", "sources": [{"partition": 5, "watermark": 1, "offset": 0}]}
        )
    other = Stage1(parse_policy("[defaults.guards.shadow]\nscore_bins = 20"))
    other.process(0, 0, decoded(pair("z", 102.0)))
    (raw,) = [r for _, r in other.flush(0)]
    with pytest.raises(PartialError):
        stage2.apply(orjson.loads(raw))  # histograms of another policy


# --- (b) exactly once under redelivery -----------------------------------------------------------


def stage1_output(policy: Policy, partitions: int, seconds: int, flush_every: int) -> list[bytes]:
    """Partials and heartbeats in the order one worker would publish them."""
    generator = TrafficGenerator(
        rate=80,
        seed=11,
        start_ts=1_790_000_000.0,
        deviation=ShadowDeviation({"platform": "android"}, after_s=40, shift=0.25),
    )
    stage1 = Stage1(policy)
    offsets = [-1] * partitions
    out: list[bytes] = []
    for i, message in enumerate(sim_messages(generator, seconds, partitions)):
        partition = partition_of(message, partitions)
        offsets[partition] += 1
        from streamguard.contracts import decode_message

        stage1.process(partition, offsets[partition], decode_message(message))
        if (i + 1) % flush_every == 0:
            for p in range(partitions):
                out.extend(raw for _, raw in stage1.flush(p))
            out.append(orjson.dumps(stage1.heartbeat(list(range(partitions)))))
    for p in range(partitions):
        out.extend(raw for _, raw in stage1.flush(p))
    out.append(orjson.dumps(stage1.heartbeat(list(range(partitions)))))
    return out


def verdicts_of(policy: Policy, partitions: int, deliveries: list[bytes]) -> list[dict[str, Any]]:
    stage2 = Stage2(policy, partitions, default_guards(policy))
    verdicts = []
    duplicates = 0
    for raw in deliveries:
        report = stage2.apply(orjson.loads(raw))
        duplicates += report.duplicates
        verdicts.extend(v.to_dict() for v in stage2.advance())
    verdicts.extend(v.to_dict() for v in stage2.advance(final=True))
    return verdicts


@pytest.fixture(scope="module")
def published() -> list[bytes]:
    return stage1_output(POLICY, 3, 150, flush_every=5)


@pytest.fixture(scope="module")
def once(published: list[bytes]) -> list[dict[str, Any]]:
    verdicts = verdicts_of(POLICY, 3, published)
    assert any(v["findings"] for v in verdicts)  # the deviation is seen
    return verdicts


def test_every_message_twice_gives_the_same_verdicts(published, once) -> None:
    twice = [raw for raw in published for _ in range(2)]
    assert verdicts_of(POLICY, 3, twice) == once


def test_heartbeats_repeated_give_the_same_verdicts(published, once) -> None:
    repeated = []
    for raw in published:
        copies = 4 if orjson.loads(raw)["kind"] == "heartbeat" else 1
        repeated.extend([raw] * copies)
    assert verdicts_of(POLICY, 3, repeated) == once


def test_redelivered_stretches_give_the_same_verdicts(published, once) -> None:
    rng = random.Random(5)
    deliveries: list[bytes] = []
    for i, raw in enumerate(published):
        deliveries.append(raw)
        if rng.random() < 0.1:  # a rebalance: the last few messages again, partials only
            again = [r for r in published[max(0, i - 8) : i + 1] if b'"partial"' in r]
            deliveries.extend(again)
    assert len(deliveries) > len(published)
    assert verdicts_of(POLICY, 3, deliveries) == once


def dense_open_windows(stage2: Stage2, snapshot: dict[str, Any]) -> dict[str, Any]:
    """``snapshot`` with its open windows as dense arrays, as workers before cells saved them."""
    older = copy.deepcopy(snapshot)
    for saved in older["deployments"]:
        for st in saved["streams"]:
            fields = stage2._deployment(saved["name"]).fields_of(st["stream"])
            rows = len(st["labels"])
            st["open"] = [
                [i, {k: v.tolist() for k, v in FrozenTable.from_dict(fields, t).view(rows).items()}]
                for i, t in st["open"]
            ]
    return older


@pytest.mark.parametrize("older", [False, True], ids=["cells", "dense open windows"])
def test_a_snapshot_with_open_windows_restores_the_same_verdicts(published, once, older) -> None:
    cut = len(published) // 2
    first = Stage2(POLICY, 3, default_guards(POLICY))
    verdicts = []
    for raw in published[:cut]:
        first.apply(orjson.loads(raw))
        verdicts.extend(v.to_dict() for v in first.advance())
    snapshot = unpack(pack(first.snapshot(0)))
    assert any(st["open"] for d in snapshot["deployments"] for st in d["streams"])
    if older:
        snapshot = dense_open_windows(first, snapshot)
    second = Stage2(POLICY, 3, default_guards(POLICY))
    second.restore(0, snapshot)
    assert pack(second.snapshot(0)) == pack(first.snapshot(0))  # open windows come back whole
    for raw in published[cut:]:
        second.apply(orjson.loads(raw))
        verdicts.extend(v.to_dict() for v in second.advance())
    verdicts.extend(v.to_dict() for v in second.advance(final=True))
    assert verdicts == once


def test_duplicates_are_reported(published) -> None:
    stage2 = Stage2(POLICY, 3, [])
    partials = [orjson.loads(r) for r in published if b'"partial"' in r]
    assert all(stage2.apply(p).applied == 1 for p in partials)
    assert all(stage2.apply(p).duplicates == 1 for p in partials)


def test_a_multi_part_flush_moves_the_watermark_only_with_its_last_part() -> None:
    """Windows must not close between the parts of one flush (the worker advances per message)."""
    stage1 = Stage1(POLICY, max_partial_bytes=4096)
    events = []
    for i in range(80):
        slice_ = {"platform": f"p{i}", "region": f"r{i % 7}", "tier": f"t{i % 3}"}
        events += pair(f"r{i}", 100.0 + i / 4, slice_=slice_)  # windows 10 .. 11
    stage1.process(0, 0, decoded(events))
    stage1.process(0, 1, decoded(pair("late-clock", 200.0)))  # the watermark jumps past them
    parts = stage1.flush(0)
    assert len(parts) > 2
    stage2 = Stage2(POLICY, 1, default_guards(POLICY))
    late = 0
    for _, value in parts:
        late += stage2.apply(orjson.loads(value), now=None).late_at_merge
        stage2.advance()  # as the worker does after every message
    assert late == 0


def test_sparse_counts_round_trip_and_malformed_cells_raise_partial_error() -> None:
    stage1, stage2 = Stage1(POLICY), Stage2(POLICY, n_sources=1, guards=[])
    stage1.process(0, 0, decoded(pair("z", 102.0)))
    (raw,) = [r for _, r in stage1.flush(0)]
    message = orjson.loads(raw)
    group = next(g for g in message["groups"] if g["stream"] == PAIR_STREAM)
    sketch = group["fields"]["primary_hist"]
    assert sketch.keys() == {"width", "cells", "counts"}  # histograms travel as their cells
    slices = len(group["slices"])
    assert sum(sketch["counts"]) == slices  # the one pair, once per slice level
    dense = np.asarray(group_fields(group)["primary_hist"])
    assert dense.shape == (slices, sketch["width"])
    assert (dense.sum(axis=1) == 1).all()
    assert stage2.apply(copy.deepcopy(message)).applied == 1
    # Dense rows, as workers before the sparse encoding sent them, are read the same.
    dense_message = copy.deepcopy(message)
    for g in dense_message["groups"]:
        g["fields"] = group_fields(g)
    older = Stage2(POLICY, n_sources=1, guards=[])
    assert older.apply(dense_message).applied == 1
    assert pack(older.snapshot(0)) == pack(stage2.snapshot(0))
    bad_cells = [
        {"width": sketch["width"], "cells": [1, 1], "counts": [1, 1]},  # not ascending
        {"width": sketch["width"], "cells": [10**6], "counts": [1]},  # outside the rows
        {"width": sketch["width"], "cells": [0], "counts": [-1]},
        {"width": sketch["width"], "cells": [0], "counts": [1.5]},
        {"width": sketch["width"] + 1, "cells": [], "counts": []},  # another policy's bins
        {"width": sketch["width"], "cells": [0, 1], "counts": [1]},
        {"cells": [], "counts": []},
        {"width": sketch["width"], "cells": [0], "counts": [2**70]},  # beyond 64 bits
        {"width": sketch["width"], "cells": [-1, 0], "counts": [1, 1]},
        {"width": sketch["width"], "cells": [0], "counts": [True]},
    ]
    for n, bad in enumerate(bad_cells):
        broken = copy.deepcopy(message)
        next(g for g in broken["groups"] if g["stream"] == PAIR_STREAM)["fields"][
            "primary_hist"
        ] = bad
        broken["source"]["offset_hi"] = 10 + n  # not a redelivery
        with pytest.raises(PartialError):
            Stage2(POLICY, n_sources=1, guards=[]).apply(broken)
    dense_overflow = copy.deepcopy(message)
    next(g for g in dense_overflow["groups"] if g["stream"] == PAIR_STREAM)["fields"]["pairs"] = [
        2**70
    ] * len(group["slices"])
    with pytest.raises(PartialError):
        Stage2(POLICY, n_sources=1, guards=[]).apply(dense_overflow)
