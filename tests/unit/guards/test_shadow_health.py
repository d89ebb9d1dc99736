"""Shadow health: pairing and error rates per slice (oracle: counts over the events), notices."""

import time
from typing import Any

import jsonschema
import numpy as np
import orjson
import pytest

from streamguard.contracts import load_schema
from streamguard.decisions import Decider
from streamguard.decisions.status import StatusView
from streamguard.engine import Pipeline
from streamguard.guards import Verdict
from streamguard.guards.shadow import shadow_health
from streamguard.policy import Policy
from streamguard.sim import ShadowOutage, TrafficGenerator
from streamguard.testing import envelopes

ALERT_SCHEMA = jsonschema.Draft202012Validator(load_schema("alert"))
VERDICT_SCHEMA = jsonschema.Draft202012Validator(load_schema("verdict"))
OUTAGE = {"platform": "android", "region": "eu"}


def test_rates_match_their_definition() -> None:
    rng = np.random.default_rng(0)
    primaries = rng.integers(0, 50, 200)
    unpaired = np.minimum(rng.integers(0, 60, 200), primaries + 5)  # may trail by the TTL
    events = rng.integers(0, 50, 200)
    errors = np.minimum(rng.integers(0, 10, 200), events)
    rates = shadow_health(primaries, unpaired, events, errors)
    for i in range(200):
        expected = max(0.0, 1 - unpaired[i] / primaries[i]) if primaries[i] else None
        got = rates["pairing_rate"][i]
        assert (np.isnan(got) and expected is None) or got == pytest.approx(expected)
        expected = errors[i] / events[i] if events[i] else None
        got = rates["error_rate"][i]
        assert (np.isnan(got) and expected is None) or got == pytest.approx(expected)


def matches(label: str, slice_: dict[str, str]) -> bool:
    return label == "*" or all(
        slice_.get(k) == v for k, v in (p.split("=") for p in label.split(","))
    )


def run(outage: ShadowOutage | None, seed: int) -> tuple[Pipeline, Verdict, list[dict[str, Any]]]:
    """150 s with the outage, then 60 s of healthy traffic so every missed half expires."""
    start = float(int(time.time()) // 10 * 10 - 7200)
    head = TrafficGenerator(rate=300, seed=seed, start_ts=start, shadow_outage=outage)
    tail = TrafficGenerator(rate=300, seed=seed + 100, start_ts=start + 150)
    events = [e for s in head.seconds(150) for e in s] + [e for s in tail.seconds(60) for e in s]
    verdicts: list[Verdict] = []
    pipe = Pipeline(Policy(), 8, on_verdict=verdicts.append)
    for _, _, value in envelopes(events, 8):
        pipe.feed(value)
    pipe.finish()
    last = [v for v in verdicts if v.guard == "shadow"][-1]
    return pipe, last, events


@pytest.mark.parametrize("seed", [1, 2])
def test_verdict_rates_equal_counts_over_the_events(seed: int) -> None:
    outage = ShadowOutage(OUTAGE, after_s=30, timeout_share=0.5, error_share=0.2)
    pipe, verdict, events = run(outage, seed)
    answered = {e["request_id"] for e in events if e["role"] == "shadow" and not e.get("error")}
    primaries = [e for e in events if e["role"] == "primary"]
    shadows = [e for e in events if e["role"] == "shadow"]
    untrusted = set()
    for result in verdict.slices:
        mine = [e for e in primaries if matches(result.slice, e["slice"])]
        paired = sum(e["request_id"] in answered for e in mine)
        assert result.stats["pairing_rate"] == pytest.approx(paired / len(mine), abs=1e-6)
        theirs = [e for e in shadows if matches(result.slice, e["slice"])]
        errors = sum(bool(e.get("error")) for e in theirs)
        assert result.stats["error_rate"] == pytest.approx(errors / len(theirs), abs=1e-6)
        if len(mine) >= 500 and paired / len(mine) < 0.9:
            untrusted.add(result.slice)
            assert result.state in ("untrusted", "pause", "rollback")
        else:
            assert result.state != "untrusted"
    assert set(verdict.extra["health"]["untrusted"]) == untrusted
    assert "platform=android,region=eu" in untrusted
    assert [f["slice"] for f in verdict.extra["health"]["findings"]] == [
        "platform=android,region=eu"
    ]
    # One notice naming the slice, no command: shadow health never pauses the model.
    assert pipe.commands == []
    assert [(a.guard, a.slice) for a in pipe.notices] == [("shadow", OUTAGE)]
    ALERT_SCHEMA.validate(orjson.loads(pipe.notices[0].to_json()))
    assert pipe.notices[0].evidence["pairing_rate"] < 0.9


def test_healthy_shadow_is_trusted_everywhere() -> None:
    pipe, verdict, _ = run(None, 3)
    assert verdict.extra["health"] == {"pairing_floor": 0.9, "untrusted": [], "findings": []}
    assert all(r.stats["pairing_rate"] == 1.0 for r in verdict.slices)
    assert all(r.stats["error_rate"] == 0.0 for r in verdict.slices)
    assert (pipe.commands, pipe.notices) == ([], [])


def second_by_second(*generators: tuple[TrafficGenerator, int]) -> tuple[Pipeline, list[Verdict]]:
    """The generators' traffic one message per partition and second, as the emitter sends it
    (so pairing halves expire as the watermark moves, not all at the end)."""
    verdicts: list[Verdict] = []
    pipe = Pipeline(Policy(), 8, on_verdict=verdicts.append)
    for gen, seconds in generators:
        for events in gen.seconds(seconds):
            for _, _, value in envelopes(events, 8):
                pipe.feed(value)
    pipe.finish()
    return pipe, [v for v in verdicts if v.guard == "shadow"]


def test_a_shadow_that_fails_every_request_is_reported_though_it_never_pairs() -> None:
    start = float(int(time.time()) // 10 * 10 - 7200)
    failing = ShadowOutage({}, after_s=0, timeout_share=0.0, error_share=1.0)
    gen = TrafficGenerator(rate=300, seed=4, start_ts=start, shadow_outage=failing)
    pipe, verdicts = second_by_second((gen, 120))
    assert verdicts, "no shadow verdict for a shadow with predictions and no pair"
    for verdict in verdicts:
        assert verdict.findings == []  # nothing compared, nothing to pause on
        assert verdict.model_version == "ranker-v42"
        assert verdict.baseline_version == "ranker-v41"
        VERDICT_SCHEMA.validate(orjson.loads(orjson.dumps(verdict.to_dict())))
    last = verdicts[-1]
    assert "*" in last.extra["health"]["untrusted"]
    assert [f["slice"] for f in last.extra["health"]["findings"]] == ["*"]
    star = next(r for r in last.slices if r.slice == "*")
    assert (star.state, star.n, star.stats["error_rate"]) == ("untrusted", 0, 1.0)
    assert star.stats["pairing_rate"] < 0.9
    # One notice for all traffic, within the pairing TTL (30 s) and two confirming windows.
    assert pipe.commands == []
    assert [(a.guard, a.slice, a.model_version) for a in pipe.notices] == [
        ("shadow", None, "ranker-v42")
    ]
    assert pipe.notices[0].ts - start <= 60
    assert pipe.notices[0].evidence["error_rate"] == 1.0
    ALERT_SCHEMA.validate(orjson.loads(pipe.notices[0].to_json()))
    view = StatusView()
    for verdict in verdicts:
        view.on_verdict(orjson.loads(orjson.dumps(verdict.to_dict())))
    assert view.judgement("home-ranker", version="ranker-v42") == "pending"


def test_a_new_shadow_version_failing_everywhere_is_reported_while_the_old_one_still_pairs() -> (
    None
):
    start = float(int(time.time()) // 10 * 10 - 7200)
    old = TrafficGenerator(rate=300, seed=5, start_ts=start)
    failing = ShadowOutage({}, after_s=0, timeout_share=0.0, error_share=1.0)
    new = TrafficGenerator(
        rate=300, seed=6, start_ts=start + 100, shadow_version="ranker-v43", shadow_outage=failing
    )
    pipe, verdicts = second_by_second((old, 100), (new, 120))
    assert {v.model_version for v in verdicts} == {"ranker-v42", "ranker-v43"}
    # Healthy before the switch: no health-only verdict and no notice for the old version.
    assert all(v.findings == [] and not v.extra["health"]["untrusted"] for v in verdicts[:9])
    assert pipe.commands == []
    assert [(a.slice, a.model_version) for a in pipe.notices] == [(None, "ranker-v43")]
    # Within the TTL, the horizon's dilution by the old version's pairs, and two windows.
    assert pipe.notices[0].ts - (start + 100) <= 90


def test_a_shadow_that_goes_dark_is_reported_while_its_pairs_fill_the_horizon() -> None:
    start = float(int(time.time()) // 10 * 10 - 7200)
    dark = ShadowOutage({}, after_s=60, timeout_share=1.0, error_share=0.0)
    gen = TrafficGenerator(rate=300, seed=7, start_ts=start, shadow_outage=dark)
    pipe, verdicts = second_by_second((gen, 200))
    assert {v.model_version for v in verdicts} == {"ranker-v42"}
    assert pipe.commands == []
    assert [(a.slice, a.model_version) for a in pipe.notices] == [(None, "ranker-v42")]
    assert pipe.notices[0].ts - (start + 60) <= 90


def test_a_healthy_shadow_gets_no_health_only_verdict() -> None:
    start = float(int(time.time()) // 10 * 10 - 7200)
    pipe, verdicts = second_by_second((TrafficGenerator(rate=300, seed=8, start_ts=start), 90))
    assert verdicts
    assert all(v.extra["health"]["untrusted"] == [] and v.slices for v in verdicts)
    assert all(any(r.n > 0 for r in v.slices) for v in verdicts)
    assert (pipe.commands, pipe.notices) == ([], [])


def verdict_with(slice_: str, end: float) -> dict[str, Any]:
    finding = {
        "slice": slice_,
        "pairing_rate": 0.5,
        "error_rate": 0.1,
        "primaries": 900,
        "unpaired": 450,
        "shadow_events": 500,
        "shadow_errors": 50,
        "pairing_floor": 0.9,
    }
    return {
        "deployment": "d",
        "guard": "shadow",
        "model_version": "v2",
        "baseline_version": "v1",
        "window_start": end - 10,
        "window_end": end,
        "horizon_start": end - 300,
        "findings": [],
        "health": {"pairing_floor": 0.9, "untrusted": [slice_], "findings": [finding]},
    }


def test_decider_notices_once_per_slice_after_confirmation_and_survives_a_restore() -> None:
    decider = Decider()
    first = decider.decide(verdict_with("platform=ios", 10.0))
    assert (first.commands, first.notices) == ([], [])  # not confirmed yet (confirm_windows 2)
    second = decider.decide(verdict_with("platform=ios", 20.0))
    assert [n.slice for n in second.notices] == [{"platform": "ios"}]
    assert second.commands == []
    assert second.notices[0].severity == "warning"
    assert "untrusted" in second.notices[0].summary
    restored = Decider.restore(orjson.loads(orjson.dumps(decider.snapshot())))
    for d in (decider, restored):
        assert d.decide(verdict_with("platform=ios", 30.0)).notices == []
    # The same decision re-made from scratch has the same id.
    again = Decider()
    again.decide(verdict_with("platform=ios", 10.0))
    assert again.decide(verdict_with("platform=ios", 20.0)).notices == second.notices
    assert str(decider.state("d", "v2")) == "healthy"


class _NewShadowWithoutPairs:
    """A stage-2 context in which a newer shadow version (``ranker-v99``) has predictions in
    the horizon but no pair yet, with the healthy counts of the current one."""

    def __init__(self, ctx: Any) -> None:
        self._ctx = ctx

    def __getattr__(self, name: str) -> Any:
        return getattr(self._ctx, name)

    def versions(self, stream: str) -> list[str]:
        found: list[str] = self._ctx.versions(stream)
        return ["ranker-v99", *found] if stream == "arm:shadow" and found else found

    def horizon(self, stream: str, version: str) -> Any:
        return self._ctx.horizon(stream, "ranker-v42" if version == "ranker-v99" else version)


def test_a_new_shadow_version_without_pairs_yet_does_not_hide_the_current_ones_verdict() -> None:
    start = float(int(time.time()) // 10 * 10 - 7200)
    plain = second_by_second((TrafficGenerator(rate=300, seed=9, start_ts=start), 60))[1]
    verdicts: list[Verdict] = []
    pipe = Pipeline(Policy(), 8, on_verdict=verdicts.append)
    shadow = next(g for g in pipe.stage2.guards if g.name == "shadow")
    evaluate = shadow.evaluate
    shadow.evaluate = lambda ctx: evaluate(_NewShadowWithoutPairs(ctx))  # type: ignore[method-assign]
    for events in TrafficGenerator(rate=300, seed=9, start_ts=start).seconds(60):
        for _, _, value in envelopes(events, 8):
            pipe.feed(value)
    pipe.finish()
    mine = [v for v in verdicts if v.guard == "shadow"]
    # Its health is fine, so the current version is judged at every close as before.
    assert [v.model_version for v in mine] == [v.model_version for v in plain]
    assert [v.window_end for v in mine] == [v.window_end for v in plain]
    assert plain
