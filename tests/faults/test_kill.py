"""kill -9 of workers at random points, and workers joining and leaving mid-stream."""

import itertools
import random
import time
from pathlib import Path

import pytest

from streamguard.broker import EmbeddedBroker
from streamguard.testing import WorkerProcess
from tests.faults.helpers import (
    FAST_SNAPSHOTS,
    PARTITIONS,
    SPECS,
    check,
    replay,
    samples,
    shadow_scenario,
    wait_assigned,
)
from tests.integration.conftest import produce

pytestmark = [pytest.mark.faults, pytest.mark.integration, pytest.mark.slow]


@pytest.mark.parametrize("seed", [1])  # three kills per seed; more seeds cost a minute each
def test_kill_9_at_random_points_changes_nothing(
    broker_with_topics: EmbeddedBroker, tmp_path: Path, seed: int
) -> None:
    rng = random.Random(seed)
    messages = shadow_scenario()
    expected, sizes = replay(messages)
    # Consecutive stretches of event time, cut at random points; envelopes go to every
    # partition, so each stretch touches all of them.
    cuts = sorted(rng.sample(range(len(messages) // 8, len(messages) * 7 // 8), 3))
    bounds = [0, *cuts, len(messages)]
    chunks = [messages[a:b] for a, b in itertools.pairwise(bounds)]
    worker = WorkerProcess(broker_with_topics.url, tmp_path / "w.log", env=FAST_SNAPSHOTS).start()
    worker.wait_ready(sources=8)
    for chunk in chunks[:-1]:
        produce(broker_with_topics.bootstrap, chunk, SPECS["predictions"].name)
        time.sleep(rng.uniform(0.5, 8.0))
        worker.kill()
        worker = WorkerProcess(
            broker_with_topics.url, tmp_path / "w.log", env=FAST_SNAPSHOTS
        ).start()
        worker.wait_ready(sources=8)
    produce(broker_with_topics.bootstrap, chunks[-1], SPECS["predictions"].name)
    try:
        check(broker_with_topics, expected, sizes, worker)
        # The last worker resumed every partition from what the killed ones stored (each chunk
        # reaches all partitions), rather than starting over or from the committed offsets only.
        restored = samples(worker.metrics(), "streamguard_restores_total", "stage")
        assert restored.get("stage1", 0) >= PARTITIONS, restored
    finally:
        worker.stop()


def test_workers_joining_and_leaving_mid_stream_change_nothing(
    broker_with_topics: EmbeddedBroker, tmp_path: Path
) -> None:
    messages = shadow_scenario()
    expected, sizes = replay(messages)
    third = len(messages) // 3
    first = WorkerProcess(broker_with_topics.url, tmp_path / "a.log", env=FAST_SNAPSHOTS).start()
    first.wait_ready(sources=8)
    produce(broker_with_topics.bootstrap, messages[:third], SPECS["predictions"].name)
    time.sleep(3)
    second = WorkerProcess(broker_with_topics.url, tmp_path / "b.log", env=FAST_SNAPSHOTS).start()
    wait_assigned([first, second])  # joined: the partitions are split
    produce(broker_with_topics.bootstrap, messages[third : 2 * third], SPECS["predictions"].name)
    time.sleep(3)
    first.stop()  # leaves: the second worker takes everything over
    second.wait_ready(sources=8)
    produce(broker_with_topics.bootstrap, messages[2 * third :], SPECS["predictions"].name)
    try:
        check(broker_with_topics, expected, sizes, second)
        # Half the partitions came from the first worker on joining, the rest when it left:
        # each one was handed over through a snapshot.
        restored = samples(second.metrics(), "streamguard_restores_total", "stage")
        assert restored.get("stage1", 0) >= PARTITIONS, restored
    finally:
        second.stop()
