"""A restarted worker is alive but not ready until it has recovered, then judges in good time.

One run covers the probes and the latency histograms: worker A reads some traffic and stops
(storing its snapshots); more traffic arrives while no worker runs; worker B must restore A's
state and read that backlog before ``/ready`` says 200, while ``/live`` answers all along.
B then judges the backlog's windows, a shadow deviation among them, and exports how long its
windows took from their close to a verdict and to a command.
"""

import asyncio
import json
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from streamguard.broker import EmbeddedBroker
from streamguard.contracts import load_topic_specs
from streamguard.faust_app.metrics import Metrics
from streamguard.faust_app.state import StateStore
from streamguard.sim import ShadowDeviation, TrafficGenerator
from streamguard.testing import WorkerProcess, envelopes, metric, produce, read_topic

pytestmark = pytest.mark.integration

SPECS = load_topic_specs()
PREDICTIONS = SPECS["predictions"]
TARGET = {"platform": "android", "region": "eu", "tier": "free"}
Messages = list[tuple[int | None, bytes | None, bytes]]


def traffic(start: float, seconds: int, deviation: ShadowDeviation | None) -> Messages:
    gen = TrafficGenerator(rate=300, seed=7, start_ts=start, deviation=deviation)
    messages: Messages = []
    for events in gen.seconds(seconds):
        messages.extend(envelopes(events, PREDICTIONS.partitions))
    return messages


def get(worker: WorkerProcess, path: str) -> tuple[int, dict[str, Any]]:
    """Status and JSON document of a page; (0, {}) while the web server does not answer."""
    url = f"http://127.0.0.1:{worker.web_port}{path}"
    try:
        with urllib.request.urlopen(url, timeout=2.0) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())
    except OSError:
        return 0, {}


def wait_ready(worker: WorkerProcess, timeout_s: float) -> list[tuple[int, int, dict[str, Any]]]:
    """Poll /ready and /live until ready: every (ready status, live status, ready document)."""
    seen = []
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        ready, document = get(worker, "/ready")
        live, _ = get(worker, "/live")
        seen.append((ready, live, document))
        if ready == 200:
            return seen
        time.sleep(0.05)
    raise AssertionError(f"not ready after {timeout_s}s: {seen[-1]}\n{worker.log_tail()}")


def samples(text: str) -> dict[str, float]:
    """Every sample of a /metrics text by name and labels, ``name{k="v"}`` (sorted labels)."""
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            labels = ",".join(f'{k}="{v}"' for k, v in sorted(s.labels.items()))
            out[f"{s.name}{{{labels}}}" if labels else s.name] = s.value
    return out


def test_a_restarted_worker_is_ready_only_once_restored_and_caught_up(
    broker_with_topics: EmbeddedBroker, tmp_path: Path
) -> None:
    bootstrap = broker_with_topics.bootstrap
    start = float(int(time.time()) // 10 * 10 - 3600)
    produce(bootstrap, traffic(start, 30, None), PREDICTIONS.name)
    with WorkerProcess(broker_with_topics.url, tmp_path / "a.log") as first:
        wait_ready(first, 90)
        # Ready says restored and caught up, not that stage 2 has merged anything yet: wait for
        # it, so that its snapshots cover offsets (the stamps checked below).
        applied = 'streamguard_partials_total{result="applied"}'
        deadline = time.monotonic() + 60
        while metric(first.metrics(), applied) < 1 and time.monotonic() < deadline:
            time.sleep(0.2)
        # The traffic's last windows stay open until its partitions count as idle (30 s).
        while metric(first.metrics(), "streamguard_open_windows") < 1:
            assert time.monotonic() < deadline, first.log_tail()
            time.sleep(0.2)
        assert metric(first.metrics(), "streamguard_open_window_bytes") > 0
    # Stage 2's snapshots are stamped with the partial at their offset, and the log holds it;
    # stage 1's (payloads dropped once parsed) are checked against the log's end.
    inputs = {
        f"{stage}/{p}": (SPECS[role].name, p)
        for stage, role in (("stage1", "predictions"), ("stage2", "partials"))
        for p in range(SPECS[role].partitions)
    }
    metrics = Metrics()
    stored = asyncio.run(
        StateStore(bootstrap, SPECS["state"], None, metrics).load([*inputs], inputs)
    )
    assert set(stored) == set(inputs)
    covering = [stored[key] for key in inputs if key.startswith("stage2/")]
    covering = [snapshot for snapshot in covering if snapshot["offset"] >= 0]
    assert covering, stored
    assert all(len(snapshot.get("stamp", ())) == 2 for snapshot in covering), stored
    assert b"log_lost" not in metrics.exposition()
    # A stopped gracefully: its snapshots are stored. The backlog B must read before it is ready.
    backlog = traffic(start + 30, 400, ShadowDeviation(TARGET, after_s=120, shift=0.08))
    produce(bootstrap, backlog, PREDICTIONS.name)
    with WorkerProcess(broker_with_topics.url, tmp_path / "b.log") as second:
        seen = wait_ready(second, 120)
        at_ready = samples(second.metrics())
        recovering = [(live, doc) for ready, live, doc in seen if doc.get("status") == "recovering"]
        assert recovering, seen
        assert all(ready in {0, 503} for ready, _, _ in seen[:-1]), seen  # 0: not listening yet
        # Alive while not ready: Kubernetes keeps the pod and only holds traffic back.
        assert any(live == 200 for live, _ in recovering), recovering
        assert any(
            doc["partitions"]["stage1"]["caught_up"] < PREDICTIONS.partitions
            for _, doc in recovering
            if "partitions" in doc
        )
        final = seen[-1][2]
        assert final["status"] == "ready"
        assert final["reason"] == ""
        assert final["partitions"]["stage1"] == {
            "assigned": PREDICTIONS.partitions,
            "restored": PREDICTIONS.partitions,
            "caught_up": PREDICTIONS.partitions,
        }
        for stage, role in (("stage2", "partials"), ("stage3", "verdicts")):
            n = SPECS[role].partitions
            assert final["partitions"][stage] == {"assigned": n, "restored": n}
        # Ready means A's state was restored and the whole backlog read, not just "started".
        assert at_ready['streamguard_restores_total{stage="stage1"}'] >= 1
        assert at_ready["streamguard_messages_total"] >= len(backlog)

        control = asyncio.run(read_topic(bootstrap, SPECS["control"].name, 60, until=bool))
        assert [c["guard"] for c in control] == ["shadow"]
        deadline = time.monotonic() + 10  # the histogram is observed once the send is acked
        while time.monotonic() < deadline:
            after = samples(second.metrics())
            if after.get("streamguard_window_close_to_command_seconds_count", 0) >= 1:
                break
            time.sleep(0.2)
    verdicts = sum(v for k, v in after.items() if k.startswith("streamguard_verdicts_total"))
    to_verdict = "streamguard_window_close_to_verdict_seconds"
    assert 0 < after[f"{to_verdict}_count"] <= verdicts
    # Guards and one acknowledged send: well under a second each on this machine, and > 0.
    assert 0 < after[f"{to_verdict}_sum"] / after[f"{to_verdict}_count"] < 2.0
    assert after[f'{to_verdict}_bucket{{le="10.0"}}'] == after[f"{to_verdict}_count"]
    to_command = "streamguard_window_close_to_command_seconds"
    assert after[f"{to_command}_count"] == 1
    # Through the verdicts topic to stage 3 and the control topic: a few fetches at most.
    assert 0 < after[f"{to_command}_sum"] < 10.0
