"""The cold-start guard: its statistics (scipy oracles), the replica stream, and the guard
through the in-process pipeline (no broker)."""

import math
from typing import Any

import numpy as np
import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats as sps

from streamguard.core.replicas import ReplicaMeasures, replica_rows
from streamguard.core.snapshot import pack, unpack
from streamguard.core.stage1 import Stage1
from streamguard.core.stage2 import Stage2
from streamguard.decisions import Decider, RolloutState
from streamguard.engine import Pipeline
from streamguard.exceptions import ConfigError
from streamguard.guards import default_guards
from streamguard.guards.cold_start import compare_young_warm, fisher_greater, one_sided_welch
from streamguard.policy import ColdStartPolicy, DeploymentPolicy, Policy, parse_policy
from streamguard.sim import Replicas, TrafficGenerator
from streamguard.stats import moments_by_group

START = 1_790_000_000.0
MEASURES = ReplicaMeasures.from_policy(ColdStartPolicy())


def moments(x: np.ndarray) -> np.ndarray:
    return moments_by_group(x, np.zeros(len(x), dtype=np.int64), 1)[0]


def sketch(latency: np.ndarray) -> np.ndarray:
    return np.bincount(MEASURES.latency.index(latency), minlength=MEASURES.latency.n_buckets)


# --- statistics against scipy ------------------------------------------------------------------


@settings(max_examples=40, deadline=None)
@given(st.integers(0, 2**31), st.integers(20, 400), st.integers(20, 400), st.floats(-0.5, 0.5))
def test_welch_matches_scipy_statistic(seed: int, n_y: int, n_w: int, shift: float) -> None:
    rng = np.random.default_rng(seed)
    young, warm = rng.normal(shift, 1.3, n_y), rng.normal(0.0, 0.7, n_w)
    t = sps.ttest_ind(young, warm, equal_var=False).statistic
    assert one_sided_welch(moments(young), moments(warm)) == pytest.approx(
        sps.norm.sf(t), rel=1e-9, abs=1e-300
    )


@settings(max_examples=60, deadline=None)
@given(st.integers(1, 500), st.integers(1, 5000), st.data())
def test_fisher_greater_matches_scipy(n_y: int, n_w: int, data: Any) -> None:
    k_y, k_w = data.draw(st.integers(0, n_y)), data.draw(st.integers(0, min(n_w, 300)))
    table = [[k_y, n_y - k_y], [k_w, n_w - k_w]]
    expected = sps.fisher_exact(table, alternative="greater").pvalue
    assert fisher_greater(k_y, n_y, k_w, n_w) == pytest.approx(expected, rel=1e-7, abs=1e-14)


@settings(max_examples=30, deadline=None)
@given(st.integers(0, 2**31), st.integers(1, 6), st.sampled_from([0.5, 0.9, 0.99]))
def test_merged_sketch_quantiles_within_relative_accuracy(seed: int, parts: int, q: float) -> None:
    """Per-batch contributions merged by addition give numpy's quantile within alpha."""
    rng = np.random.default_rng(seed)
    latency = rng.lognormal(math.log(40.0), 1.0, 2000)
    ages = np.full(len(latency), 5.0)  # all young
    total = np.zeros(MEASURES.latency.n_buckets, dtype=np.int64)
    for chunk in np.array_split(np.arange(len(latency)), parts):
        rows, _, _ = replica_rows(["r"] * len(chunk), limit=4)
        out = MEASURES.contributions(
            rows, 3, latency[chunk], ages[chunk], np.zeros(len(chunk), bool)
        )
        total += out["young_sketch"][0]
    estimate = float(MEASURES.latency.quantile(total, q))
    exact = float(np.quantile(latency, q, method="lower"))
    assert abs(estimate - exact) <= MEASURES.latency.alpha * exact * (1 + 1e-9)


def test_replica_contributions_match_a_plain_python_count() -> None:
    rng = np.random.default_rng(7)
    n = 3000
    ids = [f"pod-{i}" if i >= 0 else "" for i in rng.integers(-1, 9, n).tolist()]
    latency = rng.lognormal(3.5, 0.5, n)
    latency[rng.random(n) < 0.1] = np.nan
    ages = rng.uniform(0, 300, n)
    not_ready = rng.random(n) < 0.2
    rows, labels, overflow = replica_rows(ids, limit=5)
    assert overflow == 4  # pod-0..pod-8 named, five kept (sorted), four folded
    out = MEASURES.contributions(rows, len(labels), latency, ages, not_ready)
    for r, label in enumerate(labels):
        if label == "*":
            pick = list(range(n))
        elif label == "~overflow":
            pick = [i for i in range(n) if ids[i] and f"replica={ids[i]}" not in labels]
        else:
            pick = [i for i in range(n) if f"replica={ids[i]}" == label]
        young = [i for i in pick if ages[i] < 120]
        assert out["events"][r] == len(pick)
        assert out["not_ready"][r] == sum(not_ready[i] for i in pick)
        assert out["young"][r] == len(young)
        timed_young = [latency[i] for i in young if np.isfinite(latency[i])]
        assert out["young_sketch"][r].sum() == len(timed_young)
        if len(timed_young) > 1:
            assert out["young_latency"][r][1] == pytest.approx(np.mean(np.log(timed_young)))


# --- the decision rule on healthy and cold traffic ---------------------------------------------


def horizon(rng: np.random.Generator, n_young: int, n_warm: int, factor: float) -> Any:
    young = rng.lognormal(math.log(40.0), 0.3, n_young) * factor
    warm = rng.lognormal(math.log(40.0), 0.3, n_warm)
    return compare_young_warm(
        MEASURES.latency,
        sketch(young),
        sketch(warm),
        moments(np.log(young)),
        moments(np.log(warm)),
    )


def breach(c: Any, policy: ColdStartPolicy) -> bool:
    enough = c.n_young >= policy.min_young and c.n_warm >= policy.min_warm
    return bool(enough and c.p_value < policy.alpha and c.p99_ratio >= policy.min_p99_ratio)


def test_false_alarm_rate_on_healthy_traffic() -> None:
    """Young replicas like warm ones: the p-value is valid and the rule never fires."""
    rng = np.random.default_rng(2024)
    policy = ColdStartPolicy()
    results = [horizon(rng, int(rng.integers(200, 3000)), 20_000, 1.0) for _ in range(2000)]
    p_values = np.array([c.p_value for c in results])
    # Bonferroni over two one-sided tests: at most alpha under the null (within noise).
    assert (p_values < 0.05).mean() <= 0.05 + 3 * math.sqrt(0.05 * 0.95 / len(results))
    assert sum(breach(c, policy) for c in results) == 0


def test_cold_replicas_are_caught_and_mildly_slow_ones_are_not() -> None:
    rng = np.random.default_rng(5)
    policy = ColdStartPolicy()
    assert all(breach(horizon(rng, 300, 5000, 16.0), policy) for _ in range(50))
    # 30 % slower is significant but below the effect floor (p99 ratio 2): no action.
    mild = [horizon(rng, 3000, 20_000, 1.3) for _ in range(50)]
    assert all(c.p_value < policy.alpha for c in mild)
    assert not any(breach(c, policy) for c in mild)


# --- the guard through stage 1, stage 2 and the decider ----------------------------------------


def run(replicas: Replicas, seconds: int = 160, policy: Policy | None = None) -> Pipeline:
    gen = TrafficGenerator(rate=200, seed=11, shadow=False, start_ts=START, replicas=replicas)
    pipe = Pipeline(policy or Policy(), partitions=4, flush_every=40)
    for events in gen.seconds(seconds):
        for i in range(0, len(events), 50):
            pipe.feed(orjson.dumps({"schema_version": 1, "events": events[i : i + 50]}))
    pipe.finish()
    return pipe


def test_the_incident_drains_not_ready_replicas_and_holds_scaling() -> None:
    pipe = run(Replicas(initial=2, scale_to=20, scale_at_s=60, load_s=45, route_unready=True))
    commands = pipe.commands
    actions = sorted({c.action for c in commands})
    assert actions == ["drain", "hold_scaling"]
    drained = sorted(c.slice["replica"] for c in commands if c.action == "drain" and c.slice)
    assert drained == sorted(f"pod-{i}" for i in range(2, 20))  # every new replica, no old one
    hold = next(c for c in commands if c.action == "hold_scaling")
    assert hold.slice is None
    assert hold.evidence["stats"]["p99_ratio"] >= 2
    assert hold.evidence["stats"]["p99_young"] > 500  # ~800 ms loading latency
    assert hold.evidence["stats"]["p99_warm"] < 120
    assert {r["replica_id"] for r in hold.evidence["replicas"]} <= set(drained)
    assert "the model is not at fault" in pipe.alerts[0].summary
    # The model is not at fault: its rollout stays healthy.
    assert pipe.decider.state("home-ranker", "ranker-v41") is RolloutState.HEALTHY


def test_replicas_that_get_traffic_only_when_ready_produce_nothing() -> None:
    judged: list[str] = []
    pipe = run(Replicas(initial=2, scale_to=20, scale_at_s=60, load_s=45, route_unready=False))
    assert pipe.commands == []
    pipe2 = Pipeline(Policy(), partitions=4)
    pipe2.on_verdict = lambda v: (
        judged.append(v.slices[0].state) if v.guard == "cold_start" else None
    )
    gen = TrafficGenerator(
        rate=200, seed=11, shadow=False, start_ts=START, replicas=Replicas(route_unready=False)
    )
    for events in gen.seconds(160):
        pipe2.feed(orjson.dumps({"schema_version": 1, "events": events}))
    pipe2.finish()
    assert "ok" in judged
    assert not {"drain", "hold_scaling"} & set(judged)


def test_drain_and_hold_scaling_never_change_the_rollout_state() -> None:
    decider = Decider(Policy(defaults=DeploymentPolicy(confirm_windows=1)))
    verdict = {
        "deployment": "d",
        "guard": "cold_start",
        "model_version": "v1",
        "baseline_version": "",
        "window_start": 0.0,
        "window_end": 10.0,
        "horizon_start": -290.0,
        "findings": [
            {
                "slice": "replica=pod-3",
                "action": "drain",
                "statistic": "not_ready_requests",
                "value": 12.0,
                "threshold": 1.0,
                "n": 40,
            },
            {
                "slice": "*",
                "action": "hold_scaling",
                "statistic": "p99_ratio",
                "value": 16.0,
                "threshold": 2.0,
                "n": 300,
            },
        ],
    }
    out = decider.on_verdict(verdict)
    assert [(c.action, c.slice) for c, _ in out] == [
        ("hold_scaling", None),
        ("drain", {"replica": "pod-3"}),
    ]
    assert decider.state("d", "v1") is RolloutState.HEALTHY
    assert decider.on_verdict({**verdict, "window_end": 20.0}) == []  # once per replica
    again = Decider(Policy(defaults=DeploymentPolicy(confirm_windows=1)))
    ids = [c.command_id for c, _ in again.on_verdict(verdict)]
    assert ids == [c.command_id for c, _ in out]  # deterministic ids


# --- bounded state and snapshots ---------------------------------------------------------------


def partial(window: int, replicas: list[str], offset: int) -> dict[str, Any]:
    """A stage-1 partial with one request per replica in ``window`` (stage 1 encodes it)."""
    stage1 = Stage1(POLICY)
    events = [
        {
            "schema_version": 1,
            "kind": "prediction",
            "event_id": f"e{offset}-{i}",
            "request_id": f"r{offset}-{i}",
            "ts": window * 10.0 + 1,
            "deployment": "d",
            "model_version": "v1",
            "role": "primary",
            "slice": {},
            "score": 0.5,
            "latency_ms": 40.0,
            "replica_id": name,
            "replica_age_s": 5.0,
            "replica_ready": True,
        }
        for i, name in enumerate(replicas)
    ]
    from streamguard.contracts import decode_message

    stage1.process(0, offset, decode_message(orjson.dumps({"schema_version": 1, "events": events})))
    messages = [orjson.loads(m) for _, m in stage1.flush(0)]
    assert len(messages) == 1
    return messages[0]


POLICY = Policy(defaults=DeploymentPolicy(cold_start=ColdStartPolicy(max_replicas=4)))


def test_replica_rows_are_bounded_and_released_when_replicas_leave_the_horizon() -> None:
    stage2 = Stage2(POLICY, 1, default_guards(POLICY))
    stage2.apply(partial(0, ["a", "b", "c"], 0))
    stage2.apply(partial(0, ["d", "e", "f"], 1))  # more than 4 replicas: e and f overflow
    stage2.apply(
        {"kind": "heartbeat", "sources": [{"partition": 0, "watermark": 30.0, "offset": 1}]}
    )
    verdicts = stage2.advance()
    stats = verdicts[-1].slices[0].stats
    assert stats["requests"] == 6
    assert stats["overflow_requests"] == 2
    assert stats["replicas"] == 4
    # Once windows up to 30 have closed, window 0 is out of the horizon and so are a to f:
    # the next replicas get their rows.
    stage2.apply(
        {"kind": "heartbeat", "sources": [{"partition": 0, "watermark": 320.0, "offset": 1}]}
    )
    stage2.advance()
    stage2.apply(partial(31, ["g", "h", "i", "j"], 2))
    stage2.apply(
        {"kind": "heartbeat", "sources": [{"partition": 0, "watermark": 330.0, "offset": 2}]}
    )
    last = stage2.advance()[-1]
    assert last.slices[0].stats["overflow_requests"] == 0
    assert last.slices[0].stats["replicas"] == 4
    assert sorted(r["replica_id"] for r in last.extra["cold_start"]["replicas"]) == [
        "g",
        "h",
        "i",
        "j",
    ]


def test_replica_stream_survives_a_snapshot_round_trip() -> None:
    stage2 = Stage2(POLICY, 1, default_guards(POLICY))
    stage2.apply(partial(0, ["a", "b", "c", "d", "e"], 0))
    restored = Stage2(POLICY, 1, default_guards(POLICY))
    restored.restore(0, unpack(pack(stage2.snapshot(0))))
    heartbeat = {"kind": "heartbeat", "sources": [{"partition": 0, "watermark": 30.0, "offset": 0}]}
    for s in (stage2, restored):
        s.apply(heartbeat)
    a = [v.to_dict() for v in stage2.advance()]
    b = [v.to_dict() for v in restored.advance()]
    assert a == b
    assert any(v["guard"] == "cold_start" for v in a)


def test_policy_reads_the_cold_start_table() -> None:
    policy = parse_policy("[defaults.guards.cold_start]\nyoung_age_s = 60\nmin_p99_ratio = 3\n")
    assert policy.defaults.cold_start.young_age_s == 60.0
    assert policy.defaults.cold_start.min_p99_ratio == 3.0
    with pytest.raises(ConfigError, match="min_p99_ratio"):
        parse_policy("[defaults.guards.cold_start]\nmin_p99_ratio = 0.5\n")
    with pytest.raises(ConfigError, match="unknown key"):
        parse_policy("[defaults.guards.cold_start]\nyoung = 1\n")
