"""Messages that made stage 1 raise: narrowed down over restarts, then left out (core.quarantine).

The simulation below plays a partition with poisoned messages through crashes and restarts
from earlier snapshots, as the worker does, and checks that exactly the poisoned messages are
left out, after a bounded number of crashes; the stage-1 tests check that a message left out
is accounted as if it had never been in the log, and that an error names the messages it
came from.
"""

import math
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from streamguard.contracts import decode_message, parse_message
from streamguard.core import Stage1
from streamguard.core.exceptions import AccountingError
from streamguard.core.quarantine import (
    MAX_SUSPECTS,
    Handling,
    Suspect,
    after_crash,
    handling,
    prune,
)
from tests.unit.core.test_runs import POLICY, assert_same, canonical, script, totals


def stamp(offset: int) -> tuple[int, int]:
    return (1_790_000_000_000 + offset, offset * 7919 % 65536)


# -- the record --------------------------------------------------------------------------------


def test_a_crash_inside_a_suspect_narrows_it_and_counts_one_more() -> None:
    run = after_crash([], 100, 350, "ValueError: x", None)
    assert run == [Suspect(100, 350, 1, "ValueError: x")]
    alone = after_crash(run, 200, 200, "ValueError: x", stamp(200))
    assert alone == [Suspect(200, 200, 2, "ValueError: x", stamp(200))]
    again = after_crash(alone, 200, 200, "ValueError: y", stamp(200))
    assert again == [Suspect(200, 200, 3, "ValueError: y", stamp(200))]


def test_a_crash_elsewhere_is_a_new_suspect_and_the_others_stay() -> None:
    first = after_crash([], 10, 10, "E: a", stamp(10))
    both = after_crash(first, 40, 60, "E: b", None)
    assert both == [Suspect(10, 10, 1, "E: a", stamp(10)), Suspect(40, 60, 1, "E: b")]


def test_another_message_at_the_same_offset_starts_over() -> None:
    """Stamps that differ: the broker lost the log and another message took the offset."""
    old = after_crash(after_crash([], 5, 5, "E: a", stamp(5)), 5, 5, "E: a", stamp(5))
    assert old[0].crashes == 2
    assert after_crash(old, 5, 5, "E: b", (1, 2)) == [Suspect(5, 5, 1, "E: b", (1, 2))]


def test_a_run_of_one_message_keeps_the_stamp_its_suspect_has() -> None:
    alone = after_crash([], 7, 7, "E: a", stamp(7))
    assert after_crash(alone, 3, 9, "E: a", None) == [Suspect(7, 7, 2, "E: a", stamp(7))]


def test_suspects_are_bounded_and_errors_cut() -> None:
    suspects: list[Suspect] = []
    for k in range(MAX_SUSPECTS + 5):
        suspects = after_crash(suspects, 10 * k, 10 * k, "E" * 900, stamp(10 * k))
    assert len(suspects) == MAX_SUSPECTS
    assert suspects[0].first == 50  # the oldest went
    assert len(suspects[-1].error) == 500


def test_a_crash_must_name_a_range() -> None:
    with pytest.raises(ValueError, match="not a range"):
        after_crash([], 5, 4, "E", None)
    with pytest.raises(ValueError, match="not a range"):
        after_crash([], -1, 4, "E", None)


def test_the_stored_form_reads_back_and_junk_does_not() -> None:
    suspects = [Suspect(1, 9, 1, "E: a"), Suspect(4, 4, 3, "E: b", (5, 6))]
    assert [Suspect.from_dict(s.to_dict()) for s in suspects] == suspects
    for junk in (
        {"first": 5, "last": 4, "crashes": 1, "error": "", "stamp": None},
        {"first": 1, "last": 1, "crashes": 0, "error": "", "stamp": None},
        {"first": 1, "last": 1, "crashes": 1, "error": ""},
        {"first": "x", "last": 1, "crashes": 1, "error": "", "stamp": None},
    ):
        with pytest.raises((KeyError, TypeError, ValueError)):
            Suspect.from_dict(junk)


def test_suspects_behind_the_resume_offset_are_dropped() -> None:
    suspects = [Suspect(1, 9, 1, "E"), Suspect(12, 12, 2, "E", (1, 1))]
    assert prune(suspects, 10) == [Suspect(12, 12, 2, "E", (1, 1))]
    assert prune(suspects, 9) == suspects


def test_handling_by_offset_crashes_and_stamp() -> None:
    suspects = [Suspect(10, 20, 1, "E"), Suspect(30, 30, 2, "E", stamp(30))]
    assert handling(suspects, 9, lambda: stamp(9), after=2) is Handling.RUN
    assert handling(suspects, 10, lambda: stamp(10), after=2) is Handling.ALONE
    assert handling(suspects, 30, lambda: stamp(30), after=2) is Handling.SKIP
    assert handling(suspects, 30, lambda: (0, 0), after=2) is Handling.ALONE  # another message
    assert handling(suspects, 30, lambda: stamp(30), after=3) is Handling.ALONE  # not yet
    assert handling(suspects, 30, lambda: stamp(30), after=0) is Handling.ALONE  # never
    unstamped = [Suspect(30, 30, 5, "E")]
    assert handling(unstamped, 30, lambda: stamp(30), after=2) is Handling.ALONE


def test_the_stamp_is_only_asked_for_a_message_that_may_be_left_out() -> None:
    def never() -> tuple[int, int]:
        raise AssertionError("asked")

    suspects = [Suspect(10, 20, 4, "E")]
    assert handling(suspects, 15, never, after=2) is Handling.ALONE
    assert handling(suspects, 25, never, after=2) is Handling.RUN


# -- crashes and restarts, simulated -----------------------------------------------------------


def simulate(
    n: int,
    poison: set[int],
    after: int,
    runs: list[int],
    resumes: list[int],
    *,
    flaky: frozenset[int] = frozenset(),
) -> tuple[set[int], int]:
    """Workers reading offsets 0..n-1 until one gets through: (offsets left out, crashes).

    Messages handled ``RUN`` join runs of the lengths ``runs`` cycles through; a unit holding a
    poisoned offset raises with its range. A worker restarts from the latest stored snapshot:
    at the offset ``resumes`` gives, but never before the one before it (snapshots only move
    on) nor after the first offset of the unit that raised (they cover what was accounted).
    A ``flaky`` offset raises the first time only (a transient failure). Every crash is
    stamped with its last message, as the worker stamps them.
    """
    suspects: list[Suspect] = []
    skipped: set[int] = set()
    flaked: set[int] = set()
    resume, crashes, k = 0, 0, 0
    while crashes <= 10 * n:
        run: list[int] = []
        crashed: tuple[int, int] | None = None

        def account(offsets: list[int]) -> tuple[int, int] | None:
            failed = poison & set(offsets) or (flaky - flaked) & set(offsets)
            flaked.update(flaky & set(offsets))
            return (offsets[0], offsets[-1]) if failed else None

        for offset in range(resume, n):
            how = handling(suspects, offset, lambda o=offset: stamp(o), after)
            if how is Handling.RUN:
                run.append(offset)
                if len(run) < runs[k % len(runs)]:
                    continue
                k += 1
                crashed, run = account(run), []
            else:
                crashed, run = account(run), []  # the run before is cut first
                if crashed is None and how is Handling.SKIP:
                    skipped.add(offset)
                elif crashed is None:
                    crashed = account([offset])
            if crashed is not None:
                break
        if crashed is None and run:
            crashed = account(run)  # the last flush cuts the run
        if crashed is None:
            return skipped, crashes
        crashes += 1
        first, last = crashed
        suspects = after_crash(suspects, first, last, "E", stamp(last))
        resume = max(resume, min(resumes[crashes % len(resumes)], first))
        suspects = prune(suspects, resume)
    raise AssertionError(f"no worker got through after {crashes} crashes")


@settings(max_examples=300, deadline=None)
@given(
    n=st.integers(1, 60),
    poison=st.sets(st.integers(0, 59), max_size=3),
    after=st.integers(1, 4),
    runs=st.lists(st.integers(1, 12), min_size=1, max_size=6),
    resumes=st.lists(st.integers(0, 59), min_size=1, max_size=6),
)
def test_exactly_the_poisoned_messages_are_left_out_after_a_bounded_number_of_crashes(
    n: int, poison: set[int], after: int, runs: list[int], resumes: list[int]
) -> None:
    poison = {p for p in poison if p < n}
    skipped, crashes = simulate(n, poison, after, runs, resumes)
    assert skipped == poison
    # A crash counts for one message only: none is left out before `after` crashes. Each costs
    # at most one more, a crash of a run holding it that another message's count took.
    assert len(poison) * after <= crashes <= len(poison) * (after + 1)


@settings(max_examples=200, deadline=None)
@given(
    n=st.integers(1, 40),
    flaky=st.sets(st.integers(0, 39), min_size=1, max_size=3),
    runs=st.lists(st.integers(1, 8), min_size=1, max_size=4),
    resumes=st.lists(st.integers(0, 39), min_size=1, max_size=4),
)
def test_failures_that_do_not_repeat_leave_nothing_out(
    n: int, flaky: set[int], runs: list[int], resumes: list[int]
) -> None:
    """Each fails once (a ``MemoryError`` under a spike), then accounts fine: no event is lost."""
    flaky = {f for f in flaky if f < n}
    skipped, crashes = simulate(n, set(), 2, runs, resumes, flaky=frozenset(flaky))
    assert skipped == set()
    assert crashes <= len(flaky)


def test_after_one_leaves_a_message_out_at_its_first_crash_alone() -> None:
    assert simulate(10, {4}, 1, [1], [0]) == ({4}, 1)  # runs of one: alone from the start
    assert simulate(10, {4}, 1, [10], [0]) == ({4}, 2)  # the run's crash, then alone


# -- stage 1 -----------------------------------------------------------------------------------


@settings(max_examples=150, deadline=None)
@given(script(), st.data())
def test_a_message_left_out_is_accounted_as_if_the_log_never_held_it(
    case: tuple[list[bytes], set[int], set[int]], data: st.DataObject
) -> None:
    """Skipped messages between runs: the partials of the messages kept, one at a time."""
    messages, flushes, _ = case
    left_out = data.draw(st.sets(st.integers(0, len(messages) - 1), max_size=4))
    subject, reference = Stage1(POLICY), Stage1(POLICY)
    subject_reports, reference_reports = [], []
    last = len(messages) - 1
    for offset, value in enumerate(messages):
        if offset in left_out:
            units = subject.skip(0, offset, math.inf)
        else:
            units = subject.feed(0, offset, value, parse_message(value), math.inf)
            reference_reports.append(reference.process(0, offset, decode_message(value)))
        if offset in flushes or offset == last:
            units += subject.cut(0, math.inf)
            got, expected = canonical(subject.flush(0)), canonical(reference.flush(0))
            # The subject's partial covers a message left out last; the reference's stops
            # before it. Every count and sum is the same.
            stamps = {k: got.pop(k) for k in list(got) if k[1] == "head"}
            for k in [k for k in expected if k[1] == "head"]:
                expected.pop(k)
            assert all(s[0]["offset_hi"] == offset for s in stamps.values())
            assert_same(expected, got)
        subject_reports += [unit.report for unit in units]
    assert totals(subject_reports) == totals(reference_reports)
    assert subject.watermark(0) == reference.watermark(0)


def _poisoned(monkeypatch: pytest.MonkeyPatch, event_id: str) -> None:
    real = Stage1._predictions

    def predictions(self: Stage1, source: Any, state: Any, batch: Any, *args: Any) -> None:
        real(self, source, state, batch, *args)
        if event_id in batch.event_id:
            raise RuntimeError("poisoned")

    monkeypatch.setattr(Stage1, "_predictions", predictions)


def _one(request: str, role: str, ts: float) -> bytes:
    from tests.unit.core.test_runs import prediction

    return prediction(request, role, ts)


def test_an_error_in_a_message_decoded_alone_names_that_message(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    _poisoned(monkeypatch, "r2-shadow")
    stage1 = Stage1(POLICY)
    for offset, value in enumerate([_one("r1", "primary", 100.0), _one("r1", "shadow", 100.0)]):
        stage1.feed(3, offset, value, parse_message(value), math.inf)  # a run of two
    bad = _one("r2", "shadow", 101.0)
    with pytest.raises(AccountingError) as raised:
        stage1.feed(3, 2, bad, decode_message(bad), math.inf)  # alone: cuts the run first
    assert (raised.value.partition, raised.value.first, raised.value.last) == (3, 2, 2)
    assert raised.value.error == "RuntimeError: poisoned"
    assert isinstance(raised.value.__cause__, RuntimeError)
    assert "partition 3 offset 2 raised RuntimeError: poisoned" in str(raised.value)


def test_an_error_in_a_run_names_the_run_even_at_a_flush(monkeypatch: pytest.MonkeyPatch) -> None:
    _poisoned(monkeypatch, "r2-shadow")
    stage1 = Stage1(POLICY)
    values = [_one("r1", "primary", 100.0), _one("r2", "shadow", 100.5), _one("r3", "canary", 101)]
    for offset, value in enumerate(values, start=40):
        assert stage1.feed(0, offset, value, parse_message(value), math.inf) == []
    with pytest.raises(AccountingError) as raised:
        stage1.cut(0, math.inf)
    assert (raised.value.first, raised.value.last) == (40, 42)
    assert "offsets 40-42" in str(raised.value)


def test_a_message_a_recorded_flush_holds_is_never_left_out() -> None:
    """A flush since the last snapshot sent partials holding it: it was accounted once, and the
    partials a restart reproduces must be those stage 2 has (review of 04d5672)."""
    values = [_one("r1", "primary", 100.0), _one("r1", "shadow", 100.5), _one("r2", "canary", 101)]
    first = Stage1(POLICY)
    for offset, value in enumerate(values):
        first.feed(0, offset, value, decode_message(value), math.inf)
        if offset == 1:
            first.flush(0)  # boundary at offset 1
    restarted = Stage1(POLICY)
    assert restarted.restore(0, None, first.progress(0)) == 0
    assert not restarted.skippable(0, 0)
    assert not restarted.skippable(0, 1)
    assert restarted.skippable(0, 2)  # after the last recorded boundary
    with pytest.raises(ValueError, match="accounted before"):
        restarted.skip(0, 1, math.inf)
    restarted.feed(0, 0, values[0], decode_message(values[0]), math.inf)
    restarted.feed(0, 1, values[1], decode_message(values[1]), math.inf)  # reproduces the flush
    assert restarted.skippable(0, 1)  # nothing left to reproduce


def test_a_restart_leaves_out_again_what_a_recorded_flush_left_out() -> None:
    """A worker left a message out and flushed, then stopped before its next snapshot (another
    poisoned message, ``kill -9``): the next one must leave it out again, whatever it knows of
    suspects, and flush the same partials (review of 98241f1: it accounted it alone, which
    raised at every restart)."""
    values = [_one(f"r{k}", role, 100.0 + k) for k in range(4) for role in ("primary", "shadow")]
    first = Stage1(POLICY)
    for offset, value in enumerate(values[:6]):
        if offset == 3:
            first.skip(0, offset, math.inf)
        else:
            first.feed(0, offset, value, decode_message(value), math.inf)
    sent = first.flush(0)  # boundary at 5, after the message left out
    progress = first.progress(0)
    assert progress["skipped"] == [3]
    restarted = Stage1(POLICY)
    assert restarted.restore(0, None, progress) == 0
    assert restarted.skippable(0, 3)
    assert not restarted.skippable(0, 2)  # accounted in the first pass
    reports = []
    for offset, value in enumerate(values[:6]):  # no suspect says so: the record does
        for unit in restarted.feed(0, offset, value, decode_message(value), math.inf):
            reports.append(unit.report)
    assert sum(r.predictions for r in reports) == 5
    again = restarted.flush(0)
    assert again == sent  # the reproduced partials, byte for byte
    # Once reproduced, a snapshot stored after it forgets the skip with the boundaries.
    assert restarted.progress(0)["skipped"] == [3]
    restarted.snapshot_stored(0, 5)
    assert restarted.progress(0)["skipped"] == []


def test_a_crash_without_a_stamp_keeps_the_one_known() -> None:
    known = after_crash([], 200, 200, "E", stamp(200))
    assert after_crash(known, 200, 200, "E", None) == [Suspect(200, 200, 2, "E", stamp(200))]
