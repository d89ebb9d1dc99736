"""``streamguard simulate --scenario NAME``: realistic serving traffic with one injected failure.

Writes batch envelopes, routed as the client emitter routes them, to a file (one message
value per line, what ``streamguard replay`` reads) or, through the client library's batching
:class:`~streamguard.client.Emitter`, to the predictions topic of a broker. ``--realtime``
paces event time to the wall clock (for a live demo); otherwise it runs as fast as it can.
The scenarios and their parameters: :mod:`streamguard.sim.scenarios`.
"""

import argparse
import sys
import time
from pathlib import Path
from typing import IO, Any

from streamguard.cli.errors import EXIT_CONFIG, EXIT_USAGE, fail

__all__ = ["register"]


def register(sub: Any) -> None:
    """Add the ``simulate`` command."""
    from streamguard.sim.scenarios import SCENARIOS

    names = ", ".join(SCENARIOS)
    parser = sub.add_parser("simulate", help="produce simulated serving traffic with a failure")
    parser.add_argument("--scenario", required=True, metavar="NAME", help=f"one of: {names}")
    parser.add_argument("--rate", type=float, default=1000.0, help="requests per second")
    parser.add_argument("--duration", type=float, default=600.0, help="seconds of event time")
    parser.add_argument("--seed", type=int, default=0, help="random seed (same seed, same data)")
    parser.add_argument(
        "--start-ts", type=float, default=None, help="event time of the first second (epoch s)"
    )
    target = parser.add_mutually_exclusive_group(required=True)
    target.add_argument("--broker", help="kafka://host:port: emit to the predictions topic")
    target.add_argument("--out", help="JSON-lines file of envelopes ('-' for stdout)")
    parser.add_argument("--realtime", action="store_true", help="pace event time to the wall clock")
    parser.add_argument(
        "--partitions", type=int, default=None, help="partitions to route to (default: topic)"
    )
    parser.set_defaults(handler=run)


def _check(args: argparse.Namespace) -> None:
    from streamguard.sim.scenarios import SCENARIOS

    if args.scenario not in SCENARIOS:
        fail(f"unknown scenario {args.scenario!r}; one of: {', '.join(SCENARIOS)}", EXIT_USAGE)
    if not args.rate > 0 or args.rate > 1e7:
        fail(f"--rate must be above 0 and at most 10,000,000, got {args.rate}", EXIT_USAGE)
    if not args.duration >= 1 or args.duration > 30 * 86400:
        fail(f"--duration must be 1 s to 30 days, got {args.duration}", EXIT_USAGE)
    if args.partitions is not None and not 1 <= args.partitions <= 10_000:
        fail(f"--partitions must be 1 to 10000, got {args.partitions}", EXIT_USAGE)


def run(args: argparse.Namespace) -> int:
    """Generate the scenario and write it; exit 0 when everything was written."""
    _check(args)
    from streamguard.contracts import load_topic_specs
    from streamguard.sim.scenarios import SCENARIOS

    stream: IO[bytes] | None = None
    if args.out is not None:
        try:  # before anything is printed: a bad path is one plain error line
            stream = sys.stdout.buffer if args.out == "-" else Path(args.out).open("wb")  # noqa: SIM115
        except OSError as exc:
            fail(f"cannot write {args.out}: {exc.strerror}", EXIT_CONFIG)
    scenario = SCENARIOS[args.scenario]
    duration = float(args.duration)
    start = args.start_ts
    if start is None:  # whole seconds, ending now: windows line up and nothing is in the future
        start = float(int(time.time()) - (0 if args.realtime else int(duration)))
    gen = scenario.source(args.rate, duration, args.seed, start)
    seconds = int(duration)
    onset = scenario.onset_s(duration)
    truth = f"{scenario.guard} in {scenario.slice} from +{onset:.0f} s" if onset is not None else ""
    print(
        f"streamguard simulate: {scenario.name} ({scenario.summary}); {seconds} s at "
        f"{args.rate:g} requests/s from ts {start:.0f}" + (f"; expect {truth}" if truth else ""),
        file=sys.stderr,
    )
    if stream is not None:
        specs = load_topic_specs()
        partitions = (
            args.partitions or specs["predictions"].partitions,
            specs["training_examples"].partitions,
        )
        return _to_file(gen, seconds, partitions, stream, realtime=args.realtime, start=start)
    import asyncio

    return asyncio.run(_to_broker(gen, seconds, args.broker, args.realtime, start))


def _pace(realtime: bool, start: float, second: int) -> float:
    """Seconds to wait so that event second ``second`` is not ahead of the wall clock."""
    return max(0.0, start + second - time.time()) if realtime else 0.0


def _to_file(
    gen: Any,
    seconds: int,
    partitions: tuple[int, int],
    stream: IO[bytes],
    *,
    realtime: bool,
    start: float,
) -> int:
    """Envelopes as the emitters route them: serving events by request, examples by pipeline."""
    from streamguard.contracts.partitioning import routed

    events = lines = 0
    try:
        for second, batch in enumerate(gen.seconds(seconds)):
            time.sleep(_pace(realtime, start, second))
            for _, _, value in routed(batch, *partitions):
                stream.write(value + b"\n")
                lines += 1
            events += len(batch)
            if realtime:
                stream.flush()
    finally:
        if stream is not sys.stdout.buffer:
            stream.close()
    print(f"wrote {events} events in {lines} envelopes", file=sys.stderr)
    return 0


async def _to_broker(gen: Any, seconds: int, broker: str, realtime: bool, start: float) -> int:
    import asyncio

    from streamguard.client import Emitter, EmitterError
    from streamguard.contracts.partitioning import is_training_example
    from streamguard.settings import bootstrap_servers

    servers = bootstrap_servers(broker)
    emitter = Emitter(servers)
    trainer = Emitter.for_training_examples(servers)  # started on the first training example
    try:
        await emitter.start()
    except EmitterError as exc:
        fail(f"cannot emit to {broker}: {exc}", EXIT_CONFIG)
    try:
        for second, batch in enumerate(gen.seconds(seconds)):
            await asyncio.sleep(_pace(realtime, start, second))
            for event in batch:
                if not is_training_example(event):
                    await emitter.emit_wait(event)
                    continue
                if trainer.n_partitions == 0:
                    await trainer.start()
                await trainer.emit_wait(event)
    finally:
        await emitter.stop()
        if trainer.n_partitions:
            await trainer.stop()
    sent = [e.stats() for e in (emitter, trainer) if e is emitter or e.n_partitions]
    dropped = sum(s["events_dropped"] for s in sent)
    print(
        f"sent {sum(s['events_sent'] for s in sent)} events in "
        f"{sum(s['envelopes_sent'] for s in sent)} envelopes; dropped {dropped}",
        file=sys.stderr,
    )
    return 0 if dropped == 0 else 1
