"""Simulated serving traffic: primary, shadow and canary predictions, outcomes, injected faults.

Requests arrive at ``rate`` per second of event time. Each request belongs to a slice drawn from
the configured shares (platform x region x tier). It is served by the canary with the canary's
share, which may be restricted to some slices (a contaminated allocation), or by the primary,
whose predictions the shadow also scores when ``shadow`` is on. The primary scores from a Beta
distribution whose mean depends on the slice; the shadow scores the same request with small
independent noise. With ``outcomes`` on, a served request is clicked with a slice-dependent
probability and the outcome event arrives a few seconds later.

Faults, described in :mod:`streamguard.sim.injections`: :class:`ShadowDeviation` shifts the
shadow's scores in one slice from a given moment; :class:`ShadowOutage` makes the shadow time
out (no shadow prediction) or fail (``error: true``) for some of a slice's requests;
:class:`Canary` multiplies the canary's click, error or latency in given slices;
:class:`Replicas` scales the serving fleet up, with new replicas that may take traffic before
they are ready (a cold start); :class:`Environments` runs requests on several execution
environments whose scores may differ (non-determinism).

The generator is deterministic for a seed. Features that are off draw no random numbers, so
adding a feature never changes the traffic of existing scenarios.

Examples
--------
>>> gen = TrafficGenerator(rate=100, seed=1, start_ts=1_790_000_000.0)
>>> events = next(gen.seconds(1))
>>> len(events), sorted({e["role"] for e in events})
(200, ['primary', 'shadow'])
>>> gen = TrafficGenerator(rate=100, seed=1, shadow=False, outcomes=True, canary=Canary(share=0.5))
>>> roles = [e.get("role", e["kind"]) for s in gen.seconds(30) for e in s]
>>> sorted(set(roles))
['canary', 'outcome', 'primary']
"""

import heapq
import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from itertools import product
from typing import Any

import numpy as np

from streamguard.sim.injections import (
    Canary,
    Environments,
    FeatureSchemas,
    Items,
    Replicas,
    ShadowDeviation,
    ShadowOutage,
    matches,
)

__all__ = ["DEFAULT_SHARES", "TrafficGenerator"]

#: Slice dimension -> value -> share of traffic (roughly a consumer app's mix).
DEFAULT_SHARES: dict[str, dict[str, float]] = {
    "platform": {"ios": 0.42, "android": 0.46, "web": 0.12},
    "region": {"na": 0.38, "eu": 0.34, "apac": 0.28},
    "tier": {"free": 0.72, "premium": 0.28},
}


@dataclass(slots=True)
class TrafficGenerator:
    """Deterministic (seeded) generator of prediction and outcome events, one list per second."""

    deployment: str = "home-ranker"
    primary_version: str = "ranker-v41"
    shadow_version: str = "ranker-v42"
    rate: float = 1000.0
    start_ts: float = 1_790_000_000.0
    seed: int = 0
    shadow_noise: float = 0.01
    shares: dict[str, dict[str, float]] = field(default_factory=lambda: DEFAULT_SHARES)
    deviation: ShadowDeviation | None = None
    shadow: bool = True
    canary: Canary | None = None
    outcomes: bool = False
    base_ctr: float = 0.08
    outcome_delay_s: float = 5.0
    error_rate: float = 0.0
    items: Items | None = None
    feature_schemas: FeatureSchemas | None = None
    replicas: Replicas | None = None
    environments: Environments | None = None
    shadow_outage: ShadowOutage | None = None
    _rng: np.random.Generator = field(init=False, repr=False)
    _slices: list[dict[str, str]] = field(init=False, repr=False)
    _weights: np.ndarray = field(init=False, repr=False)
    _next_id: int = field(init=False, default=0, repr=False)
    _pending: list[tuple[float, int, dict[str, Any]]] = field(init=False, repr=False)
    _item_rng: np.random.Generator = field(init=False, repr=False)
    _replica_rng: np.random.Generator = field(init=False, repr=False)
    _env_rng: np.random.Generator = field(init=False, repr=False)
    _outage_rng: np.random.Generator = field(init=False, repr=False)

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
        self._pending = []
        self._item_rng = np.random.default_rng([self.seed, 4])
        self._replica_rng = np.random.default_rng([self.seed, 5])
        self._env_rng = np.random.default_rng([self.seed, 6])
        self._outage_rng = np.random.default_rng([self.seed, 7])

    @property
    def slices(self) -> list[dict[str, str]]:
        """Every full slice combination, in a fixed order."""
        return list(self._slices)

    def _mask(self, pattern: dict[str, str] | str | None) -> np.ndarray:
        if pattern is None:
            return np.ones(len(self._slices), dtype=bool)
        text = (
            pattern
            if isinstance(pattern, str)
            else ",".join(f"{k}={v}" for k, v in pattern.items())
        )
        return np.array([matches(s, text) for s in self._slices])

    def _multiplier(self, table: dict[str, float]) -> np.ndarray:
        out = np.ones(len(self._slices))
        for pattern, factor in table.items():
            out = np.where(self._mask(pattern), out * factor, out)
        return out

    def seconds(self, count: int) -> Iterator[list[dict[str, Any]]]:
        """Events of the next ``count`` seconds of event time, one list per second."""
        deviates = (
            self._mask(self.deviation.slice)
            if self.deviation
            else np.zeros(len(self._slices), bool)
        )
        for _ in range(count):
            second = self._next_id
            events = self._second(second, deviates)
            # Outcomes are emitted in the second their event time falls in.
            horizon = self.start_ts + second + 1
            while self._pending and self._pending[0][0] < horizon:
                events.append(heapq.heappop(self._pending)[2])
            yield events
            self._next_id += 1

    def _canary_served(self, which: np.ndarray) -> np.ndarray:
        canary = self.canary
        if canary is None:
            return np.zeros(len(which), dtype=bool)
        allowed = self._mask(canary.only)
        allowed_share = float(self._weights[allowed].sum())
        chance = min(1.0, canary.share / allowed_share) if allowed_share > 0 else 0.0
        served: np.ndarray = allowed[which] & (self._rng.random(len(which)) < chance)
        return served

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
        canary = self._canary_served(which)
        regressed = self.canary is not None and second >= self.canary.after_s
        if self.canary is not None and regressed and self.canary.latency:
            latency = np.where(
                canary, latency * self._multiplier(self.canary.latency)[which], latency
            )
        errors = None
        if self.error_rate > 0:
            chance = np.full(n, self.error_rate)
            if self.canary is not None and regressed and self.canary.error:
                chance = np.where(
                    canary, chance * self._multiplier(self.canary.error)[which], chance
                )
            errors = rng.random(n) < chance
        if self.outcomes:
            self._schedule_outcomes(second, ts, which, canary, regressed)
        ranked = self._items(second, canary, which) if self.items is not None else None
        schemas = self._schemas(n, canary) if self.feature_schemas is not None else None
        replica = self._replica_fields(second, n) if self.replicas is not None else None
        if replica is not None:
            slow, unready_latency = replica[3], replica[4]
            latency = np.where(replica[2], latency, unready_latency)
            latency = latency * slow
        env = self._env_fields(second, which) if self.environments is not None else None
        if env is not None:
            primary = np.clip(primary + env[1], 0.0, 1.0)
        missing, failed = self._outage(second, which)
        events: list[dict[str, Any]] = []
        for i in range(n):
            request_id = f"req-{self.seed}-{second}-{i}"
            slice_ = self._slices[int(which[i])]
            t = round(float(ts[i]), 3)
            served: dict[str, Any] = {
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
            if canary[i] and self.canary is not None:
                served["event_id"] = f"{request_id}-c"
                served["model_version"] = self.canary.version
                served["role"] = "canary"
                if self.canary.allocation:
                    served["allocation"] = self.canary.allocation
            if errors is not None:
                served["error"] = bool(errors[i])
            if ranked is not None:
                served["items"] = ranked[i]
            if schemas is not None:
                served["feature_schema"] = schemas[i]
            if replica is not None:
                served["replica_id"] = f"pod-{int(replica[0][i])}"
                served["replica_age_s"] = round(float(replica[1][i]), 3)
                served["replica_ready"] = bool(replica[2][i])
            if env is not None:
                served["env_fingerprint"] = env[0][i]
            events.append(served)
            if self.shadow and not canary[i] and not missing[i]:
                shadowed: dict[str, Any] = {
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
                if schemas is not None:
                    shadowed["feature_schema"] = schemas[i]
                if env is not None and env[2] is not None:
                    shadowed["env_fingerprint"] = env[2]
                    shadowed["score"] = round(float(np.clip(shadow[i] + env[3], 0.0, 1.0)), 6)
                if failed[i]:
                    shadowed["error"] = True
                events.append(shadowed)
        return events

    def _schemas(self, n: int, canary: np.ndarray) -> list[str]:
        """Each request's schema: the canary's to the canary, mostly the old one otherwise."""
        spec = self.feature_schemas
        assert spec is not None
        new = canary.copy()
        if spec.primary_new_share > 0:
            new |= self._rng.random(n) < spec.primary_new_share
        return [spec.canary if moved else spec.primary for moved in new.tolist()]

    def _replica_fields(
        self, second: int, n: int
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Replica, age, readiness, latency factor and not-ready latency of each request."""
        spec = self.replicas
        assert spec is not None
        rng = self._replica_rng
        scaled = second >= spec.scale_at_s
        total = spec.scale_to if scaled else spec.initial
        started = np.full(total, -spec.initial_age_s)
        started[spec.initial :] = spec.scale_at_s
        age_now = second - started
        ready_now = (np.arange(total) < spec.initial) | (age_now >= spec.load_s)
        routable = np.flatnonzero(ready_now | spec.route_unready)
        chosen = routable[rng.integers(0, len(routable), n)]
        age = age_now[chosen] + rng.random(n)
        ready = (chosen < spec.initial) | (age >= spec.load_s)
        young = (chosen >= spec.initial) & (age < spec.young_s)
        factor = np.where(young & ready, spec.young_factor, 1.0)
        unready = rng.lognormal(math.log(spec.unready_latency_ms), 0.3, n)
        return chosen, age, ready, factor, unready

    def _env_fields(
        self, second: int, slices: np.ndarray
    ) -> tuple[list[str], np.ndarray, str | None, float]:
        """Fingerprint and score offset of each request; the shadow's fingerprint and offset."""
        spec = self.environments
        assert spec is not None
        n = len(slices)
        shares = np.asarray(spec.shares, dtype=np.float64)
        if spec.slice_shares:
            table = np.tile(shares / shares.sum(), (len(self._slices), 1))
            for pattern, override in spec.slice_shares.items():
                row = np.asarray(override, dtype=np.float64)
                table[self._mask(pattern)] = row / row.sum()
            cumulative = np.cumsum(table, axis=1)[slices]
            draw = self._env_rng.random(n)[:, None]
            which = np.minimum((draw >= cumulative).sum(axis=1), len(spec.fingerprints) - 1)
        else:
            which = self._env_rng.choice(len(spec.fingerprints), size=n, p=shares / shares.sum())
        active = second >= spec.after_s
        offsets = np.asarray(spec.offsets, dtype=np.float64) * active
        names = [spec.fingerprints[j] for j in which.tolist()]
        shadow_offset = 0.0
        if spec.shadow_fingerprint in spec.fingerprints:
            shadow_offset = float(offsets[spec.fingerprints.index(spec.shadow_fingerprint)])
        return names, offsets[which], spec.shadow_fingerprint, shadow_offset

    def _outage(self, second: int, which: np.ndarray) -> tuple[list[bool], list[bool]]:
        """Per request: the shadow timed out (no event), or failed (``error: true``)."""
        n = len(which)
        outage = self.shadow_outage
        if outage is None or second < outage.after_s:
            return [False] * n, [False] * n
        hit = self._mask(outage.slice)[which]
        draw = self._outage_rng.random(n)
        missing = hit & (draw < outage.timeout_share)
        failed = hit & ~missing & (draw < outage.timeout_share + outage.error_share)
        return missing.tolist(), failed.tolist()

    def _items(self, second: int, canary: np.ndarray, which: np.ndarray) -> list[list[str]]:
        """Ranked items of each request of this second (Gumbel top-k: Zipf, no repeats)."""
        spec = self.items
        assert spec is not None
        end = spec.exponent if spec.canary_exponent is None else spec.canary_exponent
        progress = min(max((second - spec.after_s) / spec.ramp_s, 0.0), 1.0) if spec.ramp_s else 1.0
        if second < spec.after_s:
            progress = 0.0
        canary_exponent = spec.exponent + (end - spec.exponent) * progress
        ranks = np.log(np.arange(1, spec.catalogue + 1, dtype=np.float64))
        n = len(canary)
        sharpens = canary & self._mask(spec.slice)[which]
        exponent = np.where(sharpens, canary_exponent, spec.exponent)
        keys = -exponent[:, None] * ranks[None, :] + self._item_rng.gumbel(size=(n, spec.catalogue))
        k = min(spec.per_request, spec.catalogue)
        top = np.argpartition(-keys, k - 1, axis=1)[:, :k]
        order = np.argsort(-np.take_along_axis(keys, top, axis=1), axis=1)
        chosen = np.take_along_axis(top, order, axis=1)
        return [[f"item-{j}" for j in row] for row in chosen.tolist()]

    def _schedule_outcomes(
        self, second: int, ts: np.ndarray, which: np.ndarray, canary: np.ndarray, regressed: bool
    ) -> None:
        rng = self._rng
        n = len(ts)
        # Click probability differs by slice (0.75x to 1.25x the base rate).
        ctr = self.base_ctr * (0.75 + 0.25 * (which % 3))
        if self.canary is not None and regressed and self.canary.ctr:
            ctr = np.where(canary, ctr * self._multiplier(self.canary.ctr)[which], ctr)
        clicked = rng.random(n) < ctr
        delays = rng.exponential(self.outcome_delay_s, n)
        for i in np.flatnonzero(clicked).tolist():
            request_id = f"req-{self.seed}-{second}-{i}"
            when = round(float(ts[i] + delays[i]), 3)
            event = {
                "schema_version": 1,
                "kind": "outcome",
                "event_id": f"{request_id}-o",
                "request_id": request_id,
                "ts": when,
                "deployment": self.deployment,
                "value": 1.0,
            }
            heapq.heappush(self._pending, (when, second * 1_000_000 + i, event))
