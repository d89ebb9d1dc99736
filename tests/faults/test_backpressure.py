"""Backpressure: partitions paused for running ahead of stage 2 lose and repeat nothing."""

import time
from pathlib import Path

import pytest
from orjson import loads

from streamguard.broker import EmbeddedBroker
from streamguard.testing import WorkerProcess, metric
from tests.faults.helpers import check, produce_behind, replay, shadow_scenario

pytestmark = [pytest.mark.faults, pytest.mark.integration, pytest.mark.slow]

# A bound of 5 s of event time pauses partitions again and again while the worker reads a
# backlog (stage 2 hears watermarks once a second); a 64 KB stream buffer holds a few
# envelopes, so pauses cut fetched batches short instead of waiting behind a full buffer.
PACED = {"STREAMGUARD_MAX_AHEAD_S": "5", "STREAMGUARD_STREAM_BUFFER_MB": "0.0625"}


def test_a_backlog_read_with_pauses_gives_exactly_what_replay_gives(
    broker_with_topics: EmbeddedBroker, tmp_path: Path
) -> None:
    messages = shadow_scenario()
    expected, sizes = replay(messages)
    events = sum(
        event["kind"] == "prediction"
        for _, _, value in messages
        for event in loads(value)["events"]
    )
    worker = WorkerProcess(broker_with_topics.url, tmp_path / "w.log", env=PACED).start()
    try:
        worker.wait_ready(sources=8)
        # Events certainly arrive faster than they are processed: the worker resumes behind.
        produce_behind(broker_with_topics, worker, messages)
        check(broker_with_topics, expected, sizes, worker)
        deadline = time.monotonic() + 60
        text = worker.metrics()
        while time.monotonic() < deadline:
            text = worker.metrics()
            read = metric(text, 'streamguard_events_total{kind="prediction"}')
            if read >= events and metric(text, "streamguard_paused_partitions") == 0:
                break
            time.sleep(0.5)
        # It did pause (or this test proves nothing), read every event exactly once, and
        # resumed every partition once stage 2 had caught up.
        assert metric(text, "streamguard_partition_pauses_total") > 0, worker.log_tail()
        assert metric(text, 'streamguard_events_total{kind="prediction"}') == events
        assert metric(text, "streamguard_duplicate_halves_total") == 0
        assert metric(text, "streamguard_paused_partitions") == 0
    finally:
        worker.stop()
