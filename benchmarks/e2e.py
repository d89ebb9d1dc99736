"""End-to-end throughput through the broker: one worker against a bare Faust agent.

    python -m benchmarks.e2e [--single-events 20000] [--batch-events 2400000] [--repeat 1]
                             [--no-columns] [--poll-s 0.5] [--json]

What is measured, per mode (``single``: one event per Kafka message; ``batch``: batch
envelopes of one partition and one second of traffic each, about 500 events, as
:class:`streamguard.client.Emitter` sends them):

1. a fresh embedded broker (Tansu) gets the topics, and simulated traffic (primary + shadow
   per request, 18 slices, :class:`streamguard.sim.TrafficGenerator`) is produced to the
   8-partition predictions topic *before* anything consumes it;
2. the bare agent (:mod:`benchmarks.bare_faust`: a faust-streaming app configured like the
   worker, whose agent only iterates the stream) reads all of it in its own consumer group.
   Its rate is (messages − 1) / (time of the last message − time of the first), timed inside
   the agent;
3. then one ``streamguard worker`` (stages 1–3, default policy, unsigned) reads the same
   messages. Its ``/metrics`` counter ``streamguard_events_total`` (events through stage 1) is
   polled every 0.5 s (``--poll-s``); the rate is the count difference over the time difference
   between the first and the last poll strictly between 0 and the total
   (:class:`benchmarks.common.Samples`). A scrape costs the worker 3-10 ms of its event loop
   (py-spy: at 0.2 s, 5 % of it on columnar batches), which the bare agent, timed inside,
   does not pay; polls only bound the run, so fewer of them lose no precision.
   Its flush, stage 2, stage 3 and snapshot work run in the same process and are included.

Batch runs are long enough for the worker's steady state: 2.4M events are 600 s of event time
at 4,000 events/s. In the first ``outcome_join_s`` (120 s) of event time no exposure matures,
and stage 2 judges few windows, so a worker reading 600k events (150 s) spent 4-5 µs per
event against 6-8 µs later in the same run (per-second rates of one 2.4M-event run, 11-24);
the results file had measured 600k-event runs until then.

Each side's CPU time over the same stretch is read too: the bare agent's
``time.process_time()`` at its first and last message, the worker's ``/proc/PID/stat`` at each
poll (between the first and the last interior poll, as for its rate; it includes the scrapes'
3-10 ms each). Per event (µs), these depend less than the rates on what else the machine runs:
on 11-24 the bare agent's rate halved from one day to the next while the worker's fell by a
quarter, which inflated every rate ratio.

Ratios (the figures that carry across machines), against the bare agent's messages per second
on one-event messages, i.e. what Faust alone delivers per event when every event is a message:

* ``single_vs_bare`` = worker events/s with one event per message / bare messages/s
  (issue 8's goal: ≥ 0.8);
* ``batch_vs_bare`` = worker events/s with batch envelopes / bare messages/s (goal: ≥ 20);
* ``columns_vs_bare``: the same batches sent as columnar batches (``prediction_columns``, what
  ``Emitter(columnar=True)`` sends), a third mode unless ``--no-columns``;
* ``*_vs_bare_cpu``: the same ratios by CPU, the bare agent's CPU µs per message over the
  worker's CPU µs per event (None when a run was too short for two interior polls);
* ``single_vs_lean_bare`` (and ``_cpu``): one event per message against the bare agent run on
  the worker's own fetch loop (``bare_faust --fetch-loop streamguard``), which skips the four
  asyncio tasks Faust's loop makes per message (:mod:`streamguard.faust_app.drain`). The
  goals are against Faust's own loop; this ratio says what the worker costs beyond the
  loop it runs on.

Each repetition starts from a fresh broker (the worker's state topic must be empty); with
``--repeat N`` the best of N is reported per figure, and every run is listed.
"""

import argparse
import contextlib
import json
import math
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks.common import (
    PREDICTIONS,
    ROOT,
    Message,
    Samples,
    as_columns,
    as_envelopes,
    as_singles,
    cpu_seconds,
    environment,
    past_start,
    poll_until,
    running_broker,
    traffic,
    worker_events,
)
from streamguard.broker import EmbeddedBroker
from streamguard.sim import TrafficGenerator
from streamguard.testing import WorkerProcess, produce

__all__ = ["main", "measure"]

SINGLE_RATE = 500.0  # requests/s of event time: ~1,000 events per second of traffic
BATCH_RATE = 2000.0  # ~4,000 events per second of traffic: envelopes of ~500 events


def _messages(mode: str, events: int, seed: int) -> tuple[list[Message], int]:
    """Messages of about ``events`` events of traffic, and the exact event count."""
    rate = SINGLE_RATE if mode == "single" else BATCH_RATE
    seconds = max(2, math.ceil(events / (2 * rate)))
    gen = TrafficGenerator(rate=rate, seed=seed, start_ts=past_start(seconds))
    per_second = traffic(gen, seconds)
    count = sum(len(s) for s in per_second)
    if mode == "single":
        return as_singles(per_second, PREDICTIONS.partitions), count
    batches = as_envelopes(per_second, PREDICTIONS.partitions)
    if mode == "columns":  # what Emitter(columnar=True) sends: the same events as columns
        batches = [(p, k, as_columns(value)) for p, k, value in batches]
    return batches, count


def _rounded(value: float | None) -> float | None:
    return None if value is None else round(value, 2)


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(process.pid, signal.SIGTERM)
        try:
            process.wait(20)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.kill(process.pid, signal.SIGKILL)
            process.wait(20)


def run_bare(
    broker: EmbeddedBroker,
    messages: int,
    workdir: Path,
    timeout_s: float,
    fetch_loop: str = "faust",
) -> tuple[float, float]:
    """Messages per second of the bare Faust agent over ``messages`` pre-produced messages,
    and its CPU µs per message over the same stretch (``fetch_loop``: Faust's own, or the
    worker's, :mod:`benchmarks.bare_faust`)."""
    out = workdir / "bare.json"
    out.unlink(missing_ok=True)
    args = [sys.executable, "-m", "benchmarks.bare_faust", "--broker", broker.url]
    args += ["--expect", str(messages), "--out", str(out), "--datadir", str(workdir / "bare-data")]
    # Each loop reads in its own consumer group (the agent commits what it read).
    args += ["--fetch-loop", fetch_loop, "--app-id", f"bench-bare-{fetch_loop}"]
    with open(workdir / "bare.log", "ab") as log:
        process = subprocess.Popen(args, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + timeout_s
        while not out.exists():
            if process.poll() is not None:
                raise RuntimeError(f"bare agent exited early; see {workdir / 'bare.log'}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"bare agent not done after {timeout_s}s")
            time.sleep(0.2)
        time.sleep(0.1)  # the file is written in one call; let it land
        result = json.loads(out.read_text())
    finally:
        _stop(process)
    n = result["messages"] - 1
    cpu_us = 1e6 * (result["cpu_last"] - result["cpu_first"]) / n
    return float(n / (result["last"] - result["first"])), cpu_us


def cpu_per_event(points: list[tuple[float, float]], target: float) -> float | None:
    """CPU µs per event between the first and the last (count, CPU seconds) poll strictly
    between 0 and ``target``: :meth:`benchmarks.common.Samples.rate` with CPU seconds for
    time (polls whose CPU could not be read left out); None without two such polls."""
    rate = Samples(target, [(cpu, c) for c, cpu in points if math.isfinite(cpu)]).rate()
    return None if rate is None else 1e6 / rate


def run_worker(
    broker: EmbeddedBroker, events: int, workdir: Path, timeout_s: float, poll_s: float = 0.5
) -> tuple[float, float | None]:
    """Events per second of one worker's stage 1 over ``events`` pre-produced events, and its
    CPU µs per event (None for runs too short to tell)."""
    worker = WorkerProcess(broker.url, workdir / "worker.log").start()
    points: list[tuple[float, float]] = []

    def read() -> float:
        count = worker_events([worker])
        points.append((count, cpu_seconds(worker.pid)))
        return count

    try:
        samples = poll_until(read, events, timeout_s, poll_s)
    finally:
        worker.stop()
    return samples.rate_or_bound(), cpu_per_event(points, events)


def measure(
    single_events: int = 20_000,
    batch_events: int = 2_400_000,
    repeat: int = 1,
    *,
    timeout_s: float = 300.0,
    columns: bool = True,
    poll_s: float = 0.5,
) -> dict[str, Any]:
    """Run the benchmark (see the module docstring); returns figures, ratios and runs."""
    env = environment()
    runs: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="bench-e2e-") as tmp:
        workdir = Path(tmp)
        for r in range(repeat):
            modes: tuple[tuple[str, int], ...] = (
                ("single", single_events),
                ("batch", batch_events),
            )
            modes += (("columns", batch_events),) if columns else ()
            for mode, events in modes:
                messages, count = _messages(mode, events, seed=r + 1)
                with running_broker(workdir / "broker.log") as broker:
                    produce(broker.bootstrap, messages, PREDICTIONS.name)
                    bare, bare_cpu = run_bare(broker, len(messages), workdir, timeout_s)
                    lean: tuple[float, float] | None = None
                    if mode == "single":
                        lean = run_bare(broker, len(messages), workdir, timeout_s, "streamguard")
                    worker, worker_cpu = run_worker(broker, count, workdir, timeout_s, poll_s)
                runs.append(
                    {
                        "mode": mode,
                        "messages": len(messages),
                        "events": count,
                        "bare_messages_per_s": round(bare),
                        "worker_events_per_s": round(worker),
                        "bare_cpu_us_per_message": _rounded(bare_cpu),
                        "worker_cpu_us_per_event": _rounded(worker_cpu),
                        "lean_bare_messages_per_s": round(lean[0]) if lean else None,
                        "lean_bare_cpu_us_per_message": _rounded(lean[1]) if lean else None,
                        "loadavg_after": [round(x, 2) for x in os.getloadavg()],
                    }
                )

    def best(mode: str, key: str) -> float:
        return max(float(run[key]) for run in runs if run["mode"] == mode)

    def least_cpu(mode: str, key: str) -> float | None:
        known = [float(run[key]) for run in runs if run["mode"] == mode and run[key] is not None]
        return min(known, default=None)

    bare_cpu = least_cpu("single", "bare_cpu_us_per_message")
    cpu = {m: least_cpu(m, "worker_cpu_us_per_event") for m in ("single", "batch", "columns")}

    def by_cpu(mode: str) -> float | None:
        worker_cpu = cpu[mode]
        if bare_cpu is None or not worker_cpu:
            return None
        return round(bare_cpu / worker_cpu, 3)

    bare = best("single", "bare_messages_per_s")
    lean = best("single", "lean_bare_messages_per_s")
    lean_cpu = least_cpu("single", "lean_bare_cpu_us_per_message")
    single = best("single", "worker_events_per_s")
    batch = best("batch", "worker_events_per_s")
    by_columns = best("columns", "worker_events_per_s") if columns else math.nan
    return {
        "benchmark": "e2e",
        "environment": env,
        "parameters": {
            "single_events": single_events,
            "batch_events": batch_events,
            "repeat": repeat,
            "poll_s": poll_s,
        },
        "bare_messages_per_s": round(bare),
        "bare_batch_messages_per_s": round(best("batch", "bare_messages_per_s")),
        "worker_single_events_per_s": round(single),
        "worker_batch_events_per_s": round(batch),
        "single_vs_bare": round(single / bare, 3),
        "batch_vs_bare": round(batch / bare, 2),
        "worker_columns_events_per_s": round(by_columns) if columns else None,
        "columns_vs_bare": round(by_columns / bare, 2) if columns else None,
        "bare_cpu_us_per_message": _rounded(bare_cpu),
        "worker_single_cpu_us_per_event": _rounded(cpu["single"]),
        "worker_batch_cpu_us_per_event": _rounded(cpu["batch"]),
        "worker_columns_cpu_us_per_event": _rounded(cpu["columns"]) if columns else None,
        "single_vs_bare_cpu": by_cpu("single"),
        "lean_bare_messages_per_s": round(lean),
        "lean_bare_cpu_us_per_message": _rounded(lean_cpu),
        "single_vs_lean_bare": round(single / lean, 3),
        "single_vs_lean_bare_cpu": (
            round(lean_cpu / cpu["single"], 3) if lean_cpu and cpu["single"] else None
        ),
        "batch_vs_bare_cpu": by_cpu("batch"),
        "columns_vs_bare_cpu": by_cpu("columns") if columns else None,
        "goals": {"single_vs_bare": 0.8, "batch_vs_bare": 20.0, "columns_vs_bare": 20.0},
        "runs": runs,
    }


def main() -> None:
    """Command line: prints the result (``--json``: as one JSON document)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--single-events", type=int, default=20_000)
    parser.add_argument("--batch-events", type=int, default=2_400_000)
    parser.add_argument("--repeat", type=int, default=1, help="best of N fresh runs")
    parser.add_argument("--json", action="store_true", help="print one JSON document")
    parser.add_argument(
        "--no-columns", action="store_true", help="skip the columnar batches (a third mode)"
    )
    parser.add_argument(
        "--poll-s", type=float, default=0.5, help="seconds between polls of the worker's count"
    )
    args = parser.parse_args()
    result = measure(
        args.single_events,
        args.batch_events,
        args.repeat,
        columns=not args.no_columns,
        poll_s=args.poll_s,
    )
    if args.json:
        print(json.dumps(result))
        return
    print(f"bare Faust agent, one event per message: {result['bare_messages_per_s']:,} msg/s")
    print(
        f"worker, one event per message: {result['worker_single_events_per_s']:,} events/s "
        f"({result['single_vs_bare']} x bare; goal >= 0.8)"
    )
    print(
        f"bare agent on the worker's fetch loop: {result['lean_bare_messages_per_s']:,} msg/s "
        f"(worker {result['single_vs_lean_bare']} x that)"
    )
    print(
        f"worker, batch envelopes: {result['worker_batch_events_per_s']:,} events/s "
        f"({result['batch_vs_bare']} x bare; goal >= 20)"
    )
    if result["columns_vs_bare"] is not None:
        print(
            f"worker, columnar batches: {result['worker_columns_events_per_s']:,} events/s "
            f"({result['columns_vs_bare']} x bare)"
        )
    print(
        f"CPU µs per message (bare) / per event (worker: one per message, batches, columns): "
        f"{result['bare_cpu_us_per_message']} / {result['worker_single_cpu_us_per_event']}, "
        f"{result['worker_batch_cpu_us_per_event']}, {result['worker_columns_cpu_us_per_event']}"
    )
    print(f"environment: {result['environment']}")


if __name__ == "__main__":
    main()
