"""The in-process pipeline: deterministic commands, and deviations named at the right slice."""

from typing import Any

import pytest

from streamguard.contracts import Command
from streamguard.engine import Pipeline
from streamguard.guards import Verdict
from streamguard.policy import Policy, parse_policy
from streamguard.sim import ShadowDeviation, TrafficGenerator
from tests.unit.core._events import sim_messages

POLICY = parse_policy(
    """
    [defaults]
    window_s = 5
    horizon_s = 60
    allowed_lateness_s = 3
    [defaults.guards.shadow]
    min_pairs = 300
    """
)
PARTITIONS = 4


def traffic(seed: int, deviation: ShadowDeviation | None, seconds: int = 100) -> list[bytes]:
    generator = TrafficGenerator(rate=100, seed=seed, start_ts=1_790_000_000.0, deviation=deviation)
    return sim_messages(generator, seconds, PARTITIONS)


def delayed(messages: list[bytes], every: int = 9, by: int = 40) -> list[bytes]:
    """Deliver every ``every``-th message ``by`` messages late (some of its events become late)."""
    out = list(messages)
    for i in range(len(messages) - by - 1, 0, -every):
        out.insert(i + by, out.pop(i))
    return out


def run(
    messages: list[bytes], flush_every: int = 1000, policy: Policy = POLICY, *, hold: bool = True
) -> tuple[Pipeline, list[Command], list[dict[str, Any]]]:
    verdicts: list[dict[str, Any]] = []

    def keep(verdict: Verdict) -> None:
        verdicts.append(verdict.to_dict())

    pipe = Pipeline(policy, PARTITIONS, flush_every=flush_every, on_verdict=keep, hold=hold)
    for message in messages:
        pipe.feed(message)
    return pipe, pipe.finish(), verdicts


@pytest.fixture(scope="module")
def deviating() -> list[bytes]:
    return delayed(traffic(3, ShadowDeviation({"platform": "android"}, after_s=40, shift=0.2)))


def test_results_do_not_depend_on_flush_cadence(deviating: list[bytes]) -> None:
    # Flushes that hold data of windows not yet ended (the default, as the worker's timer
    # does) and flushes that send everything: the same verdicts and commands, bit for bit.
    runs = [
        run(deviating, flush_every, hold=hold)
        for flush_every in (1, 7, 1000)
        for hold in (True, False)
    ]
    (pipe, commands, verdicts) = runs[0]
    assert commands  # the deviation is found
    assert len({c.command_id for c in commands}) == len(commands)
    assert pipe.stats.late > 0  # the delayed messages made some events late
    for other_pipe, other_commands, other_verdicts in runs[1:]:
        assert [c.to_json() for c in other_commands] == [c.to_json() for c in commands]
        assert [a.to_json() for a in other_pipe.alerts] == [a.to_json() for a in pipe.alerts]
        # Verdicts list slices in the order stage 2 first saw them, which depends on when
        # partials arrive; their content must not.
        assert [by_label(v) for v in other_verdicts] == [by_label(v) for v in verdicts]
        assert other_pipe.stats == pipe.stats


def partials_sent(messages: list[bytes], hold: bool) -> int:
    """Partial messages stage 1 sends when the pipeline flushes after every message."""
    pipe = Pipeline(POLICY, PARTITIONS, flush_every=1, hold=hold)
    flush, sent = pipe.stage1.flush, []

    def counted(partition: int) -> list[tuple[str, bytes]]:
        out = flush(partition)
        sent.extend(out)
        return out

    pipe.stage1.flush = counted  # type: ignore[method-assign]
    for message in messages:
        pipe.feed(message)
    pipe.finish()
    return len(sent)


def test_a_flush_holds_the_data_of_windows_that_have_not_ended(deviating: list[bytes]) -> None:
    held, everything = partials_sent(deviating, True), partials_sent(deviating, False)
    # Each message holds one partition's second of traffic: flushed every time, each sends a
    # partial; held, a partition sends about one per 5 s window (and its late stragglers).
    assert everything >= 0.9 * len(deviating)
    assert held <= everything // 4


def by_label(verdict: dict[str, Any]) -> dict[str, Any]:
    return {**verdict, "slices": sorted(verdict["slices"], key=lambda s: s["slice"])}


@pytest.mark.parametrize("seed", [7, 8])
def test_deviation_in_one_dimension_value_is_named_there(seed: int) -> None:
    """Android is diluted in '*' and spread over all its children: the answer is Android."""
    target = {"platform": "android"}
    _, commands, verdicts = run(traffic(seed, ShadowDeviation(target, after_s=40, shift=0.2)))
    assert [c.action for c in commands] == ["pause", "rollback"]
    assert all(c.slice == target for c in commands)  # never '*', never a child slice
    assert commands[0].ts >= 1_790_000_040.0  # not before the shift
    assert {c.model_version for c in commands} == {"ranker-v42"}
    for verdict in verdicts:
        assert {f["slice"] for f in verdict["findings"]} <= {"platform=android"}
    # Before the shift, every verdict is clean.
    early = [v for v in verdicts if v["window_end"] <= 1_790_000_040.0]
    assert early
    assert all(not v["findings"] for v in early)


def overlaps(a: dict[str, str] | None, b: dict[str, str]) -> bool:
    """Whether two slices share requests (no dimension with different values)."""
    return all(b.get(k, v) == v for k, v in (a or {}).items())


@pytest.mark.parametrize(
    ("target", "seed", "shift"),
    [
        ({"tier": "premium"}, 7, 0.2),
        ({"region": "eu"}, 9, 0.2),
        ({"platform": "ios", "tier": "premium"}, 7, 0.2),
        # Moderate shifts build up over the horizon: sub-slices and overlapping slices cross
        # their thresholds by noise before the deviating slice does, and must not be named.
        ({"region": "eu"}, 9, 0.1),
        ({"tier": "premium"}, 7, 0.1),
        ({"platform": "android"}, 3, 0.1),
    ],
    ids=str,
)
def test_every_command_names_exactly_the_deviating_slice(
    target: dict[str, str], seed: int, shift: float
) -> None:
    _, commands, _ = run(traffic(seed, ShadowDeviation(target, after_s=40, shift=shift), 300))
    assert commands
    assert [c.slice for c in commands] == [target] * len(commands)
    assert commands[0].action == "pause"


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_healthy_traffic_gives_no_command(seed: int) -> None:
    pipe, commands, verdicts = run(traffic(seed, None, seconds=90))
    assert verdicts
    assert commands == []
    assert all(not v["findings"] for v in verdicts)
    assert pipe.stats.unpaired == 0
    assert pipe.stats.pairs > 0
