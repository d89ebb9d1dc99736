"""Guards: judge per-slice summaries and name the slices that explain a breach (pure)."""

from streamguard.guards.base import Finding, Guard, GuardContext, SliceResult, Verdict
from streamguard.guards.explain import explain
from streamguard.guards.registry import default_guards
from streamguard.guards.shadow import ShadowDeviationGuard, shadow_statistics

__all__ = [
    "Finding",
    "Guard",
    "GuardContext",
    "ShadowDeviationGuard",
    "SliceResult",
    "Verdict",
    "default_guards",
    "explain",
    "shadow_statistics",
]
