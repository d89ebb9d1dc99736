"""Guards: judge per-slice summaries and name the slices that explain a breach (pure)."""

from streamguard.guards.base import Finding, Guard, GuardContext, SliceResult, Verdict
from streamguard.guards.canary import CanaryGuard
from streamguard.guards.explain import explain
from streamguard.guards.leakage import LeakageGuard, LeakageReport, PipelineCounts
from streamguard.guards.popularity import PopularityGuard
from streamguard.guards.registry import default_guards
from streamguard.guards.shadow import ShadowDeviationGuard, shadow_statistics
from streamguard.guards.stratification import StratificationGuard

__all__ = [
    "CanaryGuard",
    "Finding",
    "Guard",
    "GuardContext",
    "LeakageGuard",
    "LeakageReport",
    "PipelineCounts",
    "PopularityGuard",
    "ShadowDeviationGuard",
    "SliceResult",
    "StratificationGuard",
    "Verdict",
    "default_guards",
    "explain",
    "shadow_statistics",
]
