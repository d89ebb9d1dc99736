"""Stage 3: findings to commands, without thrash, and state that survives a restart."""

from typing import Any

import jsonschema
import orjson
from hypothesis import given, settings
from hypothesis import strategies as st

from streamguard.contracts import command_id, load_schema
from streamguard.decisions import Decider as _Decider
from streamguard.decisions import RolloutState
from streamguard.policy import DeploymentPolicy, Policy

#: These tests are about states and deduplication; persistence is tested on its own below.
IMMEDIATE = Policy(defaults=DeploymentPolicy(confirm_windows=1))


def Decider() -> _Decider:  # noqa: N802 - stands in for the class in the tests below
    return _Decider(IMMEDIATE)


COMMAND_SCHEMA = jsonschema.Draft202012Validator(load_schema("command"))
ALERT_SCHEMA = jsonschema.Draft202012Validator(load_schema("alert"))


def finding(slice_: str, action: str, statistic: str = "psi", value: float = 0.3) -> dict:
    return {
        "slice": slice_,
        "action": action,
        "statistic": statistic,
        "value": value,
        "threshold": 0.1 if action == "pause" else 0.25,
        "n": 900,
        "stats": {statistic: value},
        "thresholds": {statistic: {"pause": 0.1, "rollback": 0.25}},
        "onset": None,
        "change_detected_at": None,
    }


def verdict(
    findings: list[dict], version: str = "v2", end: float = 100.0, deployment: str = "d"
) -> dict[str, Any]:
    return {
        "schema_version": 1,
        "kind": "verdict",
        "deployment": deployment,
        "guard": "shadow",
        "model_version": version,
        "baseline_version": "v1",
        "window_start": end - 10.0,
        "window_end": end,
        "horizon_start": end - 300.0,
        "slices": [],
        "findings": findings,
    }


def resume(version: str = "v2", deployment: str = "d") -> dict[str, Any]:
    return {
        "action": "resume",
        "deployment": deployment,
        "model_version": version,
        "command_id": "f" * 32,
        "ts": 1.0,
        "reason": "looked fine",
    }


def actions(out: list) -> list[tuple[str, str]]:
    return [
        (c.action, "*" if c.slice is None else ",".join(f"{k}={v}" for k, v in c.slice.items()))
        for c, _ in out
    ]


def test_one_command_per_guard_slice_and_action() -> None:
    decider = Decider()
    first = decider.on_verdict(verdict([finding("platform=ios", "pause")]))
    assert actions(first) == [("pause", "platform=ios")]
    assert decider.on_verdict(verdict([finding("platform=ios", "pause")], end=110.0)) == []
    again = decider.on_verdict(verdict([finding("tier=free", "pause")], end=120.0))
    assert actions(again) == [("pause", "tier=free")]
    assert decider.state("d", "v2") is RolloutState.PAUSED


def test_no_command_for_a_slice_inside_one_already_acted_on() -> None:
    decider = Decider()
    assert actions(decider.on_verdict(verdict([finding("platform=ios", "pause")]))) == [
        ("pause", "platform=ios")
    ]
    inside = verdict([finding("platform=ios,tier=free", "pause")], end=110.0)
    assert decider.on_verdict(inside) == []  # serving already holds all of iOS back
    # Wider is new: the whole deployment, after which every slice is inside.
    wider = decider.on_verdict(verdict([finding("*", "pause")], end=120.0))
    assert actions(wider) == [("pause", "*")]
    assert decider.on_verdict(verdict([finding("platform=web", "pause")], end=130.0)) == []
    # Another action, or another guard's finding, is news.
    out = decider.on_verdict(verdict([finding("platform=ios,tier=free", "rollback")], end=140.0))
    assert actions(out) == [("rollback", "platform=ios,tier=free")]
    other = Decider()
    other.on_verdict(verdict([finding("platform=ios", "pause")]))
    canary = {**verdict([finding("platform=ios,tier=free", "pause")], end=110.0)}
    canary["guard"] = "canary"
    assert actions(other.on_verdict(canary)) == [("pause", "platform=ios,tier=free")]
    # One verdict with a slice and its parent: the parent alone.
    both = Decider().on_verdict(verdict([finding("platform=ios", "pause"), finding("*", "pause")]))
    assert actions(both) == [("pause", "*")]
    pair = [finding("a=1,b=2", "pause"), finding("b=2", "pause")]  # the child sorts first
    assert actions(Decider().on_verdict(verdict(pair))) == [("pause", "b=2")]


def test_command_content() -> None:
    ((command, alert),) = Decider().on_verdict(
        verdict([finding("tier=free,platform=ios", "pause", value=0.2)], end=130.0)
    )
    assert command.slice == {"platform": "ios", "tier": "free"}
    assert command.ts == 130.0
    assert command.command_id == command_id(
        "d", "v2", "shadow", {"platform": "ios", "tier": "free"}, "pause", 130.0
    )
    assert command.evidence["window"] == {"start": 120.0, "end": 130.0}
    assert command.evidence["horizon"] == {"start": -170.0, "end": 130.0}
    assert command.evidence["baseline_version"] == "v1"
    assert command.evidence["value"] == 0.2
    COMMAND_SCHEMA.validate(orjson.loads(command.to_json()))
    ALERT_SCHEMA.validate(orjson.loads(alert.to_json()))
    assert alert.command_id == command.command_id
    assert alert.severity == "warning"
    assert "platform" in alert.summary


def test_whole_deployment_finding_has_no_slice() -> None:
    ((command, _),) = Decider().on_verdict(verdict([finding("*", "rollback")]))
    assert command.slice is None
    COMMAND_SCHEMA.validate(orjson.loads(command.to_json()))


def test_rollback_latches() -> None:
    decider = Decider()
    out = decider.on_verdict(verdict([finding("platform=ios", "rollback")]))
    assert actions(out) == [("rollback", "platform=ios")]
    assert out[0][1].severity == "critical"
    assert decider.state("d", "v2") is RolloutState.ROLLED_BACK
    for i, f in enumerate(
        [
            finding("platform=web", "rollback"),
            finding("*", "pause"),
            finding("platform=ios", "pause"),
        ]
    ):
        assert decider.on_verdict(verdict([f], end=200.0 + 10 * i)) == []
    assert decider.state("d", "v2") is RolloutState.ROLLED_BACK


def test_rollback_in_the_same_verdict_makes_pauses_moot() -> None:
    decider = Decider()
    out = decider.on_verdict(
        verdict([finding("a=1", "pause"), finding("b=2", "rollback"), finding("c=3", "pause")])
    )
    assert actions(out) == [("rollback", "b=2")]


def test_pause_then_rollback_escalates() -> None:
    decider = Decider()
    assert actions(decider.on_verdict(verdict([finding("platform=ios", "pause")]))) == [
        ("pause", "platform=ios")
    ]
    out = decider.on_verdict(verdict([finding("platform=ios", "rollback")], end=110.0))
    assert actions(out) == [("rollback", "platform=ios")]
    assert decider.state("d", "v2") is RolloutState.ROLLED_BACK


def test_resume_moves_paused_to_healthy() -> None:
    decider = Decider()
    assert decider.on_control(resume()) is False  # nothing to resume
    decider.on_verdict(verdict([finding("platform=ios", "pause")]))
    assert (
        decider.on_control({"action": "pause", "deployment": "d", "model_version": "v2"}) is False
    )
    assert decider.on_control(resume(version="v9")) is False
    assert decider.state("d", "v2") is RolloutState.PAUSED
    assert decider.on_control(resume()) is True
    assert decider.state("d", "v2") is RolloutState.HEALTHY
    assert decider.on_control(resume()) is False  # already healthy
    # After the approval, a new breach pauses again; a rollback still escalates.
    assert actions(decider.on_verdict(verdict([finding("tier=free", "pause")], end=120.0))) == [
        ("pause", "tier=free")
    ]
    assert decider.state("d", "v2") is RolloutState.PAUSED


def test_rolled_back_version_ignores_resume() -> None:
    decider = Decider()
    decider.on_verdict(verdict([finding("*", "rollback")]))
    assert decider.on_control(resume()) is False
    assert decider.state("d", "v2") is RolloutState.ROLLED_BACK


def test_new_version_and_other_deployments_start_clean() -> None:
    decider = Decider()
    decider.on_verdict(verdict([finding("platform=ios", "rollback")], version="v2"))
    assert decider.state("d", "v3") is RolloutState.HEALTHY
    assert decider.state("e", "v2") is RolloutState.HEALTHY
    out = decider.on_verdict(verdict([finding("platform=ios", "rollback")], version="v3"))
    assert actions(out) == [("rollback", "platform=ios")]
    assert out[0][0].model_version == "v3"
    out = decider.on_verdict(verdict([finding("platform=ios", "pause")], deployment="e"))
    assert actions(out) == [("pause", "platform=ios")]


# --- properties: no thrash, restart -------------------------------------------------------------

events = st.lists(
    st.one_of(
        st.tuples(
            st.just("verdict"),
            st.sampled_from(["v2", "v3"]),
            st.lists(
                st.tuples(
                    st.sampled_from(["*", "platform=ios", "tier=free", "platform=ios,tier=free"]),
                    st.sampled_from(["pause", "rollback"]),
                ),
                max_size=3,
            ),
        ),
        st.tuples(st.just("resume"), st.sampled_from(["v2", "v3"]), st.just([])),
    ),
    max_size=25,
)


def play(decider: Decider, script: list, start: int = 0) -> list[bytes]:
    out: list[bytes] = []
    for i, (kind, version, found) in enumerate(script, start=start):
        if kind == "resume":
            decider.on_control(resume(version))
        else:
            findings = [finding(s, a) for s, a in found]
            commands = decider.on_verdict(verdict(findings, version=version, end=10.0 * i))
            out.extend(c.to_json() for c, _ in commands)
    return out


@settings(max_examples=100)
@given(events)
def test_never_thrashes(script: list) -> None:
    decider = Decider()
    issued: set[tuple[str, str, str]] = set()
    acted: list[tuple[str, tuple[tuple[str, str], ...], str]] = []
    rolled_back: set[str] = set()
    for i, (kind, version, found) in enumerate(script):
        if kind == "resume":
            before = decider.state("d", version)
            changed = decider.on_control(resume(version))
            assert changed == (before is RolloutState.PAUSED)
            continue
        commands = decider.on_verdict(
            verdict([finding(s, a) for s, a in found], version=version, end=10.0 * i)
        )
        assert version not in rolled_back or commands == []
        for command, _ in commands:
            key = (command.model_version, str(command.slice), command.action)
            assert key not in issued
            scope = (command.slice or {}).items()
            # Never a command for a slice inside one already acted on the same way.
            assert not any(
                v == command.model_version and a == command.action and dict(s).items() <= scope
                for v, s, a in acted
            )
            issued.add(key)
            acted.append(
                (command.model_version, tuple((command.slice or {}).items()), command.action)
            )
            if command.action == "rollback":
                rolled_back.add(command.model_version)
        assert len([c for c, _ in commands if c.action == "rollback"]) <= 1
        if version in rolled_back:
            assert decider.state("d", version) is RolloutState.ROLLED_BACK


@settings(max_examples=100)
@given(events, events)
def test_snapshot_restore_continues_identically(before: list, after: list) -> None:
    decider = Decider()
    play(decider, before)
    snapshot = orjson.loads(orjson.dumps(decider.snapshot()))  # through JSON, as stored
    restored = _Decider.restore(snapshot, IMMEDIATE)
    assert restored.snapshot() == decider.snapshot()
    for version in ("v2", "v3"):
        assert restored.state("d", version) is decider.state("d", version)
    start = len(before)
    assert play(restored, after, start) == play(decider, after, start)
    assert restored.snapshot() == decider.snapshot()


def test_a_finding_becomes_a_command_after_confirm_windows_consecutive_closes() -> None:
    decider = _Decider(Policy(defaults=DeploymentPolicy(confirm_windows=3)))
    seen = [finding("platform=ios", "pause")]
    assert decider.on_verdict(verdict(seen, end=10.0)) == []
    assert decider.on_verdict(verdict(seen, end=20.0)) == []
    ((command, _),) = decider.on_verdict(verdict(seen, end=30.0))
    assert command.ts == 30.0
    assert command.slice == {"platform": "ios"}


def test_an_always_valid_finding_needs_no_second_window() -> None:
    decider = _Decider(Policy(defaults=DeploymentPolicy(confirm_windows=3)))
    proven = {**finding("platform=ios", "rollback"), "always_valid": True}
    ((command, _),) = decider.on_verdict(verdict([proven], end=10.0))
    assert command.action == "rollback"
    assert command.ts == 10.0
    # A threshold crossing of the same guard still waits for its streak.
    other = _Decider(Policy(defaults=DeploymentPolicy(confirm_windows=3)))
    crossing = {**finding("platform=ios", "rollback"), "always_valid": "yes"}  # not True
    assert other.on_verdict(verdict([crossing], end=10.0)) == []


def test_a_gap_resets_the_streak() -> None:
    decider = _Decider()  # default: confirm_windows = 2
    seen = [finding("platform=ios", "pause")]
    assert decider.on_verdict(verdict(seen, end=10.0)) == []
    assert decider.on_verdict(verdict([], end=20.0)) == []  # the slice did not explain anything
    assert decider.on_verdict(verdict(seen, end=30.0)) == []
    assert [c.action for c, _ in decider.on_verdict(verdict(seen, end=40.0))] == ["pause"]


def test_a_transient_sub_slice_never_becomes_a_command() -> None:
    decider = _Decider()
    # One window names a sub-slice by noise, the next ones the slice that really deviates.
    assert decider.on_verdict(verdict([finding("platform=ios,tier=free", "pause")], end=10.0)) == []
    assert decider.on_verdict(verdict([finding("platform=ios", "pause")], end=20.0)) == []
    commands = [
        c for c, _ in decider.on_verdict(verdict([finding("platform=ios", "pause")], end=30.0))
    ]
    assert [c.slice for c in commands] == [{"platform": "ios"}]


def test_an_escalation_during_the_streak_issues_the_rollback() -> None:
    decider = _Decider()
    assert decider.on_verdict(verdict([finding("*", "pause")], end=10.0)) == []
    commands = [c for c, _ in decider.on_verdict(verdict([finding("*", "rollback")], end=20.0))]
    assert [c.action for c in commands] == ["rollback"]


def test_streaks_survive_a_snapshot() -> None:
    decider = _Decider()
    seen = [finding("platform=ios", "pause")]
    decider.on_verdict(verdict(seen, end=10.0))
    restored = _Decider.restore(orjson.loads(orjson.dumps(decider.snapshot())))
    assert [c.action for c, _ in restored.on_verdict(verdict(seen, end=20.0))] == ["pause"]
