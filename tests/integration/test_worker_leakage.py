"""Leakage guard end to end through Kafka: a backfilling pipeline is blocked once, exactly."""

import asyncio
import time
from pathlib import Path

import numpy as np
import orjson
import pytest

from streamguard.broker import EmbeddedBroker
from streamguard.contracts import load_topic_specs
from streamguard.engine import Pipeline
from streamguard.policy import Policy
from streamguard.sim import Backfill, TrainingPipeline
from streamguard.testing import WorkerProcess, envelopes, metric, read_topic
from tests.integration.conftest import produce

pytestmark = [pytest.mark.integration, pytest.mark.slow]

SPECS = load_topic_specs()
PARTITIONS = SPECS["training_examples"].partitions
TOLERANCE = 3600.0
Messages = list[tuple[int | None, bytes | None, bytes]]


def messages_of(*pipelines: TrainingPipeline, batches: int = 6, size: int = 150) -> Messages:
    out: Messages = []
    for _ in range(batches):
        for pipeline in pipelines:
            out.extend(envelopes(pipeline.examples(size), PARTITIONS, key="pipeline"))
    return out


def oracle(messages: Messages) -> dict[str, tuple[int, int, float]]:
    """(violations, violating examples, worst offset) per pipeline, with numpy."""
    examples = [e for _, _, v in messages for e in orjson.loads(v)["events"]]
    out = {}
    for name in sorted({e["pipeline"] for e in examples}):
        mine = [e for e in examples if e["pipeline"] == name]
        offsets = np.array([[t - e["label_ts"] for t in e["feature_ts"].values()] for e in mine])
        bad = offsets > TOLERANCE
        worst = float(offsets[bad].max()) if bad.any() else 0.0
        out[name] = (int(bad.sum()), int(bad.any(axis=1).sum()), worst)
    return out


def replay(messages: Messages) -> list[dict]:
    pipeline = Pipeline(Policy(), SPECS["predictions"].partitions)
    for _, _, value in messages:
        pipeline.feed(value)
    return [c.to_dict() for c in pipeline.finish()]


def through_worker(
    broker: EmbeddedBroker, tmp_path: Path, messages: Messages, expect: int
) -> tuple[list[dict], list[dict], list[dict], str]:
    bad = [(0, b"ctr-trainer", b'{"schema_version": 1, "kind": "training_example"}')]
    with WorkerProcess(broker.url, tmp_path / "worker.log") as worker:
        worker.wait_ready(sources=8)
        produce(broker.bootstrap, messages + bad, SPECS["training_examples"].name)
        dead = asyncio.run(
            read_topic(broker.bootstrap, SPECS["deadletters"].name, 60, until=lambda v: len(v) >= 1)
        )
        control = asyncio.run(
            read_topic(
                broker.bootstrap,
                SPECS["control"].name,
                60 if expect else 5,
                until=lambda v: expect > 0 and len(v) >= expect,
            )
        )
        alerts = asyncio.run(read_topic(broker.bootstrap, SPECS["alerts"].name, 3))
        examples = sum(len(orjson.loads(v)["events"]) for _, _, v in messages)
        deadline = time.monotonic() + 30
        while True:  # every message counted (read by the worker) before the counts are checked
            metrics = worker.metrics()
            if metric(metrics, COUNTED) >= examples or time.monotonic() > deadline:
                break
            time.sleep(0.5)
    return control, alerts, dead, metrics


COUNTED = 'streamguard_events_total{kind="training_example"}'


def test_a_backfilling_pipeline_is_blocked_once_with_exact_counts(
    broker_with_topics: EmbeddedBroker, tmp_path: Path
) -> None:
    # Engagement backfilled through day 5 for labels of day 1 (0.3 of the examples), next to a
    # point-in-time correct pipeline on the same topic.
    leaky = TrainingPipeline(
        pipeline="ctr-trainer",
        seed=1,
        backfill=Backfill(("engagement_7d",), until_s=5 * 86400, share=0.3),
    )
    healthy = TrainingPipeline(pipeline="ranker-trainer", seed=2)
    messages = messages_of(leaky, healthy)
    expected = replay(messages)
    assert [(c["action"], c["deployment"]) for c in expected] == [("block", "ctr-trainer")]
    control, alerts, dead, metrics = through_worker(broker_with_topics, tmp_path, messages, 1)
    published = [
        {k: v for k, v in c.items() if k != "signature"} | {"schema_version": 1} for c in control
    ]
    assert published == expected
    evidence = control[0]["evidence"]
    # The block comes with the counts of the first message of the pipeline, which leaks.
    first = [m for m in messages if orjson.loads(m[2])["events"][0]["pipeline"] == "ctr-trainer"][
        :1
    ]
    violations, violating, worst = oracle(first)["ctr-trainer"]
    assert (evidence["violations"], evidence["violating_examples"]) == (violations, violating)
    assert evidence["examples"] == 150
    assert evidence["worst_offset_s"] == pytest.approx(worst)
    assert evidence["worst_offset_s"] > 3 * 86400
    assert list(evidence["features"]) == ["engagement_7d"]
    assert evidence["features"]["engagement_7d"]["violations"] == violations
    assert 0 < len(evidence["example_ids"]) <= 20
    assert [a["command_id"] for a in alerts] == [control[0]["command_id"]]
    assert alerts[0]["severity"] == "critical"
    # Every violation of the whole stream is counted exactly once, the healthy pipeline's none.
    totals = oracle(messages)
    assert totals["ranker-trainer"][0] == 0
    assert metric(metrics, "streamguard_leakage_violations_total") == totals["ctr-trainer"][0]
    assert metric(metrics, COUNTED) == 1800
    assert [d["reason"] for d in dead] == ["missing_field"]
    assert dead[0]["source"]["topic"] == SPECS["training_examples"].name


def test_a_point_in_time_correct_pipeline_is_never_blocked(
    broker_with_topics: EmbeddedBroker, tmp_path: Path
) -> None:
    messages = messages_of(TrainingPipeline(pipeline="ranker-trainer", seed=4), batches=8)
    assert replay(messages) == []
    control, alerts, _, metrics = through_worker(broker_with_topics, tmp_path, messages, 0)
    assert (control, alerts) == ([], [])
    assert metric(metrics, "streamguard_leakage_violations_total") == 0
    assert metric(metrics, COUNTED) == 1200
