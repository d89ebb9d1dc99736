"""The engine: the three stages built from one policy, shared by the worker and replay."""

from dataclasses import dataclass

from streamguard.core.stage1 import Stage1
from streamguard.core.stage2 import Stage2
from streamguard.decisions import Decider
from streamguard.guards import LeakageGuard, default_guards
from streamguard.policy import Policy

__all__ = ["Engine"]


@dataclass(slots=True)
class Engine:
    """Stage 1 (pairing, partials), stage 2 (windows, guards) and stage 3 (decisions).

    ``leakage`` judges the training examples topic on its own: per partition, keyed by
    pipeline, it counts and issues its ``block`` commands directly (no windows to merge).
    """

    policy: Policy
    stage1: Stage1
    stage2: Stage2
    decider: Decider
    leakage: LeakageGuard

    @classmethod
    def create(cls, policy: Policy, n_sources: int, idle_timeout_s: float = 30.0) -> "Engine":
        """An engine for a predictions topic with ``n_sources`` partitions."""
        return cls(
            policy=policy,
            stage1=Stage1(policy),
            stage2=Stage2(policy, n_sources, default_guards(policy), idle_timeout_s),
            decider=Decider(policy),
            leakage=LeakageGuard(policy),
        )
