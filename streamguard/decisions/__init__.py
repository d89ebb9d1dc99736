"""The decision policy: findings in, commands and alerts out (pure)."""

from streamguard.decisions.decider import Decider, Decisions, RolloutState

__all__ = ["Decider", "Decisions", "RolloutState"]
