"""Named traffic scenarios: healthy fleets and one injected failure each.

Each scenario builds a :class:`~streamguard.sim.traffic.TrafficGenerator` for a rate, a
duration, a seed and a start time, and says what a guard should find: which guard, which slice
and from which moment (the *onset*, in seconds from the start). ``streamguard simulate`` writes
them to a broker or a file; tests and the evaluation replay them.

Parameters common to all scenarios: ``rate`` (requests per second of event time; a request
is one primary prediction plus, with a shadow, its shadow prediction), ``duration`` (seconds
of event time), ``seed``. The failure starts at a third of the duration, plus ``phase_s``
(0 by default; the evaluation draws it per seed so that no judge's analysis interval or window
grid lines up with the onset by construction).

======================  =====================================================================
scenario                what it simulates
======================  =====================================================================
healthy                 primary + shadow (noise 0.01), a 10 % stratified canary, outcomes
                        (CTR 8 %, 5 s later), 10 ranked items per request, 1 % errors
healthy-many-slices     the same with 4 platforms x 25 regions x 10 tiers = 1,000 slices
shadow-deviation        the shadow's scores shifted by +0.15 for Android free-tier requests
contaminated-canary     a 10 % canary routed only to iOS / North America requests
slice-regression        a 25 % canary whose click rate drops 40 % on the web platform only
popularity-loop         a 50 % canary whose item choice sharpens from Zipf 1.0 to 2.0
popularity-slice        the same loop on Android requests only (the other platforms' items
                        stay at Zipf 1.0)
schema-rollback         a canary whose requests moved to feature schema "2" (the primary only
                        ever got "1") and whose error rate then jumps tenfold: its rollback
                        would land on a model that never read schema "2"
cold-start              the fleet scales from 2 to 20 replicas and the load balancer routes
                        to new replicas during their 45 s load (about 800 ms per request)
healthy-scale-out       the same scale-out with new replicas taking traffic once ready
training-leakage        20 training examples per second next to healthy serving traffic; from
                        the onset they come from a backfill that computed ``engagement_7d``
                        through 5 days after the labels (share 20 %)
nondeterministic-env    one model version served in two environments (``env_fingerprint``
                        ``gpu=v100;numpy=1.23`` and ``gpu=a100;numpy=1.24``, half the traffic
                        each) and shadowed by itself in the A100 one; A100 scores drift +0.03
healthy-envs            the same fleet with identical outputs in both environments, the A100
                        pool serving 80 % of iOS and 10 % of Android requests (the mix differs
                        by slice, the outputs do not)
======================  =====================================================================
"""

import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, Protocol

from streamguard.sim.injections import (
    Canary,
    Environments,
    FeatureSchemas,
    Items,
    Replicas,
    ShadowDeviation,
)
from streamguard.sim.traffic import DEFAULT_SHARES, TrafficGenerator
from streamguard.sim.training import Backfill, WithTraining

__all__ = ["SCENARIOS", "Scenario", "Source", "build", "many_slices"]


class Source(Protocol):
    """What a scenario builds: events, one list per second of event time."""

    def seconds(self, count: int) -> Iterator[list[dict[str, Any]]]:
        """Events of the next ``count`` seconds, one list per second."""
        ...


@dataclass(frozen=True, slots=True)
class Scenario:
    """A named scenario: how to build its traffic and what should be found in it."""

    name: str
    summary: str
    make: Callable[[float, float, int, float, float], Source]  # rate, duration, seed, start, onset
    guard: str | None = None  # None: healthy, nothing should be found
    #: The slice a guard should name: "*" for the whole deployment; a trailing "*" after a
    #: key (``replica=*``) accepts any value of that key.
    slice: str | None = None
    onset_fraction: float = 1 / 3

    def names(self, label: str) -> bool:
        """Whether a finding's slice label is the one this scenario's failure is in."""
        if self.slice is None:
            return False
        if self.slice.endswith("=*"):
            return label.startswith(self.slice[:-1]) and "," not in label
        return label == self.slice

    def onset_s(self, duration: float, phase_s: float = 0.0) -> float | None:
        """Seconds from the start at which the failure begins (None when healthy).

        ``phase_s`` delays a later onset; a failure present from the start stays at 0.
        """
        return None if self.guard is None else self._change_at(duration, phase_s)

    def _change_at(self, duration: float, phase_s: float) -> float:
        # Healthy scenarios change too (healthy-scale-out scales out), with nothing to find.
        at = math.floor(duration * self.onset_fraction)
        return at + phase_s if at > 0 else 0.0

    def source(
        self, rate: float, duration: float, seed: int, start: float, *, phase_s: float = 0.0
    ) -> Source:
        """The scenario's traffic, its failure (or change) starting at :meth:`onset_s`."""
        return self.make(rate, duration, seed, start, self._change_at(duration, phase_s))


def many_slices() -> dict[str, dict[str, float]]:
    """Shares of 4 platforms x 25 regions x 10 tiers (1,000 full slices), unevenly spread."""
    platforms = {"ios": 0.4, "android": 0.45, "web": 0.1, "tv": 0.05}
    regions = {f"r{i:02d}": 1.0 / (i + 1) for i in range(25)}  # Zipf-like region sizes
    tiers = {f"t{i}": 1.0 / (i + 1) ** 0.5 for i in range(10)}
    return {"platform": platforms, "region": regions, "tier": tiers}


def _healthy(shares: dict[str, dict[str, float]]) -> Callable[..., TrafficGenerator]:
    def make(
        rate: float, duration: float, seed: int, start: float, onset: float
    ) -> TrafficGenerator:
        return TrafficGenerator(
            rate=rate,
            seed=seed,
            start_ts=start,
            shares=shares,
            canary=Canary(share=0.1),
            outcomes=True,
            error_rate=0.01,
            items=Items(),
        )

    return make


def _shadow_deviation(
    rate: float, duration: float, seed: int, start: float, onset: float
) -> TrafficGenerator:
    deviation = ShadowDeviation({"platform": "android", "tier": "free"}, after_s=onset, shift=0.15)
    return TrafficGenerator(rate=rate, seed=seed, start_ts=start, deviation=deviation)


def _contaminated(
    rate: float, duration: float, seed: int, start: float, onset: float
) -> TrafficGenerator:
    canary = Canary(share=0.1, only={"platform": "ios", "region": "na"})
    return TrafficGenerator(
        rate=rate, seed=seed, start_ts=start, shadow=False, outcomes=True, canary=canary
    )


def _slice_regression(
    rate: float, duration: float, seed: int, start: float, onset: float
) -> TrafficGenerator:
    canary = Canary(share=0.25, ctr={"platform=web": 0.6}, after_s=onset)
    return TrafficGenerator(
        rate=rate,
        seed=seed,
        start_ts=start,
        shadow=False,
        outcomes=True,
        error_rate=0.01,
        canary=canary,
    )


def _popularity(slice_: str | None) -> Callable[..., TrafficGenerator]:
    def make(
        rate: float, duration: float, seed: int, start: float, onset: float
    ) -> TrafficGenerator:
        items = Items(canary_exponent=2.0, after_s=onset, ramp_s=duration / 3, slice=slice_)
        return TrafficGenerator(
            rate=rate,
            seed=seed,
            start_ts=start,
            shadow=False,
            canary=Canary(share=0.5),
            items=items,
        )

    return make


def _schema_rollback(
    rate: float, duration: float, seed: int, start: float, onset: float
) -> TrafficGenerator:
    return TrafficGenerator(
        rate=rate,
        seed=seed,
        start_ts=start,
        shadow=False,
        outcomes=True,
        error_rate=0.01,
        canary=Canary(share=0.25, error={"*": 10.0}, after_s=onset),
        feature_schemas=FeatureSchemas(),
    )


def _scale_out(route_unready: bool) -> Callable[..., TrafficGenerator]:
    def make(
        rate: float, duration: float, seed: int, start: float, onset: float
    ) -> TrafficGenerator:
        replicas = Replicas(scale_at_s=onset, route_unready=route_unready)
        return TrafficGenerator(
            rate=rate, seed=seed, start_ts=start, shadow=False, replicas=replicas
        )

    return make


#: The environments of the non-determinism scenarios.
V100, A100 = "gpu=v100;numpy=1.23", "gpu=a100;numpy=1.24"


def _environments(offset: float, skewed: bool) -> Callable[..., TrafficGenerator]:
    def make(
        rate: float, duration: float, seed: int, start: float, onset: float
    ) -> TrafficGenerator:
        environments = Environments(
            fingerprints=(V100, A100),
            offsets=(0.0, offset),
            shadow_fingerprint=A100,
            after_s=onset,
            slice_shares={"platform=ios": (0.2, 0.8), "platform=android": (0.9, 0.1)}
            if skewed
            else {},
        )
        # The shadow runs the primary's own version without noise: the same model, another
        # environment, so any difference between the two is the environment's.
        return TrafficGenerator(
            rate=rate,
            seed=seed,
            start_ts=start,
            shadow_version="ranker-v41",
            shadow_noise=0.0,
            environments=environments,
        )

    return make


def _leakage(rate: float, duration: float, seed: int, start: float, onset: float) -> WithTraining:
    traffic = TrafficGenerator(rate=rate, seed=seed, start_ts=start)
    backfill = Backfill(("engagement_7d",), until_s=5 * 86400.0, share=0.2)
    return WithTraining(traffic, backfill, after_s=onset, seed=seed)


SCENARIOS: dict[str, Scenario] = {
    s.name: s
    for s in (
        Scenario("healthy", "healthy fleet: shadow, stratified canary", _healthy(DEFAULT_SHARES)),
        Scenario("healthy-many-slices", "healthy fleet over 1,000 slices", _healthy(many_slices())),
        Scenario(
            "shadow-deviation",
            "shadow deviates in Android free tier",
            _shadow_deviation,
            guard="shadow",
            slice="platform=android,tier=free",
        ),
        Scenario(
            "contaminated-canary",
            "canary routed only to iOS / North America",
            _contaminated,
            guard="stratification",
            slice="*",
            onset_fraction=0.0,
        ),
        Scenario(
            "slice-regression",
            "canary 40 % worse on web only",
            _slice_regression,
            guard="canary",
            slice="platform=web",
        ),
        Scenario(
            "popularity-loop",
            "canary concentrates exposure on popular items",
            _popularity(None),
            guard="popularity",
            slice="*",
        ),
        Scenario(
            "popularity-slice",
            "canary concentrates exposure on popular items for Android users only",
            _popularity("platform=android"),
            guard="popularity",
            slice="platform=android",
        ),
        Scenario(
            "schema-rollback",
            "canary errors jump after serving moved it to a new request schema",
            _schema_rollback,
            guard="canary",
            slice="*",
        ),
        Scenario(
            "cold-start",
            "scale-out routes requests to replicas still loading",
            _scale_out(route_unready=True),
            guard="cold_start",
            slice="replica=*",
        ),
        Scenario("healthy-scale-out", "scale-out to replicas once ready", _scale_out(False)),
        Scenario(
            "training-leakage",
            "a training backfill looks 5 days ahead of its labels",
            _leakage,
            guard="leakage",
            slice="*",
        ),
        Scenario(
            "nondeterministic-env",
            "A100 scores drift +0.03 from V100 scores of the same model version",
            _environments(0.03, skewed=False),
            guard="determinism",
            slice="*",
        ),
        Scenario(
            "healthy-envs",
            "two environments, identical outputs, a fingerprint mix that differs by slice",
            _environments(0.0, skewed=True),
        ),
    )
}


def build(
    name: str, rate: float, duration: float, seed: int, start: float, *, phase_s: float = 0.0
) -> Source:
    """The generator of scenario ``name`` (see :meth:`Scenario.source`).

    Raises
    ------
    KeyError
        For an unknown scenario.
    """
    return SCENARIOS[name].source(rate, duration, seed, start, phase_s=phase_s)
