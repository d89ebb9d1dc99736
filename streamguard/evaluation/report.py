"""The evaluation report: detection, delay, slice and false commands per judge, side by side.

:func:`summarise` folds the runs into one row per scenario and judge plus the false-command
rate of each judge on healthy traffic; :func:`to_markdown` writes it for people and
:func:`to_json` for machines (the benchmarks' results file reads it).
"""

import math
import statistics
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from typing import Any

from streamguard.evaluation.runner import JUDGES, RunResult
from streamguard.sim.scenarios import SCENARIOS

__all__ = [
    "Cell",
    "FalseAlarms",
    "Summary",
    "poisson_upper",
    "summarise",
    "to_json",
    "to_markdown",
]

DAY_S = 86400.0
TITLES = {
    "streamguard": "streamguard",
    "global-threshold": "global threshold",
    "kayenta": "Kayenta-style",
}


@dataclass(slots=True)
class Cell:
    """One judge on one failure scenario, over its seeds."""

    runs: int = 0
    detected: int = 0
    slice_named: int = 0
    applicable: bool = False
    delays_s: list[float] = field(default_factory=list)
    actions: list[str] = field(default_factory=list)
    findings: list[str] = field(default_factory=list)

    @property
    def median_delay_s(self) -> float | None:
        """Median delay over the runs that detected."""
        return statistics.median(self.delays_s) if self.delays_s else None


@dataclass(slots=True)
class FalseAlarms:
    """False commands of one judge over all healthy traffic."""

    commands: int = 0
    runs_with_any: int = 0
    healthy_s: float = 0.0

    @property
    def per_day(self) -> float:
        """False commands per simulated day of healthy traffic."""
        return self.commands / self.healthy_s * DAY_S if self.healthy_s else 0.0

    @property
    def upper_per_day(self) -> float:
        """One-sided 95 % upper confidence bound of :attr:`per_day` (Poisson counts)."""
        if not self.healthy_s:
            return math.inf
        return poisson_upper(self.commands) / self.healthy_s * DAY_S


def poisson_upper(k: int, level: float = 0.95) -> float:
    """The rate ``m`` with ``P(X <= k; m) = 1 - level``: the exact one-sided upper bound.

    Garwood, "Fiducial limits for the Poisson distribution", Biometrika 28, 1936 (it equals
    ``chi2.ppf(level, 2k + 2) / 2``). Zero events in ``T`` give about ``3 / T``, the rule of
    three.

    >>> round(poisson_upper(0), 3)
    2.996
    """

    def cdf(m: float) -> float:
        term = total = math.exp(-m)
        for i in range(1, k + 1):
            term *= m / i
            total += term
        return total

    lo, hi = 0.0, 10.0 + 10.0 * k
    for _ in range(100):  # bisection: the cdf falls as m grows
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if cdf(mid) > 1 - level else (lo, mid)
    return (lo + hi) / 2


@dataclass(slots=True)
class Summary:
    """Everything the report shows."""

    seeds: list[int]
    rate: float
    duration_s: float
    cells: dict[str, dict[str, Cell]]  # scenario -> judge -> cell (failure scenarios only)
    false_alarms: dict[str, FalseAlarms]
    healthy: list[str]  # healthy scenarios run


def summarise(runs: Iterable[RunResult], rate: float) -> Summary:
    """Fold runs (any scenarios, any seeds) into a :class:`Summary`."""
    runs = list(runs)
    cells: dict[str, dict[str, Cell]] = {}
    alarms = {judge: FalseAlarms() for judge in JUDGES}
    healthy: list[str] = []
    for run in runs:
        for judge, outcome in run.judges.items():
            alarm = alarms[judge]
            alarm.commands += outcome.false_commands
            alarm.runs_with_any += outcome.false_commands > 0
            alarm.healthy_s += run.healthy_s
        if run.onset_s is None:
            if run.scenario not in healthy:
                healthy.append(run.scenario)
            continue
        row = cells.setdefault(run.scenario, {judge: Cell() for judge in JUDGES})
        for judge, outcome in run.judges.items():
            cell = row[judge]
            cell.runs += 1
            cell.applicable |= outcome.applicable
            if outcome.detected and outcome.delay_s is not None:
                cell.detected += 1
                cell.delays_s.append(outcome.delay_s)
                cell.slice_named += outcome.slice_named
                cell.actions.append(outcome.action or "")
                cell.findings.append(outcome.finding or "")
    return Summary(
        seeds=sorted({r.seed for r in runs}),
        rate=rate,
        duration_s=max((r.duration_s for r in runs), default=0.0),
        cells=cells,
        false_alarms=alarms,
        healthy=healthy,
    )


def _cell(cell: Cell) -> str:
    if not cell.applicable:
        return "n/a (no arm to compare)"
    if not cell.detected:
        return f"missed (0/{cell.runs})"
    delays = sorted(cell.delays_s)
    spread = f" [{delays[0]:.0f}-{delays[-1]:.0f}]" if len(delays) > 1 else ""
    actions = "/".join(sorted(set(cell.actions)))
    return (
        f"{cell.detected}/{cell.runs}, {cell.median_delay_s:.0f} s{spread}, "
        f"slice {cell.slice_named}/{cell.detected}, {actions}"
    )


def to_markdown(summary: Summary, command: str) -> str:
    """The report as a Markdown document."""
    seeds = ", ".join(map(str, summary.seeds))
    lines = [
        "# Detection quality: streamguard against reference judges",
        "",
        f"Reproduce: `{command}`",
        "",
        f"Seeds {seeds}; {summary.rate:g} requests/s; {summary.duration_s:.0f} s of event time "
        "per run, failure from a third of it plus 0-59 s drawn per run, so that no judge's "
        "analysis interval lines up with the onset (contaminated canary: from the start); default "
        "policy. Cells: runs detected / runs, median delay from the onset to the command "
        "[min-max] in event time, runs whose command named the failure's slice, action.",
        "",
        "| scenario | failure in | " + " | ".join(TITLES[j] for j in JUDGES) + " |",
        "|---|---|" + "---|" * len(JUDGES),
    ]
    for name, row in summary.cells.items():
        where = SCENARIOS[name].slice or "*"
        cells = " | ".join(_cell(row[j]) for j in JUDGES)
        lines.append(f"| {name} | `{where}` | {cells} |")
    lines += [
        "",
        "False commands on healthy traffic ("
        + ", ".join(summary.healthy)
        + ", and every failure scenario before its onset):",
        "",
        "| judge | false commands | runs with any | healthy event time | per simulated day "
        "| 95 % upper bound per day |",
        "|---|---|---|---|---|---|",
    ]
    for judge in JUDGES:
        alarm = summary.false_alarms[judge]
        lines.append(
            f"| {TITLES[judge]} | {alarm.commands} | {alarm.runs_with_any} | "
            f"{alarm.healthy_s / 3600:.1f} h | {alarm.per_day:.1f} | {alarm.upper_per_day:.1f} |"
        )
    return "\n".join(lines) + "\n"


def to_json(summary: Summary) -> dict[str, Any]:
    """The report as plain JSON values."""
    out = asdict(summary)
    for name, row in summary.cells.items():
        for judge, cell in row.items():
            out["cells"][name][judge]["median_delay_s"] = cell.median_delay_s
    for judge, alarm in summary.false_alarms.items():
        out["false_alarms"][judge]["per_day"] = alarm.per_day
        out["false_alarms"][judge]["upper_per_day"] = alarm.upper_per_day
    return out
