"""The guards a worker runs."""

from streamguard.guards.base import Guard
from streamguard.guards.shadow import ShadowDeviationGuard
from streamguard.policy import Policy

__all__ = ["default_guards"]


def default_guards(policy: Policy) -> list[Guard]:
    """Every guard, configured by ``policy`` (each guard checks its own ``enabled`` flag)."""
    return [ShadowDeviationGuard(policy.for_deployment)]
