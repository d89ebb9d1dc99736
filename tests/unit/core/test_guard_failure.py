"""A guard that raises at a close gives an error verdict; its state and the others' are kept.

The traffic is a simulated canary whose errors jump on one platform, and a shadow that
deviates on another: the shadow, stratification and canary guards all keep state, judge at
every close and issue commands. A guard is made to
fail at some closes, in two ways: a test guard that changes its state before it raises, and a
real guard (the canary's) whose statistics raise. The oracle is the same run without the
failures.
"""

from typing import Any

import orjson
import pytest

from streamguard.core import PAIR_STREAM
from streamguard.core.guard_failure import ERROR_STATUS, GuardFailure, failure_verdict
from streamguard.engine import Pipeline
from streamguard.guards import Verdict, canary
from streamguard.guards.base import GuardContext, StatelessGuard
from streamguard.guards.stratification import StratificationGuard
from streamguard.policy import Policy
from streamguard.sim import Canary, ShadowDeviation, TrafficGenerator
from tests.unit.core._events import sim_messages

PARTITIONS = 4
START = 1_790_000_000.0


def _messages() -> list[bytes]:
    generator = TrafficGenerator(
        rate=150.0,
        seed=5,
        start_ts=START,
        outcomes=True,
        canary=Canary(share=0.25, error={"platform=web": 10.0}, after_s=60.0),
        deviation=ShadowDeviation({"platform": "android"}, after_s=90.0, shift=0.15),
    )
    return sim_messages(generator, 240, PARTITIONS)


MESSAGES = _messages()


class Counting:
    """A guard that counts its closes in its state, and raises at ``failing`` windows after
    counting (a guard half-way through changing its state)."""

    name = "counting"

    def __init__(self, failing: set[int] | None) -> None:
        self.failing = failing  # None: every close
        self.seen: list[tuple[int, int]] = []  # (window, closes counted before it)

    def evaluate(self, ctx: GuardContext) -> Verdict | None:
        state = ctx.state(self.name)
        self.seen.append((ctx.window, state.get("closes", 0)))
        state["closes"] = state.get("closes", 0) + 1
        state.setdefault("windows", []).append(ctx.window)
        if self.failing is None or ctx.window in self.failing:
            raise ValueError(f"bad window {ctx.window}")
        return None

    @staticmethod
    def snapshot_state(state: dict[Any, Any]) -> Any:
        return dict(state)

    @staticmethod
    def restore_state(data: Any) -> dict[Any, Any]:
        return dict(data)


def _run_collecting(extra: list[Any] | None = None) -> tuple[Pipeline, list[Verdict]]:
    verdicts: list[Verdict] = []
    pipeline = Pipeline(Policy(), PARTITIONS, flush_every=PARTITIONS, on_verdict=verdicts.append)
    if extra:
        pipeline.stage2.guards[1:1] = extra
    for message in MESSAGES:
        pipeline.feed(message)
    pipeline.finish()
    return pipeline, verdicts


@pytest.fixture(scope="module")
def clean() -> tuple[Pipeline, list[Verdict]]:
    return _run_collecting()


def test_the_run_exercises_stateful_guards(clean: tuple[Pipeline, list[Verdict]]) -> None:
    pipeline, verdicts = clean
    guards = {v.guard for v in verdicts}
    assert {"shadow", "stratification", "canary"} <= guards
    assert pipeline.commands, "the regressing canary must be caught, or the oracle proves little"


def test_a_failing_guard_leaves_its_state_as_before_and_the_others_alike(
    clean: tuple[Pipeline, list[Verdict]],
) -> None:
    _, expected = clean
    windows = sorted({int(v.window_start // 10) for v in expected})
    failing = set(windows[3::4])  # every fourth close, from early on
    guard = Counting(failing)
    pipeline, verdicts = _run_collecting([guard])

    # Its state counts only the closes that did not fail: each failure was undone.
    assert [before for _, before in guard.seen] == [
        sum(1 for w, _ in guard.seen[:i] if w not in failing) for i in range(len(guard.seen))
    ]
    assert any(w in failing for w, _ in guard.seen)
    state = pipeline.stage2._deployments["home-ranker"].guard_state["counting"]
    assert state["windows"] == [w for w, _ in guard.seen if w not in failing]

    errors = [v for v in verdicts if v.guard == "counting"]
    assert sorted(int(v.window_start // 10) for v in errors) == sorted(
        w for w, _ in guard.seen if w in failing
    )
    for v in errors:
        message = v.to_dict()
        assert message["status"] == ERROR_STATUS
        assert message["error"]["type"] == "ValueError"
        where = message["error"]["where"]  # outside the package: the file's name alone
        assert where.startswith("test_guard_failure.py:")
        assert where.endswith(" in evaluate")
        assert message["error"]["message"] == f"bad window {int(v.window_start // 10)}"
    # Every other guard's verdicts, byte for byte, and the same commands.
    others = [orjson.dumps(v.to_dict()) for v in verdicts if v.guard != "counting"]
    assert others == [orjson.dumps(v.to_dict()) for v in expected]
    assert [c.command_id for c in pipeline.commands] == [c.command_id for c in clean[0].commands]
    assert pipeline.stats.guard_errors == len(errors)
    assert len(pipeline.failures) == 1  # one deployment, guard and signature


def test_a_real_guard_that_raises_gives_error_verdicts_and_a_critical_notice(
    clean: tuple[Pipeline, list[Verdict]], monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(*args: Any, **kwargs: Any) -> Any:
        raise FloatingPointError("injected into the canary's statistics")

    monkeypatch.setattr(canary, "msprt", broken)
    pipeline, verdicts = _run_collecting()
    _, expected = clean
    failed = [v.to_dict() for v in verdicts if v.guard == "canary"]
    judged = [v for v in expected if v.guard == "canary"]
    assert failed
    assert all(v["status"] == ERROR_STATUS for v in failed)
    assert len(failed) >= len(judged) > 0  # every close it judged failed
    for guard in ("shadow", "stratification"):
        assert [orjson.dumps(v.to_dict()) for v in verdicts if v.guard == guard] == [
            orjson.dumps(v.to_dict()) for v in expected if v.guard == guard
        ]
    assert not any(c.guard == "canary" for c in pipeline.commands)
    notices = [a for a in pipeline.notices if a.guard == "canary"]
    assert len(notices) == 1  # the same bug at every close: one notice
    notice = notices[0]
    assert notice.severity == "critical"
    assert notice.model_version == ""
    assert notice.slice is None
    assert "FloatingPointError" in notice.summary
    assert notice.evidence["error"]["where"].startswith("streamguard/guards/canary.py:")
    assert notice.ts == failed[0]["window_end"]


class Vandal(StatelessGuard):
    """A guard that scribbles on everything it was handed, then raises."""

    name = "vandal"

    def evaluate(self, ctx: GuardContext) -> Verdict | None:
        for version in ctx.versions(PAIR_STREAM):
            labels, arrays = ctx.horizon(PAIR_STREAM, version)
            labels.sort(reverse=True)
            for array in arrays.values():
                array[...] = 0
            window = ctx.closed_window(PAIR_STREAM, version)
            if window is not None:
                window[0].reverse()
                for array in window[1].values():
                    array[...] = 0
            ctx.windows(PAIR_STREAM, version, 3, frozenset({"pairs"}))[0].clear()
        raise RuntimeError("after scribbling")


def test_what_a_failing_guard_scribbled_on_is_not_handed_to_the_next(
    clean: tuple[Pipeline, list[Verdict]],
) -> None:
    pipeline = Pipeline(Policy(), PARTITIONS, flush_every=PARTITIONS)
    verdicts: list[Verdict] = []
    pipeline.on_verdict = verdicts.append
    pipeline.stage2.guards.insert(0, Vandal(None))  # before the shadow guard, on the same sums
    for message in MESSAGES:
        pipeline.feed(message)
    pipeline.finish()
    shadow = [orjson.dumps(v.to_dict()) for v in verdicts if v.guard == "shadow"]
    assert shadow == [orjson.dumps(v.to_dict()) for v in clean[1] if v.guard == "shadow"]


def test_a_memory_error_is_not_isolated() -> None:
    class Exhausted(Counting):
        def evaluate(self, ctx: GuardContext) -> Verdict | None:
            raise MemoryError

    pipeline = Pipeline(Policy(), PARTITIONS, flush_every=PARTITIONS)
    pipeline.stage2.guards.append(Exhausted(None))

    def run() -> None:
        for message in MESSAGES:
            pipeline.feed(message)
        pipeline.finish()

    with pytest.raises(MemoryError):
        run()


def test_a_guard_with_no_state_before_it_failed_has_none_after() -> None:
    guard = Counting(None)
    pipeline, verdicts = _run_collecting([guard])
    assert guard.seen
    assert all(before == 0 for _, before in guard.seen)
    assert "counting" not in pipeline.stage2._deployments["home-ranker"].guard_state
    assert all(v.to_dict()["status"] == ERROR_STATUS for v in verdicts if v.guard == "counting")


def test_the_error_verdict_is_dated_like_the_guards_verdicts() -> None:
    try:
        raise KeyError("platform")
    except KeyError as exc:
        failure = GuardFailure.of("d", "shadow", 1790000010.0, exc)
    verdict = failure_verdict(failure, 1790000000.0, 1789999710.0).to_dict()
    assert verdict["window_start"] == 1790000000.0
    assert verdict["window_end"] == 1790000010.0
    assert verdict["horizon_start"] == 1789999710.0
    assert verdict["slices"] == []
    assert verdict["findings"] == []
    assert verdict["error"]["message"] == "'platform'"
    assert verdict["error"]["signature"] == f"KeyError at {failure.where}"
    long = GuardFailure.of("d", "shadow", 0.0, ValueError("x" * 5000))
    assert len(long.message) < 400
    assert long.message.endswith("...")
    assert "ValueError" in long.traceback


class Unpicklable(Counting):
    """A guard whose state holds something pickle refuses."""

    name = "unpicklable"

    def evaluate(self, ctx: GuardContext) -> Verdict | None:
        state = ctx.state(self.name)
        if "hook" in state:
            raise AssertionError("judged although its state could not be kept")
        state["hook"] = lambda: None
        return None


def test_a_state_that_cannot_be_pickled_fails_its_guard_only(
    clean: tuple[Pipeline, list[Verdict]],
) -> None:
    pipeline, verdicts = _run_collecting([Unpicklable(None)])
    errors = [v.to_dict() for v in verdicts if v.guard == "unpicklable"]
    assert errors, "the guard judged once, then every later close must fail to keep its state"
    assert all(e["error"]["type"] in {"PicklingError", "AttributeError"} for e in errors)
    assert "hook" in pipeline.stage2._deployments["home-ranker"].guard_state["unpicklable"]
    others = [orjson.dumps(v.to_dict()) for v in verdicts if v.guard != "unpicklable"]
    assert others == [orjson.dumps(v.to_dict()) for v in clean[1]]


def test_every_failure_is_counted_however_many_a_round_has() -> None:
    guards = [Counting(None) for _ in range(3)]
    for i, guard in enumerate(guards):
        guard.name = f"counting{i}"
    pipeline = Pipeline(Policy(), PARTITIONS, flush_every=10**9)  # one flush: every close at once
    verdicts: list[Verdict] = []
    pipeline.on_verdict = verdicts.append
    pipeline.stage2.guards[1:1] = guards
    for message in MESSAGES:
        pipeline.feed(message)
    pipeline.finish()
    errors = [v for v in verdicts if v.guard.startswith("counting")]
    assert len(errors) > 64  # more than the bound the first version had
    assert pipeline.stats.guard_errors == len(errors)


def test_while_the_stratification_guard_fails_canary_verdicts_are_untrusted(
    clean: tuple[Pipeline, list[Verdict]], monkeypatch: pytest.MonkeyPatch
) -> None:
    judge = StratificationGuard.evaluate
    failing_from = min(v.window_end for v in clean[1] if v.guard == "canary") + 60.0

    def evaluate(self: StratificationGuard, ctx: GuardContext) -> Any:
        result = judge(self, ctx)
        if (ctx.window + 1) * ctx.window_s >= failing_from:
            raise RuntimeError("injected")
        return result

    monkeypatch.setattr(StratificationGuard, "evaluate", evaluate)
    _, verdicts = _run_collecting()
    canary = [v.to_dict() for v in verdicts if v.guard == "canary"]
    before = [v for v in canary if v["window_end"] < failing_from]
    after = [v for v in canary if v["window_end"] >= failing_from]
    assert after, "no canary verdict while the stratification guard failed"
    assert any(v["trusted"] for v in before)  # trusted until then, as in the clean run
    assert all(v["trusted"] is False for v in after)
    assert {v["stratification"] for v in after} == {"failed"}


class StubbornError(Exception):
    """Pickles, but cannot be unpickled (its constructor needs two arguments)."""

    def __init__(self, a: str, b: str) -> None:
        super().__init__(a)
        self.b = b


class Unrestorable(Counting):
    name = "unrestorable"

    def evaluate(self, ctx: GuardContext) -> Verdict | None:
        self.seen.append((ctx.window, 0))
        state = ctx.state(self.name)
        if "odd" not in state:  # one close stores it, the next fails and cannot get it back
            state["odd"] = StubbornError("x", "y")
            return None
        state["odd"] = None
        raise RuntimeError("after changing a state pickle cannot rebuild")


def test_a_state_that_cannot_be_unpickled_is_dropped_not_raised() -> None:
    guard = Unrestorable(None)
    _, verdicts = _run_collecting([guard])  # raised TypeError from pickle.loads before
    errors = [v for v in verdicts if v.guard == "unrestorable"]
    # Stored, failed and dropped, stored again...: every other close fails.
    assert len(errors) == len(guard.seen) // 2 > 0
