"""Detection quality: scenarios through streamguard and reference judges, side by side (pure).

``streamguard evaluate`` runs :mod:`streamguard.sim.scenarios` over several seeds with
:func:`~streamguard.evaluation.runner.run` and reports them with
:mod:`streamguard.evaluation.report`.
"""

from streamguard.evaluation.judges import (
    GlobalThresholdJudge,
    Judgement,
    KayentaJudge,
    Observations,
    mann_whitney,
)
from streamguard.evaluation.runner import JUDGES, START, STREAMGUARD, JudgeRun, RunResult, run

__all__ = [
    "JUDGES",
    "START",
    "STREAMGUARD",
    "GlobalThresholdJudge",
    "JudgeRun",
    "Judgement",
    "KayentaJudge",
    "Observations",
    "RunResult",
    "mann_whitney",
    "run",
]
