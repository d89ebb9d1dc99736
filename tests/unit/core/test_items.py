"""Item exposures through stage 1 and stage 2: exact counts, redelivery, snapshots."""

from collections import Counter
from typing import Any

from streamguard.core import Stage1, Stage2
from streamguard.core.snapshot import pack, unpack
from streamguard.policy import Policy, parse_policy
from tests.unit.core._events import decoded, prediction
from tests.unit.core.test_stage1 import flush


def served(
    request_id: str,
    role: str,
    ts: float,
    items: list[str] | None,
    slice_: dict[str, str] | None = None,
) -> dict[str, Any]:
    event = prediction(request_id, role, ts, slice_=slice_)
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
    by_key = {
        (g["stream"], g["version"], g["window"]): g["items"] for g in groups if not g["slices"]
    }
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
    (group,) = [
        g
        for m in flush(stage1)
        for g in m["groups"]
        if g["stream"] == "items:primary" and not g["slices"]
    ]
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
        window = d.items[("items:primary", "v1", "*")].open[10]
        assert dict(zip(*window.counts(), strict=True)) == {"a": 2.0, "b": 2.0, "c": 1.0}
        assert window.total == 5
        assert round(window.distinct()) == 3
        canary = d.items[("items:canary", "v2", "*")].open[10]
        assert canary.total == 2
    stage2.advance(final=True)
    closed = stage2._deployments["d"].items[("items:primary", "v1", "*")].closed
    assert [i for i, _ in closed] == [10]
    assert Counter({"a": 2, "b": 2, "c": 1}) == Counter(
        dict(zip(closed[0][1].counts()[0], map(int, closed[0][1].counts()[1]), strict=True))
    )


SLICED = [
    served("s1", "primary", 101.0, ["a", "b"], {"platform": "ios", "tier": "free"}),
    served("s2", "primary", 102.0, ["a", "c"], {"platform": "web", "tier": "free"}),
    served("s3", "primary", 103.0, ["a"], {"platform": "web", "tier": "paid"}),
    served("s4", "primary", 104.0, None, {"platform": "ios", "tier": "paid"}),
]


def items_groups(stage1: Stage1) -> dict[tuple[str, str], dict[str, int]]:
    """(stream, slice) -> exact item counts of one flush's items groups."""
    return {
        (g["stream"], (g["slices"] or ["*"])[0]): dict(
            zip(g["items"]["ids"], g["items"]["counts"], strict=True)
        )
        for m in flush(stage1)
        for g in m["groups"]
        if g["stream"].startswith("items:")
    }


def test_stage1_counts_exposures_per_single_dimension_slice_too() -> None:
    policy = parse_policy("[defaults.slices]\ndimensions = ['platform', 'tier']\n")
    stage1 = Stage1(policy)
    stage1.process(0, 0, decoded(SLICED))
    counts = items_groups(stage1)
    assert counts == {
        ("items:primary", "*"): {"a": 3, "b": 1, "c": 1},
        ("items:primary", "platform=ios"): {"a": 1, "b": 1},
        ("items:primary", "platform=web"): {"a": 2, "c": 1},
        ("items:primary", "tier=free"): {"a": 2, "b": 1, "c": 1},
        ("items:primary", "tier=paid"): {"a": 1},
    }


def test_slice_level_zero_counts_the_whole_deployment_only() -> None:
    policy = parse_policy(
        "[defaults.slices]\ndimensions = ['platform', 'tier']\n"
        "[defaults.guards.popularity]\nslice_level = 0\n"
    )
    stage1 = Stage1(policy)
    stage1.process(0, 0, decoded(SLICED))
    assert set(items_groups(stage1)) == {("items:primary", "*")}


def test_stage2_keeps_at_most_max_slices_and_counts_the_rest() -> None:
    policy = parse_policy(
        "[defaults.slices]\ndimensions = ['platform', 'tier']\n"
        "[defaults.guards.popularity]\nmax_slices = 3\n"
    )
    stage1 = Stage1(policy)
    stage1.process(0, 0, decoded(SLICED))
    stage2 = Stage2(policy, 1, [])
    for message in flush(stage1):
        stage2.apply(message)
    d = stage2._deployments["d"]
    slices = sorted(label for _, _, label in d.items if label != "*")
    assert slices == ["platform=ios", "platform=web", "tier=free"]  # in the order they came
    assert d.untracked_slices == 1
    restored = Stage2(policy, 1, [])
    restored.restore(0, unpack(pack(stage2.snapshot(0))))
    assert set(restored._deployments["d"].items) == set(d.items)
    assert restored._deployments["d"].untracked_slices == 1


def test_stage2_keeps_item_windows_for_the_trend_only() -> None:
    policy = parse_policy("[defaults.guards.popularity]\ntrend_windows = 4\nmin_windows = 3\n")
    stage1 = Stage1(policy)
    stage2 = Stage2(policy, 1, [])
    for w in range(10):
        stage1.process(0, w, decoded([served(f"r{w}", "primary", 100.0 + 10 * w, ["a"])]))
        for message in flush(stage1):
            stage2.apply(message)
    stage2.advance(final=True)
    closed = stage2._deployments["d"].items[("items:primary", "v1", "*")].closed
    assert [i for i, _ in closed] == [15, 16, 17, 18, 19]  # trend_windows + 1


def test_stage2_item_state_stops_growing_over_a_huge_catalogue_and_many_windows() -> None:
    """10M-item catalogue, two slices, 90 windows: the state is the sketch budget, flat."""
    import tracemalloc

    import numpy as np

    policy = parse_policy("[defaults.slices]\ndimensions = ['platform']\n")
    settings = policy.defaults.popularity
    rng = np.random.default_rng(11)
    stage1 = Stage1(policy)
    stage2 = Stage2(policy, 1, [])
    sizes: list[int] = []
    tracemalloc.start()
    try:
        for w in range(90):
            ids = rng.integers(0, 10_000_000, (300, 10))
            events = [
                served(
                    f"r{w}-{i}",
                    "primary",
                    100.0 + 10 * w + i / 100,
                    [f"item-{j}" for j in row],
                    {"platform": "ios" if i % 2 else "web"},
                )
                for i, row in enumerate(ids.tolist())
            ]
            stage1.process(0, w, decoded(events))
            for message in flush(stage1):
                stage2.apply(message)
            stage2.advance()
            if w in (40, 89):
                sizes.append(tracemalloc.get_traced_memory()[0])
    finally:
        tracemalloc.stop()
    items = stage2._deployments["d"].items
    assert set(items) == {
        ("items:primary", "v1", label) for label in ("*", "platform=ios", "platform=web")
    }
    for (_, _, label), windows in items.items():
        assert len(windows.closed) <= settings.trend_windows + 1
        capacity = settings.sketch_capacity if label == "*" else settings.slice_sketch_capacity
        assert all(len(w.counts()[0]) <= capacity for _, w in windows.closed)
    # Window 40 already holds the whole horizon; 49 windows later nothing has grown.
    assert sizes[1] < 1.1 * sizes[0]
