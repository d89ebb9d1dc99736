"""``streamguard demo``: the whole system on one machine, in about a minute.

1. starts the embedded broker (Tansu) and creates the topics;
2. starts a worker process;
3. a simulated serving fleet emits primary and shadow predictions through the client library's
   batching emitter, in accelerated event time; from minute 2.5 the shadow model deviates for
   Android users in the EU on the free tier only;
4. a serving-side subscriber (the client library's ControlSubscriber) receives the command;
5. a live per-slice table shows what the shadow guard sees.

It exits 0 when the subscriber received a command naming the injected slice, 1 otherwise.
Everything it started is stopped by pid.
"""

import argparse
import asyncio
import contextlib
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

__all__ = ["register"]

TARGET = {"platform": "android", "region": "eu", "tier": "free"}


def register(sub: Any) -> None:
    """Add the ``demo`` command."""
    parser = sub.add_parser("demo", help="broker + worker + simulated fleet + subscriber, live")
    parser.add_argument("--rate", type=float, default=300.0, help="requests per simulated second")
    parser.add_argument("--minutes", type=float, default=7.0, help="simulated minutes of traffic")
    parser.add_argument(
        "--speed", type=float, default=30.0, help="simulated seconds per real second"
    )
    parser.add_argument("--shift", type=float, default=0.08, help="shadow score shift in the slice")
    parser.add_argument("--seed", type=int, default=7)
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    """Run the demo; see the module docstring."""
    if args.rate <= 0 or args.minutes <= 0 or args.speed <= 0:
        from streamguard.cli.errors import fail

        fail("--rate, --minutes and --speed must be positive", 2)
    return asyncio.run(_demo(args))


def _say(text: str) -> None:
    print(text, flush=True)


async def _demo(args: argparse.Namespace) -> int:
    from streamguard.broker import EmbeddedBroker
    from streamguard.broker.admin import apply_topics
    from streamguard.security import KeyRing, generate_key, save_signing_key
    from streamguard.settings import EMBEDDED_SESSION_TIMEOUT_S, SESSION_TIMEOUT_ENV
    from streamguard.testing import WorkerProcess

    workdir = Path(tempfile.mkdtemp(prefix="streamguard-demo-"))
    # A throw-away key: the demo's commands are signed and its subscriber verifies them.
    key = generate_key("streamguard-demo")
    key_file = workdir / "signing-key.json"
    save_signing_key(key, key_file)
    broker = EmbeddedBroker(log_path=workdir / "broker.log").start()
    worker = None
    try:
        _say(f"[demo] embedded broker (Tansu) at {broker.url}, pid {broker.pid}")
        await apply_topics(broker.bootstrap)
        _say("[demo] topics created from topics/*.toml")
        # Joins ~3 s sooner on the embedded broker (see EMBEDDED_SESSION_TIMEOUT_S).
        session = os.environ.get(SESSION_TIMEOUT_ENV, str(EMBEDDED_SESSION_TIMEOUT_S))
        worker = WorkerProcess(
            broker.url,
            workdir / "worker.log",
            env={SESSION_TIMEOUT_ENV: session},
            signing_key=key_file,
        ).start()
        _say(
            f"[demo] worker started, pid {worker.pid}, signing with key {key.key_id}; waiting "
            "for it to join its consumer group..."
        )
        started = time.monotonic()
        await asyncio.to_thread(worker.wait_ready, 120.0, 8)
        _say(
            f"[demo] worker ready after {time.monotonic() - started:.1f}s; metrics at "
            f"http://127.0.0.1:{worker.web_port}/metrics"
        )
        return await _run_traffic(args, broker.bootstrap, worker, KeyRing([key.verifying_key()]))
    finally:
        if worker is not None:
            code = worker.stop()
            _say(f"[demo] worker stopped (exit {code}); logs in {workdir}")
        broker.stop()
        _say("[demo] broker stopped")


async def _run_traffic(args: argparse.Namespace, bootstrap: str, worker: Any, keyring: Any) -> int:
    from streamguard.client import ControlSubscriber, Emitter
    from streamguard.contracts import Command, load_topic_specs
    from streamguard.sim import ShadowDeviation, TrafficGenerator

    received: list[Command] = []
    got_command = asyncio.Event()

    async def serving_handler(command: Command) -> None:
        # What a serving fleet would do: stop shifting traffic to the candidate model.
        received.append(command)
        got_command.set()
        _say(
            f"\n[serving] received {command.action.upper()} for {command.deployment} "
            f"{command.model_version}, slice {command.slice}, command {command.command_id} "
            "(signature verified)"
        )

    start_ts = float(int(time.time()) // 10 * 10 - 3600)
    onset_s = 150.0
    deviation = ShadowDeviation(TARGET, after_s=onset_s, shift=args.shift)
    generator = TrafficGenerator(
        rate=args.rate, seed=args.seed, start_ts=start_ts, deviation=deviation
    )
    seconds = int(args.minutes * 60)
    _say(
        f"[demo] fleet: {args.rate:.0f} requests/s of event time, {seconds} s simulated at "
        f"{args.speed:.0f}x; shadow shifted by +{args.shift} for {TARGET} from t={onset_s:.0f}s"
    )
    verdicts_topic = load_topic_specs()["verdicts"].name
    subscriber = ControlSubscriber(
        bootstrap, serving_handler, group_id="demo-serving", keyring=keyring
    )
    table = asyncio.create_task(_live_table(bootstrap, verdicts_topic, received))
    emitted = 0
    async with subscriber, Emitter(bootstrap) as emitter:
        begin = time.monotonic()
        for second, events in enumerate(generator.seconds(seconds)):
            for event in events:
                await emitter.emit_wait(event)
            emitted += len(events)
            ahead = (second + 1) / args.speed - (time.monotonic() - begin)
            if ahead > 0:
                await asyncio.sleep(ahead)
        await emitter.flush()
        dropped = emitter.stats()["events_dropped"]
        _say(f"\n[demo] fleet done: {emitted} events emitted, {dropped} dropped")
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(got_command.wait(), 60)
        await asyncio.sleep(2.0)  # let the table catch the last verdicts
    table.cancel()
    await asyncio.gather(table, return_exceptions=True)
    return _summary(received, start_ts, onset_s, worker)


async def _live_table(bootstrap: str, topic: str, received: list[Any]) -> None:
    import orjson
    from aiokafka import AIOKafkaConsumer

    from streamguard.cli.table import render_verdict

    always = {",".join(f"{k}={TARGET[k]}" for k in sorted(TARGET))}
    consumer = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest")
    await consumer.start()
    tty = sys.stdout.isatty()
    printed: tuple[tuple[str, str], ...] | None = None
    latest = None
    try:
        while True:
            batches = await consumer.getmany(timeout_ms=500)
            fresh = [orjson.loads(m.value) for messages in batches.values() for m in messages]
            if not fresh:
                continue
            latest = fresh[-1]
            if tty:
                sys.stdout.write("\x1b[s\x1b[J" + render_verdict(latest, always=always) + "\x1b[u")
                sys.stdout.flush()
                continue
            # Without a terminal, print a snapshot only when the set of breaching slices changes.
            breaching = tuple(
                sorted(
                    (s["slice"], s["state"])
                    for s in latest["slices"]
                    if s["state"] in ("pause", "rollback")
                )
            )
            if breaching != printed:
                printed = breaching
                _say("\n" + render_verdict(latest, always=always))
    except asyncio.CancelledError:
        if latest is not None and not tty:
            _say("\n" + render_verdict(latest, always=always))
    finally:
        await consumer.stop()


def _summary(received: list[Any], start_ts: float, onset_s: float, worker: Any) -> int:
    expected = ",".join(f"{k}={TARGET[k]}" for k in sorted(TARGET))
    _say("\n[demo] summary")
    if not received:
        _say("  no command received: FAILED")
        return 1
    for command in received:
        evidence = command.evidence
        detected = command.ts - start_ts
        onset = evidence.get("onset")
        onset_text = f"{onset - start_ts:.0f}s" if onset is not None else "not dated"
        _say(f"  {command.action} {command.deployment} {command.model_version}")
        _say(f"    slice {evidence['slice']}")
        _say(
            f"    {evidence['statistic']}={evidence['value']} >= {evidence['threshold']} "
            f"over n={evidence['n']} pairs, window ending t={detected:.0f}s"
        )
        _say(f"    shift injected at t={onset_s:.0f}s, onset dated at t={onset_text}")
    metrics = worker.metrics()
    pairs = [line for line in metrics.splitlines() if line.startswith("streamguard_pairs_total")]
    _say(f"  worker: {pairs[0] if pairs else 'no pairs metric'}")
    ok = any(c.evidence.get("slice") == expected for c in received)
    _say(f"  command names the injected slice: {'yes' if ok else 'NO'}")
    return 0 if ok else 1
