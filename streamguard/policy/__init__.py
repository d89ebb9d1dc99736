"""The policy file: defaults, per-deployment and per-slice overrides (pure)."""

from streamguard.policy.load import load_policy, parse_label, parse_policy
from streamguard.policy.model import (
    SHADOW_STATISTICS,
    Band,
    DeploymentPolicy,
    Policy,
    ShadowPolicy,
    SlicePolicy,
)

__all__ = [
    "SHADOW_STATISTICS",
    "Band",
    "DeploymentPolicy",
    "Policy",
    "ShadowPolicy",
    "SlicePolicy",
    "load_policy",
    "parse_label",
    "parse_policy",
]
