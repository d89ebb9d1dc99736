"""The worker's ``/health`` and ``/ready`` documents, built from what the runtime knows.

Pure functions, so each status rule is read (and tested) apart from the agents that feed it.
"""

from typing import Any

__all__ = ["health_document", "readiness_document"]


def health_document(
    *,
    broker_up: bool,
    topic_problems: list[str],
    crashed: dict[str, str],
    dropping: list[str],
    extra: dict[str, Any],
) -> tuple[int, dict[str, Any]]:
    """HTTP status and document of /health.

    ``unhealthy`` (503) when the broker is unreachable, a topic is misconfigured or an agent
    crashed in the last minute; ``degraded`` when a bounded buffer dropped data in the last
    minute (``dropping``); ``ok`` otherwise. ``extra`` adds descriptive fields.
    """
    if not broker_up or topic_problems or crashed:
        status = "unhealthy"
    else:
        status = "degraded" if dropping else "ok"
    document = {
        **extra,  # first: descriptive fields never override the status below
        "status": status,
        "broker": "reachable" if broker_up else "unreachable",
        "topic_problems": topic_problems,
        "crashed": crashed,  # agents that raised in the last minute, and why
        "dropping": dropping,
    }
    return (503 if status == "unhealthy" else 200), document


def readiness_document(
    progress: dict[str, dict[str, int]], health: dict[str, Any], joined: bool
) -> tuple[int, dict[str, Any]]:
    """HTTP status and document of /ready, given the /health document.

    ``progress`` holds per stage the partitions assigned and restored (stage 1 also those read
    to their end once); ``joined`` says whether the worker has its assignment. 200 ``ready``
    once every assigned partition's state is restored and stage 1 has read each predictions
    partition to the end it had then; 503 ``recovering`` before (also while joining the group
    or rebalancing), 503 ``unhealthy`` whenever /health is. A worker with no partitions (more
    replicas than partitions) is ready.
    """
    if health.get("status") == "unhealthy":
        status = "unhealthy"
        reasons = [
            *(["broker unreachable"] if health.get("broker") == "unreachable" else []),
            *health.get("topic_problems", []),
            *(f"agent {agent} crashed" for agent in health.get("crashed", {})),
        ]
    elif not joined:
        status, reasons = "recovering", ["waiting for partitions (joining the group)"]
    else:
        status = "recovering"
        reasons = [
            f"restoring {stage} state: {counts['restored']} of {counts['assigned']} partitions done"
            for stage, counts in progress.items()
            if counts["restored"] < counts["assigned"]
        ]
        behind = progress["stage1"]["assigned"] - progress["stage1"]["caught_up"]
        if behind:
            reasons.append(
                f"catching up: {behind} of {progress['stage1']['assigned']} predictions "
                "partitions not yet read to the end they had"
            )
        if not reasons:
            status = "ready"
    document = {
        "status": status,
        "ready": status == "ready",
        "reason": "; ".join(reasons),
        "partitions": progress,
    }
    return (200 if status == "ready" else 503), document
