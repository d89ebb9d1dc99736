"""Simulated serving traffic for the demo, tests and benchmarks (pure)."""

from streamguard.sim.traffic import (
    DEFAULT_SHARES,
    Canary,
    Environments,
    FeatureSchemas,
    Items,
    Replicas,
    ShadowDeviation,
    TrafficGenerator,
)

__all__ = [
    "DEFAULT_SHARES",
    "Canary",
    "Environments",
    "FeatureSchemas",
    "Items",
    "Replicas",
    "ShadowDeviation",
    "TrafficGenerator",
]
