"""The status view: a gate says healthy only for a version judged on trusted evidence."""

from typing import Any

import pytest

from streamguard.decisions.status import JUDGEMENTS, StatusView


def verdict(
    version: str,
    end: float = 100.0,
    guard: str = "shadow",
    states: tuple[str, ...] = ("ok",),
    deployment: str = "d",
    **extra: Any,
) -> dict[str, Any]:
    return {
        "kind": "verdict",
        "deployment": deployment,
        "guard": guard,
        "model_version": version,
        "baseline_version": "v1",
        "window_start": end - 10,
        "window_end": end,
        "slices": [{"slice": f"s{i}", "n": 900, "state": s} for i, s in enumerate(states)],
        "findings": [],
        **extra,
    }


def control(action: str, version: str, deployment: str = "d", ts: float = 100.0) -> dict:
    return {
        "action": action,
        "deployment": deployment,
        "model_version": version,
        "guard": "shadow",
        "slice": None,
        "command_id": f"{action}-{version}-{ts}",
        "ts": ts,
    }


def test_a_version_never_judged_is_pending_while_another_is_healthy() -> None:
    view = StatusView()
    view.on_verdict(verdict("v2"))
    assert view.judgement("d", "v2") == "healthy"
    assert view.judgement("d", "v3") == "pending"  # the new canary: no verdict of its own yet
    view.on_verdict(verdict("v3", end=110.0))
    assert view.judgement("d", "v3") == "healthy"


def test_a_version_with_too_little_traffic_in_every_slice_is_pending() -> None:
    view = StatusView()
    view.on_verdict(verdict("v2", states=("insufficient", "insufficient")))
    assert view.judgement("d", "v2") == "pending"
    assert view.judgement("d") == "pending"
    view.on_verdict(verdict("v2", end=110.0, states=("insufficient", "ok")))
    assert view.judgement("d", "v2") == "healthy"
    assert view.judgement("d") == "healthy"


@pytest.mark.parametrize("guard", ["stratification", "cold_start", "determinism", "compat"])
def test_guards_that_do_not_compare_the_model_never_make_it_healthy(guard: str) -> None:
    view = StatusView()
    view.on_verdict(verdict("v2", guard=guard))
    assert view.judgement("d", "v2") == "pending"
    assert view.judgement("d") == "pending"


@pytest.mark.parametrize(
    ("guard", "extra"),
    [
        ("canary", {"trusted": False, "status": "untrusted"}),  # contaminated allocation
        ("stratification", {"status": "contaminated"}),
        ("shadow", {"health": {"untrusted": ["tier=free"], "findings": []}}),
    ],
)
def test_untrusted_evidence_keeps_a_judged_version_pending(guard: str, extra: dict) -> None:
    view = StatusView()
    view.on_verdict(verdict("v2", guard="popularity"))
    assert view.judgement("d", "v2") == "healthy"
    view.on_verdict(verdict("v2", end=110.0, guard=guard, **extra))
    assert view.judgement("d", "v2") == "pending"
    assert view.judgement("d") == "pending"
    # The guard's next verdict trusts its evidence again (the allocation was fixed, say).
    view.on_verdict(verdict("v2", end=120.0, guard=guard))
    assert view.judgement("d", "v2") == "healthy"


def test_decisions_apply_to_their_version_only() -> None:
    view = StatusView()
    view.on_verdict(verdict("v2"))
    view.on_verdict(verdict("v3"))
    view.on_control(control("pause", "v2"))
    assert [view.judgement("d", v) for v in ("v2", "v3", "v4")] == ["paused", "healthy", "pending"]
    assert view.judgement("d") == "paused"  # the deployment has a version paused
    view.on_control(control("rollback", "v3", ts=110.0))
    assert view.judgement("d", "v3") == "rolled_back"
    assert view.judgement("d") == "rolled_back"
    view.on_control(control("resume", "v2", ts=120.0))  # an approval
    assert view.judgement("d", "v2") == "healthy"


def test_nothing_is_healthy_or_decided_until_the_view_has_caught_up() -> None:
    view = StatusView(caught_up=False)
    view.on_verdict(verdict("v2"))
    view.on_verdict(verdict("v3"))
    view.on_control(control("pause", "v3"))  # its approval may be further on, unread
    judgements = [view.judgement("d", v) for v in (None, "v2", "v3")]
    assert judgements == ["pending", "pending", "pending"]
    assert view.overview()["deployments"] == {"d": "pending"}
    view.caught_up = True
    assert [view.judgement("d", v) for v in (None, "v2", "v3")] == ["paused", "healthy", "paused"]


def test_without_a_version_the_deployment_is_judged_on_its_current_versions() -> None:
    view = StatusView()
    view.on_verdict(verdict("v2", end=100.0))
    assert view.current_versions("d") == ["v2"]
    assert view.judgement("d") == "healthy"
    # A new version shows up with too little traffic yet: the deployment is not healthy.
    view.on_verdict(verdict("v3", end=110.0, guard="canary", states=("insufficient",)))
    assert view.current_versions("d") == ["v3"]
    assert view.judgement("d") == "pending"
    # Two versions judged at the same window: healthy only when both are.
    view.on_verdict(verdict("v2", end=120.0))
    view.on_verdict(verdict("v3", end=120.0, guard="canary", trusted=False))
    assert view.current_versions("d") == ["v2", "v3"]
    assert view.judgement("d") == "pending"
    view.on_verdict(verdict("v3", end=130.0, guard="canary", trusted=True))
    view.on_verdict(verdict("v2", end=130.0))
    assert view.judgement("d") == "healthy"
    assert view.judgement("other") == "pending"


def test_status_of_a_version_shows_that_versions_verdicts_and_decisions() -> None:
    view = StatusView()
    view.on_verdict(verdict("v2", end=100.0))
    view.on_verdict(verdict("v3", end=110.0))
    view.on_verdict({**verdict("v3", end=110.0, guard="compat"), "schemas": {"v2": {}, "v3": {}}})
    view.on_control(control("pause", "v2"))
    whole = view.deployment("d")
    assert whole["verdicts"]["shadow"]["model_version"] == "v3"  # the latest over versions
    assert [r["model_version"] for r in whole["rollouts"]] == ["v2"]
    v2 = view.deployment("d", "v2")
    assert (v2["judgement"], v2["version"]) == ("paused", "v2")
    assert set(v2["verdicts"]) == {"shadow"}
    assert v2["verdicts"]["shadow"]["model_version"] == "v2"
    assert [r["model_version"] for r in v2["pending_approvals"]] == ["v2"]
    v3 = view.deployment("d", "v3")
    assert v3["judgement"] == "healthy"
    assert set(v3["verdicts"]) == {"shadow", "compat"}
    assert (v3["rollouts"], v3["pending_approvals"]) == ([], [])
    assert v3["schemas"] == {"v2": {}, "v3": {}}  # the whole table: it compares versions
    assert view.deployment("d", "v9")["verdicts"] == {}


def test_an_older_verdict_does_not_replace_a_newer_one() -> None:
    view = StatusView()
    view.on_verdict(verdict("v2", end=110.0, trusted=False))
    view.on_verdict(verdict("v2", end=100.0))  # redelivered late, older window
    assert view.judgement("d", "v2") == "pending"
    view.on_verdict({"deployment": "d", "guard": "shadow", "model_version": "v2"})  # no window
    assert view.deployment("d")["verdicts"]["shadow"]["window_end"] == 110.0


def test_every_judgement_is_one_of_the_documented_words() -> None:
    view = StatusView()
    view.on_verdict(verdict("v2"))
    view.on_control(control("rollback", "v3"))
    seen = {view.judgement("d", v) for v in (None, "v2", "v3", "v4")}
    assert seen <= set(JUDGEMENTS)
    assert seen == {"rolled_back", "healthy", "pending"}
