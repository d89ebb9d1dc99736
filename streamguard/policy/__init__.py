"""The policy file: defaults, per-deployment and per-slice overrides (pure)."""

from streamguard.policy.load import load_policy, parse_label, parse_policy
from streamguard.policy.model import (
    CANARY_METRICS,
    SHADOW_STATISTICS,
    Band,
    CanaryPolicy,
    ColdStartPolicy,
    CompatPolicy,
    DeploymentPolicy,
    DeterminismPolicy,
    LeakagePolicy,
    MetricTest,
    Policy,
    PopularityPolicy,
    ShadowPolicy,
    SlicePolicy,
    StratificationPolicy,
)

__all__ = [
    "CANARY_METRICS",
    "SHADOW_STATISTICS",
    "Band",
    "CanaryPolicy",
    "ColdStartPolicy",
    "CompatPolicy",
    "DeploymentPolicy",
    "DeterminismPolicy",
    "LeakagePolicy",
    "MetricTest",
    "Policy",
    "PopularityPolicy",
    "ShadowPolicy",
    "SlicePolicy",
    "StratificationPolicy",
    "load_policy",
    "parse_label",
    "parse_policy",
]
