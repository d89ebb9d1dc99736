"""Stage 1 holds a partition's data while every window it belongs to is still open."""

from collections import Counter
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from streamguard.core import PAIR_STREAM, Stage1
from streamguard.policy import parse_policy
from tests.unit.core._events import decoded, pair

POLICY = parse_policy("[defaults]\nwindow_s = 10\nallowed_lateness_s = 5\npair_ttl_s = 30\n")


def test_data_of_an_open_window_is_held_until_the_window_ends() -> None:
    stage1 = Stage1(POLICY)
    assert not stage1.holdable(0)  # a partition it has never seen: nothing to hold
    stage1.process(0, 0, decoded(pair("a", 1000.0)))
    assert stage1.holdable(0)
    stage1.process(0, 1, decoded(pair("b", 1009.0)))
    assert stage1.holdable(0)
    stage1.process(0, 2, decoded(pair("c", 1010.5)))  # [1000, 1010) ended, not yet closed
    assert not stage1.holdable(0)
    assert stage1.announceable(0)  # a heartbeat could still go: it closes nothing
    sent = [orjson.loads(raw) for _, raw in stage1.flush(0)]
    assert [m["source"]["offset_lo"] for m in sent] == [-1]  # everything held, in one partial
    assert {g["window"] for g in sent[0]["groups"] if g["stream"] == PAIR_STREAM} == {100, 101}
    assert stage1.holdable(0)


def test_a_partition_holds_a_bounded_number_of_events(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("streamguard.core.stage1_watermarks.HOLD_MAX", 4)
    stage1 = Stage1(POLICY)
    stage1.process(0, 0, decoded(pair("a", 1000.0)))
    assert stage1.holdable(0)
    stage1.process(0, 1, decoded(pair("b", 1001.0)))  # 4 events: the limit
    assert not stage1.holdable(0)
    stage1.flush(0)
    assert stage1.holdable(0)


def test_requeued_partials_and_a_replay_are_never_held() -> None:
    stage1 = Stage1(POLICY)
    stage1.process(0, 0, decoded(pair("a", 1000.0)))
    stage1.requeue(0, stage1.flush(0))  # their progress record was refused
    assert not stage1.holdable(0)
    first = Stage1(POLICY)
    first.process(0, 0, decoded(pair("a", 1000.0)))
    first.flush(0)
    restored = Stage1(POLICY)
    restored.restore(0, first.snapshot(0), {"boundaries": [5]})
    restored.process(0, 1, decoded(pair("b", 1001.0)))
    assert not restored.holdable(0)  # replaying toward offset 5: it cuts only there


def test_passing_a_window_end_with_its_data_waiting_asks_for_a_flush_once() -> None:
    stage1 = Stage1(POLICY)
    stage1.process(0, 0, decoded(pair("a", 1000.0)))
    assert not stage1.ending(0)  # never flushed: the timer's first flush carries it
    stage1.flush(0)
    stage1.process(0, 1, decoded(pair("b", 1009.0)))
    assert not stage1.ending(0)  # still inside [1000, 1010)
    stage1.process(0, 2, decoded(pair("c", 1010.5)))
    assert stage1.ending(0)  # [1000, 1010) ended with b waiting
    assert not stage1.ending(0)  # looked at once per end
    stage1.process(0, 3, decoded(pair("d", 1010.7)))
    assert not stage1.ending(0)
    stage1.flush(0)  # b, c and d
    stage1.process(0, 4, decoded(pair("e", 1011.0)))
    stage1.process(0, 5, decoded(pair("f", 1021.0)))  # [1010, 1020) ended, e waiting
    assert stage1.ending(0)


def test_an_end_with_nothing_of_the_ended_window_waiting_asks_for_nothing() -> None:
    stage1 = Stage1(POLICY)
    stage1.process(0, 0, decoded(pair("a", 1000.0)))
    stage1.flush(0)
    stage1.process(0, 1, decoded(pair("b", 1012.0)))  # jumps past the end: b is in [1010, 1020)
    assert not stage1.ending(0)
    assert stage1.holdable(0)


def _pair_counts(messages: list[bytes]) -> Counter[tuple[str, int]]:
    """Whole-deployment counts per (stream, window) over partial messages."""
    out: Counter[tuple[str, int]] = Counter()
    for raw in messages:
        for group in orjson.loads(raw)["groups"]:
            if "*" in group["slices"]:
                row = group["slices"].index("*")
                field = "pairs" if group["stream"] == PAIR_STREAM else "events"
                out[(group["stream"], group["window"])] += group["fields"][field][row]
    return out


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(0, 600), min_size=1, max_size=40))
def test_holding_changes_neither_what_nor_which_window_and_implies_announceable(
    steps: list[int],
) -> None:
    """Flushing at every message and flushing only what may not be held send the same counts
    to the same windows; and whenever data is held, a heartbeat alone may announce it."""
    every, holding = Stage1(POLICY), Stage1(POLICY)
    sent: dict[str, list[bytes]] = {"every": [], "holding": []}
    ts = 1000.0
    for offset, step in enumerate(steps):
        ts += (step - 100) / 10  # mostly forward, sometimes back: late and out-of-order events
        message: list[dict[str, Any]] = pair(f"r{offset}", ts)
        for stage1 in (every, holding):
            stage1.process(0, offset, decoded(message))
        sent["every"] += [raw for _, raw in every.flush(0)]
        if holding.holdable(0):
            assert holding.announceable(0)
        else:
            sent["holding"] += [raw for _, raw in holding.flush(0)]
    sent["holding"] += [raw for _, raw in holding.flush(0)]
    assert _pair_counts(sent["holding"]) == _pair_counts(sent["every"])
    assert len(sent["holding"]) <= len(sent["every"])
