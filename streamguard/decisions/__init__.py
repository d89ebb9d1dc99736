"""The decision policy: findings in, commands and alerts out (pure)."""

from streamguard.decisions.decider import Decider, RolloutState

__all__ = ["Decider", "RolloutState"]
