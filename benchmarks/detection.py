"""Detection delay and false commands of the shadow guard, by replay (event time).

    python -m benchmarks.detection [--seeds 3]

Simulated traffic at 300 requests/s, 18 full slices, 8 partitions; the shadow's scores in one
full slice (Android / EU / free, about 4.3 % of traffic) shift by ``shift`` from t=150 s, for
450 s in all. For each shift and seed it reports the first command: seconds of event time from
the injection to the end of the window that triggered it, the action and the slice named.
Shift 0 is healthy traffic: any command there is a false alarm.
"""

import argparse
import json

from streamguard.engine import Pipeline
from streamguard.policy import Policy
from streamguard.sim import ShadowDeviation, TrafficGenerator
from streamguard.testing import envelopes

TARGET = {"platform": "android", "region": "eu", "tier": "free"}
START = 1_790_000_000.0
ONSET = 150.0


def run(shift: float, seed: int) -> dict[str, object]:
    deviation = ShadowDeviation(TARGET, after_s=ONSET, shift=shift) if shift else None
    gen = TrafficGenerator(rate=300, seed=seed, start_ts=START, deviation=deviation)
    pipeline = Pipeline(Policy(), partitions=8)
    for events in gen.seconds(450):
        for _, _, value in envelopes(events, 8):
            pipeline.feed(value)
    commands = pipeline.finish()
    if not commands:
        return {"shift": shift, "seed": seed, "commands": 0}
    first = commands[0]
    return {
        "shift": shift,
        "seed": seed,
        "commands": len(commands),
        "first_action": first.action,
        "first_slice": first.evidence["slice"],
        "delay_s": first.ts - START - ONSET,
        "onset_dated_s": (first.evidence["onset"] or START) - START,
        "rollback_delay_s": next(
            (c.ts - START - ONSET for c in commands if c.action == "rollback"), None
        ),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=3)
    args = parser.parse_args()
    for shift in (0.0, 0.06, 0.08, 0.1, 0.15, 0.2):
        for seed in range(1, args.seeds + 1):
            print(json.dumps(run(shift, seed)), flush=True)


if __name__ == "__main__":
    main()
