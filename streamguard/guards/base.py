"""The guard contract, defined next to stage 2 (which runs guards) and re-exported here."""

from typing import Any

from streamguard.core.verdict import (
    SEVERITY_ACTION,
    Finding,
    Guard,
    GuardContext,
    SliceResult,
    Verdict,
    clean_float,
    clean_floats,
)

__all__ = [
    "SEVERITY_ACTION",
    "Finding",
    "Guard",
    "GuardContext",
    "SliceResult",
    "StatelessGuard",
    "Verdict",
    "clean_float",
    "clean_floats",
]


class StatelessGuard:
    """A guard that recomputes everything from stage 2's windows at each close.

    ``policy_for`` maps a deployment to its policy. Nothing survives between window closes,
    so there is nothing to snapshot or restore.
    """

    name: str

    def __init__(self, policy_for: Any) -> None:
        self._policy_for = policy_for

    @staticmethod
    def snapshot_state(state: dict[Any, Any]) -> Any:
        """Nothing to keep: the guard recomputes from stage 2's windows."""
        return {}

    @staticmethod
    def restore_state(data: Any) -> dict[Any, Any]:
        """Nothing to restore."""
        return {}
