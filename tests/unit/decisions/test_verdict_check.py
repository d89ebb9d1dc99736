"""A verdict that passes check_verdict cannot make the decider raise; one that fails is named.

Stage 3 stops the worker when the decider raises (faust_app/halt), so anything on the verdicts
topic that could make it raise must be refused before it is decided on.
"""

import copy
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from streamguard.decisions import Decider, VerdictError, check_verdict
from streamguard.policy import DeploymentPolicy, Policy
from streamguard.security.publisher import Publisher
from tests.unit._mutations import mutated
from tests.unit.decisions.test_decider import finding, verdict

IMMEDIATE = Policy(defaults=DeploymentPolicy(confirm_windows=1))


def shadow() -> dict[str, Any]:
    out = verdict([finding("platform=ios", "pause"), finding("*", "rollback", value=0.4)])
    out["findings"].append(finding("region=eu", "notice") | {"summary": "drifted"})
    out["health"] = {
        "findings": [
            {"slice": "tier=free", "pairing_rate": 0.5, "pairing_floor": 0.9, "primaries": 800}
        ]
    }
    return out


def compat() -> dict[str, Any]:
    out = verdict([], end=90.0) | {"guard": "compat"}
    out["schemas"] = {"v1": {"accepted": ["1"], "live": ["1"], "served": {"1": 10}}}
    return out


VERDICTS = [compat(), shadow()]


def decide_all(verdicts: list[dict[str, Any]]) -> list[bytes]:
    """Every command and alert the decider publishes for ``verdicts``, as sent."""
    decider, publisher, out = Decider(IMMEDIATE), Publisher.insecure(), []
    for v in verdicts:
        decisions = decider.decide(v)
        for command, alert in decisions.commands:
            out.append(publisher.command_bytes(command, 1.0))
            if alert is not None:
                out.append(publisher.alert_bytes(alert, 1.0))
        out.extend(publisher.alert_bytes(notice, 1.0) for notice in decisions.notices)
    return out


def test_the_verdicts_pass_and_make_commands_and_notices() -> None:
    for v in VERDICTS:
        check_verdict(v)
    sent = [orjson.loads(raw) for raw in decide_all(copy.deepcopy(VERDICTS))]
    assert {m.get("action") for m in sent} >= {"rollback", "schemas"}
    assert any("untrusted" in str(m.get("summary")) for m in sent)  # the health notice


@settings(max_examples=400, deadline=None)
@given(data=st.data())
def test_a_verdict_that_passes_never_makes_the_decider_raise(data) -> None:
    index = data.draw(st.integers(0, len(VERDICTS) - 1), label="verdict")
    broken = mutated(VERDICTS[index], data)
    try:
        check_verdict(broken)
    except VerdictError:
        return
    decide_all([*copy.deepcopy(VERDICTS[:index]), broken])  # must not raise


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"deployment": 3}, "deployment is 3, not a str"),
        ({"window_end": "10"}, "window_end is '10', not a number"),
        ({"findings": {}}, "findings is not a list"),
        ({"findings": [{"slice": "*", "action": "explode"}]}, "action 'explode' is not one of"),
        ({"findings": [{"slice": "*", "action": "pause"}]}, "finding 0: threshold is missing"),
        ({"schema_version": 2}, "schema_version 2"),
        ({"kind": "partial"}, "kind 'partial' is not verdict"),
        ({"health": {"findings": [{"slice": "*"}]}}, "health finding 0: pairing_floor"),
    ],
)
def test_a_malformed_verdict_is_refused_with_its_reason(change, reason) -> None:
    with pytest.raises(VerdictError, match=reason):
        check_verdict(shadow() | change)


@pytest.mark.parametrize(
    ("label", "reason"),
    [
        ("", "is not a slice label"),
        ("platform", "is not a slice label"),
        ("platform=", "is not a slice label"),
        ("=ios", "is not a slice label"),
        ("platform=ios,,tier=free", "is not a slice label"),
        ("plat form=ios", "is not a slice label"),
        ("platform=ios|x", "is not a slice label"),
        ("platform=ios,platform=android", "dimensions not distinct and sorted"),
        ("tier=free,platform=ios", "dimensions not distinct and sorted"),
    ],
)
def test_a_finding_whose_slice_is_not_a_canonical_label_is_refused(label, reason) -> None:
    # label_dims would turn these into a garbled command slice ({"": ""}, one dimension lost).
    for where, change in (
        ("finding 0", {"findings": [finding(label, "pause")]}),
        ("health finding 0", {"health": {"findings": [{**_HEALTH, "slice": label}]}}),
    ):
        with pytest.raises(VerdictError, match=f"{where}: slice .*{reason}"):
            check_verdict(shadow() | change)


_HEALTH = {"slice": "*", "pairing_rate": 0.5, "pairing_floor": 0.9, "primaries": 800}
_LABEL_TEXT = st.text(alphabet="pt=,* |ié", max_size=12)


@settings(max_examples=300, deadline=None)
@given(label=_LABEL_TEXT | st.sampled_from(["*", "p=i", "p=i,t=f", "replica=r-1:8080"]))
def test_a_slice_label_that_passes_reaches_the_command_unchanged(label) -> None:
    try:
        check_verdict(shadow() | {"findings": [finding(label, "pause")]})
    except VerdictError:
        return
    sent = [orjson.loads(raw) for raw in decide_all([verdict([finding(label, "pause")])])]
    (dims,) = [m["slice"] for m in sent if m.get("action") == "pause"]
    assert (",".join(f"{k}={v}" for k, v in (dims or {}).items()) or "*") == label


def test_a_malformed_schemas_table_is_refused() -> None:
    with pytest.raises(VerdictError, match="accepted is not a list"):
        check_verdict(compat() | {"schemas": {"v1": {"accepted": "1"}}})
    with pytest.raises(VerdictError, match="a verdict is a JSON object, not list"):
        check_verdict([compat()])
