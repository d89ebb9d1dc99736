"""The benchmarks' pure parts, and the engine benchmark at tiny size, so they cannot rot.

The broker benchmarks' smoke tests are in ``tests/integration/test_benchmarks.py``.
"""

import math
import os
import time
from pathlib import Path

import pytest

from benchmarks import e2e, latency, memory, run
from benchmarks.common import Samples, cpu_seconds, environment


def test_samples_rate_uses_only_the_polls_between_zero_and_the_target() -> None:
    samples = Samples(100, [(0.0, 0), (1.0, 10), (2.0, 30), (3.0, 50), (4.0, 100)])
    assert samples.rate() == pytest.approx(20.0)  # (50 - 10) / (3 - 1)
    assert samples.span_s() == 4.0
    short = Samples(100, [(0.0, 0), (0.5, 100)])
    assert short.rate() is None
    assert short.rate_or_bound() == pytest.approx(200.0)
    with pytest.raises(ValueError, match="no poll"):
        Samples(100, [(0.0, 100)]).rate_or_bound()


def test_two_polls_of_the_same_count_give_no_rate_but_a_bound() -> None:
    """A counter that moved in steps (runs counted at a flush) must not read as 0 events/s."""
    steps = Samples(100, [(0.0, 0), (1.0, 50), (2.0, 50), (3.0, 100)])
    assert steps.rate() is None
    assert steps.rate_or_bound() == pytest.approx(100 / 3)


def test_cpu_per_event_uses_the_polls_between_zero_and_the_target() -> None:
    # (count, CPU seconds): 2.0 s of CPU for 40 events between the interior polls
    points = [(0.0, 1.0), (10.0, 1.5), (30.0, 2.5), (50.0, 3.5), (100.0, 9.0)]
    assert e2e.cpu_per_event(points, 100) == pytest.approx(1e6 * 2.0 / 40)
    assert e2e.cpu_per_event([(0.0, 1.0), (50.0, 2.0), (100.0, 3.0)], 100) is None
    assert e2e.cpu_per_event([(10.0, math.nan), (50.0, 2.0), (90.0, 3.0)], 100) == 25_000


def test_cpu_seconds_reads_a_process_cpu_time_and_nan_for_no_process() -> None:
    before = cpu_seconds(os.getpid())
    deadline = time.process_time() + 0.3
    while time.process_time() < deadline:  # burn 0.3 s of CPU
        pass
    used = cpu_seconds(os.getpid()) - before
    assert 0.2 <= used <= 5.0  # clock ticks are 10 ms; other threads may add a little
    assert math.isnan(cpu_seconds(None))
    assert math.isnan(cpu_seconds(2**22 + 12345))  # above the kernel's pid_max default


def test_percentiles_are_nearest_rank() -> None:
    values = [float(i) for i in range(1, 101)]
    p = latency.percentiles(values)
    assert (p["n"], p["p50"], p["p90"], p["p99"], p["max"]) == (100, 50.0, 90.0, 99.0, 100.0)
    assert latency.percentiles([])["p99"] is None


def test_a_window_closes_when_the_last_partition_passes_it() -> None:
    timeline = latency._Timeline()
    for partition in range(8):
        timeline.add(partition, 100.0, 1.0 + partition)
        timeline.add(partition, 120.0, 20.0 + partition)
    assert timeline.close_time(100.0) == 8.0  # partition 7 got there last
    assert timeline.close_time(110.0) == 27.0
    assert timeline.close_time(121.0) is None  # not closed yet


def test_memory_shares_have_the_slice_counts_they_claim() -> None:
    for count in (10, 100, 1000):
        dims = memory.shares(count)
        assert math.prod(len(values) for values in dims.values()) == count


def memory_result(**by_events: object) -> dict[str, object]:
    step = {"rss_mb": 150.0, "peak_rss_mb": 220.0, "rss_stage1_done_mb": 200.0, "drain_s": 2.0}
    return {
        "by_slices": [{"slices": 1000, "events": 66_000, "idle_rss_mb": 81.0, **step}],
        "by_events": {
            "slices": 1000,
            "n_events": 66_000,
            "after_n": step,
            "after_4n_events": 264_000,
            "after_4n": {**step, "rss_mb": 156.0},
            "growth_4n_vs_n": 1.04,
            **by_events,
        },
    }


def test_memory_figures_show_every_step_of_equal_bursts_and_read_older_results() -> None:
    steps = memory_result(
        rss_mb_by_step=[150.0, 152.5, 155.0, 156.0],
        peak_rss_mb_by_step=[220.0, 221.0, 222.0, 223.0],
    )
    figures = {name: (value, goal, met) for name, value, goal, met in run.rows("memory", steps)}
    assert figures["… RSS after N / 2N / 3N / 4N (MB); peak so far (MB)"][0] == (
        "150.0 / 152.5 / 155.0 / 156.0; 220.0 / 221.0 / 222.0 / 223.0"
    )
    assert figures["RSS after 4N events ÷ after N"] == ("1.040", "≤ 1.10", True)
    older = {name for name, *_ in run.rows("memory", memory_result())}
    assert set(figures) - older == {"… RSS after N / 2N / 3N / 4N (MB); peak so far (MB)"}


def test_the_engine_benchmark_runs_and_its_figures_render(tmp_path: Path) -> None:
    result = run.BENCHMARKS["engine"].run({"seconds": 2, "rate": 100.0, "repeat": 1})
    assert result["events"] > 0
    assert result["rows"]["engine_events_per_s"] > 0
    assert result["columns"]["engine_events_per_s"] > 0
    figures = run.rows("engine", result)
    assert [name for name, _, goal, _ in figures if goal == "≥ 0.5"] == [
        "whole engine / orjson alone (rows)",
        "whole engine / orjson alone (columns)",
    ]
    text = run.render(
        {
            "benchmarks": {
                "engine": {
                    "command": "python -m benchmarks.engine",
                    "environment": environment(),
                    "result": result,
                    "seconds": 1,
                }
            }
        }
    )
    assert "| whole engine / orjson alone (rows) |" in text
    assert "load average" in text


def test_environment_names_the_machine_and_the_commit() -> None:
    env = environment()
    assert env["cpus"]
    assert len(env["loadavg"]) == 3
    assert env["commit"]
