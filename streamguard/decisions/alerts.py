"""What on-call reads: the summary and evidence of each alert the decider issues.

The decider (:mod:`streamguard.decisions.decider`) decides *whether* a finding becomes a
command or a notice; this module says it in words. Every alert's summary names the deployment,
the model version, what was found and where, then what was done ("pause issued", "no command
issued").
"""

from typing import Any

from streamguard.contracts import Alert, Command, notice_for
from streamguard.core.slices import label_dims

__all__ = [
    "command_summary",
    "failure_notice",
    "finding_evidence",
    "finding_notice",
    "health_notice",
]

_GUARD_TEXT = {
    "shadow": "shadow predictions deviate from the primary's",
    "stratification": (
        "canary traffic is not stratified like the baseline's (its verdicts cannot be trusted "
        "until the allocation is fixed)"
    ),
    "canary": "the canary is worse than the baseline",
    "popularity": "the canary concentrates item exposure faster than the baseline",
    "cold_start": "replicas that are young or not ready slow requests down",
    "determinism": "predictions depend on the execution environment",
}


def _number(value: object) -> str:
    return f"{value:.4g}" if isinstance(value, int | float) else "n/a"


def _where(label: str) -> str:
    return label if label != "*" else "all traffic"


def _found(guard: str, deployment: str, version: str, label: str) -> str:
    """What the guard found where: the head of a finding's summary."""
    what = _GUARD_TEXT.get(guard, f"guard {guard} breached")
    return f"{deployment} {version}: {what} in {_where(label)}"


def _detail(finding: dict[str, Any]) -> str:
    """The guard's own words for its evidence, or the statistic against its threshold."""
    return finding.get("summary") or (
        f"{finding['statistic']}={_number(finding.get('value'))} >= "
        f"{finding['threshold']:.4g} over n={finding['n']}"
    )


def command_summary(command: Command, finding: dict[str, Any]) -> str:
    """The summary of the alert that comes with ``command``."""
    head = _found(command.guard, command.deployment, command.model_version, finding["slice"])
    summary = f"{head}: {_detail(finding)}; {command.action} issued"
    compat = command.evidence.get("compat")
    if compat is not None and compat["compatible"] is False:
        accepts = ", ".join(compat["target_accepts"]) or "none seen"
        summary += (
            f". ROLLBACK MAY CRASH SERVING: {compat['target_version'] or 'the target'} never "
            f"served feature schema {', '.join(compat['missing'])} without errors (it accepts: "
            f"{accepts}); keep a dual read path or roll forward"
        )
    if compat is not None and compat.get("stale"):
        summary += (
            ". The compatibility guard is failing: whether serving can roll back to "
            "the target's request schemas is known only up to its last good close"
        )
    return summary


def finding_evidence(verdict: dict[str, Any], finding: dict[str, Any]) -> dict[str, Any]:
    """A finding with where it was judged: guard, baseline, window and horizon."""
    return dict(finding) | {
        "guard": verdict["guard"],
        "baseline_version": verdict.get("baseline_version", ""),
        "window": {"start": verdict["window_start"], "end": verdict["window_end"]},
        "horizon": {"start": verdict["horizon_start"], "end": verdict["window_end"]},
    }


def finding_notice(
    verdict: dict[str, Any], finding: dict[str, Any], evidence: dict[str, Any]
) -> Alert:
    """The alert of a finding that calls for no command."""
    guard, label = verdict["guard"], finding["slice"]
    head = _found(guard, verdict["deployment"], verdict["model_version"], label)
    return notice_for(
        verdict["deployment"],
        verdict["model_version"],
        guard,
        label_dims(label) or None,
        float(verdict["window_end"]),
        f"{head}: {_detail(finding)}; no command issued",
        evidence,
    )


def health_notice(verdict: dict[str, Any], finding: dict[str, Any]) -> Alert:
    """The notice of a slice whose shadow results are untrusted (the shadow guard's health)."""
    label = str(finding["slice"])
    rate, errors = finding.get("pairing_rate"), finding.get("error_rate")
    summary = (
        f"{verdict['deployment']} {verdict['model_version']}: shadow results are untrusted "
        f"in {_where(label)}: pairing rate {_number(rate)} < floor "
        f"{finding['pairing_floor']:.4g} over {finding['primaries']} primaries (shadow error "
        f"rate {_number(errors)}); no command issued"
    )
    # The finding's evidence with the statistic it quotes, placed after the guard as always.
    judged = finding_evidence(verdict, finding)
    evidence = dict(finding) | {"guard": judged["guard"], "statistic": "pairing_rate"} | judged
    return notice_for(
        verdict["deployment"],
        verdict["model_version"],
        verdict["guard"],
        label_dims(label) or None,
        float(verdict["window_end"]),
        summary,
        evidence,
    )


def failure_notice(verdict: dict[str, Any]) -> Alert:
    """The critical notice of an error verdict: a guard raised at a window close."""
    guard, error = verdict["guard"], verdict["error"]
    shown = f"{error['type']}: {error['message']}" if error["message"] else error["type"]
    summary = (
        f"{verdict['deployment']}: the {guard} guard failed at a window close ({shown}, at "
        f"{error['where']}); its verdicts are missing until this is fixed, the other guards "
        "still judge; no command issued (a bug: please report it)"
    )
    evidence = {
        "guard": guard,
        "error": error,
        "window": {"start": verdict["window_start"], "end": verdict["window_end"]},
    }
    ts = float(verdict["window_end"])
    return notice_for(verdict["deployment"], "", guard, None, ts, summary, evidence, "critical")
