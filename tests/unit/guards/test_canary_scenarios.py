"""The canary guards end to end through the engine (replay path), on simulated traffic."""

from typing import Any

import pytest

from streamguard.contracts import Command
from streamguard.engine import Pipeline
from streamguard.guards import Verdict
from streamguard.policy import Policy
from streamguard.sim import Canary, TrafficGenerator
from streamguard.testing import envelopes
from tests.unit.guards.canary_context import START, run_traffic

TARGET = "platform=android,region=eu,tier=free"


def run(
    canary: Canary, seconds: int, seed: int = 1, rate: float = 800.0
) -> tuple[list[Command], list[dict[str, Any]]]:
    return run_traffic(canary, seconds, seed=seed, rate=rate)


def test_contaminated_canary_is_paused_with_the_missing_slices() -> None:
    commands, verdicts = run(Canary(share=0.1, only={"platform": "ios", "region": "na"}), 120)
    assert [(c.action, c.guard) for c in commands] == [("pause", "stratification")]
    evidence = commands[0].evidence
    assert commands[0].slice is None  # the allocation, not a slice, is at fault
    assert evidence["uncovered_weight"] > 0.8  # everything but iOS/NA is missing
    uncovered = {u["slice"] for u in evidence["uncovered"]}
    assert "platform=android,region=eu,tier=free" in uncovered
    assert not any("platform=ios,region=na" in s for s in uncovered)
    assert "allocation is fixed" in evidence["message"]
    canary_verdicts = [v for v in verdicts if v["guard"] == "canary"]
    assert canary_verdicts[-1]["status"] == "untrusted"
    assert canary_verdicts[-1]["trusted"] is False


def first_rollback(commands: list[Command], verdicts: list[dict[str, Any]]) -> Command:
    rollbacks = [c for c in commands if c.action == "rollback"]
    assert rollbacks, [v.get("status") for v in verdicts if v["guard"] == "canary"][-5:]
    return rollbacks[0]


@pytest.mark.slow
def test_a_regression_in_one_slice_is_rolled_back_there_while_global_would_not_fire() -> None:
    canary = Canary(share=0.25, ctr={"platform=web": 0.6})  # 40 % fewer clicks, 12 % of traffic
    commands, verdicts = run(canary, 900)
    command = first_rollback(commands, verdicts)
    assert command.guard == "canary"
    assert command.slice == {"platform": "web"}
    assert command.evidence["metric"] == "outcome_rate"
    low, high = command.evidence["confidence_bounds"]
    assert low < command.evidence["effect"] < high < 0
    assert -0.6 < command.evidence["relative_effect"] < -0.2
    assert command.evidence["n_canary"] >= 200
    assert command.evidence["n_baseline"] > command.evidence["n_canary"]
    assert "mSPRT" in command.evidence["test"]
    # The whole-deployment comparison alone would not have fired when the slice did, and
    # never does: 40 % in 12 % of traffic is under the practical floor globally.
    canary_verdicts = [v for v in verdicts if v["guard"] == "canary"]
    assert not any(v["global"]["outcome_rate"]["regressed"] for v in canary_verdicts)
    assert not any(c.guard == "stratification" for c in commands)
    assert [c.action for c in commands].count("rollback") == 1  # latched


@pytest.mark.slow
def test_a_regression_in_a_small_leaf_is_named_by_a_slice_containing_it() -> None:
    canary = Canary(share=0.25, ctr={TARGET: 0.6})  # 40 % fewer clicks in 4 % of traffic
    commands, verdicts = run(canary, 900)
    command = first_rollback(commands, verdicts)
    named = command.slice or {}
    assert named  # never the whole deployment
    assert named.items() <= {"platform": "android", "region": "eu", "tier": "free"}.items()


@pytest.mark.slow
@pytest.mark.parametrize("seed", [1, 2])
def test_a_healthy_stratified_canary_gets_no_command(seed: int) -> None:
    commands, verdicts = run(Canary(share=0.2), 600, seed=seed)
    assert commands == []
    statuses = {v["status"] for v in verdicts if v["guard"] == "canary"}
    assert "no regression detected" in statuses
    strat = [v for v in verdicts if v["guard"] == "stratification"]
    assert strat[-1]["status"] == "stratified"


def test_fixing_the_allocation_restarts_the_canary_statistics() -> None:
    verdicts: list[dict[str, Any]] = []

    def keep(verdict: Verdict) -> None:
        verdicts.append(verdict.to_dict())

    pipeline = Pipeline(Policy(), partitions=4, on_verdict=keep)
    phases = [
        (Canary(share=0.1, only={"platform": "ios"}, allocation="ios-only"), 120, 1, START),
        (Canary(share=0.1, allocation="stratified"), 300, 2, START + 120),
    ]
    for canary, seconds, seed, start in phases:
        gen = TrafficGenerator(rate=800, seed=seed, start_ts=start, shadow=False, canary=canary)
        for events in gen.seconds(seconds):
            for _, _, value in envelopes(events, 4):
                pipeline.feed(value)
    commands = pipeline.finish()
    # One pause for the contaminated allocation; the fixed one is judged afresh and passes.
    assert [(c.action, c.guard) for c in commands] == [("pause", "stratification")]
    strat = [v for v in verdicts if v["guard"] == "stratification"]
    assert {v["allocation"] for v in strat} == {"ios-only", "stratified"}
    assert strat[-1]["allocation"] == "stratified"
    assert strat[-1]["status"] == "stratified"
    assert (
        strat[-1]["canary_events"] < 0.1 * 800 * 300 * 1.2
    )  # counted since the new allocation only
