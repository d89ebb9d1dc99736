"""An exception inside stage 1 stops the worker at once; the next worker changes nothing.

The exception is injected by ``tests/faults/inject/sitecustomize.py`` (on ``PYTHONPATH``):
into stage 1's accounting of a message, after part of it was counted, or into a flush, after
it took its partition's groups. Both leave stage 1's state half-changed. Faust would restart
the agent on that state (the message lost) or stop gracefully and checkpoint it; the worker
must exit instead (``streamguard.faust_app.halt``), and a worker started after it must give
replay's commands and statistics, as after ``kill -9``.
"""

from pathlib import Path

import pytest

from streamguard.broker import EmbeddedBroker
from streamguard.faust_app.halt import EXIT_STAGE_FAILED
from streamguard.testing import WorkerProcess
from tests.faults.helpers import (
    FAST_SNAPSHOTS,
    SPECS,
    check,
    raising,
    replay,
    shadow_scenario,
    wait_exit,
)
from tests.integration.conftest import produce

pytestmark = [pytest.mark.faults, pytest.mark.integration, pytest.mark.slow]


# feed:600: one deployment's predictions of a message in the first half of the traffic;
# flush:3: a partition's flush in the first round after that half arrived.
@pytest.mark.parametrize("where", ["feed:600", "flush:3"])
def test_a_stage_that_raises_stops_the_worker_and_the_next_one_changes_nothing(
    broker_with_topics: EmbeddedBroker, tmp_path: Path, where: str
) -> None:
    messages = shadow_scenario()
    expected, sizes = replay(messages)
    half = len(messages) // 2
    failing = WorkerProcess(
        broker_with_topics.url, tmp_path / "failing.log", env={**FAST_SNAPSHOTS, **raising(where)}
    ).start()
    try:
        failing.wait_ready(sources=8)
        produce(broker_with_topics.bootstrap, messages[:half], SPECS["predictions"].name)
        status, log = wait_exit(failing)
    finally:
        failing.stop()
    assert status == EXIT_STAGE_FAILED, f"exit status {status}; log:\n{log}"
    assert f"injected: {where}" in log
    assert "the worker stops now" in log

    worker = WorkerProcess(broker_with_topics.url, tmp_path / "w.log", env=FAST_SNAPSHOTS).start()
    try:
        worker.wait_ready(sources=8)
        produce(broker_with_topics.bootstrap, messages[half:], SPECS["predictions"].name)
        check(broker_with_topics, expected, sizes, worker)
    finally:
        worker.stop()
