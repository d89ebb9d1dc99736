"""A message that makes stage 1 raise in every worker is left out after two crashes.

``tests/faults/inject/sitecustomize.py`` (on ``PYTHONPATH``, ``STREAMGUARD_TEST_RAISE_IN=event:ID``)
makes every worker raise while accounting the message that holds event ``ID``, after part of it
was counted: a bug that message's content triggers. Without quarantine every restart stops at
it (exit status 70) and the guard stays down. With it (``STREAMGUARD_QUARANTINE_AFTER=2``, the
default), the first two workers stop there and record it; the third dead-letters it as
``quarantined`` and judges the rest exactly as replay judges the traffic without that message.
The message is either an envelope, or one of one-event messages that stage 1 accounts in a
run: the first crash then names the run, and the second worker accounts them one at a time.
"""

import base64
import re
from pathlib import Path

import orjson
import pytest

from streamguard.broker import EmbeddedBroker
from streamguard.contracts import partition_for
from streamguard.faust_app.halt import EXIT_STAGE_FAILED
from streamguard.testing import WorkerProcess
from tests.faults.helpers import (
    FAST_SNAPSHOTS,
    PARTITIONS,
    SPECS,
    check,
    raising,
    read,
    replay,
    samples,
    shadow_scenario,
    wait_exit,
)
from tests.integration.conftest import produce

pytestmark = [pytest.mark.faults, pytest.mark.integration, pytest.mark.slow]


def _poisoned_env(event_id: str) -> dict[str, str]:
    return {**FAST_SNAPSHOTS, **raising(f"event:{event_id}")}


def _stops_at_the_poison(broker: EmbeddedBroker, log: Path, env: dict[str, str]) -> str:
    """Start a worker that must stop with exit status 70; return its log."""
    worker = WorkerProcess(broker.url, log, env=env).start()
    try:
        status, text = wait_exit(worker)
    finally:
        worker.stop()
    assert status == EXIT_STAGE_FAILED, f"exit status {status}; log:\n{text}"
    return text


@pytest.mark.parametrize("shape", ["envelope", "run"])
def test_a_message_that_stops_every_worker_is_dead_lettered_after_two_and_the_rest_judged(
    broker_with_topics: EmbeddedBroker, tmp_path: Path, shape: str
) -> None:
    messages = shadow_scenario()
    # A message a quarter of the way in: the workers have stored snapshots before it.
    index = len(messages) // 4
    partition, key, value = messages[index]
    events = orjson.loads(value)["events"]
    if shape == "envelope":
        poison_value = value
    else:  # its events as one-event messages, the poisoned one first, then the rest
        singles = [(partition, key, orjson.dumps(e)) for e in events]
        messages[index : index + 1] = singles
        poison_value = singles[0][2]
    event_id = events[0]["event_id"]
    expected, sizes = replay(messages[:index] + messages[index + 1 :])
    env = _poisoned_env(event_id)
    produce(broker_with_topics.bootstrap, messages, SPECS["predictions"].name)

    first = _stops_at_the_poison(broker_with_topics, tmp_path / "first.log", env)
    assert f"injected: event:{event_id}" in first
    crash = re.search(r"recorded \(crash 1 of offsets (\d+)-(\d+); ([^)]*)\)", first)
    assert crash is not None, first
    if shape == "envelope":
        assert crash[1] == crash[2]
        assert crash[3] == "the message is left out at the restart after crash 2"
    else:
        assert int(crash[2]) - int(crash[1]) == len(events) - 1  # the run of its events
        assert crash[3] == "next, they are accounted one at a time"
    second = _stops_at_the_poison(broker_with_topics, tmp_path / "second.log", env)
    assert "stopped a worker 1 time(s)" in second  # it read the first one's record
    offset = int(crash[1])  # the poisoned message comes first either way
    assert f"recorded (crash 2 of offsets {offset}-{offset}; the message is left out" in second

    worker = WorkerProcess(broker_with_topics.url, tmp_path / "third.log", env=env).start()
    try:
        check(broker_with_topics, expected, sizes, worker)
        letters = [
            v
            for v in read(broker_with_topics, "deadletters", 30, until=lambda v: len(v) >= 1)
            if v["reason"] == "quarantined"
        ]
        metrics = worker.metrics()
        health = worker.health() or {}
        log = worker.log_tail(400)
        assert worker.process is not None
        running = worker.process.poll() is None
    finally:
        worker.stop()
    assert running, f"the third worker stopped; log:\n{log}"
    assert "the worker stops now" not in log  # the poisoned message was not accounted again
    request_id = events[0]["request_id"]
    assert partition_for(request_id.encode(), PARTITIONS) == partition
    assert letters, "no quarantined dead letter"
    assert {
        (v["source"]["topic"], v["source"]["partition"], v["source"]["offset"]) for v in letters
    } == {(SPECS["predictions"].name, partition, offset)}
    assert base64.b64decode(letters[0]["original_b64"]) == poison_value
    assert "stopped 2 workers (RuntimeError: injected" in letters[0]["detail"]
    errors = samples(metrics, "streamguard_internal_errors_total", "stage")
    assert errors.get("stage1_quarantine") == len(letters)
    assert [(q["partition"], q["offset"]) for q in health["quarantined"]] == [(partition, offset)]
