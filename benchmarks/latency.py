"""Latency from the close of a window to its verdict and to the command it triggers, under load.

    python -m benchmarks.latency [--deployments 4] [--rate 200] [--seconds 240] [--speed 2] [--json]

Definitions (all wall-clock times are this process's ``time.time()``; the worker runs on the
same machine and clock):

* **a window closes** when the event-time watermark of *every* predictions partition has
  passed its end plus the allowed lateness (5 s by default): that is when stage 2 may judge
  it (docs/architecture.md, "Time"). Its *close time* is therefore the wall time at which the
  last of the 8 partitions received, from this benchmark's producer, its first message with an
  event time ≥ end + lateness: for each partition, the send time of that message; the close
  time is the latest of the 8. Messages are timestamped when handed to the producer (aiokafka,
  ``linger_ms`` 5), so the close time is slightly early and the latency slightly pessimistic;
* **verdict latency**: from the close time of the window to the moment this benchmark's
  consumer of the verdicts topic receives the verdict with that ``window_end`` (one sample
  per deployment, guard and window);
* **command latency**: from the close time of the window named by the command's ``ts`` (the
  end of the window whose verdict triggered it) to the moment this benchmark's consumer of
  the control topic receives it. The worker signs its commands (as in production), and the
  signature's ``iat`` is the worker's publish time, which splits the latency into
  close → published (``worker``) and published → received (``delivery``).

Both consumers fetch with ``fetch_max_wait_ms=50``, so receipt adds up to ~50 ms.
A partition's watermark reaches stage 2 only with the heartbeat of a flush: the worker flushes a
partition as soon as its watermark passes a window's close (``Stage1.closing``), so the latency
holds that flush rather than up to 0.5 s of waiting for the flush timer.

Load: ``--deployments`` deployments, each at ``--rate`` requests/s of event time (primary +
shadow: 2 events per request), produced in batch envelopes at ``--speed`` seconds of event
time per wall second, i.e. deployments × rate × 2 × speed events per wall second. Deployment
i's shadow shifts by +0.2 on ``platform=android`` (46 % of traffic) from t = 40 + 5·i s, so
pauses and rollbacks are spread over many window closes. The worker must keep up: if it does
not, latency grows with lag; the result reports the verdict latency of the first and the last
third of the run so that this shows.

Each deployment gets about 2 commands (a pause, then a rollback), so the command p99 rests on
few samples; the verdict latency (one sample per deployment and window) is the larger sample
of the same path minus stage 3. ``--deployments 20 --rate 50`` gives ~40 commands. Many
deployments cost the worker more than their events: every 0.5 s stage 1 settles and encodes
each (deployment, stream, window) group of each partition, stage 2 parses them, and stage 2's
snapshot holds every deployment's windows (README, "Benchmarks").
"""

import argparse
import asyncio
import bisect
import json
import os
import tempfile
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer  # noqa: TID251 - timed produce/consume

from benchmarks.common import (
    PREDICTIONS,
    SPECS,
    environment,
    past_start,
    running_broker,
)
from streamguard.policy import Policy
from streamguard.security import generate_key, save_signing_key
from streamguard.sim import ShadowDeviation, TrafficGenerator
from streamguard.testing import WorkerProcess, envelopes, metric

__all__ = ["main", "measure", "percentiles"]

SHIFTED = {"platform": "android"}


def percentiles(values: list[float]) -> dict[str, float | int | None]:
    """n, p50, p90, p99 and max of ``values`` (nearest-rank), in seconds rounded to ms."""
    if not values:
        return {"n": 0, "p50": None, "p90": None, "p99": None, "max": None}
    ordered = sorted(values)

    def rank(q: float) -> float:
        index = max(0, min(len(ordered) - 1, int(-(-q * len(ordered) // 1)) - 1))
        return round(ordered[index], 3)

    return {
        "n": len(ordered),
        "p50": rank(0.5),
        "p90": rank(0.9),
        "p99": rank(0.99),
        "max": round(ordered[-1], 3),
    }


def _traffic(
    deployments: int, rate: float, seconds: int, start: float
) -> list[list[tuple[int, bytes, bytes, float]]]:
    """Per second of event time: (partition, key, value, largest event time) envelopes."""
    gens = [
        TrafficGenerator(
            deployment=f"bench-{i:02d}",
            rate=rate,
            seed=i + 1,
            start_ts=start,
            deviation=ShadowDeviation(SHIFTED, after_s=40 + 5 * i, shift=0.2),
        )
        for i in range(deployments)
    ]
    streams = [g.seconds(seconds) for g in gens]
    out = []
    for _ in range(seconds):
        events = [e for s in streams for e in next(s)]
        second = []
        for partition, key, value in envelopes(events, PREDICTIONS.partitions):
            top = max(float(e["ts"]) for e in orjson.loads(value)["events"])
            second.append((partition, key, value, top))
        out.append(second)
    return out


class _Timeline:
    """When each partition first carried an event time ≥ t (send times, per partition)."""

    def __init__(self) -> None:
        self.sent: dict[int, tuple[list[float], list[float]]] = defaultdict(lambda: ([], []))

    def add(self, partition: int, top: float, wall: float) -> None:
        tops, walls = self.sent[partition]
        if not tops or top > tops[-1]:  # a running maximum: the watermark
            tops.append(top)
            walls.append(wall)

    def close_time(self, threshold: float) -> float | None:
        """Wall time at which every partition's watermark had reached ``threshold``."""
        latest = None
        for p in range(PREDICTIONS.partitions):
            tops, walls = self.sent.get(p, ([], []))
            i = bisect.bisect_left(tops, threshold)
            if i == len(tops):
                return None
            latest = walls[i] if latest is None else max(latest, walls[i])
        return latest


async def _consume(
    bootstrap: str, topic: str, into: list[tuple[float, Any]], stop: asyncio.Event
) -> None:
    consumer = AIOKafkaConsumer(
        topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest", fetch_max_wait_ms=50
    )
    await consumer.start()
    try:
        while not stop.is_set():
            batches = await consumer.getmany(timeout_ms=50)
            now = time.time()
            for messages in batches.values():
                into.extend((now, orjson.loads(m.value)) for m in messages)
    finally:
        await consumer.stop()


async def _drive(
    bootstrap: str,
    seconds: list[list[tuple[int, bytes, bytes, float]]],
    speed: float,
    drain_s: float,
) -> tuple[_Timeline, list[tuple[float, Any]], list[tuple[float, Any]], float]:
    timeline = _Timeline()
    verdicts: list[tuple[float, Any]] = []
    commands: list[tuple[float, Any]] = []
    stop = asyncio.Event()
    tasks = [
        asyncio.create_task(_consume(bootstrap, SPECS["verdicts"].name, verdicts, stop)),
        asyncio.create_task(_consume(bootstrap, SPECS["control"].name, commands, stop)),
    ]
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=5)
    await producer.start()
    behind = 0.0
    try:
        t0 = time.time()
        for k, second in enumerate(seconds):
            wait = t0 + k / speed - time.time()
            if wait > 0:
                await asyncio.sleep(wait)
            else:
                behind = max(behind, -wait)
            for partition, key, value, top in second:
                await producer.send(PREDICTIONS.name, value, key=key, partition=partition)
                timeline.add(partition, top, time.time())
        await producer.flush()
    finally:
        await producer.stop()
    await asyncio.sleep(drain_s)
    stop.set()
    await asyncio.gather(*tasks)
    return timeline, verdicts, commands, behind


def measure(
    deployments: int = 4,
    rate: float = 200.0,
    seconds: int = 240,
    speed: float = 2.0,
    drain_s: float = 15.0,
) -> dict[str, Any]:
    """Run the benchmark (see the module docstring)."""
    env = environment()
    lateness = Policy().defaults.allowed_lateness_s
    start = past_start(seconds)
    plan = _traffic(deployments, rate, seconds, start)
    events = sum(len(orjson.loads(v)["events"]) for second in plan for _, _, v, _ in second)
    with tempfile.TemporaryDirectory(prefix="bench-latency-") as tmp:
        workdir = Path(tmp)
        key = workdir / "signing-key.json"
        save_signing_key(generate_key("bench"), key)
        with running_broker(workdir / "broker.log") as broker:
            worker = WorkerProcess(broker.url, workdir / "worker.log", signing_key=key).start()
            try:
                worker.wait_ready(sources=PREDICTIONS.partitions)
                wall0 = time.time()
                timeline, verdicts, commands, behind = asyncio.run(
                    _drive(broker.bootstrap, plan, speed, drain_s)
                )
                produce_s = time.time() - wall0 - drain_s
                text = worker.metrics()
            finally:
                worker.stop()
    verdict_latency: list[tuple[float, float]] = []  # (close time, latency)
    for received, verdict in verdicts:
        closed = timeline.close_time(float(verdict["window_end"]) + lateness)
        if closed is not None:
            verdict_latency.append((closed, received - closed))
    command_latency, worker_part, delivery_part = [], [], []
    for received, command in commands:
        closed = timeline.close_time(float(command["ts"]) + lateness)
        if closed is None:
            continue
        command_latency.append(received - closed)
        issued = (command.get("signature") or {}).get("iat")
        if isinstance(issued, int | float):
            worker_part.append(issued - closed)
            delivery_part.append(received - issued)
    verdict_latency.sort()
    third = len(verdict_latency) // 3
    actions: dict[str, int] = defaultdict(int)
    for _, command in commands:
        actions[str(command.get("action"))] += 1
    commands_p = percentiles(command_latency)
    return {
        "benchmark": "latency",
        "environment": env,
        "parameters": {
            "deployments": deployments,
            "rate": rate,
            "seconds": seconds,
            "speed": speed,
            "lateness_s": lateness,
        },
        "events": events,
        "load_events_per_s": round(events / max(produce_s, 1e-9)),
        "producer_fell_behind_s": round(behind, 3),
        "verdict_latency_s": percentiles([lat for _, lat in verdict_latency]),
        "verdict_latency_first_third_s": percentiles([lat for _, lat in verdict_latency[:third]]),
        "verdict_latency_last_third_s": percentiles([lat for _, lat in verdict_latency[-third:]]),
        "command_latency_s": commands_p,
        "command_worker_part_s": percentiles(worker_part),
        "command_delivery_part_s": percentiles(delivery_part),
        "commands": dict(actions),
        # Snapshot and progress writes, each awaited in turn inside stage 1's flush.
        "worker_snapshot_writes": metric(text, "streamguard_snapshot_seconds_count"),
        "worker_snapshot_write_mean_s": round(
            metric(text, "streamguard_snapshot_seconds_sum")
            / max(1.0, metric(text, "streamguard_snapshot_seconds_count")),
            4,
        ),
        "goal_command_p99_s": 1.0,
        "loadavg_after": [round(x, 2) for x in os.getloadavg()],
    }


def main() -> None:
    """Command line: prints the result (``--json``: as one JSON document)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--deployments", type=int, default=4)
    parser.add_argument("--rate", type=float, default=200.0, help="requests/s per deployment")
    parser.add_argument("--seconds", type=int, default=240, help="seconds of event time")
    parser.add_argument("--speed", type=float, default=2.0, help="event seconds per wall second")
    parser.add_argument("--json", action="store_true", help="print one JSON document")
    args = parser.parse_args()
    result = measure(args.deployments, args.rate, args.seconds, args.speed)
    if args.json:
        print(json.dumps(result))
        return
    print(f"load: {result['load_events_per_s']:,} events/s ({result['events']:,} events)")
    print(f"verdict latency (s): {result['verdict_latency_s']}")
    print(f"command latency (s): {result['command_latency_s']} (goal p99 < 1 s)")
    print(f"  of which worker: {result['command_worker_part_s']}")
    print(f"  of which delivery: {result['command_delivery_part_s']}")
    print(f"commands: {result['commands']}")
    print(f"environment: {result['environment']}")


if __name__ == "__main__":
    main()
