"""Each broker benchmark at a tiny size, checking the shape of its result (not its figures).

Benchmarks are not timed tests: these only keep them from rotting.
"""

from typing import Any

import pytest

from benchmarks import e2e, latency, memory, run, scaling

pytestmark = pytest.mark.integration


def renders(name: str, result: dict[str, Any]) -> None:
    assert result["benchmark"] == name
    assert set(result["environment"]) >= {"date", "commit", "cpus", "loadavg"}
    assert run.rows(name, result)


def test_e2e_measures_the_worker_and_the_bare_agent() -> None:
    result = e2e.measure(single_events=400, batch_events=4_000)
    assert result["bare_messages_per_s"] > 0
    assert result["worker_single_events_per_s"] > 0
    assert result["worker_batch_events_per_s"] > 0
    assert result["single_vs_bare"] > 0
    assert result["worker_columns_events_per_s"] > 0
    assert [r["mode"] for r in result["runs"]] == ["single", "batch", "columns"]
    assert [r["events"] for r in result["runs"]][1] == result["runs"][2]["events"]
    assert result["bare_cpu_us_per_message"] > 0  # the agent's CPU between its first and last
    assert all(r["bare_cpu_us_per_message"] > 0 for r in result["runs"])
    # the bare agent on the worker's fetch loop read every message too, in single mode only
    assert result["lean_bare_messages_per_s"] > 0
    assert result["single_vs_lean_bare"] > 0
    assert [r["lean_bare_messages_per_s"] is not None for r in result["runs"]] == [
        True,
        False,
        False,
    ]
    renders("e2e", result)


def test_latency_sees_verdicts_and_times_them() -> None:
    result = latency.measure(deployments=1, rate=20.0, seconds=40, speed=8.0, drain_s=8.0)
    assert result["events"] > 0
    assert result["verdict_latency_s"]["n"] > 0
    assert result["verdict_latency_s"]["p50"] is not None
    assert set(result["command_latency_s"]) == {"n", "p50", "p90", "p99", "max"}
    renders("latency", result)


def test_memory_reads_the_worker_rss() -> None:
    result = memory.measure(slices=(10,), rate=20.0, seconds=20, events_slices=10)
    (row,) = result["by_slices"]
    assert row["slices"] == 10
    assert row["rss_mb"] > 10
    assert row["rss_stage1_done_mb"] > 10
    assert row["drain_s"] >= 0  # stage 2 applied every partial before the reading
    assert result["by_events"]["after_4n_events"] > result["by_events"]["n_events"]
    renders("memory", result)


def test_scaling_runs_a_consumer_group() -> None:
    result = scaling.measure(workers=(1,), events=4_000)
    (one,) = result["runs"]
    assert one["workers"] == 1
    assert one["events_per_s"] > 0
    assert one["speedup"] == 1.0
    assert one["worker_cpu_s"] > 0  # the worker's CPU, read from /proc while it ran
    assert one["worker_cpu_us_per_event"] > 0
    renders("scaling", result)
