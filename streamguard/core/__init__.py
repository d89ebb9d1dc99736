"""The engine: slices, summaries, pairing, windows and the three stages (pure).

Nothing here imports faust or aiokafka: the Faust worker and ``streamguard replay`` both drive
these classes.
"""

from streamguard.core.engine import Engine
from streamguard.core.pipeline import Pipeline, PipelineStats
from streamguard.core.stage1 import PAIR_STREAM, Stage1, Stage1Report, arm_stream
from streamguard.core.stage2 import PartialError, Stage2, Stage2Report

__all__ = [
    "PAIR_STREAM",
    "Engine",
    "PartialError",
    "Pipeline",
    "PipelineStats",
    "Stage1",
    "Stage1Report",
    "Stage2",
    "Stage2Report",
    "arm_stream",
]
