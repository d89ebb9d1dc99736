"""Throughput with 1, 2 and 3 workers in one consumer group, batch envelopes.

    python -m benchmarks.scaling [--workers 1,2,3] [--events 600000] [--json]

For each worker count: a fresh embedded broker, then that many ``streamguard worker``
processes in one consumer group (default policy, unsigned). Once every worker owns
predictions partitions, the 8 partitions are covered, and the assignment has held for 3 s,
simulated traffic (primary + shadow, 18 slices) is produced to the 8-partition predictions
topic in batch envelopes (one per partition and second of traffic, ~500 events each). The
workers' ``streamguard_events_total`` counters are polled every 0.2 s and summed; throughput
is the count difference over the time difference between the first and the last poll
strictly between 0 and the total (:class:`benchmarks.common.Samples`). The producer runs in
this process while the workers consume, so its time is reported too.

``speedup`` is each throughput over the one-worker throughput of the same run. Throughput
grows with the partitions only while there are cores: on a 2-core machine 3 workers, the broker
and the producer share 2 cores, so 3 workers cannot be faster than 2, and the result is
reported as measured.

So each run also reports the CPU time (``/proc/PID/stat``) the broker and the workers used
from the start of production to the last event counted, and the workers' CPU per event. When
the work divides between workers, CPU per event stays flat as workers are added, and
throughput then grows with the cores a deployment gives them; when it grows, the workers
repeat work (rebalancing, heartbeats to every stage-2 channel, state topic reads).
"""

import argparse
import json
import math
import os
import tempfile
import threading
import time
from functools import partial
from pathlib import Path
from typing import Any

from benchmarks.common import (
    PREDICTIONS,
    Message,
    as_envelopes,
    cpu_seconds,
    environment,
    past_start,
    poll_until,
    running_broker,
    traffic,
    worker_events,
)
from streamguard.sim import TrafficGenerator
from streamguard.testing import WorkerProcess, produce

__all__ = ["main", "measure", "wait_stable"]

RATE = 2000.0  # requests/s of event time: ~4,000 events per second of traffic


def _timed_produce(bootstrap: str, messages: list[Message], took: list[float]) -> None:
    started = time.monotonic()
    produce(bootstrap, messages, PREDICTIONS.name)
    took.append(time.monotonic() - started)


def _rounded(value: float) -> float | None:
    return None if math.isnan(value) else round(value, 2)


def wait_stable(workers: list[WorkerProcess], timeout_s: float, hold_s: float = 3.0) -> None:
    """Wait until every worker owns partitions, together all of them, unchanged for ``hold_s``.

    Raises
    ------
    TimeoutError
        If the group does not settle in ``timeout_s``.
    """
    deadline = time.monotonic() + timeout_s
    last: list[tuple[int, ...]] | None = None
    since = time.monotonic()
    while time.monotonic() < deadline:
        owned = [tuple((w.health() or {}).get("sources", [])) for w in workers]
        union = sorted(p for sources in owned for p in sources)
        complete = all(owned) and union == list(range(PREDICTIONS.partitions))
        if not complete or owned != last:
            last, since = owned, time.monotonic()
        elif time.monotonic() - since >= hold_s:
            return
        time.sleep(0.5)
    raise TimeoutError(f"consumer group not settled after {timeout_s}s: {last}")


def measure(
    workers: tuple[int, ...] = (1, 2, 3), events: int = 600_000, timeout_s: float = 600.0
) -> dict[str, Any]:
    """Run the benchmark (see the module docstring)."""
    env = environment()
    seconds = max(2, math.ceil(events / (2 * RATE)))
    runs: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="bench-scaling-") as tmp:
        workdir = Path(tmp)
        for count in workers:
            gen = TrafficGenerator(rate=RATE, seed=1, start_ts=past_start(seconds))
            per_second = traffic(gen, seconds)
            total = sum(len(s) for s in per_second)
            messages = as_envelopes(per_second, PREDICTIONS.partitions)
            with running_broker(workdir / "broker.log") as broker:
                group = [
                    WorkerProcess(broker.url, workdir / f"worker-{count}-{i}.log").start()
                    for i in range(count)
                ]
                try:
                    for worker in group:
                        worker.wait_ready(sources=1)
                    wait_stable(group, timeout_s=120)
                    pids = [broker.pid, *(w.pid for w in group)]
                    cpu_before = [cpu_seconds(pid) for pid in pids]
                    # Produced from a thread while the counters are polled from 0.
                    took: list[float] = []
                    producer = threading.Thread(
                        target=_timed_produce, args=(broker.bootstrap, messages, took)
                    )
                    producer.start()
                    samples = poll_until(partial(worker_events, group), total, timeout_s)
                    producer.join()
                    produce_s = took[0] if took else float("nan")
                    used = [cpu_seconds(pid) - t for pid, t in zip(pids, cpu_before, strict=True)]
                finally:
                    for worker in group:
                        worker.stop()
            rate = samples.rate_or_bound()
            # A process gone before the reading has no figure (None), never NaN in the JSON.
            cpu = {
                "broker_cpu_s": _rounded(used[0]),
                "worker_cpu_s": _rounded(sum(used[1:])),
                "worker_cpu_us_per_event": _rounded(1e6 * sum(used[1:]) / total),
            }
            runs.append(
                {
                    "workers": count,
                    "events": total,
                    "messages": len(messages),
                    "events_per_s": round(rate),
                    "produce_s": round(produce_s, 2),
                    # CPU from the start of production to the last event counted.
                    **cpu,
                    "loadavg_after": [round(x, 2) for x in os.getloadavg()],
                }
            )
    base = next((r["events_per_s"] for r in runs if r["workers"] == 1), None)
    for run in runs:
        run["speedup"] = round(run["events_per_s"] / base, 2) if base else None
    return {
        "benchmark": "scaling",
        "environment": env,
        "parameters": {"workers": list(workers), "events": events},
        "runs": runs,
    }


def main() -> None:
    """Command line: prints the result (``--json``: as one JSON document)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", default="1,2,3", help="comma-separated worker counts")
    parser.add_argument("--events", type=int, default=600_000)
    parser.add_argument("--json", action="store_true", help="print one JSON document")
    args = parser.parse_args()
    result = measure(tuple(int(x) for x in args.workers.split(",")), args.events)
    if args.json:
        print(json.dumps(result))
        return
    for run in result["runs"]:
        print(
            f"{run['workers']} worker(s): {run['events_per_s']} events/s "
            f"(x{run['speedup']}; produced in {run['produce_s']} s)"
        )
    print(f"environment: {result['environment']}")


if __name__ == "__main__":
    main()
