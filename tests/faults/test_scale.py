"""Several workers in one consumer group publish what one worker and replay publish."""

from pathlib import Path

import pytest

from streamguard.broker import EmbeddedBroker
from tests.faults.helpers import (
    SPECS,
    assert_one_id_per_decision,
    assert_same_statistics,
    read,
    replay,
    shadow_scenario,
    start_workers,
    window_sizes,
)
from tests.integration.conftest import produce

pytestmark = [pytest.mark.faults, pytest.mark.integration, pytest.mark.slow]


@pytest.mark.parametrize("workers", [2, 3])
def test_workers_in_one_group_equal_replay(
    broker_with_topics: EmbeddedBroker, tmp_path: Path, workers: int
) -> None:
    messages = shadow_scenario()
    expected, sizes = replay(messages)
    running = start_workers(broker_with_topics, tmp_path, workers)
    try:
        produce(broker_with_topics.bootstrap, messages, SPECS["predictions"].name)
        commands = read(
            broker_with_topics,
            "control",
            120,
            until=lambda v: len({c["command_id"] for c in v}) >= len(expected),
        )
        verdicts = read(broker_with_topics, "verdicts", 5)
    finally:
        for worker in running:
            worker.stop()
    assert_one_id_per_decision(commands)
    assert sorted({c["command_id"] for c in commands}) == sorted(c["command_id"] for c in expected)
    assert_same_statistics(
        window_sizes([v for v in verdicts if v["guard"] == "shadow"]),
        {k: v for k, v in sizes.items() if k[0] == "shadow"},
    )
