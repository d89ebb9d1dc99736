"""The decision policy: findings in, commands and alerts out (pure)."""

from streamguard.decisions.decider import Decider, Decisions, RolloutState
from streamguard.decisions.verdict_check import VerdictError, check_verdict

__all__ = ["Decider", "Decisions", "RolloutState", "VerdictError", "check_verdict"]
