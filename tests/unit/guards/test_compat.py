"""Rollback compatibility: request schemas per model version, and rollbacks that would crash."""

from collections import Counter
from typing import Any

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from streamguard.core.feature_schemas import schema_counts
from streamguard.decisions import Decider
from streamguard.engine import Pipeline
from streamguard.exceptions import ConfigError
from streamguard.guards import Verdict
from streamguard.policy import CompatPolicy, Policy, parse_policy
from streamguard.sim import Canary, FeatureSchemas, TrafficGenerator
from streamguard.testing import envelopes

START = 1_790_000_000.0
PARTITIONS = 8


def run(primary_new_share: float) -> tuple[Pipeline, list[dict[str, Any]], Counter[Any]]:
    """A canary whose errors jump at 60 s, sent the new schema "2"; the primary gets "1"."""
    gen = TrafficGenerator(
        rate=400,
        seed=1,
        start_ts=START,
        shadow=False,
        outcomes=True,
        error_rate=0.01,
        canary=Canary(share=0.25, error={"*": 10.0}, after_s=60),
        feature_schemas=FeatureSchemas(primary_new_share=primary_new_share),
    )
    verdicts: list[dict[str, Any]] = []

    def keep(verdict: Verdict) -> None:
        if verdict.guard == "compat":
            verdicts.append(verdict.to_dict())

    pipe = Pipeline(Policy(), PARTITIONS, on_verdict=keep)
    served: Counter[Any] = Counter()
    for events in gen.seconds(120):
        for e in events:
            if e["kind"] == "prediction":
                served[(e["model_version"], e["feature_schema"], e.get("error", False))] += 1
        for _, _, value in envelopes(events, PARTITIONS):
            pipe.feed(value)
    pipe.finish()
    return pipe, verdicts, served


@pytest.fixture(scope="module")
def schema_moved() -> tuple[Pipeline, list[dict[str, Any]], Counter[Any]]:
    return run(primary_new_share=0.0)


@pytest.fixture(scope="module")
def dual_read() -> tuple[Pipeline, list[dict[str, Any]], Counter[Any]]:
    return run(primary_new_share=0.1)


def commands(pipe: Pipeline, action: str) -> list[dict[str, Any]]:
    return [c.to_dict() for c in pipe.commands if c.action == action]


@given(
    st.lists(st.tuples(st.integers(0, 3), st.booleans()), max_size=200),
)
def test_schema_counts_match_a_direct_count(events: list[tuple[int, bool]]) -> None:
    names = ["", "1", "2", "v3"]
    codes = np.array([c for c, _ in events], dtype=np.int64)
    errors = np.array([e for _, e in events], dtype=bool)
    labels, arrays = schema_counts(codes, errors, names)
    want = Counter(names[c] for c, _ in events if names[c])
    failed = Counter(names[c] for c, e in events if names[c] and e)
    got = dict(zip(labels, arrays["events"].tolist(), strict=True))
    assert got == {f"feature_schema={k}": v for k, v in want.items()}
    assert dict(zip(labels, arrays["errors"].tolist(), strict=True)) == {
        f"feature_schema={k}": failed[k] for k in want
    }


def test_served_counts_are_exact(schema_moved: tuple[Pipeline, list, Counter]) -> None:
    _, verdicts, served = schema_moved
    table = verdicts[-1]["schemas"]
    for (version, schema), (events, errors) in (
        ((v, s), n) for v, row in table.items() for s, n in row["served"].items()
    ):
        assert events == served[(version, schema, False)] + served[(version, schema, True)]
        assert errors == served[(version, schema, True)]
    assert set(table) == {"ranker-v41", "ranker-v43"}


def test_rollback_to_a_version_that_never_served_the_live_schema_is_flagged(
    schema_moved: tuple[Pipeline, list, Counter],
) -> None:
    pipe, _, _ = schema_moved
    (rollback,) = commands(pipe, "rollback")
    assert rollback["guard"] == "canary"
    assert rollback["evidence"]["compat"] == {
        "target_version": "ranker-v41",
        "live_schemas": ["2"],
        "target_accepts": ["1"],
        "missing": ["2"],
        "compatible": False,
    }
    (alert,) = [a for a in pipe.alerts if a.command_id == rollback["command_id"]]
    assert alert.severity == "critical"
    assert "ROLLBACK MAY CRASH SERVING" in alert.summary
    assert "never served feature schema 2" in alert.summary


def test_a_dual_read_path_makes_the_rollback_compatible(
    dual_read: tuple[Pipeline, list, Counter],
) -> None:
    pipe, _, _ = dual_read
    (rollback,) = commands(pipe, "rollback")
    compat = rollback["evidence"]["compat"]
    assert compat["compatible"] is True
    assert compat["target_accepts"] == ["1", "2"]
    alert = next(a for a in pipe.alerts if a.command_id == rollback["command_id"])
    assert "MAY CRASH" not in alert.summary


def test_notices_say_what_each_version_accepts_once_and_without_alerts(
    dual_read: tuple[Pipeline, list, Counter],
) -> None:
    pipe, _, _ = dual_read
    notices = commands(pipe, "schemas")
    accepted = {n["model_version"]: n["evidence"]["accepted"] for n in notices}
    assert accepted["ranker-v41"] == ["1", "2"]
    # One notice per growth of a version's accepted set, never repeated.
    grown = [(n["model_version"], tuple(n["evidence"]["accepted"])) for n in notices]
    assert len(grown) == len(set(grown))
    assert not {a.command_id for a in pipe.alerts} & {n["command_id"] for n in notices}


def test_without_feature_schemas_nothing_changes() -> None:
    gen = TrafficGenerator(rate=200, seed=2, start_ts=START)
    verdicts: list[str] = []
    pipe = Pipeline(Policy(), 4, on_verdict=lambda v: verdicts.append(v.guard))
    for events in gen.seconds(40):
        for _, _, value in envelopes(events, 4):
            pipe.feed(value)
    pipe.finish()
    assert "compat" not in verdicts
    assert "shadow" in verdicts


def compat_verdict(end: float, table: dict[str, Any]) -> dict[str, Any]:
    return {
        "deployment": "d",
        "guard": "compat",
        "model_version": "v2",
        "baseline_version": "v1",
        "window_start": end - 10,
        "window_end": end,
        "horizon_start": end - 300,
        "findings": [],
        "slices": [],
        "schemas": table,
    }


def rollback_verdict(end: float) -> dict[str, Any]:
    finding = {"slice": "*", "action": "rollback", "statistic": "psi", "value": 0.5}
    return {
        **compat_verdict(end, {}),
        "guard": "shadow",
        "findings": [{**finding, "threshold": 0.25, "n": 1000}],
    }


def test_decider_keeps_the_table_across_a_snapshot_and_does_not_repeat_notices() -> None:
    decider = Decider(parse_policy("[defaults]\nconfirm_windows = 1\n"))
    table = {
        "v1": {"accepted": ["1"], "live": ["1"], "served": {"1": [500, 0]}},
        "v2": {"accepted": ["2"], "live": ["2"], "served": {"2": [500, 0]}},
    }
    notices = decider.on_verdict(compat_verdict(10.0, table))
    assert [(c.action, c.model_version, alert) for c, alert in notices] == [
        ("schemas", "v1", None),
        ("schemas", "v2", None),
    ]
    restored = Decider.restore(decider.snapshot(), decider.policy)
    assert restored.on_verdict(compat_verdict(20.0, table)) == []  # nothing new to say
    ((command, alert),) = restored.on_verdict(rollback_verdict(20.0))
    assert command.evidence["compat"]["missing"] == ["2"]
    assert alert is not None
    assert "MAY CRASH" in alert.summary


def test_pauses_carry_no_compat_and_unknown_targets_accept_nothing() -> None:
    decider = Decider(parse_policy("[defaults]\nconfirm_windows = 1\n"))
    decider.on_verdict(compat_verdict(10.0, {"v2": {"accepted": [], "live": ["2"], "served": {}}}))
    pause = {**rollback_verdict(20.0)}
    pause["findings"] = [{**pause["findings"][0], "action": "pause"}]
    ((command, _),) = decider.on_verdict(pause)
    assert "compat" not in command.evidence
    ((command, _),) = decider.on_verdict(rollback_verdict(30.0))
    assert command.evidence["compat"]["target_accepts"] == []
    assert command.evidence["compat"]["compatible"] is False


def test_policy_reads_declared_schemas_and_refuses_bad_values() -> None:
    policy = parse_policy(
        """
        [defaults.guards.compat]
        min_events = 50
        max_error_rate = 0.02
        declared = {"ranker-v40" = ["1", "2"]}
        """
    )
    assert policy.defaults.compat == CompatPolicy(
        min_events=50, max_error_rate=0.02, declared={"ranker-v40": ("1", "2")}
    )
    for bad in ("max_error_rate = 2.0", 'declared = {"v" = "1"}', "unknown = 1"):
        with pytest.raises(ConfigError, match="compat"):
            parse_policy(f"[defaults.guards.compat]\n{bad}\n")
