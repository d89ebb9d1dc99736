"""The /health and /ready rules, as pure functions of what the runtime knows."""

from typing import Any

import pytest

from streamguard.faust_app.health import health_document, readiness_document


def health(**changes: Any) -> tuple[int, dict[str, Any]]:
    given: dict[str, Any] = {
        "broker_up": True,
        "topic_problems": [],
        "crashed": {},
        "dropping": [],
        "extra": {"sources": [0, 1]},
    }
    return health_document(**{**given, **changes})


@pytest.mark.parametrize(
    ("changes", "code", "status"),
    [
        ({}, 200, "ok"),
        ({"dropping": ["pairing"]}, 200, "degraded"),
        ({"broker_up": False}, 503, "unhealthy"),
        ({"topic_problems": ["partials has 2 partitions"]}, 503, "unhealthy"),
        ({"crashed": {"stage2": "KeyError: x"}, "dropping": ["pairing"]}, 503, "unhealthy"),
    ],
)
def test_health_status(changes: dict[str, Any], code: int, status: str) -> None:
    got_code, document = health(**changes)
    assert (got_code, document["status"]) == (code, status)
    assert document["sources"] == [0, 1]
    assert document["broker"] == (
        "unreachable" if changes.get("broker_up") is False else "reachable"
    )


def progress(restored: int = 2, caught_up: int = 2) -> dict[str, dict[str, int]]:
    return {
        "stage1": {"assigned": 2, "restored": restored, "caught_up": caught_up},
        "stage2": {"assigned": 1, "restored": 1},
    }


def test_ready_only_when_joined_restored_and_caught_up() -> None:
    ok = health()[1]
    assert readiness_document(progress(), ok, joined=True)[0] == 200
    code, document = readiness_document(progress(), ok, joined=False)
    assert (code, document["status"]) == (503, "recovering")
    assert "joining the group" in document["reason"]
    code, document = readiness_document(progress(restored=1, caught_up=0), ok, joined=True)
    assert (code, document["ready"]) == (503, False)
    assert document["reason"] == (
        "restoring stage1 state: 1 of 2 partitions done; "
        "catching up: 2 of 2 predictions partitions not yet read to the end they had"
    )


def test_unready_while_unhealthy_and_says_why() -> None:
    sick = health(broker_up=False, crashed={"stage1": "boom"})[1]
    code, document = readiness_document(progress(), sick, joined=True)
    assert (code, document["status"]) == (503, "unhealthy")
    assert document["reason"] == "broker unreachable; agent stage1 crashed"


def test_a_worker_without_partitions_is_ready() -> None:
    none = {"stage1": {"assigned": 0, "restored": 0, "caught_up": 0}}
    assert readiness_document(none, health()[1], joined=True)[0] == 200
