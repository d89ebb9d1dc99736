"""Item exposures through stage 1 and stage 2: exact counts, redelivery, snapshots."""

from collections import Counter
from typing import Any

from streamguard.core import Stage1, Stage2
from streamguard.core.snapshot import pack, unpack
from streamguard.policy import Policy, parse_policy
from tests.unit.core._events import decoded, prediction
from tests.unit.core.test_stage1 import flush


def served(request_id: str, role: str, ts: float, items: list[str] | None) -> dict[str, Any]:
    event = prediction(request_id, role, ts)
    if items is not None:
        event["items"] = items
    return event


EVENTS = [
    served("r1", "primary", 101.0, ["a", "b", "c"]),
    served("r2", "canary", 102.0, ["a", "a2"]),
    served("r3", "primary", 103.0, ["a", "b"]),
    served("r4", "primary", 104.0, None),
    served("r5", "canary", 112.0, ["z"]),
]


def test_stage1_counts_each_flush_exactly_per_role_version_and_window() -> None:
    stage1 = Stage1(Policy())
    stage1.process(0, 0, decoded(EVENTS))
    groups = [g for m in flush(stage1) for g in m["groups"] if g["stream"].startswith("items:")]
    by_key = {(g["stream"], g["version"], g["window"]): g["items"] for g in groups}
    assert set(by_key) == {
        ("items:primary", "v1", 10),
        ("items:canary", "v2", 10),
        ("items:canary", "v2", 11),
    }
    primary = by_key[("items:primary", "v1", 10)]
    assert dict(zip(primary["ids"], primary["counts"], strict=True)) == {"a": 2, "b": 2, "c": 1}
    assert (primary["total"], primary["distinct"]) == (5, 3)
    assert primary["counts"] == sorted(primary["counts"], reverse=True)


def test_stage1_keeps_only_the_top_k_of_a_flush_with_the_total() -> None:
    policy = parse_policy("[defaults.guards.popularity]\nflush_top_k = 2\n")
    stage1 = Stage1(policy)
    stage1.process(
        0,
        0,
        decoded(
            [
                served("r1", "primary", 101.0, ["a", "b", "c", "d"]),
                served("r2", "primary", 101.5, ["a", "b"]),
            ]
        ),
    )
    (group,) = [g for m in flush(stage1) for g in m["groups"] if g["stream"] == "items:primary"]
    assert sorted(group["items"]["ids"]) == ["a", "b"]
    assert group["items"]["counts"] == [2, 2]
    assert (group["items"]["total"], group["items"]["distinct"]) == (6, 4)


def run_stage2(partials: list[dict[str, Any]], stage2: Stage2) -> list[Any]:
    for message in partials:
        stage2.apply(message)
    return stage2.advance(final=True)


def test_stage2_merges_partials_once_under_redelivery_and_restores_from_a_snapshot() -> None:
    stage1 = Stage1(Policy())
    stage1.process(0, 0, decoded(EVENTS[:2]))
    first = flush(stage1)
    stage1.process(0, 1, decoded(EVENTS[2:4]))
    second = flush(stage1)
    stage2 = Stage2(Policy(), 1, [])
    for message in first + first + second + first:  # redelivered partials
        stage2.apply(message)
    restored = Stage2(Policy(), 1, [])
    restored.restore(0, unpack(pack(stage2.snapshot(0))))
    for stage in (stage2, restored):
        d = stage._deployments["d"]
        window = d.items[("items:primary", "v1")].open[10]
        assert dict(zip(*window.counts(), strict=True)) == {"a": 2.0, "b": 2.0, "c": 1.0}
        assert window.total == 5
        assert round(window.distinct()) == 3
        canary = d.items[("items:canary", "v2")].open[10]
        assert canary.total == 2
    stage2.advance(final=True)
    closed = stage2._deployments["d"].items[("items:primary", "v1")].closed
    assert [i for i, _ in closed] == [10]
    assert Counter({"a": 2, "b": 2, "c": 1}) == Counter(
        dict(zip(closed[0][1].counts()[0], map(int, closed[0][1].counts()[1]), strict=True))
    )
