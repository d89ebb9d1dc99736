"""Worker memory (resident set) against the number of slices and against the number of events.

    python -m benchmarks.memory [--slices 10,100,1000,10000] [--rate 100] [--json]

Measured on a real ``streamguard worker`` process (stages 1–3, default policy, unsigned) on
the embedded broker: its ``VmRSS`` (resident memory now) and ``VmHWM`` (peak resident memory
since it started) from ``/proc/PID/status``, read once the worker's stage 1 has processed
every event produced (``streamguard_events_total``), its stage 2 has applied every partial
(``streamguard_partials_total`` still for ``QUIET_S``, 5 s; ``drain_s`` says how long that
took after stage 1), and ``SETTLE_S`` (12) s more have passed for window closes and
snapshots, and for one heap trim (the worker returns freed heap to the OS at most every 10 s,
``streamguard/faust_app/heap.py``): ``rss_mb`` is what the worker keeps, ``peak_rss_mb`` what
processing the burst of events took, ``rss_stage1_done_mb`` the RSS when stage 1 was done
(with stage 2's backlog in memory: the partials stage 2 had not applied yet, and its open
windows).

* **Slices.** For each count, a fresh broker and worker get ``SECONDS`` (330) seconds of event
  time: long enough to fill the guards' 5-minute horizon (30 windows of 10 s) plus the allowed
  lateness, so the per-window tables the worker keeps are all there. Traffic is primary +
  shadow at ``--rate`` requests/s per deployment over uniformly shared full slices (platform ×
  region × tier: 2×5×1, 4×5×5, 4×25×10). A deployment holds at most 2,000 slices
  (``max_slices``), so 10,000 slices are 10 deployments of 1,000 each. The slice count is the
  number of *full* slice combinations; every event also counts in the coarser levels
  (``*``, ``platform=ios``, ``platform=ios,region=r03``, ...), 8 levels in all.
* **Events.** At 1,000 slices, one worker gets N events (330 s of event time), then N more
  three times (the same traffic on), each burst read and drained before the next: RSS after
  N, 2N, 3N and 4N events (``rss_mb_by_step``). Windows older than the horizon are dropped,
  so memory must not grow with events; ``growth_4n_vs_n`` is the ratio of 4N to N. Until
  2026-11-25 the 3N came as one burst, which peaked about twice as high as the first N
  (~385 MB against ~210 MB at 1,000 slices) and left part of that peak resident: the ratio
  then measured burst size as much as events (1.02-1.17 in five runs of the same code).

Issue 8's goal: 1,000 slices under 300 MB of resident memory.
"""

import argparse
import contextlib
import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks.common import (
    PREDICTIONS,
    as_envelopes,
    environment,
    past_start,
    poll_until,
    running_broker,
    worker_events,
)
from streamguard.sim import TrafficGenerator
from streamguard.testing import WorkerProcess, metric, produce, rss_bytes

__all__ = ["SECONDS", "SETTLE_S", "main", "measure", "shares"]

SECONDS = 330  # the 300 s horizon, the 5 s lateness, and a few windows more
SETTLE_S = 12.0  # after the last event: flushes, snapshots, and one heap trim (every 10 s)
QUIET_S = 5.0  # stage 2 has drained when its count of applied partials is still this long
_PARTIALS = "streamguard_partials_total"
_MB = 2**20
_SHAPES = {10: (2, 5, 1), 100: (4, 5, 5), 1000: (4, 25, 10)}


def shares(full_slices: int) -> dict[str, dict[str, float]]:
    """Uniform shares over ``full_slices`` (10, 100 or 1,000) platform × region × tier slices.

    Raises
    ------
    KeyError
        For another count (more than 1,000 slices are several deployments of 1,000).
    """
    platforms, regions, tiers = _SHAPES[full_slices]
    return {
        "platform": {f"p{i}": 1.0 for i in range(platforms)},
        "region": {f"r{i:02d}": 1.0 for i in range(regions)},
        "tier": {f"t{i}": 1.0 for i in range(tiers)},
    }


def _generators(slices: int, rate: float, start: float) -> list[TrafficGenerator]:
    deployments = max(1, slices // 1000)
    per_deployment = slices // deployments
    return [
        TrafficGenerator(
            deployment=f"bench-{d:02d}",
            rate=rate,
            seed=d + 1,
            start_ts=start,
            shares=shares(per_deployment),
        )
        for d in range(deployments)
    ]


def _feed(bootstrap: str, gens: list[TrafficGenerator], seconds: int) -> int:
    """Produce the generators' next ``seconds`` of traffic in envelopes; the event count."""
    streams = [g.seconds(seconds) for g in gens]
    per_second = [[e for s in streams for e in next(s)] for _ in range(seconds)]
    produce(bootstrap, as_envelopes(per_second, PREDICTIONS.partitions), PREDICTIONS.name)
    return sum(len(s) for s in per_second)


def _memory(worker: WorkerProcess) -> dict[str, float]:
    assert worker.pid is not None
    return {
        "rss_mb": round(rss_bytes(worker.pid) / _MB, 1),
        "peak_rss_mb": round(rss_bytes(worker.pid, "VmHWM") / _MB, 1),
    }


def _drain(worker: WorkerProcess, timeout_s: float) -> float:
    """Wait until stage 2 has applied every partial (its count still for ``QUIET_S``).

    Stage 1 reads a burst faster than stage 2 applies its partials; until stage 2 catches up,
    the worker holds the backlog (encoded partials, fetched partials, open windows), which is
    not what it keeps. Returns the seconds waited after stage 1 had counted every event.
    """
    started = time.monotonic()
    deadline = started + timeout_s
    last, still_since = -1.0, started
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError, ValueError):
            applied = metric(worker.metrics(), _PARTIALS)
            if applied != last:
                last, still_since = applied, time.monotonic()
            elif time.monotonic() - still_since >= QUIET_S:
                return round(still_since - started, 1)
        time.sleep(0.5)
    raise TimeoutError(f"stage 2 still applying partials after {timeout_s}s")


def _settled(worker: WorkerProcess, events: int, timeout_s: float) -> dict[str, float]:
    poll_until(lambda: worker_events([worker]), events, timeout_s, interval_s=0.5)
    at_stage1 = _memory(worker)
    drain_s = _drain(worker, timeout_s)
    time.sleep(SETTLE_S)
    return {**_memory(worker), "rss_stage1_done_mb": at_stage1["rss_mb"], "drain_s": drain_s}


def measure(
    slices: tuple[int, ...] = (10, 100, 1000, 10000),
    rate: float = 100.0,
    seconds: int = SECONDS,
    events_slices: int = 1000,
    timeout_s: float = 600.0,
) -> dict[str, Any]:
    """Run the benchmark (see the module docstring)."""
    env = environment()
    by_slices = []
    with tempfile.TemporaryDirectory(prefix="bench-memory-") as tmp:
        workdir = Path(tmp)
        for count in slices:
            start = past_start(seconds)
            with running_broker(workdir / "broker.log") as broker:
                worker = WorkerProcess(broker.url, workdir / f"worker-{count}.log").start()
                try:
                    worker.wait_ready(sources=PREDICTIONS.partitions)
                    idle = _memory(worker)
                    events = _feed(broker.bootstrap, _generators(count, rate, start), seconds)
                    loaded = _settled(worker, events, timeout_s)
                finally:
                    worker.stop()
            by_slices.append(
                {"slices": count, "events": events, "idle_rss_mb": idle["rss_mb"], **loaded}
            )
        # Events: N, then N more three times, at 1,000 slices, on one worker. Each N is one
        # burst, read and drained before the next: a 3N burst peaks higher than an N burst,
        # and part of a peak stays resident, which is burst size, not events.
        start = past_start(4 * seconds)
        gens = _generators(events_slices, rate, start)
        steps: list[dict[str, float]] = []
        totals: list[int] = []
        total = 0
        with running_broker(workdir / "broker.log") as broker:
            worker = WorkerProcess(broker.url, workdir / "worker-events.log").start()
            try:
                worker.wait_ready(sources=PREDICTIONS.partitions)
                for _ in range(4):
                    total += _feed(broker.bootstrap, gens, seconds)
                    totals.append(total)
                    steps.append(_settled(worker, total, timeout_s))
            finally:
                worker.stop()
        n, after_n, after_4n = totals[0], steps[0], steps[-1]
    at_1000 = next((r["rss_mb"] for r in by_slices if r["slices"] == 1000), None)
    return {
        "benchmark": "memory",
        "environment": env,
        "parameters": {
            "slices": list(slices),
            "rate": rate,
            "seconds": seconds,
            "events_slices": events_slices,
        },
        "by_slices": by_slices,
        "by_events": {
            "slices": events_slices,
            "n_events": n,
            "after_n": after_n,
            "after_4n_events": totals[-1],
            "after_4n": after_4n,
            "rss_mb_by_step": [step["rss_mb"] for step in steps],
            "peak_rss_mb_by_step": [step["peak_rss_mb"] for step in steps],
            "growth_4n_vs_n": round(after_4n["rss_mb"] / after_n["rss_mb"], 3),
        },
        "rss_mb_at_1000_slices": at_1000,
        "goal_rss_mb_at_1000_slices": 300,
        "loadavg_after": [round(x, 2) for x in os.getloadavg()],
    }


def main() -> None:
    """Command line: prints the result (``--json``: as one JSON document)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--slices", default="10,100,1000,10000", help="comma-separated counts")
    parser.add_argument("--rate", type=float, default=100.0, help="requests/s per deployment")
    parser.add_argument("--seconds", type=int, default=SECONDS, help="seconds of event time (N)")
    parser.add_argument("--json", action="store_true", help="print one JSON document")
    args = parser.parse_args()
    counts = tuple(int(x) for x in args.slices.split(","))
    result = measure(counts, args.rate, args.seconds)
    if args.json:
        print(json.dumps(result))
        return
    for row in result["by_slices"]:
        print(
            f"{row['slices']:>6} slices, {row['events']:>9,} events: RSS {row['rss_mb']} MB "
            f"(peak {row['peak_rss_mb']} MB; idle worker {row['idle_rss_mb']} MB)"
        )
    ev = result["by_events"]
    print(
        f"{ev['slices']:,} slices: RSS {ev['after_n']['rss_mb']} MB "
        f"after {ev['n_events']:,} events, "
        f"{ev['after_4n']['rss_mb']} MB after {ev['after_4n_events']:,} "
        f"(x{ev['growth_4n_vs_n']})"
    )
    print(f"environment: {result['environment']}")


if __name__ == "__main__":
    main()
