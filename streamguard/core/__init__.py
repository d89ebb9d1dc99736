"""The stages' logic: slices, summaries, pairing, stage 1 and stage 2 (pure).

Nothing here imports faust or aiokafka: the Faust worker and ``streamguard replay`` both drive
these classes (through :mod:`streamguard.engine`).
"""

from streamguard.core.stage1 import PAIR_STREAM, Stage1, Stage1Report, arm_stream
from streamguard.core.stage2 import PartialError, Stage2, Stage2Report

__all__ = [
    "PAIR_STREAM",
    "PartialError",
    "Stage1",
    "Stage1Report",
    "Stage2",
    "Stage2Report",
    "arm_stream",
]
