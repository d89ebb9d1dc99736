"""The composition root: the pure stages, guards and decider wired together.

:class:`Engine` is what the Faust worker drives; :class:`Pipeline` runs the same engine in one
process (``streamguard replay``). Layering: contracts and stats, then core (stages), guards,
decisions, and this package on top; adapters (faust_app, cli) use this package.
"""

from streamguard.engine.build import Engine
from streamguard.engine.pipeline import Pipeline, PipelineStats, route

__all__ = ["Engine", "Pipeline", "PipelineStats", "route"]
