"""Engine throughput in-process, against orjson decoding the same bytes.

    python -m benchmarks.engine [--seconds 300] [--rate 2000] [--repeat 3] [--json FILE]
    python -m benchmarks.engine --singles [--seconds 30] [--rate 2000] [--repeat 3]

Generates simulated traffic (primary + shadow per request, 18 slices, one message per second
and partition, as the emitter sends them), in two encodings of the same events: row envelopes
(``{"schema_version": 1, "events": [...]}``) and columnar batches (``prediction_columns``).
For each it times, in the same process and run:

1. ``orjson.loads`` of every message (the floor: parsing alone),
2. :func:`streamguard.contracts.decode_message` (parsing + validation + columns),
3. the whole engine (:class:`streamguard.engine.Pipeline`: decode, pair, slice, window,
   guards, decisions).

With ``--singles`` it times the same traffic as one event per message instead: orjson alone,
the engine accounting runs of one-event messages (what the worker does), and the engine
decoding and accounting each message alone (``Pipeline(runs=False)``); the two engine runs
must give the same pairs and commands.

Times are CPU seconds of this process (``time.process_time``), best of ``--repeat``, so other
load on a shared machine disturbs them less than wall time. Ratios within one run are what to
compare across machines. *Paired events* are the predictions that completed a pair (two per
pair). :func:`measure` returns the result as a dict, for ``benchmarks.run``.
"""

import argparse
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson

from benchmarks.common import as_columns
from streamguard.contracts import decode_message
from streamguard.engine import Pipeline
from streamguard.policy import Policy
from streamguard.sim import ShadowDeviation, TrafficGenerator
from streamguard.testing import envelopes

__all__ = ["main", "measure"]

PARTITIONS = 8


def _messages(seconds: int, rate: float) -> tuple[list[bytes], list[bytes]]:
    """The same traffic as row envelopes and as columnar batches, one message per partition."""
    gen = TrafficGenerator(
        rate=rate,
        seed=1,
        start_ts=1_790_000_000.0,
        deviation=ShadowDeviation({"platform": "android"}, after_s=seconds / 2, shift=0.1),
    )
    rows = [v for events in gen.seconds(seconds) for _, _, v in envelopes(events, PARTITIONS)]
    return rows, [as_columns(m) for m in rows]


def _best(run: Callable[[], object], repeat: int) -> float:
    times = []
    for _ in range(repeat):
        start = time.process_time()
        run()
        times.append(time.process_time() - start)
    return min(times)


def _encoding(messages: list[bytes], events: int, repeat: int) -> dict[str, Any]:
    """Parse, decode and engine rates of one encoding of the traffic."""
    pairs: list[int] = []
    commands: list[int] = []

    def parse() -> None:
        for m in messages:
            orjson.loads(m)

    def decode() -> None:
        for m in messages:
            decode_message(m)

    def engine() -> None:
        pipeline = Pipeline(Policy(), partitions=PARTITIONS)
        for m in messages:
            pipeline.feed(m)
        commands[:] = [len(pipeline.finish())]
        pairs[:] = [pipeline.stats.pairs]

    t_parse, t_decode, t_engine = _best(parse, repeat), _best(decode, repeat), _best(engine, repeat)
    return {
        "messages": len(messages),
        "bytes": sum(map(len, messages)),
        "orjson_events_per_s": round(events / t_parse),
        "decode_events_per_s": round(events / t_decode),
        "engine_events_per_s": round(events / t_engine),
        "engine_pairs_per_s": round(pairs[0] / t_engine),
        "engine_paired_events_per_s": round(2 * pairs[0] / t_engine),
        "decode_vs_orjson": round(t_parse / t_decode, 3),
        "engine_vs_orjson": round(t_parse / t_engine, 3),
        "pairs": pairs[0],
        "commands": commands[0],
        "_t_parse": t_parse,
    }


def measure(seconds: int = 300, rate: float = 2000.0, repeat: int = 3) -> dict[str, Any]:
    """Row-envelope and columnar throughput of the same traffic, measured in one run.

    ``columns.engine_vs_row_orjson`` compares the engine on columns with orjson parsing the
    row envelopes of the same events (the issue's yardstick: the decode-only rate of the
    large file as rows).
    """
    rows, columns = _messages(seconds, rate)
    events = sum(len(orjson.loads(m)["events"]) for m in rows)
    by_rows = _encoding(rows, events, repeat)
    by_columns = _encoding(columns, events, repeat)
    row_parse = by_rows.pop("_t_parse")
    by_columns["engine_vs_row_orjson"] = round(
        row_parse / (events / by_columns["engine_events_per_s"]), 3
    )
    del by_columns["_t_parse"]
    return {
        "seconds": seconds,
        "rate": rate,
        "repeat": repeat,
        "events": events,
        "clock": "process_time",
        "rows": by_rows,
        "columns": by_columns,
    }


def measure_singles(seconds: int = 30, rate: float = 2000.0, repeat: int = 3) -> dict[str, Any]:
    """One event per message: runs against one message at a time, in the same run."""
    rows, _ = _messages(seconds, rate)
    singles = [orjson.dumps(e) for m in rows for e in orjson.loads(m)["events"]]
    outcome: dict[bool, tuple[int, int]] = {}

    def parse() -> None:
        for m in singles:
            orjson.loads(m)

    def engine(runs: bool) -> Callable[[], None]:
        def run() -> None:
            pipeline = Pipeline(Policy(), partitions=PARTITIONS, runs=runs)
            for m in singles:
                pipeline.feed(m)
            commands = len(pipeline.finish())  # first: it processes the runs still open
            outcome[runs] = (pipeline.stats.pairs, commands)

        return run

    t_parse = _best(parse, repeat)
    t_runs = _best(engine(True), repeat)
    t_alone = _best(engine(False), repeat)
    if outcome[True] != outcome[False]:  # pragma: no cover - the property tests forbid it
        raise RuntimeError(f"runs and one at a time differ: {outcome}")
    n = len(singles)
    return {
        "seconds": seconds,
        "rate": rate,
        "repeat": repeat,
        "messages": n,
        "clock": "process_time",
        "orjson_messages_per_s": round(n / t_parse),
        "runs_messages_per_s": round(n / t_runs),
        "alone_messages_per_s": round(n / t_alone),
        "runs_vs_alone": round(t_alone / t_runs, 2),
        "runs_vs_orjson": round(t_parse / t_runs, 3),
        "pairs": outcome[True][0],
        "commands": outcome[True][1],
    }


def main(argv: list[str] | None = None) -> None:
    """Command line: print the result (and write it with ``--json FILE``)."""
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--seconds", type=int, default=300)
    parser.add_argument("--rate", type=float, default=2000.0)
    parser.add_argument("--repeat", type=int, default=3, help="best of N for each measurement")
    parser.add_argument("--json", type=Path, help="also write the result to this file")
    parser.add_argument(
        "--singles", action="store_true", help="one event per message: runs vs one at a time"
    )
    args = parser.parse_args(argv)
    if args.singles:
        result = measure_singles(args.seconds, args.rate, args.repeat)
    else:
        result = measure(args.seconds, args.rate, args.repeat)
    text = json.dumps(result, indent=2)
    print(text)
    if args.json is not None:
        args.json.write_text(text + "\n")


if __name__ == "__main__":
    main()
