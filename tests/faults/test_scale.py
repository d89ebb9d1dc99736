"""Several workers in one consumer group publish what one worker and replay publish."""

from pathlib import Path

import pytest

from streamguard.broker import EmbeddedBroker
from tests.faults.helpers import (
    SPECS,
    assert_one_id_per_decision,
    assert_same_commands,
    assert_same_statistics,
    judged_until,
    last_window,
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
    assert [c["action"] for c in expected] == ["pause", "rollback"]  # the scenario still bites
    running = start_workers(broker_with_topics, tmp_path, workers)
    try:
        produce(broker_with_topics.bootstrap, messages, SPECS["predictions"].name)
        commands = read(
            broker_with_topics,
            "control",
            120,
            until=lambda v: len({c["command_id"] for c in v}) >= len(expected),
        )
        # Until the worker judged replay's last window: every window replay judged is compared.
        verdicts = read(
            broker_with_topics,
            "verdicts",
            90,
            until=judged_until("shadow", last_window(sizes, "shadow")),
        )
    finally:
        for worker in running:
            worker.stop()
    assert_one_id_per_decision(commands)
    assert sorted({c["command_id"] for c in commands}) == sorted(c["command_id"] for c in expected)
    assert_same_commands(commands, expected)
    assert_same_statistics(
        window_sizes([v for v in verdicts if v["guard"] == "shadow"]),
        {k: v for k, v in sizes.items() if k[0] == "shadow"},
    )
