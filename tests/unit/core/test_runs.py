"""Runs of one-event messages: stage 1 accounts them exactly as one message at a time.

Wherever flushes and run cuts fall, feeding one-event messages (which stage 1 decodes and
accounts in runs) must flush the same partials as processing each message alone: the same
counts, the same sums (to rounding), the same late events, watermarks and buffer states.
"""

import math
import os
from typing import Any

import numpy as np
import orjson
from hypothesis import HealthCheck, Phase, event, given, settings
from hypothesis import strategies as st

from streamguard.contracts import decode_message, parse_message
from streamguard.core import Stage1
from streamguard.core.partials import group_fields
from streamguard.core.stage1 import Stage1Report
from streamguard.policy import parse_policy

# Short windows, TTL and join window against the event-time steps below, and small buffers:
# expiry, maturity, lateness and evictions all happen within a few dozen messages.
POLICY = parse_policy(
    """
    [defaults]
    window_s = 10
    horizon_s = 300
    allowed_lateness_s = 2
    pair_ttl_s = 6
    max_pending = 8
    [defaults.guards.canary]
    outcome_join_s = 8
    max_exposures = 8
    """
)
ROLES = ("primary", "shadow", "canary")


@st.composite
def message(draw: st.DrawFn, step: float) -> tuple[float, bytes]:
    """One message: a prediction or an outcome (or, now and then, an invalid event)."""
    request = f"r{draw(st.integers(0, 9))}"
    deployment = draw(st.sampled_from(["a", "b"]))
    kind = draw(st.sampled_from(["prediction"] * 6 + ["outcome"] * 2 + ["bad"]))
    ts = step
    if kind == "outcome":
        event: dict[str, Any] = {
            "schema_version": 1,
            "kind": "outcome",
            "event_id": f"o-{request}",
            "request_id": request,
            "ts": ts,
            "deployment": deployment,
            "value": draw(st.sampled_from([0.0, 1.0, 0.3])),
        }
    elif kind == "bad":
        event = {"schema_version": 1, "kind": "prediction", "request_id": request, "ts": ts}
    else:
        role = draw(st.sampled_from(ROLES))
        event = {
            "schema_version": 1,
            "kind": "prediction",
            "event_id": f"{request}-{role}",
            "request_id": request,
            "ts": ts,
            "deployment": deployment,
            "model_version": draw(st.sampled_from(["v1", "v2"])) if role != "shadow" else "v3",
            "role": role,
            "slice": {
                "platform": draw(st.sampled_from(["ios", "android"])),
                "region": draw(st.sampled_from(["eu", "us"])),
            },
            "score": draw(st.sampled_from([0.1, 0.25, 0.5, 0.7, 0.9])),
            "latency_ms": draw(st.sampled_from([5.0, 12.5, 40.0])),
        }
        if draw(st.booleans()):
            event["error"] = draw(st.booleans())
        if draw(st.booleans()):
            event["items"] = draw(st.lists(st.sampled_from(["i1", "i2", "i3"]), max_size=3))
        if draw(st.booleans()):
            event["feature_schema"] = draw(st.sampled_from(["s1", "s2"]))
        if draw(st.booleans()):
            event["replica_id"] = draw(st.sampled_from(["x", "y"]))
            event["replica_ready"] = draw(st.booleans())
        if draw(st.booleans()):
            event["env_fingerprint"] = draw(st.sampled_from(["e1", "e2"]))
    return ts, orjson.dumps(event)


@st.composite
def script(draw: st.DrawFn) -> tuple[list[bytes], set[int], set[int]]:
    """Messages with event times that mostly advance, sometimes jump back (late events),
    and the offsets after which both sides flush, and the subject alone cuts its run."""
    n = draw(st.integers(1, 80))
    clock, messages = 100.0, []
    for _ in range(n):
        clock = max(0.0, clock + draw(st.sampled_from([0.0, 0.5, 1.0, 2.0, 4.0, 9.0, -3.0, -8.0])))
        messages.append(draw(message(clock))[1])
    flushes = set(draw(st.lists(st.integers(0, n - 1), max_size=4)))
    cuts = set(draw(st.lists(st.integers(0, n - 1), max_size=6)))
    return messages, flushes, cuts


def canonical(partials: list[tuple[str, bytes]]) -> dict[Any, Any]:
    """Partials of one flush as {(deployment, stream, version, window, slice): fields}.

    Registry rows and parts may come in another order; what each slice holds may not differ.
    """
    out: dict[Any, Any] = {}
    for deployment, raw in partials:
        message = orjson.loads(raw)
        stamp = {k: v for k, v in message["source"].items() if k not in ("part", "parts")}
        key = (deployment, "head", message["source"]["part"])
        out[key] = (stamp, message["watermark"], message["late"])
        for group in message["groups"]:
            head = (deployment, group["stream"], group["version"], group["window"])
            if "items" in group:
                out[(*head, tuple(group["slices"]), "items")] = group["items"]
                continue
            out[(*head, "baseline")] = group["baseline_version"]
            for row, label in enumerate(group["slices"]):
                fields = group_fields(group).items()
                out[(*head, label)] = {f: values[row] for f, values in fields}
    return out


def close(a: Any, b: Any) -> bool:
    """Equal, floats to rounding: sums over a run add the same numbers in another order."""
    if isinstance(a, float) or isinstance(b, float):
        return math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-12)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(map(close, a, b))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(close(a[k], b[k]) for k in a)
    return bool(a == b)


def assert_same(expected: dict[Any, Any], got: dict[Any, Any]) -> None:
    assert expected.keys() == got.keys()
    for key, value in expected.items():
        assert close(value, got[key]), (key, value, got[key])


def snapshot_of(stage1: Stage1) -> Any:
    """The snapshot, with the pairing's sequence numbers as ranks: a pair completed within a
    run never takes one (one message at a time, its first half did), and only their order
    matters (ties in expiry)."""
    snapshot = orjson.loads(orjson.dumps(stage1.snapshot(0), option=orjson.OPT_SERIALIZE_NUMPY))
    for deployment in snapshot["deployments"].values():
        pairing = deployment["pairing"]
        del pairing["seq"]
        pairing["half_seq"] = np.argsort(pairing["half_seq"]).tolist()
    return snapshot


def totals(reports: list[Stage1Report]) -> dict[str, int]:
    keys = ("predictions", "outcomes", "pairs", "unpaired", "late", "late_pairs", "matured")
    keys += ("duplicates", "evicted_halves", "evicted_exposures", "unmatched_outcomes")
    return {k: sum(getattr(r, k) for r in reports) for k in keys}


def prediction(request: str, role: str, ts: float) -> bytes:
    """A one-event message: a prediction of deployment ``a``."""
    return orjson.dumps(
        {
            "schema_version": 1,
            "kind": "prediction",
            "event_id": f"{request}-{role}",
            "request_id": request,
            "ts": ts,
            "deployment": "a",
            "model_version": "v3" if role == "shadow" else "v1",
            "role": role,
            "slice": {"platform": "ios", "region": "eu"},
            "score": 0.5,
        }
    )


# Shrinking a failing script of up to 80 messages took longer than the suite's 300 s timeout,
# which then hid the assertion; the unshrunk script is reported instead. Set
# STREAMGUARD_SHRINK=1 (and --timeout=0) to shrink a failure locally.
PHASES = (
    tuple(Phase)
    if os.environ.get("STREAMGUARD_SHRINK") == "1"
    else tuple(p for p in Phase if p is not Phase.shrink)
)


@settings(
    max_examples=300,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
    phases=PHASES,
)
@given(script())
def test_runs_account_exactly_as_one_message_at_a_time(
    case: tuple[list[bytes], set[int], set[int]],
) -> None:
    messages, flushes, cuts = case
    alone, runs = Stage1(POLICY), Stage1(POLICY)
    alone_reports, run_reports = [], []
    alone_out, run_out = [], []
    last = len(messages) - 1
    for offset, value in enumerate(messages):
        alone_reports.append(alone.process(0, offset, decode_message(value)))
        units = runs.feed(0, offset, value, parse_message(value), math.inf)
        if offset in cuts:
            units += runs.cut(0, math.inf)
        if offset in flushes or offset == last:
            units += runs.cut(0, math.inf)
            alone_out.append(canonical(alone.flush(0)))
            run_out.append(canonical(runs.flush(0)))
        run_reports += [unit.report for unit in units]
    one_by_one = sum(r.one_by_one for r in run_reports)
    event("all one by one" if one_by_one == len(messages) else "some at once")
    assert len(alone_out) == len(run_out)
    for expected, got in zip(alone_out, run_out, strict=True):
        assert_same(expected, got)
    assert totals(alone_reports) == totals(run_reports)
    assert runs.watermark(0) == alone.watermark(0)
    assert snapshot_of(runs) == snapshot_of(alone)


def test_a_run_is_split_where_the_watermark_enters_another_window() -> None:
    """Halves expiring in two windows within one run are counted in each one's window."""
    # Primaries at 100..103 never get a shadow (a shadow at 99 starts pairing); the watermark
    # then jumps to 115 (window 11) and to 125 (window 12).
    times = [99.0, 100.0, 103.0, 115.0, 125.0]
    script = [
        prediction(f"q{i}", "shadow" if i == 0 else "primary", ts) for i, ts in enumerate(times)
    ]
    stage1 = Stage1(POLICY)
    units = []
    for offset, value in enumerate(script):
        units += stage1.feed(0, offset, value, parse_message(value), math.inf)
    units += stage1.cut(0, math.inf)
    assert len(units) == 1
    assert units[0].report.unpaired == 4
    unpaired = {}
    for _, raw in stage1.flush(0):
        for group in orjson.loads(raw)["groups"]:
            if "unpaired" in group["fields"] and "*" in group["slices"]:
                row = group["slices"].index("*")
                count = group["fields"]["unpaired"][row]
                if count:
                    unpaired[(group["stream"], group["window"])] = count
    # q0 (99) and q1 (100) expire when the watermark reaches 115; q2 (103) does too (103 < 109);
    # q3 (115) at 125, counted in window 12.
    assert unpaired == {("arm:shadow", 11): 1, ("arm:primary", 11): 2, ("arm:primary", 12): 1}
    assert np.isfinite(stage1.watermark(0))


def test_a_pair_is_judged_by_the_watermark_before_the_message_that_completed_it() -> None:
    """r1's shadow (98) waits; its primary comes after the watermark left r1's window.

    Window 9 ([90, 100)) closes at 102 with 2 s lateness. Before r1's primary arrives the
    watermark is 104, so the pair is late, as it is one message at a time, even though the
    watermark before the run's first message (and before r1's shadow) was within the window.
    """
    script = [
        prediction("c0", "canary", 97.0),
        prediction("r1", "shadow", 98.0),
        prediction("c2", "canary", 99.0),
        prediction("r5", "primary", 100.0),
        prediction("c4", "canary", 104.0),
        prediction("r1", "primary", 96.0),
        prediction("c6", "canary", 105.0),
    ]
    alone, runs = Stage1(POLICY), Stage1(POLICY)
    alone_reports = [alone.process(0, k, decode_message(v)) for k, v in enumerate(script)]
    units = []
    for offset, value in enumerate(script):
        units += runs.feed(0, offset, value, parse_message(value), math.inf)
    units += runs.cut(0, math.inf)
    run_reports = [unit.report for unit in units]
    assert sum(r.one_by_one for r in run_reports) == 0  # the run was accounted at once
    assert totals(alone_reports)["late_pairs"] == 1
    assert totals(alone_reports)["pairs"] == 0
    assert totals(run_reports) == totals(alone_reports)
    assert_same(canonical(alone.flush(0)), canonical(runs.flush(0)))


def test_settling_before_the_flush_gives_the_same_partials(monkeypatch: Any) -> None:
    """Groups summarise collected events when PENDING_MAX wait, not only at the flush."""
    rng = np.random.default_rng(3)
    roles = ["primary", "shadow", "canary"]
    script = [
        prediction(f"r{rng.integers(40)}", roles[rng.integers(3)], 100.0 + k / 4)
        for k in range(120)
    ]
    # Outcomes of served requests, and time moving on so that their exposures mature.
    script += [
        orjson.dumps(
            {
                "schema_version": 1,
                "kind": "outcome",
                "event_id": f"o-r{k}",
                "request_id": f"r{k}",
                "ts": 131.0,
                "deployment": "a",
                "value": float(k % 2),
            }
        )
        for k in range(40)
    ]
    script += [prediction(f"late{k}", "canary", 140.0 + k) for k in range(4)]

    def partials() -> tuple[dict[Any, Any], dict[str, int]]:
        stage1, reports = Stage1(POLICY), []
        for offset, value in enumerate(script):
            reports.append(stage1.process(0, offset, decode_message(value)))
        return canonical(stage1.flush(0)), totals(reports)

    at_flush, at_flush_totals = partials()
    monkeypatch.setattr("streamguard.core.stage1_state.PENDING_MAX", 3)
    early, early_totals = partials()
    assert at_flush_totals == early_totals
    assert at_flush_totals["pairs"] > 0
    assert at_flush_totals["matured"] > 0
    assert_same(at_flush, early)


def test_summarising_per_combination_gives_the_same_partials(monkeypatch: Any) -> None:
    """Settling per distinct slice combination and rolling up (ROLLUP_MIN and more collected
    events) gives the partials of settling per slice level, up to float rounding."""
    rng = np.random.default_rng(5)
    roles = ["primary", "shadow", "canary"]
    script = []
    for k in range(300):  # several slice combinations, scores and latencies
        event = orjson.loads(
            prediction(f"r{rng.integers(80)}", roles[rng.integers(3)], 100.0 + k / 8)
        )
        event["slice"] = {
            "platform": ["ios", "android", "web"][rng.integers(3)],
            "region": ["eu", "na"][rng.integers(2)],
        }
        event["score"], event["latency_ms"] = float(rng.random()), float(rng.integers(1, 900))
        script.append(orjson.dumps(event))

    def partials() -> dict[Any, Any]:
        stage1 = Stage1(POLICY)
        for offset, value in enumerate(script):
            stage1.process(0, offset, decode_message(value))
        return canonical(stage1.flush(0))

    per_level = partials()
    monkeypatch.setattr("streamguard.core.stage1_state.ROLLUP_MIN", 1)
    assert_same(per_level, partials())
