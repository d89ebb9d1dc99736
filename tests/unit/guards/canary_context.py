"""Synthetic arm windows and a stage-2 context for the canary guards (no stages, no broker).

Two slice dimensions, ``platform`` and ``tier``: a window carries the whole deployment, every
single-dimension slice and every (platform, tier) stratum, as stage 2 would hand them over.
"""

from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from streamguard.contracts import Command
from streamguard.core.measures import ArmMeasures
from streamguard.core.slices import ROOT
from streamguard.core.summary import Array
from streamguard.core.verdict import Verdict
from streamguard.engine import Pipeline
from streamguard.guards.canary import CanaryGuard
from streamguard.guards.stratification import BASELINE_STREAM, CANARY_STREAM, StratificationGuard
from streamguard.policy import DeploymentPolicy, Policy, SlicePolicy
from streamguard.sim import Canary, TrafficGenerator
from streamguard.testing import envelopes

__all__ = [
    "LABELS",
    "POLICY",
    "STRATA",
    "Context",
    "Events",
    "counts_window",
    "draw",
    "events_window",
    "run_traffic",
]

START = 1_790_000_000.0
POLICY = DeploymentPolicy(slices=SlicePolicy(dimensions=("platform", "tier")))
MEASURES = ArmMeasures.from_policy(POLICY.canary)
PLATFORMS = ("android", "ios", "web")
TIERS = ("free", "premium")
STRATA = [(p, t) for p in PLATFORMS for t in TIERS]
LABELS = [
    ROOT,
    *(f"platform={p}" for p in PLATFORMS),
    *(f"tier={t}" for t in TIERS),
    *(f"platform={p},tier={t}" for p, t in STRATA),
]
# Rows of each stratum's events: the deployment, its platform, its tier, the stratum itself.
ROWS = np.array(
    [
        [0, 1 + PLATFORMS.index(p), 1 + len(PLATFORMS) + TIERS.index(t), 6 + k]
        for k, (p, t) in enumerate(STRATA)
    ],
    dtype=np.int64,
)

F64 = npt.NDArray[np.float64]


@dataclass
class Events:
    """Raw events of one arm: stratum index, failure, latency (ms) and outcome value."""

    stratum: npt.NDArray[np.int64]
    errors: npt.NDArray[np.bool_]
    latency_ms: F64
    outcomes: F64

    def of(self, label: str) -> "Events":
        """The events of one slice label."""
        keep = np.isin(ROWS[self.stratum], LABELS.index(label)).any(axis=1)
        return Events(
            self.stratum[keep], self.errors[keep], self.latency_ms[keep], self.outcomes[keep]
        )

    @staticmethod
    def concat(parts: list["Events"]) -> "Events":
        """All events of several windows."""
        return Events(
            np.concatenate([e.stratum for e in parts]),
            np.concatenate([e.errors for e in parts]),
            np.concatenate([e.latency_ms for e in parts]),
            np.concatenate([e.outcomes for e in parts]),
        )


def draw(
    rng: np.random.Generator,
    counts: dict[tuple[str, str], int],
    *,
    ctr: dict[tuple[str, str], float] | None = None,
    latency_ms: dict[tuple[str, str], float] | None = None,
    error_rate: float = 0.02,
    sigma: float = 0.6,
) -> Events:
    """``counts[stratum]`` events per stratum, clicks, log-normal latency and failures."""
    stratum = np.repeat(
        np.array([STRATA.index(s) for s in counts], dtype=np.int64),
        np.array(list(counts.values()), dtype=np.int64),
    )
    click = np.array([(ctr or {}).get(s, 0.1) for s in STRATA])[stratum]
    median = np.array([(latency_ms or {}).get(s, 50.0) for s in STRATA])[stratum]
    return Events(
        stratum,
        rng.random(len(stratum)) < error_rate,
        rng.lognormal(np.log(median), sigma),
        (rng.random(len(stratum)) < click).astype(np.float64),
    )


def events_window(events: Events) -> tuple[list[str], dict[str, Array]]:
    """An arm's closed window as stage 2 gives it: every field, one row per label."""
    index = ROWS[events.stratum]
    arrays = MEASURES.events(index, len(LABELS), events.errors, events.latency_ms)
    arrays["outcomes"] = MEASURES.outcomes(index, len(LABELS), events.outcomes)["outcomes"]
    return list(LABELS), arrays


def counts_window(counts: dict[tuple[str, str], int]) -> tuple[list[str], dict[str, Array]]:
    """An arm's window with event counts only (all the stratification guard reads)."""
    per_stratum = np.array([counts.get(s, 0) for s in STRATA], dtype=np.int64)
    events = np.bincount(ROWS.ravel(), np.repeat(per_stratum, 4), minlength=len(LABELS))
    return list(LABELS), {"events": events.astype(np.int64)}


class Context:
    """A GuardContext whose closed windows are given, judged like stage 2: stratification first.

    Window ``i`` of the canary (version ``v2``) and of the baseline (``v1``) close together.
    """

    deployment = "home-ranker"
    window_s = 10
    horizon_windows = 30

    def __init__(self, policy: DeploymentPolicy = POLICY) -> None:
        self.window = -1
        self.failed: set[str] = set()  # no guard raises here
        self._state: dict[str, dict[Any, Any]] = {}
        self._closed: dict[str, tuple[list[str], dict[str, Array]]] = {}
        self._history: dict[str, dict[int, tuple[list[str], dict[str, Array]]]] = {}
        self.stratification = StratificationGuard(lambda _: policy)
        self.canary = CanaryGuard(lambda _: policy)

    def close(
        self,
        canary: tuple[list[str], dict[str, Array]],
        baseline: tuple[list[str], dict[str, Array]],
        *,
        with_canary_guard: bool = True,
    ) -> tuple[Verdict, Verdict | None]:
        """Verdicts of the stratification guard and (then) the canary guard at one close."""
        self.window += 1
        self._closed = {CANARY_STREAM: canary, BASELINE_STREAM: baseline}
        for stream, window in self._closed.items():
            self._history.setdefault(stream, {})[self.window] = window
        mix = self.stratification.evaluate(self)
        judged = self.canary.evaluate(self) if with_canary_guard else None
        assert mix is not None
        return mix, judged

    def versions(self, stream: str) -> list[str]:
        return {CANARY_STREAM: ["v2"], BASELINE_STREAM: ["v1"]}.get(stream, [])

    def closed_window(self, stream: str, version: str) -> tuple[list[str], dict[str, Array]] | None:
        return self._closed.get(stream)

    def windows(
        self, stream: str, version: str, count: int, names: frozenset[str]
    ) -> tuple[list[str], list[dict[str, Array]]]:
        count = max(1, min(count, self.horizon_windows))
        history = self._history.get(stream, {})
        out = []
        for index in range(self.window - count + 1, self.window + 1):
            labels, arrays = history.get(index, (LABELS, None))
            assert labels == LABELS  # every window of this context carries every label
            if arrays is None:
                arrays = {name: np.zeros_like(a) for name, a in self._template(stream).items()}
            out.append({name: arrays[name] for name in names})
        return list(LABELS), out

    def _template(self, stream: str) -> dict[str, Array]:
        return next(iter(self._history[stream].values()))[1]

    def state(self, guard: str) -> dict[Any, Any]:
        return self._state.setdefault(guard, {})

    # Unused by these guards.
    def horizon(self, stream: str, version: str) -> Any:
        raise NotImplementedError

    def baseline_version(self, stream: str, version: str) -> str:
        return "v1"

    def item_windows(self, stream: str, version: str, slice_: str = "*") -> Any:
        raise NotImplementedError

    def item_slices(self, stream: str, version: str) -> list[str]:
        return []

    def untracked_slices(self) -> int:
        return 0


def run_traffic(
    canary: Canary,
    seconds: int,
    *,
    policy: Policy | None = None,
    seed: int = 1,
    rate: float = 800.0,
) -> tuple[list[Command], list[dict[str, Any]]]:
    """Simulated traffic with this canary through the engine: its commands and verdicts."""
    gen = TrafficGenerator(
        rate=rate,
        seed=seed,
        start_ts=START,
        shadow=False,
        outcomes=True,
        error_rate=0.01,
        canary=canary,
    )
    verdicts: list[dict[str, Any]] = []

    def keep(verdict: Verdict) -> None:
        verdicts.append(verdict.to_dict())

    pipeline = Pipeline(policy or Policy(), partitions=4, on_verdict=keep)
    for events in gen.seconds(seconds):
        for _, _, value in envelopes(events, 4):
            pipeline.feed(value)
    return pipeline.finish(), verdicts
