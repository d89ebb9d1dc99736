"""What a simulated fleet may do besides serving healthy traffic: the faults and features.

Each is a frozen description handed to :class:`~streamguard.sim.traffic.TrafficGenerator`:
a shadow that deviates in one slice (:class:`ShadowDeviation`) or goes dark
(:class:`ShadowOutage`), a canary and its regressions (:class:`Canary`), recommended items
(:class:`Items`), request schemas (:class:`FeatureSchemas`), a scaling fleet with cold starts
(:class:`Replicas`) and execution environments that disagree (:class:`Environments`).
Slices are named by patterns such as ``platform=android,tier=free`` (``*``: every slice).
"""

from dataclasses import dataclass, field

__all__ = [
    "Canary",
    "Environments",
    "FeatureSchemas",
    "Items",
    "Replicas",
    "ShadowDeviation",
    "ShadowOutage",
    "matches",
]


@dataclass(frozen=True, slots=True)
class ShadowDeviation:
    """From ``after_s`` seconds into the run, add ``shift`` to the shadow's scores in ``slice``.

    ``slice`` may fix any subset of dimensions (``{"platform": "android"}`` hits every Android
    request). The shifted score is clipped to [0, 1].
    """

    slice: dict[str, str]
    after_s: float
    shift: float = 0.2


@dataclass(frozen=True, slots=True)
class ShadowOutage:
    """From ``after_s`` seconds into the run, the shadow misses some of ``slice``'s requests.

    ``timeout_share`` of them get no shadow prediction at all (the shadow timed out), and
    ``error_share`` get one with ``error: true`` (the shadow failed and served a fallback).
    """

    slice: dict[str, str]
    after_s: float = 0.0
    timeout_share: float = 0.5
    error_share: float = 0.0


@dataclass(frozen=True, slots=True)
class Canary:
    """A canary serving ``share`` of requests with model ``version``.

    ``only`` restricts it to the requests of matching slices (a contaminated allocation: the
    canary's share of those requests grows so its overall share stays ``share`` where possible).
    ``ctr``, ``error`` and ``latency`` map slice patterns (``{"platform": "android"}`` as
    ``"platform=android"``) to multipliers of the canary's click probability, error probability
    and latency there, from ``after_s`` seconds into the run.
    """

    share: float = 0.05
    version: str = "ranker-v43"
    only: dict[str, str] | None = None
    ctr: dict[str, float] = field(default_factory=dict)
    error: dict[str, float] = field(default_factory=dict)
    latency: dict[str, float] = field(default_factory=dict)
    after_s: float = 0.0
    allocation: str | None = None


@dataclass(frozen=True, slots=True)
class Items:
    """Served requests carry ``per_request`` ranked items of a ``catalogue`` (``item-<i>``).

    Items are drawn without replacement with Zipf weights ``(rank + 1)^-exponent``. The canary
    draws with ``canary_exponent`` (default: the same), reached linearly from ``exponent``
    between ``after_s`` and ``after_s + ramp_s`` seconds into the run, on the requests of
    ``slice`` only (a pattern such as ``"platform=android"``; None: every request). Items come
    from a random stream of their own, so turning them on leaves the rest of the traffic
    unchanged.
    """

    catalogue: int = 400
    per_request: int = 10
    exponent: float = 1.0
    canary_exponent: float | None = None
    after_s: float = 0.0
    ramp_s: float = 0.0
    slice: str | None = None


@dataclass(frozen=True, slots=True)
class FeatureSchemas:
    """Request schemas (``feature_schema``) serving sends with each prediction.

    The primary (and its shadow) gets ``primary``, the canary ``canary``: a rollout that moved
    the request schema along with the model. ``primary_new_share`` of the primary's requests
    already get the canary's schema (serving keeps a dual read path), so the primary version
    proves it accepts the new schema before anyone needs to roll back to it.
    """

    primary: str = "1"
    canary: str = "2"
    primary_new_share: float = 0.0


@dataclass(frozen=True, slots=True)
class Replicas:
    """Served requests carry ``replica_id``, ``replica_age_s`` and ``replica_ready``.

    ``initial`` replicas (``pod-0``...) have been up for ``initial_age_s`` at the start. At
    ``scale_at_s`` seconds into the run the fleet scales to ``scale_to`` replicas; each new one
    loads for ``load_s`` seconds (not ready). With ``route_unready`` the load balancer already
    sends it its share of requests, which then take about ``unready_latency_ms`` (lognormal,
    sigma 0.3): the incident (2 -> 20 replicas, 45 s load, p99 50 ms -> 800 ms). Without it
    (the healthy counterpart) new replicas get traffic only once ready. Ready replicas younger
    than ``young_s`` serve ``young_factor`` times the usual latency. Replica draws come from a
    random stream of their own, so turning them on leaves the rest of the traffic unchanged.
    """

    initial: int = 2
    scale_to: int = 20
    scale_at_s: float = 60.0
    load_s: float = 45.0
    route_unready: bool = True
    unready_latency_ms: float = 800.0
    young_factor: float = 1.0
    young_s: float = 120.0
    initial_age_s: float = 3600.0


@dataclass(frozen=True, slots=True)
class Environments:
    """Served requests run in one of ``fingerprints`` (``env_fingerprint``), with ``shares``.

    Scores computed in fingerprint ``i`` are shifted by ``offsets[i]`` (clipped to [0, 1]),
    from ``after_s`` seconds into the run: a numeric library or hardware that changes the
    outputs. The shadow runs in ``shadow_fingerprint`` (when given), so a shadow with the
    primary's model version scores the same request in another environment (paired check).
    ``slice_shares`` maps slice patterns (``platform=android``) to shares that replace
    ``shares`` for the requests of matching slices (the last matching pattern wins), so the
    fingerprint mix can differ by slice (a GPU pool serving only some regions).
    """

    fingerprints: tuple[str, ...] = ("gpu=v100;numpy=1.23", "gpu=a100;numpy=1.24")
    shares: tuple[float, ...] = (0.5, 0.5)
    offsets: tuple[float, ...] = (0.0, 0.0)
    shadow_fingerprint: str | None = None
    after_s: float = 0.0
    slice_shares: dict[str, tuple[float, ...]] = field(default_factory=dict)


def matches(slice_: dict[str, str], pattern: str) -> bool:
    """Whether a slice (as a dict) lies in a pattern such as ``platform=android,tier=free``."""
    if pattern in ("", "*"):
        return True
    return all(slice_.get(k) == v for k, v in (part.split("=", 1) for part in pattern.split(",")))
