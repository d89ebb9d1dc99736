"""Simulated serving traffic: primary and shadow predictions per request, with injected faults.

Requests arrive at ``rate`` per second of event time. Each request belongs to a slice drawn from
the configured shares (platform x region x tier); the primary scores it from a Beta
distribution whose mean depends on the slice, and the shadow scores the same request with small
independent noise. A :class:`ShadowDeviation` shifts the shadow's scores in one slice from a
given moment on.

Examples
--------
>>> gen = TrafficGenerator(rate=100, seed=1, start_ts=1_790_000_000.0)
>>> events = next(gen.seconds(1))
>>> len(events), sorted({e["role"] for e in events})
(200, ['primary', 'shadow'])
"""

import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from itertools import product
from typing import Any

import numpy as np

__all__ = ["DEFAULT_SHARES", "ShadowDeviation", "TrafficGenerator"]

#: Slice dimension -> value -> share of traffic (roughly a consumer app's mix).
DEFAULT_SHARES: dict[str, dict[str, float]] = {
    "platform": {"ios": 0.42, "android": 0.46, "web": 0.12},
    "region": {"na": 0.38, "eu": 0.34, "apac": 0.28},
    "tier": {"free": 0.72, "premium": 0.28},
}


@dataclass(frozen=True, slots=True)
class ShadowDeviation:
    """From ``after_s`` seconds into the run, add ``shift`` to the shadow's scores in ``slice``.

    ``slice`` may fix any subset of dimensions (``{"platform": "android"}`` hits every Android
    request). The shifted score is clipped to [0, 1].
    """

    slice: dict[str, str]
    after_s: float
    shift: float = 0.2


@dataclass(slots=True)
class TrafficGenerator:
    """Deterministic (seeded) generator of prediction events, one list per second."""

    deployment: str = "home-ranker"
    primary_version: str = "ranker-v41"
    shadow_version: str = "ranker-v42"
    rate: float = 1000.0
    start_ts: float = 1_790_000_000.0
    seed: int = 0
    shadow_noise: float = 0.01
    shares: dict[str, dict[str, float]] = field(default_factory=lambda: DEFAULT_SHARES)
    deviation: ShadowDeviation | None = None
    _rng: np.random.Generator = field(init=False, repr=False)
    _slices: list[dict[str, str]] = field(init=False, repr=False)
    _weights: np.ndarray = field(init=False, repr=False)
    _next_id: int = field(init=False, default=0, repr=False)

    def __post_init__(self) -> None:
        self._rng = np.random.default_rng(self.seed)
        dims = sorted(self.shares)
        combos = list(product(*(sorted(self.shares[d]) for d in dims)))
        self._slices = [dict(zip(dims, combo, strict=True)) for combo in combos]
        weights = np.array(
            [
                math.prod(self.shares[d][v] for d, v in zip(dims, combo, strict=True))
                for combo in combos
            ]
        )
        self._weights = weights / weights.sum()

    @property
    def slices(self) -> list[dict[str, str]]:
        """Every full slice combination, in a fixed order."""
        return list(self._slices)

    def _deviates(self) -> np.ndarray:
        if self.deviation is None:
            return np.zeros(len(self._slices), dtype=bool)
        target = self.deviation.slice.items()
        return np.array([all(s.get(k) == v for k, v in target) for s in self._slices])

    def seconds(self, count: int) -> Iterator[list[dict[str, Any]]]:
        """Events of the next ``count`` seconds of event time, one list per second."""
        deviates = self._deviates()
        for _ in range(count):
            second = self._next_id
            yield self._second(second, deviates)
            self._next_id += 1

    def _second(self, second: int, deviates: np.ndarray) -> list[dict[str, Any]]:
        rng = self._rng
        n = int(rng.poisson(self.rate))
        base = self.start_ts + second
        ts = base + np.sort(rng.random(n))
        which = rng.choice(len(self._slices), size=n, p=self._weights)
        # Slice-dependent score level: different slices really behave differently.
        level = 1.5 + (which % 5) * 0.4
        primary = rng.beta(level, 4.0)
        shadow = np.clip(primary + rng.normal(0.0, self.shadow_noise, n), 0.0, 1.0)
        if self.deviation is not None and second >= self.deviation.after_s:
            hit = deviates[which]
            shadow = np.where(hit, np.clip(shadow + self.deviation.shift, 0.0, 1.0), shadow)
        latency = rng.lognormal(math.log(40.0), 0.3, n)
        events: list[dict[str, Any]] = []
        for i in range(n):
            request_id = f"req-{self.seed}-{second}-{i}"
            slice_ = self._slices[int(which[i])]
            t = round(float(ts[i]), 3)
            events.append(
                {
                    "schema_version": 1,
                    "kind": "prediction",
                    "event_id": f"{request_id}-p",
                    "request_id": request_id,
                    "ts": t,
                    "deployment": self.deployment,
                    "model_version": self.primary_version,
                    "role": "primary",
                    "slice": slice_,
                    "score": round(float(primary[i]), 6),
                    "latency_ms": round(float(latency[i]), 3),
                }
            )
            events.append(
                {
                    "schema_version": 1,
                    "kind": "prediction",
                    "event_id": f"{request_id}-s",
                    "request_id": request_id,
                    "ts": round(t + 0.02, 3),
                    "deployment": self.deployment,
                    "model_version": self.shadow_version,
                    "role": "shadow",
                    "slice": slice_,
                    "score": round(float(shadow[i]), 6),
                }
            )
        return events
