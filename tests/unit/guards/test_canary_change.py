"""The canary guard's change look, through the engine (replay path) on simulated traffic.

A canary that turns abruptly worse after a long healthy run is diluted in the cumulative
test; the change look pauses it within a window or two, dated to the change, and the
cumulative proof still rolls it back later.
"""

from typing import Any

import numpy as np
import pytest

from streamguard.contracts import Command
from streamguard.core.slices import ROOT
from streamguard.decisions.decider import Decider
from streamguard.guards.canary_change import change_look
from streamguard.policy import CANARY_METRICS, Policy, parse_policy
from streamguard.sim import Canary
from streamguard.stats import change_threshold
from tests.unit.guards.canary_context import (
    LABELS,
    POLICY,
    START,
    STRATA,
    Context,
    Events,
    draw,
    events_window,
    run_traffic,
)

ONSET_S = 600.0  # a long healthy history first: the cumulative test's worst case
OFF = parse_policy("[defaults.guards.canary]\nchange_windows = 0\n")


def run(
    canary: Canary, seconds: int, policy: Policy, seed: int = 1
) -> tuple[list[Command], list[dict[str, Any]]]:
    return run_traffic(canary, seconds, policy=policy, seed=seed, rate=300.0)


def canary_commands(commands: list[Command]) -> list[Command]:
    return [c for c in commands if c.guard == "canary"]


@pytest.mark.slow
def test_an_abrupt_failure_is_paused_at_the_first_full_bad_window_then_rolled_back() -> None:
    failing = Canary(share=0.25, error={"*": 10.0}, after_s=ONSET_S)
    commands, verdicts = run(failing, int(ONSET_S) + 90, Policy())
    ours = canary_commands(commands)
    assert [c.action for c in ours][:2] == ["pause", "rollback"]
    pause, rollback = ours[0], ours[1]
    onset = START + ONSET_S
    assert pause.ts == onset + 10  # the close of the first window that is all failure
    assert pause.slice is None  # the whole deployment
    evidence = pause.evidence
    assert evidence["look"] == "change"
    assert evidence["metric"] == "error_rate"
    assert evidence["since"] == onset  # dated to the change
    assert evidence["log_stat"] >= evidence["log_threshold"]
    assert 0.06 < evidence["effect"] < 0.12  # 1 % -> 10 %
    assert "Shiryaev-Roberts" in evidence["test"]
    assert rollback.ts > pause.ts
    assert rollback.evidence["always_valid"] is True  # the cumulative proof
    closes = [v for v in verdicts if v["guard"] == "canary" and v["window_end"] == pause.ts]
    assert closes
    states = {s["slice"]: s["state"] for s in closes[0]["slices"]}
    assert states["*"] == "pause"

    # Without the change look, the first command is the cumulative test's, and later.
    without, _ = run(failing, int(ONSET_S) + 90, OFF)
    first = canary_commands(without)[0]
    assert first.action == "rollback"
    assert first.ts > pause.ts


@pytest.mark.slow
@pytest.mark.parametrize("seed", [1, 2, 3])
def test_a_healthy_canary_is_never_paused_by_the_change_look(seed: int) -> None:
    commands, verdicts = run(Canary(share=0.25), 900, Policy(), seed=seed)
    assert canary_commands(commands) == []
    looks = [f for v in verdicts if v["guard"] == "canary" for f in v["findings"] if f.get("look")]
    assert looks == []


def test_the_decider_acts_at_once_on_a_per_look_budget() -> None:
    finding = {
        "slice": "*",
        "action": "pause",
        "statistic": "error_rate",
        "value": 0.09,
        "threshold": 0.0025,
        "n": 750,
        "per_look_budget": True,
    }
    verdict = {
        "deployment": "home-ranker",
        "guard": "canary",
        "model_version": "v2",
        "baseline_version": "v1",
        "window_start": 0.0,
        "window_end": 10.0,
        "horizon_start": 0.0,
        "findings": [finding],
    }
    assert [c.action for c, _ in Decider().on_verdict(verdict)] == ["pause"]
    finding.pop("per_look_budget")
    assert Decider().on_verdict(verdict) == []  # waits for confirm_windows = 2


def counts_of(events: Events) -> dict[str, int]:
    return {label: len(events.of(label).stratum) for label in LABELS}


@pytest.mark.parametrize("canary_ctr", [0.05, 0.2])  # worse, then better than the baseline
def test_the_budget_splits_by_sample_sizes_only(canary_ctr: float) -> None:
    """Root: 3 tests; slices: every (slice, metric) with ``min_samples`` in both arms."""
    rng = np.random.default_rng(5)
    # Android strata are big, the others too small for 200 over the 6 windows looked at.
    sizes = {s: 150 if s[0] == "android" else 20 for s in STRATA}
    ctx = Context()
    canary_events, baseline_events = [], []
    for _ in range(8):
        canary = draw(rng, sizes, ctr=dict.fromkeys(STRATA, canary_ctr))
        baseline = draw(rng, {s: 3 * n for s, n in sizes.items()})
        canary_events.append(canary)
        baseline_events.append(baseline)
        ctx.close(events_window(canary), events_window(baseline), with_canary_guard=False)
    settings = POLICY.canary
    tau = {m: np.full(len(LABELS), settings.metrics[m].min_effect) for m in CANARY_METRICS}
    changed = change_look(ctx, "v2", "v1", list(LABELS), tau, settings)
    assert changed is not None
    k = settings.change_windows
    seen = (Events.concat(e[-k:]) for e in (canary_events, baseline_events))
    c, b = (counts_of(e) for e in seen)
    judged = [
        label
        for label in LABELS
        if label != ROOT and min(c[label], b[label]) >= settings.min_samples
    ]
    assert 0 < len(judged) < len(LABELS) - 1
    budget = settings.change_alarms_per_day * ctx.window_s / 86_400 / 2
    expected = {
        label: change_threshold(len(CANARY_METRICS), k, budget)
        if label == ROOT
        else change_threshold(len(CANARY_METRICS) * len(judged), k, budget)
        for label in LABELS
    }
    got = dict(zip(changed.labels, changed.log_threshold.tolist(), strict=True))
    assert got == pytest.approx(expected, rel=1e-12)
