"""Engine throughput in-process, against orjson decoding the same bytes.

    python -m benchmarks.engine [--seconds 300] [--rate 2000]

Generates simulated traffic (primary + shadow per request, 18 slices, batch envelopes of one
partition each, as the emitter sends them), then times, in the same process and run:

1. ``orjson.loads`` of every message (the floor: parsing alone),
2. :func:`streamguard.contracts.decode_message` (parsing + validation + columns),
3. the whole engine (:class:`streamguard.core.Pipeline`: decode, pair, slice, window, guards).

It prints events per second for each and the ratios, which are what to compare across machines.
"""

import argparse
import json
import time

import orjson

from streamguard.contracts import decode_message
from streamguard.engine import Pipeline
from streamguard.policy import Policy
from streamguard.sim import ShadowDeviation, TrafficGenerator
from streamguard.testing import envelopes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=int, default=300)
    parser.add_argument("--rate", type=float, default=2000.0)
    parser.add_argument("--repeat", type=int, default=3, help="best of N for each measurement")
    args = parser.parse_args()
    gen = TrafficGenerator(
        rate=args.rate,
        seed=1,
        start_ts=1_790_000_000.0,
        deviation=ShadowDeviation({"platform": "android"}, after_s=args.seconds / 2, shift=0.1),
    )
    messages = [v for events in gen.seconds(args.seconds) for _, _, v in envelopes(events, 8)]
    events = sum(len(orjson.loads(m)["events"]) for m in messages)

    def best(run) -> float:  # type: ignore[no-untyped-def]
        times = []
        for _ in range(args.repeat):
            start = time.perf_counter()
            run()
            times.append(time.perf_counter() - start)
        return min(times)

    def parse_only() -> None:
        for m in messages:
            orjson.loads(m)

    def decode_only() -> None:
        for m in messages:
            decode_message(m)

    commands: list[object] = []

    def engine() -> None:
        pipeline = Pipeline(Policy(), partitions=8)
        for m in messages:
            pipeline.feed(m)
        commands[:] = pipeline.finish()

    t_parse, t_decode, t_engine = best(parse_only), best(decode_only), best(engine)
    result = {
        "events": events,
        "messages": len(messages),
        "orjson_events_per_s": round(events / t_parse),
        "decode_events_per_s": round(events / t_decode),
        "engine_events_per_s": round(events / t_engine),
        "engine_pairs_per_s": round(events / 2 / t_engine),
        "decode_vs_orjson": round(t_parse / t_decode, 3),
        "engine_vs_orjson": round(t_parse / t_engine, 3),
        "commands": len(commands),
    }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
