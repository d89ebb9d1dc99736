"""The guard contract, defined next to stage 2 (which runs guards) and re-exported here."""

from streamguard.core.verdict import (
    SEVERITY_ACTION,
    Finding,
    Guard,
    GuardContext,
    SliceResult,
    Verdict,
    clean_float,
)

__all__ = [
    "SEVERITY_ACTION",
    "Finding",
    "Guard",
    "GuardContext",
    "SliceResult",
    "Verdict",
    "clean_float",
]
