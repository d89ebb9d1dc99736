"""Overload: buffers stay within their limits, lag is exported, health says what is dropped."""

import time
from pathlib import Path

import pytest

from streamguard.broker import EmbeddedBroker
from streamguard.sim import TrafficGenerator
from streamguard.testing import WorkerProcess, envelopes, rss_bytes
from tests.faults.helpers import PARTITIONS, Message, produce_behind, samples

pytestmark = [pytest.mark.faults, pytest.mark.integration, pytest.mark.slow]

MAX_PENDING = 500
POLICY = f"""
[defaults]
max_pending = {MAX_PENDING}
pair_ttl_s = 600
[defaults.guards.canary]
max_exposures = 500
outcome_join_s = 600
"""
LAG = "streamguard_consumer_lag_messages"


def rss_mb(pid: int, field: str = "VmRSS") -> float:
    return rss_bytes(pid, field) / 2**20


def test_a_shadow_outage_under_load_is_bounded_and_reported(
    broker_with_topics: EmbeddedBroker, tmp_path: Path
) -> None:
    policy = tmp_path / "policy.toml"
    policy.write_text(POLICY)
    start = float(int(time.time()) - 3600)
    # A few seconds with a shadow, then 150 s where only primaries arrive: every primary waits
    # for a partner that never comes.
    with_shadow = list(TrafficGenerator(rate=400, seed=1, start_ts=start).seconds(5))
    outage = list(
        TrafficGenerator(rate=2000, seed=2, start_ts=start + 5, shadow=False).seconds(150)
    )
    # One envelope per partition and second, as the emitter sends them.
    messages: list[Message] = [
        m for events in with_shadow + outage for m in envelopes(events, PARTITIONS)
    ]
    outage_primaries = sum(len(events) for events in outage)
    first_halves = sum(len(events) for events in with_shadow)
    per_partition = {p: sum(m[0] == p for m in messages) for p in range(PARTITIONS)}
    deployments = {e["deployment"] for events in outage for e in events}
    worker = WorkerProcess(
        broker_with_topics.url, tmp_path / "w.log", extra_args=["--policy", str(policy)]
    ).start()
    try:
        worker.wait_ready(sources=8)
        # Events certainly arrive faster than they are processed: the worker resumes behind.
        produce_behind(broker_with_topics, worker, messages)
        peak = dict.fromkeys(map(str, range(PARTITIONS)), 0.0)
        lag: dict[str, float] = {}
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            lag = samples(worker.metrics(), LAG, "partition")
            for partition, value in lag.items():
                peak[partition] = max(peak[partition], value)
            if len(lag) == PARTITIONS and not any(lag.values()) and any(peak.values()):
                break
            time.sleep(0.25)
        # Behind: the backlog was exported as lag, in messages, never beyond what was written.
        assert any(peak.values()), "no positive consumer lag was ever exported"
        assert all(peak[str(p)] <= per_partition[p] for p in range(PARTITIONS)), peak
        # Caught up: every owned partition exports a lag of exactly zero.
        assert lag == dict.fromkeys(map(str, range(PARTITIONS)), 0.0), lag
        health = worker.health() or {}
        assert health.get("status") == "degraded", health
        assert "pairing" in health["dropping"]
        # The buffer sits at its cap: max_pending halves per partition and deployment wait.
        assert health["pending_halves"] == MAX_PENDING * PARTITIONS * len(deployments)
        # Every outage primary was evicted unless it is still waiting (none could pair or
        # expire: the ttl is longer than the run); only halves of the first seconds add to it.
        evicted = samples(worker.metrics(), "streamguard_evicted_total", "buffer")
        waiting = health["pending_halves"]
        assert outage_primaries - waiting <= evicted["pairing"] <= outage_primaries + first_halves
        assert worker.process is not None
        assert rss_mb(worker.process.pid, "VmHWM") < 600  # the peak, not just the end
    finally:
        worker.stop()
