"""Leakage guard: exact violation counts (numpy oracle), one block per pipeline, redelivery."""

from typing import Any

import jsonschema
import numpy as np
import orjson
import pytest

from streamguard.contracts import TrainingBatch, decode_message, load_schema
from streamguard.engine import Pipeline
from streamguard.guards import LeakageGuard
from streamguard.policy import Policy, parse_policy
from streamguard.sim import Backfill, TrainingPipeline

COMMAND_SCHEMA = jsonschema.Draft202012Validator(load_schema("command"))
ALERT_SCHEMA = jsonschema.Draft202012Validator(load_schema("alert"))
TOLERANCE = 3600.0


def batch_of(examples: list[dict[str, Any]]) -> TrainingBatch:
    decoded = decode_message(orjson.dumps({"schema_version": 1, "events": examples}))
    assert not decoded.rejected
    return decoded.training


def random_examples(rng: np.random.Generator, n: int, pipelines: list[str]) -> list[dict]:
    out = []
    for i in range(n):
        label = float(rng.uniform(1e9, 1e9 + 86400))
        k = int(rng.integers(0, 6))
        names = rng.choice(["a", "b", "c", "d", "e", "f"], size=k, replace=False).tolist()
        # Offsets around the tolerance, including exactly at it (not a violation).
        offsets = rng.choice([-7200.0, 0.0, 3599.0, 3600.0, 3600.5, 86400.0, 4e5], size=k)
        out.append(
            {
                "schema_version": 1,
                "kind": "training_example",
                "event_id": f"e{i}",
                "pipeline": str(rng.choice(pipelines)),
                "example_id": f"x{i}",
                "label_ts": label,
                "feature_ts": {n_: label + float(o) for n_, o in zip(names, offsets, strict=True)},
            }
        )
    return out


def oracle(examples: list[dict]) -> dict[str, dict[str, Any]]:
    """Counts per pipeline computed with numpy over one flat table of every feature."""
    rows = [
        (e["pipeline"], e["example_id"], f, ts - e["label_ts"])
        for e in examples
        for f, ts in e["feature_ts"].items()
    ]
    out: dict[str, dict[str, Any]] = {}
    for pipeline in sorted({e["pipeline"] for e in examples}):
        mine = [r for r in rows if r[0] == pipeline]
        offsets = np.array([r[3] for r in mine])
        names = np.array([r[2] for r in mine])
        bad = offsets > TOLERANCE
        features = {
            str(f): (int(np.sum(bad & (names == f))), float(offsets[bad & (names == f)].max()))
            for f in np.unique(names[bad])
        }
        ids = [e["example_id"] for e in examples if e["pipeline"] == pipeline]
        violating = list(dict.fromkeys(r[1] for r, b in zip(mine, bad, strict=True) if b))
        out[pipeline] = {
            "examples": len(ids),
            "violations": int(bad.sum()),
            "violating_examples": len(violating),
            "features": features,
            "worst": float(offsets[bad].max()) if bad.any() else None,
            "first_ids": violating[:20],
        }
    return out


@pytest.mark.parametrize("seed", range(5))
def test_counts_equal_a_numpy_oracle_over_many_messages(seed: int) -> None:
    rng = np.random.default_rng(seed)
    examples = random_examples(rng, 600, ["p1", "p2", "p3"])
    guard = LeakageGuard(Policy())
    commands = []
    block_at: dict[str, int] = {}
    chunks = np.array_split(np.arange(len(examples)), 12)
    for offset, chunk in enumerate(chunks):
        part = [examples[i] for i in chunk.tolist()]
        report = guard.process(0, offset, batch_of(part))
        assert report.examples == len(part)
        assert report.violations == sum(oracle(part)[p]["violations"] for p in oracle(part))
        for command, alert in report.commands:
            commands.append(command)
            block_at[command.deployment] = int(chunk[-1]) + 1
            COMMAND_SCHEMA.validate(orjson.loads(command.to_json()))
            ALERT_SCHEMA.validate(orjson.loads(alert.to_json()))
            assert alert.severity == "critical"
    expected = oracle(examples)
    for pipeline, truth in expected.items():
        counts = guard.status(pipeline)
        assert counts is not None
        assert counts.examples == truth["examples"]
        assert counts.violations == truth["violations"]
        assert counts.violating_examples == truth["violating_examples"]
        assert {k: (int(c), w) for k, (c, w) in counts.features.items()} == truth["features"]
        assert counts.example_ids == truth["first_ids"]
    # One block per leaking pipeline, with the counts as of the message that triggered it.
    assert sorted(c.deployment for c in commands) == sorted(
        p for p, t in expected.items() if t["violations"]
    )
    for command in commands:
        assert (command.action, command.guard, command.model_version) == ("block", "leakage", "*")
        upto = oracle(examples[: block_at[command.deployment]])[command.deployment]
        evidence = command.evidence
        assert evidence["violations"] == upto["violations"]
        assert evidence["violating_examples"] == upto["violating_examples"]
        assert evidence["examples"] == upto["examples"]
        assert evidence["worst_offset_s"] == pytest.approx(upto["worst"])
        assert {k: v["violations"] for k, v in evidence["features"].items()} == {
            k: c for k, (c, _) in upto["features"].items()
        }
        assert evidence["example_ids"] == upto["first_ids"]
        assert evidence["tolerance_s"] == TOLERANCE


def test_exactly_at_the_tolerance_is_no_violation() -> None:
    guard = LeakageGuard(Policy())
    example = {
        "schema_version": 1,
        "kind": "training_example",
        "event_id": "e",
        "pipeline": "p",
        "example_id": "x",
        "label_ts": 1000.0,
        "feature_ts": {"a": 4600.0, "b": 0.0},
    }
    assert guard.process(0, 0, batch_of([example])).commands == []
    late = {**example, "example_id": "y", "feature_ts": {"a": 4600.001}}
    report = guard.process(0, 1, batch_of([late]))
    assert [c.evidence["example_ids"] for c, _ in report.commands] == [["y"]]


def test_redelivered_and_replayed_messages_count_once_and_block_with_the_same_id() -> None:
    leaky = TrainingPipeline(seed=3, backfill=Backfill(("engagement_7d",), 5 * 86400, share=0.3))
    messages = [batch_of(leaky.examples(50)) for _ in range(8)]

    def run(guard: LeakageGuard, offsets: range) -> list[str]:
        return [c.command_id for o in offsets for c, _ in guard.process(0, o, messages[o]).commands]

    straight = LeakageGuard(Policy())
    ids = run(straight, range(8))
    assert len(ids) == 1
    # A crash after publishing the block but before any snapshot: the restart re-reads from
    # the start and makes the same decision with the same id (subscribers deduplicate on it).
    crashed = LeakageGuard(Policy())
    empty = orjson.loads(orjson.dumps(crashed.snapshot(0)))
    assert run(crashed, range(4)) == ids
    restarted = LeakageGuard(Policy())
    assert restarted.restore(0, empty) == 0
    assert run(restarted, range(8)) == ids
    assert restarted.status("ctr-trainer") == straight.status("ctr-trainer")
    # A snapshot after three messages (JSON round trip, as on the state topic): a consumer that
    # re-reads from offset 0 has those skipped; nothing is counted twice, no second block.
    resumed = LeakageGuard(Policy())
    run(resumed, range(3))
    saved = orjson.loads(orjson.dumps(resumed.snapshot(0)))
    again = LeakageGuard(Policy())
    assert again.restore(0, saved) == 3
    assert run(again, range(8)) == []
    assert again.status("ctr-trainer") == straight.status("ctr-trainer")
    assert run(again, range(8)) == []  # redelivered again: skipped
    assert again.status("ctr-trainer") == straight.status("ctr-trainer")


def test_healthy_pipeline_is_never_blocked() -> None:
    guard = LeakageGuard(Policy())
    healthy = TrainingPipeline(seed=5)
    for offset in range(20):
        assert guard.process(0, offset, batch_of(healthy.examples(100))).commands == []
    counts = guard.status("ctr-trainer")
    assert counts is not None
    assert (counts.examples, counts.violations) == (2000, 0)


def test_policy_sets_tolerance_and_can_disable_a_pipeline() -> None:
    policy = parse_policy(
        """
[defaults.guards.leakage]
tolerance_s = 10
[deployments.quiet.guards.leakage]
enabled = false
"""
    )
    guard = LeakageGuard(policy)
    examples = [
        {
            "schema_version": 1,
            "kind": "training_example",
            "event_id": "1",
            "pipeline": p,
            "example_id": p,
            "label_ts": 0.0,
            "feature_ts": {"f": 11.0},
        }
        for p in ("loud", "quiet")
    ]
    report = guard.process(0, 0, batch_of(examples))
    assert [c.deployment for c, _ in report.commands] == ["loud"]
    assert report.commands[0][0].evidence["tolerance_s"] == 10.0


def test_replay_routes_training_examples_and_blocks_once() -> None:
    leaky = TrainingPipeline(pipeline="leaky", seed=1, backfill=Backfill(("clicks_1d",), 3 * 86400))
    healthy = TrainingPipeline(pipeline="healthy", seed=2)
    pipe = Pipeline(Policy(), 8)
    for _ in range(5):
        for source in (leaky, healthy):
            pipe.feed(orjson.dumps({"schema_version": 1, "events": source.examples(40)}))
    pipe.feed(b'{"schema_version": 1, "kind": "training_example"}')
    commands = pipe.finish()
    assert [(c.action, c.deployment) for c in commands] == [("block", "leaky")]
    assert pipe.stats.training_examples == 400
    assert pipe.stats.leakage_violations == 200
    assert pipe.rejected["missing_field"] == 1
    assert commands[0].evidence["features"] == {
        "clicks_1d": {"violations": 40, "worst_offset_s": commands[0].evidence["worst_offset_s"]}
    }
