"""Stage 1: pairing per partition, late events by the partition's watermark, partial stamps."""

import math
import weakref
from typing import Any

import jsonschema
import orjson
import pytest

from streamguard.contracts import load_schema
from streamguard.core import PAIR_STREAM, Stage1, stage1_flush
from streamguard.policy import parse_policy
from tests.unit.core._events import decoded, pair, prediction

POLICY = parse_policy(
    """
    [defaults]
    window_s = 10
    horizon_s = 300
    allowed_lateness_s = 5
    pair_ttl_s = 30
    """
)
PARTIAL = jsonschema.Draft202012Validator(load_schema("partial"))
HEARTBEAT = jsonschema.Draft202012Validator(load_schema("heartbeat"))


def flush(stage1: Stage1, partition: int = 0) -> list[dict[str, Any]]:
    messages = []
    for deployment, raw in stage1.flush(partition):
        message = orjson.loads(raw)
        PARTIAL.validate(message)
        assert message["deployment"] == deployment
        messages.append(message)
    return messages


def count(messages: list[dict[str, Any]], stream: str, window: int, field: str) -> int:
    """Total of a count field for the whole deployment (``*``) in one window."""
    total = 0
    for message in messages:
        for group in message["groups"]:
            if group["stream"] == stream and group["window"] == window and "*" in group["slices"]:
                total += group["fields"][field][group["slices"].index("*")]
    return total


def test_late_events_by_the_partition_watermark() -> None:
    stage1 = Stage1(POLICY)
    # Window 18 is [180, 190), window 19 is [190, 200); lateness 5 s.
    assert stage1.process(0, 0, decoded(pair("r1", 181.0))).pairs == 1
    assert stage1.process(0, 1, decoded([prediction("c1", "canary", 203.0)])).late == 0
    assert stage1.watermark(0) == 203.0
    # 190 + 5 <= 203: window 18 is closed for this partition.
    late_pair = stage1.process(0, 2, decoded(pair("r2", 185.0)))
    assert late_pair.pairs == 0
    assert late_pair.late > 0
    late_canary = stage1.process(0, 3, decoded([prediction("c2", "canary", 189.9)]))
    assert late_canary.late == 1
    # 200 + 5 > 203: window 19 ended but is within the allowed lateness.
    in_lateness = stage1.process(
        0, 4, decoded([*pair("r3", 195.0), prediction("c3", "canary", 191.0)])
    )
    assert (in_lateness.pairs, in_lateness.late) == (1, 0)
    messages = flush(stage1)
    assert count(messages, PAIR_STREAM, 18, "pairs") == 1  # r1 only
    assert count(messages, PAIR_STREAM, 19, "pairs") == 1  # r3
    assert count(messages, "arm:canary", 18, "events") == 0  # c2 was late
    assert count(messages, "arm:canary", 19, "events") == 1  # c3
    assert count(messages, "arm:primary", 18, "events") == 1  # r1's primary; r2's was late
    assert sum(m["late"] for m in messages) == late_pair.late + late_canary.late


def test_lateness_boundary_is_inclusive() -> None:
    stage1 = Stage1(POLICY)
    stage1.process(0, 0, decoded([prediction("c0", "canary", 205.0)]))
    # Window 19 ends at 200; 200 + 5 <= 205, so it is closed.
    assert stage1.process(0, 1, decoded([prediction("c1", "canary", 199.99)])).late == 1
    # Window 20 ends at 210: open.
    assert stage1.process(0, 2, decoded([prediction("c2", "canary", 200.0)])).late == 0


def test_events_of_one_message_do_not_make_each_other_late() -> None:
    stage1 = Stage1(POLICY)
    report = stage1.process(0, 0, decoded([prediction("c0", "canary", 500.0), *pair("r", 100.0)]))
    assert (report.late, report.pairs) == (0, 1)
    assert stage1.watermark(0) == 500.0


def test_watermarks_are_per_partition() -> None:
    stage1 = Stage1(POLICY)
    stage1.process(0, 0, decoded([prediction("c0", "canary", 500.0)]))
    # Partition 1 has seen nothing late: its old events are on time.
    assert stage1.process(1, 0, decoded(pair("r", 100.0))).pairs == 1
    assert stage1.watermark(1) == pytest.approx(100.01)
    assert stage1.watermark(7) == -math.inf


def test_redelivered_offsets_are_skipped() -> None:
    stage1 = Stage1(POLICY)
    stage1.process(0, 5, decoded(pair("r1", 100.0)))
    again = stage1.process(0, 5, decoded(pair("r1", 100.0)))
    older = stage1.process(0, 3, decoded(pair("r0", 100.0)))
    assert again.skipped_offsets == older.skipped_offsets == 1
    assert again.pairs == older.pairs == 0
    (message,) = flush(stage1)
    assert message["source"]["offset_lo"] == 4
    assert message["source"]["offset_hi"] == 5
    assert count([message], PAIR_STREAM, 10, "pairs") == 1


def test_partials_are_stamped_with_contiguous_offset_ranges() -> None:
    stage1 = Stage1(POLICY)
    assert flush(stage1) == []
    for offset in range(3):
        stage1.process(2, offset, decoded(pair(f"a{offset}", 100.0 + offset)))
    first = flush(stage1, 2)
    assert [m["source"]["offset_lo"] for m in first] == [-1]
    assert [m["source"]["offset_hi"] for m in first] == [2]
    assert flush(stage1, 2) == []  # nothing new
    stage1.process(2, 3, decoded(pair("b", 104.0)))
    second = flush(stage1, 2)
    assert [(m["source"]["offset_lo"], m["source"]["offset_hi"]) for m in second] == [(2, 3)]
    assert second[0]["source"]["partition"] == 2
    assert count(first, PAIR_STREAM, 10, "pairs") == 3
    assert count(second, PAIR_STREAM, 10, "pairs") == 1  # partials are deltas, not totals


def test_partials_are_split_by_deployment_and_size() -> None:
    stage1 = Stage1(POLICY)
    events = []
    for i in range(60):
        slice_ = {"platform": f"p{i}", "region": f"r{i % 7}", "tier": f"t{i % 3}"}
        events += pair(f"r{i}", 100.0 + i / 10, slice_=slice_)
    events += pair("x", 101.0, deployment="other")
    stage1.process(0, 0, decoded(events))
    whole = flush(stage1)
    assert sorted(m["deployment"] for m in whole) == ["d", "other"]
    stage1.process(0, 1, decoded(events))  # same content, new offset
    stage1.max_partial_bytes = 4096
    parts = flush(stage1)
    d_parts = [m for m in parts if m["deployment"] == "d"]
    assert len(d_parts) > 1
    assert [m["source"]["part"] for m in d_parts] == list(range(len(d_parts)))
    assert {m["source"]["parts"] for m in d_parts} == {len(d_parts)}
    assert all(len(orjson.dumps(m)) <= 4096 for m in parts)
    for window in (10, 11):
        assert count(d_parts, PAIR_STREAM, window, "pairs") == count(
            [m for m in whole if m["deployment"] == "d"], PAIR_STREAM, window, "pairs"
        )


def test_a_flush_lets_go_of_each_group_once_it_is_encoded(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Settling builds a group's table. Settling every group before encoding any held all
    their tables at once: after a backlog at 10,000 slices, ~450 MB for a second."""
    settled: list[weakref.ref[Any]] = []
    live_while_encoding: list[int] = []
    real_settle, real_encode = stage1_flush.settle, stage1_flush.encode_group

    def settle(group: Any, state: Any) -> None:
        real_settle(group, state)
        settled.append(weakref.ref(next(iter(group.table.arrays.values()))))

    def encode_group(*args: Any) -> list[bytes]:
        live_while_encoding.append(sum(ref() is not None for ref in settled[:-1]))
        return real_encode(*args)

    monkeypatch.setattr(stage1_flush, "settle", settle)
    monkeypatch.setattr(stage1_flush, "encode_group", encode_group)
    stage1 = Stage1(POLICY)
    events = []
    for i in range(300):  # 30 windows of 10 s, each with a pair group and two arm groups
        slice_ = {"platform": f"p{i % 4}", "region": f"r{i % 5}", "tier": f"t{i % 3}"}
        events += pair(f"r{i}", 100.0 + i, slice_=slice_)
    stage1.process(0, 0, decoded(events))
    messages = flush(stage1)
    assert len(settled) >= 30
    assert len(live_while_encoding) >= 30
    assert max(live_while_encoding) == 0
    assert sum(count(messages, PAIR_STREAM, w, "pairs") for w in range(10, 40)) == 300


def test_unpaired_halves_are_counted_when_they_expire() -> None:
    stage1 = Stage1(POLICY)
    stage1.process(0, 0, decoded([*pair("shadowed", 99.0), prediction("lonely", "primary", 100.0)]))
    assert stage1.pending(0) == 1
    report = stage1.process(0, 1, decoded([prediction("c", "canary", 131.0)]))  # 100 < 131 - 30
    assert report.unpaired == 1
    assert stage1.pending(0) == 0
    messages = flush(stage1)
    # Counted in the window of the watermark that expired it (13), never late.
    assert count(messages, "arm:primary", 13, "unpaired") == 1
    assert count(messages, "arm:primary", 10, "events") == 1


def test_a_deployment_without_a_shadow_buffers_nothing() -> None:
    stage1 = Stage1(POLICY)
    primaries = [prediction(f"r{i}", "primary", 100.0 + i) for i in range(50)]
    report = stage1.process(0, 0, decoded(primaries))
    assert stage1.pending(0) == 0
    report = stage1.process(0, 1, decoded([prediction("c", "canary", 200.0)]))
    assert report.unpaired == 0
    # The first shadow of the partition starts pairing.
    stage1.process(0, 2, decoded([prediction("s", "shadow", 201.0)]))
    stage1.process(0, 3, decoded([prediction("s", "primary", 201.5)]))
    assert stage1.pending(0) == 0
    assert count(flush(stage1), PAIR_STREAM, 20, "pairs") == 1


def test_duplicates_are_reported() -> None:
    stage1 = Stage1(POLICY)
    report = stage1.process(
        0,
        0,
        decoded(
            [*pair("r", 100.0), prediction("q", "shadow", 100.0), prediction("q", "shadow", 100.1)]
        ),
    )
    assert (report.pairs, report.duplicates) == (1, 1)


def test_heartbeat_reports_what_was_flushed() -> None:
    stage1 = Stage1(POLICY)
    stage1.process(1, 4, decoded(pair("r", 100.0)))
    # Not flushed yet: stage 2 must not see a watermark ahead of the data it covers.
    before = stage1.heartbeat([0, 1])
    HEARTBEAT.validate(before)
    nothing = {"watermark": None, "offset": -1, "caught_up": True}
    assert before["sources"][0] == {"partition": 0, **nothing}
    assert before["sources"][1] == {"partition": 1, **nothing}
    flush(stage1, 1)
    after = stage1.heartbeat([0, 1], caught_up={1: False})
    HEARTBEAT.validate(after)
    assert after["sources"] == [
        {"partition": 0, **nothing},
        {"partition": 1, "watermark": 100.01, "offset": 4, "caught_up": False},
    ]
    stage1.process(1, 5, decoded([prediction("c", "canary", 300.0)]))
    # still the flushed state, not the unflushed event at offset 5
    assert stage1.heartbeat([1], caught_up={1: False})["sources"] == after["sources"][1:]
    stage1.drop(1)
    assert stage1.partitions() == []


def test_a_second_restart_during_a_replay_still_flushes_at_every_recorded_boundary() -> None:
    """Progress written while replaying keeps the boundaries not reached yet.

    Before, it listed only those reproduced so far: a worker restarted twice flushed
    (1, 3] as (1, 5], a partial stage 2 had not seen, counting offsets 2 and 3 twice.
    """
    messages = [decoded(pair(f"r{i}", 100.0 + i)) for i in range(6)]
    first = Stage1(POLICY)
    sent: dict[int, list[bytes]] = {}
    for offset, message in enumerate(messages):
        first.process(0, offset, message)
        if offset in (1, 3):
            sent[offset] = [raw for _, raw in first.flush(0)]
    progress = first.progress(0)
    assert progress["boundaries"] == [1, 3]

    restarted = Stage1(POLICY)
    resume = restarted.restore(0, None, progress)
    for offset in range(resume, 2):  # dies again after reproducing the first boundary only
        restarted.process(0, offset, messages[offset])
    assert [raw for _, raw in restarted.flush(0)] == sent[1]
    progress = restarted.progress(0)
    assert progress["boundaries"] == [1, 3]

    again = Stage1(POLICY)
    again.restore(0, None, progress)
    for offset in range(6):  # the restarted worker's own flush comes only at the end
        again.process(0, offset, messages[offset])
    out = [raw for _, raw in again.flush(0)]
    assert out[: len(sent[1]) + len(sent[3])] == sent[1] + sent[3]
    assert [orjson.loads(raw)["source"]["offset_lo"] for raw in out] == [-1, 1, 3]


def test_closing_says_when_the_watermark_passed_a_windows_close_since_the_flush() -> None:
    """Window [t, t+10) closes at t + 10 + lateness; the worker flushes a partition then."""
    policy = parse_policy("[defaults]\nwindow_s = 10\nallowed_lateness_s = 5\n")
    stage1 = Stage1(policy)
    stage1.process(0, 0, decoded(pair("a", 1000.0)))  # the shadow half: watermark 1000.01
    assert not stage1.closing(0)  # nothing flushed yet: the timer's first flush comes first
    stage1.flush(0)
    offset = 1
    # [990, 1000) closes at 1005, [1000, 1010) at 1015 (each pair's watermark is ts + 0.01).
    for ts, closing in ((1003.0, False), (1004.98, False), (1004.995, True), (1012.0, True)):
        stage1.process(0, offset, decoded(pair(f"r{offset}", ts)))
        offset += 1
        assert stage1.closing(0) is closing, ts
    stage1.flush(0)
    assert not stage1.closing(0)
    stage1.process(0, offset, decoded(pair("same-window", 1014.98)))
    assert not stage1.closing(0)  # [1000, 1010) closes at 1015, not yet
    stage1.process(0, offset + 1, decoded(pair("next", 1015.0)))
    assert stage1.closing(0)
    assert not stage1.closing(1)  # a partition it has never seen


def test_a_close_is_told_in_a_heartbeat_alone_unless_the_closing_window_has_data_pending() -> None:
    """The live watermark may go to stage 2 without a flush when nothing pending is for a
    window it closes; the data since the flush stays for the next flush."""
    policy = parse_policy("[defaults]\nwindow_s = 10\nallowed_lateness_s = 5\n")
    stage1 = Stage1(policy)
    stage1.process(0, 0, decoded(pair("a", 1000.0)))
    stage1.flush(0)
    stage1.process(0, 1, decoded(pair("b", 1016.0)))  # [1000, 1010) closes at 1015
    assert stage1.closing(0)
    assert stage1.announceable(0)
    beat = stage1.announce([0], {0: False})
    assert beat["sources"] == [
        {"partition": 0, "watermark": 1016.01, "offset": 1, "caught_up": False}
    ]
    assert not stage1.closing(0)  # told: no second heartbeat for the same close
    assert stage1.heartbeat([0])["sources"][0]["watermark"] == 1000.01  # a flush's: unchanged
    # The pair at 1016 was not flushed; [1010, 1020) closes at 1025 with it still pending.
    stage1.process(0, 2, decoded(pair("c", 1026.0)))
    assert stage1.closing(0)
    assert not stage1.announceable(0)
    sent = flush(stage1)
    assert count(sent, PAIR_STREAM, 101, "pairs") == 1  # the pair at 1016, then
    assert count(sent, PAIR_STREAM, 102, "pairs") == 1
    assert [m["source"]["offset_lo"] for m in sent] == [0]  # one partial since the last flush
    assert not stage1.closing(0)
    assert stage1.announceable(0)
    assert not stage1.announceable(1)  # a partition it has never seen


def test_held_partials_and_a_replay_are_never_announced() -> None:
    policy = parse_policy("[defaults]\nwindow_s = 10\nallowed_lateness_s = 5\n")
    stage1 = Stage1(policy)
    stage1.process(0, 0, decoded(pair("a", 1000.0)))
    stage1.requeue(0, stage1.flush(0))  # their progress record was refused
    stage1.process(0, 1, decoded(pair("b", 1016.0)))
    assert stage1.closing(0)
    assert not stage1.announceable(0)
    snapshot = Stage1(policy)
    snapshot.process(0, 0, decoded(pair("a", 1000.0)))
    snapshot.flush(0)
    restored = Stage1(policy)
    restored.restore(0, snapshot.snapshot(0), {"boundaries": [5]})
    restored.process(0, 1, decoded(pair("b", 1016.0)))
    assert not restored.announceable(0)  # replaying toward offset 5: it cuts only there


def test_a_restored_partition_replaying_to_its_boundaries_is_not_closing() -> None:
    """A replay flushes only at its recorded boundaries: an eager flush would be wasted work."""
    policy = parse_policy("[defaults]\nwindow_s = 10\nallowed_lateness_s = 5\n")
    messages = [decoded(pair("a", 1000.0)), decoded(pair("b", 1020.0)), decoded(pair("c", 1021))]
    first = Stage1(policy)
    first.process(0, 0, messages[0])
    first.flush(0)
    snapshot = first.snapshot(0)
    for offset in (1, 2):
        first.process(0, offset, messages[offset])
    first.flush(0)  # a boundary at offset 2, after the snapshot
    restored = Stage1(policy)
    restored.restore(0, snapshot, first.progress(0))
    restored.process(0, 1, messages[1])  # the watermark passes two closes, the boundary is ahead
    assert not restored.closing(0)
    first.process(0, 3, decoded(pair("d", 1040.0)))
    assert first.closing(0)  # the partition that never crashed would flush here
