"""One evaluation run: a scenario's traffic through the engine and the reference judges at once.

The traffic of one scenario and seed is generated second by second of event time. Each second
goes to :class:`~streamguard.engine.Pipeline` (the engine ``streamguard replay`` and the worker
run, with the default policy) as the emitters would route it, and to the judges'
:class:`~streamguard.evaluation.judges.Observations`. The stream clock is the end of the last
second fed: a command's *issue time* is the stream clock when the engine published it (the
watermark had passed its window's end plus the allowed lateness), and a judge's failure is
timed at the end of the interval it judged. Detection delay is issue time minus the onset,
for both; nothing gets credit for evidence it could not have published yet.

Findings are commands and the alerts that come with no command (notices: the determinism
guard only alerts, shadow health says which slices it cannot judge); ``schemas`` notices,
which only inform subscribers, are not findings. Healthy traffic is every healthy scenario and
the part of each failure scenario before its onset. Any finding issued there is a false one
(for a judge, a failed analysis: at most one per run, since a failed analysis aborts the
rollout).
"""

import math
import random
from dataclasses import dataclass, field

from streamguard.contracts import Alert, Command, load_topic_specs
from streamguard.contracts.commands import NOTICE_ACTION
from streamguard.contracts.partitioning import routed
from streamguard.engine import Pipeline
from streamguard.evaluation.judges import (
    GlobalThresholdJudge,
    Judgement,
    KayentaJudge,
    Observations,
)
from streamguard.policy import Policy
from streamguard.sim.scenarios import SCENARIOS

__all__ = ["JUDGES", "START", "STREAMGUARD", "JudgeRun", "RunResult", "onset_phase", "run"]

#: Event time of the first second: whole tens, so windows start at whole tens of seconds.
START = 1_790_000_000.0
STREAMGUARD = "streamguard"
JUDGES = (STREAMGUARD, GlobalThresholdJudge().name, KayentaJudge().name)


@dataclass(frozen=True, slots=True)
class JudgeRun:
    """What one judge did in one run."""

    judge: str
    detected: bool = False
    delay_s: float | None = None  # issue time of the first finding after the onset - onset
    finding: str | None = None  # streamguard: the guard; a reference judge: the metric
    slice: str | None = None  # the slice named ("*" for the whole deployment)
    slice_named: bool = False  # the slice is the failure's
    action: str | None = None
    false_commands: int = 0  # issued on healthy traffic (before the onset)
    applicable: bool = True  # False: no arm this judge could compare


@dataclass(frozen=True, slots=True)
class RunResult:
    """One scenario and seed: each judge's outcome and the healthy time it was exposed to."""

    scenario: str
    seed: int
    duration_s: float
    onset_s: float | None
    healthy_s: float
    judges: dict[str, JudgeRun] = field(default_factory=dict)


def _label(slice_: dict[str, str] | None) -> str:
    return ",".join(f"{k}={v}" for k, v in sorted((slice_ or {}).items())) or "*"


@dataclass(frozen=True, slots=True)
class _Issued:
    """A command, or an alert that comes with no command (a notice), when it was published."""

    at: float
    guard: str
    slice: str
    action: str


def _issued(now: float, commands: list[Command], notices: list[Alert]) -> list[_Issued]:
    out = [_Issued(now, c.guard, _label(c.slice), c.action) for c in commands]
    out += [_Issued(now, a.guard, _label(a.slice), "alert") for a in notices]
    return [i for i in out if i.action != NOTICE_ACTION]  # informs subscribers, asks nothing


def _streamguard(issued: list[_Issued], name: str, guard: str | None, onset_ts: float) -> JudgeRun:
    scenario = SCENARIOS[name]
    false = sum(1 for i in issued if i.at <= onset_ts)
    hits = [i for i in issued if i.at > onset_ts and i.guard == guard]
    if not hits:
        return JudgeRun(STREAMGUARD, false_commands=false)
    # The first finding of the guard; among those issued together, one naming the slice.
    together = [i for i in hits if i.at == hits[0].at]
    first = next((i for i in together if scenario.names(i.slice)), together[0])
    return JudgeRun(
        STREAMGUARD,
        detected=True,
        delay_s=first.at - onset_ts,
        finding=first.guard,
        slice=first.slice,
        slice_named=scenario.names(first.slice),
        action=first.action,
        false_commands=false,
    )


def _reference(
    judge: str, name: str, failures: list[Judgement], onset_ts: float, seen_arm: bool
) -> JudgeRun:
    scenario = SCENARIOS[name]
    false = 1 if any(j.at <= onset_ts for j in failures) else 0
    after = [j for j in failures if j.at > onset_ts]
    if not after or scenario.guard is None:
        return JudgeRun(judge, false_commands=false, applicable=seen_arm)
    first = after[0]
    return JudgeRun(
        judge,
        detected=True,
        delay_s=first.at - onset_ts,
        finding=first.metric,
        slice="*",
        slice_named=scenario.names("*"),
        action="rollback",
        false_commands=false,
        applicable=seen_arm,
    )


def onset_phase(name: str, seed: int) -> float:
    """Whole seconds (0-59) added to a scenario's onset in run ``seed``, the same on every machine.

    With the onset always at a third of the duration, the reference judges' 60 s analysis
    interval and streamguard's 10 s windows met it at the same phase in every run: a judge
    whose look fell 20 s after the onset looked 20 s fast every time. Drawn per run, the phase
    gives each judge its average wait for the next look.

    Examples
    --------
    >>> onset_phase("shadow-deviation", 1) == onset_phase("shadow-deviation", 1)
    True
    >>> 0 <= onset_phase("cold-start", 2) < 60
    True
    """
    return float(random.Random(f"{name}:{seed}").randrange(60))


def run(
    name: str,
    seed: int,
    *,
    rate: float = 300.0,
    duration: float = 900.0,
    policy: Policy | None = None,
    flush_every_s: int = 1,
) -> RunResult:
    """Run scenario ``name`` with ``seed`` through streamguard and the reference judges.

    The engine's stage 1 is flushed every ``flush_every_s`` seconds of event time (the worker's
    flush timer ticks every second of wall clock, about as often for traffic arriving in real
    time). As in the worker, a flush holds a partition's data while it is all for windows that
    have not ended and tells stage 2 the live watermark (:meth:`Pipeline.flush`). Commands do
    not depend on it, their issue times do: up to ``flush_every_s - 1`` seconds later than the
    worker's, which only counts against streamguard.
    """
    scenario = SCENARIOS[name]
    phase = onset_phase(name, seed)
    source = scenario.source(rate, duration, seed, START, phase_s=phase)
    onset = scenario.onset_s(duration, phase)
    onset_ts = START + onset if onset is not None else math.inf
    specs = load_topic_specs()
    partitions = specs["predictions"].partitions
    training = specs["training_examples"].partitions
    # Event time here is fixed in the past of any real clock: accept it whatever the clock.
    pipeline = Pipeline(policy or Policy(), partitions, max_future_s=math.inf)
    observations = Observations()
    judges = (GlobalThresholdJudge(), KayentaJudge())
    failures: dict[str, list[Judgement]] = {j.name: [] for j in judges}
    issued: list[_Issued] = []
    seconds = int(duration)
    for second, events in enumerate(source.seconds(seconds)):
        now = START + second + 1
        commands, notices = len(pipeline.commands), len(pipeline.notices)
        for _, _, value in routed(events, partitions, training):
            pipeline.feed(value)  # the leakage guard decides here, the others in flush()
        if (second + 1) % flush_every_s == 0:
            pipeline.flush()
        issued += _issued(now, pipeline.commands[commands:], pipeline.notices[notices:])
        observations.add(events)
        for judge in judges:
            if (second + 1) % int(judge.interval_s) == 0:
                found = judge.judge(observations, START, now)
                if found is not None:
                    failures[judge.name].append(found)
    seen_arm = observations.experiment() is not None
    results = {STREAMGUARD: _streamguard(issued, name, scenario.guard, onset_ts)}
    for judge in judges:
        results[judge.name] = _reference(judge.name, name, failures[judge.name], onset_ts, seen_arm)
    healthy = duration if onset is None else float(onset)
    return RunResult(name, seed, duration, onset, healthy, results)
