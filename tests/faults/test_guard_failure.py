"""A guard that raises at every close: the worker stays up and the other guards judge on.

``tests/faults/inject/sitecustomize.py`` (on ``PYTHONPATH``, ``STREAMGUARD_TEST_RAISE_IN=
guard:canary``) makes the canary guard raise at every window close, after it judged. (The
traffic has no canary, so the guard has no state to lose: that stage 2 puts a failing guard's
state back is shown in ``tests/unit/core/test_guard_failure.py``; this test is the worker's
plumbing.) Before :mod:`streamguard.core.guard_failure`, the worker stopped with exit status 70
at the first close, and every restart at the same close: no guard judged anything. Now the
shadow guard's verdicts and commands must be replay's (of the same traffic, no bug), the canary
guard's verdicts error verdicts, on-call gets one critical notice, and the worker's metrics,
``/health`` and ``/status`` say which guard fails.
"""

import json
import urllib.request
from pathlib import Path

import pytest

from streamguard.broker import EmbeddedBroker
from streamguard.testing import WorkerProcess
from tests.faults.helpers import (
    FAST_SNAPSHOTS,
    SPECS,
    check,
    raising,
    read,
    replay,
    samples,
    shadow_scenario,
)
from tests.integration.conftest import produce

pytestmark = [pytest.mark.faults, pytest.mark.integration, pytest.mark.slow]


def test_a_guard_that_raises_at_every_close_leaves_the_others_judging(
    broker_with_topics: EmbeddedBroker, tmp_path: Path
) -> None:
    messages = shadow_scenario()
    expected, sizes = replay(messages)
    env = {**FAST_SNAPSHOTS, **raising("guard:canary")}
    worker = WorkerProcess(broker_with_topics.url, tmp_path / "w.log", env=env).start()
    try:
        worker.wait_ready(sources=8)
        produce(broker_with_topics.bootstrap, messages, SPECS["predictions"].name)
        check(broker_with_topics, expected, sizes, worker)  # the shadow guard, as replay
        verdicts = read(broker_with_topics, "verdicts", 30)
        alerts = read(broker_with_topics, "alerts", 30, until=lambda v: len(v) > len(expected))
        metrics = worker.metrics()
        health = worker.health() or {}
        url = f"http://127.0.0.1:{worker.web_port}/status/home-ranker/"
        with urllib.request.urlopen(url, timeout=5) as response:
            status = json.loads(response.read())
        log = worker.log_tail(2000)
        assert worker.process is not None
        running = worker.process.poll() is None
    finally:
        worker.stop()
    assert running, f"the worker stopped; log:\n{log}"
    errors = [v for v in verdicts if v["guard"] == "canary"]
    assert errors, "no verdict of the canary guard"
    assert all(v["status"] == "error" for v in errors)
    assert {v["error"]["message"] for v in errors} == {"injected: guard:canary"}
    assert len({v["window_end"] for v in errors}) == len(errors)  # one per close

    notices = [a for a in alerts if a["guard"] == "canary"]
    assert len(notices) == 1, notices
    assert notices[0]["severity"] == "critical"
    assert notices[0]["ts"] == min(v["window_end"] for v in errors)
    # Every other alert is a command's: the shadow guard's pause and rollback.
    assert sorted(a["command_id"] for a in alerts if a["guard"] != "canary") == sorted(
        c["command_id"] for c in expected
    )

    counted = samples(metrics, "streamguard_internal_errors_total", "stage")
    assert counted.get("guard_canary", 0) >= len(errors)
    assert health["status"] == "degraded"
    assert "guard" in health["dropping"]
    assert health["guard_failures"][-1]["guard"] == "canary"
    assert status["guard_errors"]["canary"]["message"] == "injected: guard:canary"
    assert log.count("guard canary failed on home-ranker at the window ending") == 1
    assert "guard canary failed again on home-ranker" in log
    assert "the worker stops now" not in log
