"""Simulated serving traffic and training pipelines for the demo, tests and benchmarks (pure)."""

from streamguard.sim.injections import (
    Canary,
    Environments,
    FeatureSchemas,
    Items,
    Replicas,
    ShadowDeviation,
    ShadowOutage,
)
from streamguard.sim.traffic import DEFAULT_SHARES, TrafficGenerator
from streamguard.sim.training import Backfill, TrainingPipeline, WithTraining

__all__ = [
    "DEFAULT_SHARES",
    "Backfill",
    "Canary",
    "Environments",
    "FeatureSchemas",
    "Items",
    "Replicas",
    "ShadowDeviation",
    "ShadowOutage",
    "TrafficGenerator",
    "TrainingPipeline",
    "WithTraining",
]
