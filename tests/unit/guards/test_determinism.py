"""The non-determinism guard: its tests under the null (false-alarm rates), the env streams,
bounded state and snapshots, and the guard through the in-process pipeline (no broker)."""

from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pytest

from streamguard.contracts import decode_message
from streamguard.core.environments import (
    EnvMeasures,
    admitted,
    cell_label,
)
from streamguard.core.pairing import PairingBuffer
from streamguard.core.snapshot import pack, unpack
from streamguard.core.stage1 import Stage1
from streamguard.core.stage2 import Stage2
from streamguard.decisions import Decider, RolloutState
from streamguard.engine import Pipeline
from streamguard.exceptions import ConfigError
from streamguard.guards import default_guards
from streamguard.guards.determinism import judge, paired_tests, unpaired_tests
from streamguard.policy import DeploymentPolicy, DeterminismPolicy, Policy, parse_policy
from streamguard.sim import Environments, TrafficGenerator
from streamguard.sim.scenarios import SCENARIOS
from streamguard.stats import moments_by_group

START = 1_790_000_000.0
V100, A100 = "gpu=v100;numpy=1.23", "gpu=a100;numpy=1.24"


def env_arrays(fps: np.ndarray, strata: np.ndarray, scores: np.ndarray) -> tuple[list, dict]:
    """What stage 2 would hold for these events: rows per (fingerprint, stratum)."""
    measures = EnvMeasures.from_policy(DeterminismPolicy())
    labels_s = [f"s={i}" for i in range(int(strata.max()) + 1)]
    rows, labels = measures.score_rows(fps.tolist(), strata, labels_s)
    return labels, measures.score_contributions(rows, len(labels), scores)


def mixed_null(
    rng: np.random.Generator, n: int, noise: float = 0.1
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Four strata with very different score levels; fingerprint b serves mostly the high
    ones. Outputs do not depend on the fingerprint (the null), only on the stratum."""
    strata = rng.integers(0, 4, n)
    share_b = np.array([0.1, 0.3, 0.7, 0.9])[strata]
    fps = np.where(rng.random(n) < share_b, "b", "a")
    scores = 0.2 * strata + rng.normal(0.0, noise, n)
    return fps, strata, scores


def test_unpaired_false_alarm_rate_under_the_null_with_different_mixes() -> None:
    """200 null runs at alpha 0.05 and tolerance 0 (the bare z test): alarms <= alpha + 3 sd;
    the pooled (not post-stratified) difference would alarm in every run."""
    rng = np.random.default_rng(7)
    policy = DeterminismPolicy(tolerance=0.0, alpha=0.05, min_events=100)
    alarms, pooled_alarms = 0, 0
    for _ in range(200):
        fps, strata, scores = mixed_null(rng, 4000)
        labels, arrays = env_arrays(fps, strata, scores)
        tests, totals = unpaired_tests(labels, arrays, policy)
        assert len(tests) == 1
        assert sum(totals.values()) == 4000
        alarms += judge(tests, policy.alpha)[0].rejected
        a, b = scores[fps == "a"], scores[fps == "b"]
        z = (b.mean() - a.mean()) / np.sqrt(a.var(ddof=1) / len(a) + b.var(ddof=1) / len(b))
        pooled_alarms += abs(z) > 1.96
    assert alarms / 200 <= 0.05 + 3 * np.sqrt(0.05 * 0.95 / 200)
    assert pooled_alarms == 200


def test_unpaired_estimate_matches_a_direct_post_stratified_computation() -> None:
    rng = np.random.default_rng(3)
    fps, strata, scores = mixed_null(rng, 5000)
    scores = scores + np.where(fps == "b", 0.02, 0.0)
    labels, arrays = env_arrays(fps, strata, scores)
    test = unpaired_tests(labels, arrays, DeterminismPolicy())[0][0]
    weights = np.bincount(strata) / len(strata)
    diffs, variances = [], []
    for s in range(4):
        a, b = scores[(fps == "a") & (strata == s)], scores[(fps == "b") & (strata == s)]
        diffs.append(a.mean() - b.mean())
        variances.append(a.var(ddof=1) / len(a) + b.var(ddof=1) / len(b))
    assert test.difference == pytest.approx(float(weights @ diffs), rel=1e-9)
    assert test.se == pytest.approx(float(np.sqrt(weights**2 @ variances)), rel=1e-9)
    assert test.fingerprints == ("a", "b")
    assert judge([test], 0.001)[0].rejected


def test_tolerance_keeps_large_traffic_from_flagging_harmless_noise() -> None:
    """A 0.95e-3 offset over a million events is significant (z about 6.7) at tolerance 0,
    not at the default tolerance 1e-3."""
    rng = np.random.default_rng(5)
    fps, strata, scores = mixed_null(rng, 1_000_000, noise=0.05)
    scores = scores + np.where(fps == "b", 0.95e-3, 0.0)
    labels, arrays = env_arrays(fps, strata, scores)
    strict = unpaired_tests(labels, arrays, DeterminismPolicy(tolerance=0.0))[0]
    assert judge(strict, 0.001)[0].rejected
    tolerant = unpaired_tests(labels, arrays, DeterminismPolicy())[0]
    assert not judge(tolerant, 0.001)[0].rejected


def pair_arrays(d: np.ndarray, tolerance: float = 1e-3) -> tuple[list[str], dict[str, Any]]:
    rows = np.ones(len(d), dtype=np.int64)
    magnitude = np.abs(d)
    return ["~overflow", cell_label("a", "b")], {
        "events": np.bincount(rows, minlength=2),
        "diff": moments_by_group(d, rows, 2),
        "abs_diff": moments_by_group(magnitude, rows, 2),
        "beyond": np.bincount(rows, weights=magnitude > tolerance, minlength=2).astype(int),
    }


def test_paired_false_alarm_rate_at_the_edge_of_the_null() -> None:
    """Mean |d| exactly the tolerance, 1 % of requests beyond it: alarms <= alpha + 3 sd."""
    rng = np.random.default_rng(11)
    policy = DeterminismPolicy(alpha=0.05)
    alarms = 0
    for _ in range(200):
        n = 2000
        beyond = rng.random(n) < policy.max_share
        # Both nulls at their edge: 1 % of |d| beyond the tolerance (5.95e-3), the rest
        # uniform on [0.9e-3, 1e-3], so the mean of |d| is the tolerance, 1e-3.
        within = rng.uniform(0.9e-3, 1e-3, n)
        d = np.where(beyond, 5.95e-3, within) * rng.choice([-1, 1], n)
        tests = paired_tests(*pair_arrays(d), policy)
        alarms += any(t.rejected for t in judge(tests, policy.alpha))
    assert alarms / 200 <= 0.05 + 3 * np.sqrt(0.05 * 0.95 / 200)


def test_paired_tests_catch_an_offset_and_identical_outputs_never_flag() -> None:
    policy = DeterminismPolicy()
    shifted = judge(paired_tests(*pair_arrays(np.full(300, 0.03)), policy), policy.alpha)
    assert [t.rejected for t in shifted] == [True, True]
    assert shifted[0].difference == pytest.approx(0.03)
    identical = judge(paired_tests(*pair_arrays(np.zeros(5000)), policy), policy.alpha)
    assert [t.rejected for t in identical] == [False, False]
    assert paired_tests(*pair_arrays(np.full(100, 0.5)), policy) == []  # below min_pairs


# --- the env streams --------------------------------------------------------------------------


def test_pairs_carry_the_environments_of_their_halves_in_both_orders() -> None:
    events = [
        {"request_id": "r1", "role": "primary", "env_fingerprint": V100, "score": 0.5},
        {"request_id": "r2", "role": "shadow", "env_fingerprint": A100, "score": 0.2},
        {"request_id": "r1", "role": "shadow", "env_fingerprint": A100, "score": 0.53},
        {"request_id": "r2", "role": "primary", "score": 0.25},
    ]
    message = {"schema_version": 1, "events": [fill(e, i) for i, e in enumerate(events)]}
    batch = decode_message(orjson.dumps(message)).predictions
    buffer = PairingBuffer(30.0, 100)
    first = buffer.match(batch.take(np.array([0, 1])), np.zeros(2, dtype=np.int64))
    assert len(first) == 0
    restored = PairingBuffer(30.0, 100)
    restored.restore(unpack(pack(buffer.snapshot())))  # halves keep their environment
    pairs = restored.match(batch.take(np.array([2, 3])), np.zeros(2, dtype=np.int64))
    assert pairs.primary_env == [V100, ""]
    assert pairs.shadow_env == [A100, A100]
    measures = EnvMeasures.from_policy(DeterminismPolicy())
    out, labels = measures.pair_contributions([V100], [A100], np.array([0.5]), np.array([0.53]))
    assert labels == ["~overflow", cell_label(A100, V100)]  # a100 < v100: a100 minus v100
    assert out["diff"][1].tolist() == pytest.approx([1.0, 0.03, 0.0])


def fill(event: dict[str, Any], i: int, **extra: Any) -> dict[str, Any]:
    return {
        "schema_version": 1,
        "kind": "prediction",
        "event_id": f"e{i}-{event['role']}",
        "ts": 1.0 + i,
        "deployment": "d",
        "model_version": "v1",
        "slice": {"platform": "ios"},
        **event,
        **extra,
    }


def test_admission_caps_fingerprints_in_order_of_arrival() -> None:
    known = ["~overflow", cell_label("a", "s1"), cell_label("b", "s1")]
    fresh = [cell_label("a", "s2"), cell_label("c", "s1"), "~overflow"]
    assert admitted(known, fresh, 2, paired=False) == [True, False, True]
    assert admitted(known, fresh, 3, paired=False) == [True, True, True]
    assert admitted([], [cell_label("a", "b"), cell_label("a", "c")], 2, paired=True) == [
        True,
        False,
    ]


CAPPED = Policy(defaults=DeploymentPolicy(determinism=DeterminismPolicy(max_fingerprints=2)))


def partial(window: int, fingerprints: list[str], offset: int) -> dict[str, Any]:
    """A stage-1 partial with one primary per fingerprint in ``window``."""
    stage1 = Stage1(CAPPED)
    events = [
        fill(
            {
                "request_id": f"r{offset}-{i}",
                "role": "primary",
                "env_fingerprint": fp,
                "score": 0.5,
            },
            i,
            ts=window * 10.0 + 1,
        )
        for i, fp in enumerate(fingerprints)
    ]
    stage1.process(0, offset, decode_message(orjson.dumps({"schema_version": 1, "events": events})))
    (message,) = [orjson.loads(m) for _, m in stage1.flush(0)]
    return message


def heartbeat(watermark: float, offset: int) -> dict[str, Any]:
    return {
        "kind": "heartbeat",
        "sources": [{"partition": 0, "watermark": watermark, "offset": offset}],
    }


def test_fingerprints_are_capped_per_version_with_counted_overflow_and_released_later() -> None:
    stage2 = Stage2(CAPPED, 1, default_guards(CAPPED))
    stage2.apply(partial(0, ["a", "b"], 0))
    stage2.apply(partial(0, ["c", "c", "a"], 1))  # c is a third fingerprint: overflow
    stage2.apply(heartbeat(30.0, 1))
    verdict = [v for v in stage2.advance() if v.guard == "determinism"][-1]
    assert verdict.slices[0].stats["overflow_events"] == 2
    assert verdict.extra["determinism"]["fingerprints"] == {"a": 2, "b": 1}
    # Once a and b left the horizon, c gets a row.
    stage2.apply(heartbeat(320.0, 1))
    stage2.advance()
    stage2.apply(partial(31, ["c", "d"], 2))
    stage2.apply(heartbeat(330.0, 2))
    last = [v for v in stage2.advance() if v.guard == "determinism"][-1]
    assert last.extra["determinism"]["fingerprints"] == {"c": 1, "d": 1}
    assert last.slices[0].stats["overflow_events"] == 0


def test_env_streams_survive_a_snapshot_round_trip() -> None:
    stage2 = Stage2(CAPPED, 1, default_guards(CAPPED))
    stage2.apply(partial(0, ["a", "b", "c"], 0))
    restored = Stage2(CAPPED, 1, default_guards(CAPPED))
    restored.restore(0, unpack(pack(stage2.snapshot(0))))
    for s in (stage2, restored):
        s.apply(heartbeat(30.0, 0))
    a = [v.to_dict() for v in stage2.advance()]
    assert a == [v.to_dict() for v in restored.advance()]
    assert any(v["guard"] == "determinism" for v in a)


# --- the guard through stage 1, stage 2 and the decider ---------------------------------------


def run(gen: TrafficGenerator, seconds: int) -> tuple[Pipeline, list[Any]]:
    verdicts: list[Any] = []
    pipe = Pipeline(
        Policy(),
        partitions=4,
        flush_every=40,
        on_verdict=lambda v: verdicts.append(v) if v.guard == "determinism" else None,
    )
    for events in gen.seconds(seconds):
        for i in range(0, len(events), 100):
            pipe.feed(orjson.dumps({"schema_version": 1, "events": events[i : i + 100]}))
    pipe.finish()
    return pipe, verdicts


def test_the_incident_is_a_notice_naming_the_fingerprints_and_no_command() -> None:
    gen = SCENARIOS["nondeterministic-env"].source(60, 90, 2, START)
    pipe, verdicts = run(gen, 90)
    assert pipe.commands == []
    (notice,) = pipe.notices
    assert notice.guard == "determinism"
    assert notice.slice is None
    assert notice.ts >= START + 30  # never before the onset
    assert V100 in notice.summary
    assert A100 in notice.summary
    evidence = notice.evidence
    assert evidence["fingerprints"] == [A100, V100]
    assert evidence["check"] == "paired"
    # A100 minus V100 on the same requests: +0.03 since the onset, 0 before it (the horizon
    # holds both), and significantly beyond the tolerance.
    low, high = evidence["comparison"]["confidence_interval"]
    assert 1e-3 < low < evidence["comparison"]["difference"] < high <= 0.031
    assert evidence["events_per_fingerprint"][V100] > 0
    assert pipe.decider.state("home-ranker", "ranker-v41") is RolloutState.HEALTHY
    assert {v.slices[0].state for v in verdicts if v.window_end < START + 30} <= {
        "ok",
        "insufficient",
    }


def test_unpaired_traffic_without_a_shadow_is_caught_on_the_same_slices() -> None:
    envs = Environments((V100, A100), offsets=(0.0, 0.05), after_s=0)
    gen = TrafficGenerator(rate=60, seed=4, start_ts=START, shadow=False, environments=envs)
    pipe, _ = run(gen, 60)
    (notice,) = pipe.notices
    assert notice.evidence["check"] == "unpaired"
    # a100 < v100 in sorted order: the difference is A100 minus V100 scores.
    assert notice.evidence["comparison"]["difference"] == pytest.approx(0.05, abs=0.02)


def test_identical_environments_with_a_mix_that_differs_by_slice_produce_nothing() -> None:
    gen = SCENARIOS["healthy-envs"].source(60, 90, 3, START)
    pipe, verdicts = run(gen, 90)
    assert (pipe.commands, pipe.notices) == ([], [])
    final = verdicts[-1]
    assert final.slices[0].state == "ok"
    comparisons = final.extra["determinism"]["comparisons"]
    assert {c["check"] for c in comparisons} == {"paired", "unpaired"}
    assert all(c["difference"] == pytest.approx(0.0, abs=5e-3) for c in comparisons)


def test_a_notice_never_changes_the_rollout_state_and_is_issued_once() -> None:
    decider = Decider(Policy(defaults=DeploymentPolicy(confirm_windows=1)))
    finding = {"slice": "*", "action": "notice", "statistic": "mean_abs_diff", "value": 0.03,
               "threshold": 0.001, "n": 400, "summary": f"{A100} minus {V100}"}  # fmt: skip
    verdict = {"deployment": "d", "guard": "determinism", "model_version": "v1",
               "baseline_version": "", "window_start": 0.0, "window_end": 10.0,
               "horizon_start": -290.0, "findings": [finding]}  # fmt: skip
    decisions = decider.decide(verdict)
    assert decisions.commands == []
    (notice,) = decisions.notices
    assert A100 in notice.summary
    assert "no command issued" in notice.summary
    assert decider.state("d", "v1") is RolloutState.HEALTHY
    assert decider.decide({**verdict, "window_end": 20.0}).notices == []
    again = Decider(Policy(defaults=DeploymentPolicy(confirm_windows=1))).decide(verdict)
    assert again.notices[0].alert_id == notice.alert_id  # deterministic ids


def test_policy_reads_the_determinism_table_and_the_example_states_the_defaults() -> None:
    policy = parse_policy("[defaults.guards.determinism]\ntolerance = 0.01\nmax_fingerprints = 4\n")
    assert policy.defaults.determinism.tolerance == 0.01
    assert policy.defaults.determinism.max_fingerprints == 4
    for bad, fragment in (
        ("tolerance = -1", "tolerance"),
        ("alpha = 2", "alpha"),
        ("min_stratum_events = 1", "min_stratum_events"),
        ("tol = 1", "unknown key"),
    ):
        with pytest.raises(ConfigError, match=fragment):
            parse_policy(f"[defaults.guards.determinism]\n{bad}\n")
    example = Path(__file__).parents[3] / "deploy" / "policy.example.toml"
    text = example.read_text()
    section = text[text.index("[defaults.guards.determinism]") :]
    section = section[: section.index("\n[", 1)]
    assert parse_policy(section).defaults.determinism == DeterminismPolicy()
