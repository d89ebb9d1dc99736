"""The broker going away: the worker keeps running, says it is unhealthy, and resumes."""

import dataclasses
import os
import signal
import time
from pathlib import Path

import pytest

from streamguard.broker import EmbeddedBroker
from streamguard.broker.admin import apply_topics
from streamguard.testing import WorkerProcess
from tests.faults.helpers import SPECS, read, shadow_scenario
from tests.integration.conftest import produce

pytestmark = [pytest.mark.faults, pytest.mark.integration, pytest.mark.slow]


def wait_for(condition, timeout_s: float, what: str) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.5)
    raise AssertionError(f"timed out waiting until {what}")


def status(worker: WorkerProcess) -> str | None:
    document = worker.health()
    return document.get("status") if document else None


def test_unreachable_broker_makes_the_worker_unhealthy_until_it_is_back(
    broker_with_topics: EmbeddedBroker, tmp_path: Path
) -> None:
    messages = shadow_scenario(seconds=120)
    worker = WorkerProcess(broker_with_topics.url, tmp_path / "w.log").start()
    try:
        worker.wait_ready(sources=8)
        produce(
            broker_with_topics.bootstrap, messages[: len(messages) // 2], SPECS["predictions"].name
        )
        assert broker_with_topics.pid is not None
        os.kill(broker_with_topics.pid, signal.SIGSTOP)  # alive but unreachable, data kept
        try:
            wait_for(
                lambda: status(worker) == "unhealthy", 60, "the worker reports the broker down"
            )
            assert worker.process is not None
            assert worker.process.poll() is None  # still running
        finally:
            os.kill(broker_with_topics.pid, signal.SIGCONT)
        wait_for(lambda: status(worker) == "ok", 60, "the worker is healthy again")
        assert not worker.health()["topic_problems"]  # type: ignore[index]
        produce(
            broker_with_topics.bootstrap, messages[len(messages) // 2 :], SPECS["predictions"].name
        )
        verdicts = read(broker_with_topics, "verdicts", 60, until=lambda v: len(v) >= 6)
        assert len(verdicts) >= 6  # windows from both halves of the traffic were judged
    finally:
        worker.stop()


def test_worker_survives_a_broker_restart_that_lost_everything(tmp_path: Path) -> None:
    """The embedded broker keeps everything in memory: a restart is a total data loss.

    The worker is frozen while the broker comes back and its topics are applied, as Kafka's
    topics would survive a restart; otherwise the worker's first write auto-creates them with
    the broker's partition count (the worker then reports that in /health, tested below).
    """
    broker = EmbeddedBroker(log_path=tmp_path / "broker.log").start()
    port = broker.port
    import asyncio

    asyncio.run(apply_topics(broker.bootstrap))
    worker = WorkerProcess(broker.url, tmp_path / "w.log").start()
    try:
        worker.wait_ready(sources=8)
        produce(broker.bootstrap, shadow_scenario(seconds=60, seed=1), SPECS["predictions"].name)
        time.sleep(5)
        broker.kill()
        wait_for(lambda: status(worker) == "unhealthy", 60, "the worker reports the broker down")
        assert worker.pid is not None
        os.kill(worker.pid, signal.SIGSTOP)
        try:
            broker = EmbeddedBroker(port=port, log_path=tmp_path / "broker2.log").start()
            asyncio.run(apply_topics(broker.bootstrap))
        finally:
            os.kill(worker.pid, signal.SIGCONT)
        wait_for(lambda: status(worker) == "ok", 90, "the worker is healthy again")
        produce(broker.bootstrap, shadow_scenario(seconds=90, seed=2), SPECS["predictions"].name)
        verdicts = read(broker, "verdicts", 90, until=lambda v: len(v) >= 3)
        assert len(verdicts) >= 3  # the new traffic is judged
        assert worker.process is not None
        assert worker.process.poll() is None
    finally:
        worker.stop()
        broker.stop()


def test_topics_that_differ_from_their_specs_make_the_worker_unhealthy(
    broker: EmbeddedBroker, tmp_path: Path
) -> None:
    import asyncio

    alerts = SPECS["alerts"]
    wrong = dataclasses.replace(alerts, partitions=alerts.partitions + 1)
    asyncio.run(apply_topics(broker.bootstrap, {**SPECS, "alerts": wrong}))
    worker = WorkerProcess(broker.url, tmp_path / "w.log").start()
    try:
        wait_for(lambda: status(worker) == "unhealthy", 60, "the worker reports the topics")
        document = worker.health()
        assert document is not None
        assert document["topic_problems"] == [
            f"topic {alerts.name} has {wrong.partitions} partitions, its spec {alerts.partitions}"
        ]
    finally:
        worker.stop()
