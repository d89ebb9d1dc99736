"""Error verdicts (a guard that raised at a close) in stage 3 and the status view."""

from typing import Any

import jsonschema
import orjson
import pytest

from streamguard.contracts import load_schema
from streamguard.core.guard_failure import GuardFailure, failure_verdict
from streamguard.decisions import Decider, VerdictError, check_verdict
from streamguard.decisions.status import StatusView
from streamguard.policy import DeploymentPolicy, Policy

ALERT_SCHEMA = jsonschema.Draft202012Validator(load_schema("alert"))
VERDICT_SCHEMA = jsonschema.Draft202012Validator(load_schema("verdict"))


def error_verdict(end: float, guard: str = "shadow", where: str = "bug") -> dict[str, Any]:
    try:
        raise ValueError(f"{where} at {end}")  # the message changes close by close
    except ValueError as exc:
        failure = GuardFailure.of("d", guard, end, exc)
    message = failure_verdict(failure, end - 10.0, end - 300.0).to_dict()
    message["error"]["signature"] = f"ValueError at {where}"  # one bug, one place
    return message


def finding(slice_: str = "platform=ios", action: str = "pause") -> dict[str, Any]:
    return {
        "slice": slice_,
        "action": action,
        "statistic": "psi",
        "value": 0.3,
        "threshold": 0.1,
        "n": 900,
        "stats": {"psi": 0.3},
        "thresholds": {"psi": {"pause": 0.1, "rollback": 0.25}},
    }


def verdict(end: float, findings: list[dict[str, Any]], guard: str = "shadow") -> dict[str, Any]:
    return {
        "schema_version": 1,
        "kind": "verdict",
        "deployment": "d",
        "guard": guard,
        "model_version": "v2",
        "baseline_version": "v1",
        "window_start": end - 10.0,
        "window_end": end,
        "horizon_start": end - 300.0,
        "slices": [{"slice": "*", "n": 900, "state": "ok"}],
        "findings": findings,
    }


def test_an_error_verdict_is_a_valid_verdict_and_checked() -> None:
    message = error_verdict(100.0)
    VERDICT_SCHEMA.validate(message)
    check_verdict(message)
    for broken in ({**message, "error": "oops"}, {**message, "error": {"type": "ValueError"}}):
        with pytest.raises(VerdictError, match="error"):
            check_verdict(broken)


def test_one_critical_notice_per_bug_and_none_while_it_repeats() -> None:
    decider = Decider()
    first = decider.decide(error_verdict(100.0))
    assert not first.commands
    (notice,) = first.notices
    ALERT_SCHEMA.validate(notice.to_dict())
    assert (notice.severity, notice.guard, notice.model_version, notice.slice) == (
        "critical",
        "shadow",
        "",
        None,
    )
    assert "the shadow guard failed" in notice.summary
    assert "ValueError: bug at 100.0" in notice.summary
    assert notice.ts == 100.0
    assert decider.decide(error_verdict(110.0)).notices == []
    # Another bug of the same guard, or the same bug of another guard: each notified once.
    assert len(decider.decide(error_verdict(120.0, where="elsewhere")).notices) == 1
    assert len(decider.decide(error_verdict(120.0, guard="canary")).notices) == 1
    # The same notice again after a restart (same verdict): the same id, so it deduplicates.
    again = Decider().decide(error_verdict(100.0)).notices[0]
    assert (again.alert_id, again.command_id) == (notice.alert_id, notice.command_id)


def test_a_guard_that_judges_again_is_notified_again_when_it_fails_again() -> None:
    decider = Decider()
    assert len(decider.decide(error_verdict(100.0)).notices) == 1
    decider.decide(verdict(110.0, []))  # recovered
    assert len(decider.decide(error_verdict(120.0)).notices) == 1
    # Another guard recovering does not reset this one's.
    decider.decide(verdict(130.0, [], guard="canary"))
    assert decider.decide(error_verdict(140.0)).notices == []


def test_an_error_verdict_breaks_no_streak_and_changes_no_rollout() -> None:
    decider = Decider(Policy(defaults=DeploymentPolicy(confirm_windows=2)))
    assert decider.decide(verdict(100.0, [finding()])).commands == []
    decider.decide(error_verdict(110.0))
    (command, _), *_ = decider.decide(verdict(120.0, [finding()])).commands
    assert command.action == "pause"  # the streak of 100 s went on at 120 s

    plain = Decider(Policy(defaults=DeploymentPolicy(confirm_windows=2)))
    plain.decide(verdict(100.0, [finding()]))
    plain.decide(verdict(110.0, []))  # a close that judged no breach does break it
    assert plain.decide(verdict(120.0, [finding()])).commands == []


def test_snapshots_keep_what_was_notified() -> None:
    decider = Decider()
    decider.decide(error_verdict(100.0))
    restored = Decider.restore(decider.snapshot())
    assert restored.decide(error_verdict(110.0)).notices == []


def status_with(*verdicts: dict[str, Any]) -> StatusView:
    view = StatusView()
    for v in verdicts:
        view.on_verdict(v)
    return view


def test_a_deployment_whose_model_guard_fails_is_pending_until_it_judges_again() -> None:
    assert status_with(verdict(100.0, [])).judgement("d") == "healthy"
    view = status_with(verdict(100.0, []), error_verdict(110.0))
    assert view.judgement("d") == "pending"
    assert view.judgement("d", "v2") == "pending"
    shown = view.deployment("d")["guard_errors"]
    assert shown["shadow"]["type"] == "ValueError"
    assert shown["shadow"]["window_end"] == 110.0
    assert view.deployment("d")["verdicts"]["shadow"]["model_version"] == "v2"  # kept
    view.on_verdict(verdict(110.0, []))  # the same close, not later: still failing
    assert view.judgement("d") == "pending"
    view.on_verdict(verdict(120.0, []))
    assert view.judgement("d") == "healthy"
    assert view.deployment("d")["guard_errors"] == {}


def test_a_failing_guard_that_does_not_judge_the_model_leaves_the_judgement() -> None:
    view = status_with(verdict(100.0, []), error_verdict(110.0, guard="cold_start"))
    assert view.judgement("d") == "healthy"
    assert "cold_start" in view.deployment("d")["guard_errors"]


def test_a_deployment_known_only_from_errors_is_listed() -> None:
    view = status_with(error_verdict(100.0))
    assert view.deployments() == ["d"]
    assert view.overview()["deployments"] == {"d": "pending"}


def test_a_guard_that_stops_failing_without_judging_no_longer_holds_the_judgement() -> None:
    # The canary guard failed, then had nothing to judge (no verdict) while shadow judged on.
    view = status_with(verdict(100.0, []), error_verdict(110.0, guard="canary"))
    assert view.judgement("d") == "pending"
    view.on_verdict(verdict(120.0, []))  # the next close: maybe not whole yet
    assert view.judgement("d") == "pending"
    view.on_verdict(verdict(130.0, []))  # the close after: 120 was whole, without an error
    assert view.judgement("d") == "healthy"
    assert view.deployment("d")["guard_errors"] == {}


@pytest.mark.parametrize("failing", ["shadow", "canary", "popularity"])
def test_the_judgement_holds_while_a_close_arrives_guard_by_guard(failing: str) -> None:
    order = ["compat", "shadow", "stratification", "canary", "popularity", "cold_start"]
    view = status_with(verdict(100.0, []), error_verdict(110.0, guard=failing))
    for end in (120.0, 130.0, 140.0):
        for guard in order:
            view.on_verdict(
                error_verdict(end, guard=guard) if guard == failing else verdict(end, [], guard)
            )
            assert view.judgement("d") == "pending", (end, guard)


def test_an_error_verdict_older_than_the_guards_last_judgement_is_a_resend() -> None:
    view = status_with(verdict(120.0, []), error_verdict(110.0))
    assert view.judgement("d") == "healthy"
    assert view.deployment("d")["guard_errors"] == {}


def test_a_failing_stratification_guard_holds_the_judgement() -> None:
    view = status_with(verdict(100.0, []), error_verdict(100.0, guard="stratification"))
    assert view.judgement("d") == "pending"


def test_junk_error_verdicts_are_ignored_by_the_status_view() -> None:
    junk = {**error_verdict(110.0), "error": "oops"}
    view = status_with(verdict(100.0, []), junk)
    assert view.judgement("d") == "healthy"
    assert view.deployment("d")["guard_errors"] == {}
    # Nor does a far-future junk one stop real failures from holding the judgement.
    view.on_verdict({**error_verdict(1e12), "error": "oops"})
    view.on_verdict(error_verdict(120.0, guard="canary"))
    assert view.judgement("d") == "pending"


def test_a_rollback_while_the_compat_guard_fails_says_its_table_is_stale() -> None:
    at_once = Policy(defaults=DeploymentPolicy(confirm_windows=1))
    decider = Decider(at_once)
    compat = {**verdict(100.0, [], guard="compat"), "schemas": {"v2": {"live": ["2"]}}}
    decider.decide(compat)
    decider.decide(error_verdict(110.0, guard="compat"))
    decided = decider.decide(verdict(110.0, [finding(action="rollback")]))
    (command, alert), *_ = decided.commands
    assert command.evidence["compat"]["stale"] is True
    assert alert is not None
    assert "compatibility guard is failing" in alert.summary
    decider.decide({**compat, "window_end": 120.0, "schemas": {"v3": {"live": ["2"]}}})
    v3 = {**verdict(130.0, [finding(action="rollback")]), "model_version": "v3"}
    (command, _), *_ = decider.decide(v3).commands  # it judges again: no longer stale
    assert command.evidence["compat"]["compatible"] is False
    assert "stale" not in command.evidence["compat"]


def test_a_rollback_while_the_compat_guard_never_judged_says_so() -> None:
    decider = Decider(Policy(defaults=DeploymentPolicy(confirm_windows=1)))
    decider.decide(error_verdict(100.0, guard="compat"))
    (command, alert), *_ = decider.decide(verdict(100.0, [finding(action="rollback")])).commands
    assert command.evidence["compat"] == {"target_version": "v1", "compatible": None, "stale": True}
    assert alert is not None
    assert "compatibility guard is failing" in alert.summary
    plain = Decider(Policy(defaults=DeploymentPolicy(confirm_windows=1)))
    (command, _), *_ = plain.decide(verdict(100.0, [finding(action="rollback")])).commands
    assert "compat" not in command.evidence


def test_guard_failure_survives_an_exception_whose_message_cannot_be_printed() -> None:
    class UnprintableError(Exception):
        def __str__(self) -> str:
            raise RuntimeError("no")

    try:
        raise UnprintableError
    except UnprintableError as exc:
        failure = GuardFailure.of("d", "shadow", 0.0, exc)
    assert failure.message == "<UnprintableError whose message cannot be printed>"


def test_a_message_that_json_cannot_carry_is_escaped() -> None:
    try:
        raise ValueError("bad \ud800 value")
    except ValueError as exc:
        failure = GuardFailure.of("d", "shadow", 10.0, exc)
    message = failure_verdict(failure, 0.0, -290.0).to_dict()
    assert message["error"]["message"] == "bad \\ud800 value"
    orjson.dumps(message)  # raised "surrogates not allowed" before
