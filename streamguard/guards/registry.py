"""The guards a worker runs, in the order they judge each window close."""

from streamguard.core.verdict import Guard
from streamguard.guards.canary import CanaryGuard
from streamguard.guards.cold_start import ColdStartGuard
from streamguard.guards.compat import CompatGuard
from streamguard.guards.determinism import DeterminismGuard
from streamguard.guards.popularity import PopularityGuard
from streamguard.guards.shadow import ShadowDeviationGuard
from streamguard.guards.stratification import StratificationGuard
from streamguard.policy import Policy

__all__ = ["default_guards"]


def default_guards(policy: Policy) -> list[Guard]:
    """Every guard, configured by ``policy`` (each guard checks its own ``enabled`` flag).

    Stratification judges before the canary guard, which reads whether the canary's traffic
    is contaminated to mark its own verdicts untrusted. The compatibility table comes first:
    the decider reads it when a later verdict of the same window calls for a rollback.
    """
    return [
        CompatGuard(policy.for_deployment),
        ShadowDeviationGuard(policy.for_deployment),
        StratificationGuard(policy.for_deployment),
        CanaryGuard(policy.for_deployment),
        PopularityGuard(policy.for_deployment),
        ColdStartGuard(policy.for_deployment),
        DeterminismGuard(policy.for_deployment),
    ]
