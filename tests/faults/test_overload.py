"""Overload: buffers stay within their limits, lag is exported, health says what is dropped."""

import time
from pathlib import Path

import pytest

from streamguard.broker import EmbeddedBroker
from streamguard.sim import TrafficGenerator
from streamguard.testing import WorkerProcess, envelopes, rss_bytes
from tests.faults.helpers import PARTITIONS, SPECS
from tests.integration.conftest import produce

pytestmark = [pytest.mark.faults, pytest.mark.integration, pytest.mark.slow]

POLICY = """
[defaults]
max_pending = 500
pair_ttl_s = 600
[defaults.guards.canary]
max_exposures = 500
outcome_join_s = 600
"""


def rss_mb(pid: int) -> float:
    return rss_bytes(pid) / 2**20


def test_a_shadow_outage_under_load_is_bounded_and_reported(
    broker_with_topics: EmbeddedBroker, tmp_path: Path
) -> None:
    policy = tmp_path / "policy.toml"
    policy.write_text(POLICY)
    start = float(int(time.time()) - 3600)
    # A few seconds with a shadow, then 150 s where only primaries arrive: every primary waits
    # for a partner that never comes.
    with_shadow = TrafficGenerator(rate=400, seed=1, start_ts=start)
    outage = TrafficGenerator(rate=2000, seed=2, start_ts=start + 5, shadow=False)
    messages = [m for e in with_shadow.seconds(5) for m in envelopes(e, PARTITIONS)]
    messages += [m for e in outage.seconds(150) for m in envelopes(e, PARTITIONS)]
    worker = WorkerProcess(
        broker_with_topics.url, tmp_path / "w.log", extra_args=["--policy", str(policy)]
    ).start()
    try:
        worker.wait_ready(sources=8)
        produce(broker_with_topics.bootstrap, messages, SPECS["predictions"].name)
        deadline = time.monotonic() + 90
        health = {}
        while time.monotonic() < deadline:
            health = worker.health() or {}
            if "pairing" in health.get("dropping", []):
                break
            time.sleep(1)
        assert health.get("status") == "degraded"
        assert "pairing" in health["dropping"]
        # At most max_pending halves per partition wait, whatever the backlog.
        assert health["pending_halves"] <= 500 * PARTITIONS
        text = worker.metrics()
        assert 'streamguard_evicted_total{buffer="pairing"}' in text
        assert "streamguard_consumer_lag_messages" in text
        assert worker.process is not None
        assert rss_mb(worker.process.pid) < 600
    finally:
        worker.stop()
