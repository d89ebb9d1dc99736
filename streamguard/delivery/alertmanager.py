"""Alerts-topic messages in, Alertmanager v2 alerts out (pure: no network, no Kafka).

:func:`parse_alert` reads one message of the alerts topic (schema ``alert``: version 1, or a
later version such as the signed version 2, read tolerantly). :func:`alertmanager_alert`
turns it into one element of the body of Alertmanager's ``POST /api/v2/alerts``
(``postableAlert``): identifying ``labels``, informative ``annotations``, ``startsAt`` in
RFC 3339, and ``generatorURL`` when one is configured.

No ``endsAt`` is sent: an alert here is an event (a command was issued), not a condition that
streamguard keeps re-sending. Alertmanager then sets ``endsAt`` to its ``resolve_timeout``
(5 minutes by default) after receipt, notifies once, and resolves it by itself.

Examples
--------
>>> from streamguard.contracts import Command, alert_for
>>> command = Command("rollback", "home-ranker", "ranker-v42", "shadow",
...                   {"tier": "free", "platform": "android"},
...                   {"statistic": "flip_rate", "value": 0.21, "threshold": 0.15, "n": 9000},
...                   1790000230.0)
>>> alert = alert_for(command, "home-ranker ranker-v42: shadow deviates; rollback issued")
>>> payload = alertmanager_alert(alert, now=1790000240.0)
>>> payload["labels"]["slice"], payload["labels"]["severity"]
('platform=android,tier=free', 'critical')
>>> payload["startsAt"]
'2026-09-21T14:17:10.000Z'
>>> parse_alert(alert.to_json()) == alert
True
"""

import math
import re
from datetime import UTC, datetime
from functools import cache
from typing import Any

import orjson

from streamguard.contracts import Alert, load_schema, slice_label
from streamguard.delivery.exceptions import AlertDecodeError

__all__ = [
    "ALERTNAME",
    "DEFAULT_RUNBOOK_URL",
    "alertmanager_alert",
    "alertmanager_body",
    "describe",
    "parse_alert",
    "rfc3339",
    "runbook_for",
]

#: ``alertname`` label of every alert the relay sends (Alertmanager requires one).
ALERTNAME = "StreamguardGuard"

#: Where the ``runbook_url`` annotation points by default: the guards section of the README,
#: which explains each guard's statistics and thresholds. ``{guard}`` and ``{deployment}`` in
#: a configured URL are replaced by the alert's values, so a wiki page per guard also works.
DEFAULT_RUNBOOK_URL = "https://streamguard.dev/README.md#guards"

_STRINGS = ("alert_id", "command_id", "severity", "deployment", "model_version", "guard")


@cache
def _schema() -> tuple[tuple[str, ...], re.Pattern[str]]:
    """Required fields and the id pattern, from ``alert.schema.json`` (so a change reaches us)."""
    schema = load_schema("alert")
    return tuple(schema["required"]), re.compile(schema["properties"]["alert_id"]["pattern"])


def parse_alert(value: bytes | None) -> Alert:
    """Decode and check one message value of the alerts topic.

    Version 1 and every later version (the signed version 2 adds ``signature``) are read:
    the version-1 fields must be present and well-typed, unknown fields are ignored here and
    still reach the generic webhook, which receives the message bytes unchanged.

    Parameters
    ----------
    value
        The Kafka message value.

    Returns
    -------
    Alert
        The alert's version-1 fields.

    Raises
    ------
    AlertDecodeError
        With reason ``empty``, ``invalid_json``, ``not_an_object``, ``bad_version``,
        ``missing_field``, ``wrong_type`` or ``bad_value``.

    Examples
    --------
    >>> for bad in (b"{oops", b'{"schema_version": 1}', b'{"schema_version": 0}'):
    ...     try:
    ...         parse_alert(bad)
    ...     except AlertDecodeError as exc:
    ...         print(exc.reason)
    invalid_json
    missing_field
    bad_version
    """
    if not value:
        raise AlertDecodeError("empty", "message has no value")
    try:
        raw = orjson.loads(value)
    except orjson.JSONDecodeError as exc:
        raise AlertDecodeError("invalid_json", f"not JSON: {exc}") from exc
    if not isinstance(raw, dict):
        raise AlertDecodeError("not_an_object", f"expected an object, got {type(raw).__name__}")
    version = raw.get("schema_version")
    if type(version) is not int or version < 1:
        raise AlertDecodeError("bad_version", f"schema_version {version!r} is not 1 or later")
    required, id_pattern = _schema()
    missing = [name for name in required if name not in raw]
    if missing:
        raise AlertDecodeError("missing_field", f"missing {', '.join(missing)}")
    for name in (*_STRINGS, "summary"):
        if type(raw[name]) is not str:
            raise AlertDecodeError("wrong_type", f"{name} must be a string")
    for name in ("alert_id", "command_id"):
        if not id_pattern.fullmatch(raw[name]):
            raise AlertDecodeError("bad_value", f"{name} {raw[name]!r} is not 32 hex digits")
    slice_ = raw["slice"]
    if slice_ is not None and not (
        isinstance(slice_, dict) and all(type(v) is str for v in slice_.values())
    ):
        raise AlertDecodeError("wrong_type", "slice must be null or an object of strings")
    if not isinstance(raw["evidence"], dict):
        raise AlertDecodeError("wrong_type", "evidence must be an object")
    ts = raw["ts"]
    if type(ts) not in (int, float) or not math.isfinite(ts):
        raise AlertDecodeError("wrong_type", "ts must be a finite number")
    return Alert(
        alert_id=raw["alert_id"],
        command_id=raw["command_id"],
        severity=raw["severity"],
        deployment=raw["deployment"],
        model_version=raw["model_version"],
        guard=raw["guard"],
        slice=slice_,
        summary=raw["summary"],
        evidence=raw["evidence"],
        ts=float(ts),
    )


def rfc3339(ts: float) -> str:
    """Epoch seconds as an RFC 3339 UTC timestamp with milliseconds.

    Examples
    --------
    >>> rfc3339(0.25)
    '1970-01-01T00:00:00.250Z'
    """
    text = datetime.fromtimestamp(ts, tz=UTC).isoformat(timespec="milliseconds")
    return text.replace("+00:00", "Z")


def runbook_for(alert: Alert, runbook_url: str) -> str:
    """The runbook link of ``alert``: ``{guard}`` and ``{deployment}`` filled in.

    Examples
    --------
    >>> a = Alert("0" * 32, "1" * 32, "warning", "home-ranker", "v2", "canary", None, "",
    ...           {}, 0.0)
    >>> runbook_for(a, "https://wiki.example/runbooks/{guard}")
    'https://wiki.example/runbooks/canary'
    """
    return runbook_url.replace("{guard}", alert.guard).replace("{deployment}", alert.deployment)


def _number(value: object) -> str:
    return f"{value:.4g}" if isinstance(value, int | float) else str(value)


def describe(alert: Alert) -> str:
    """The ``description`` annotation: the evidence on-call needs first, in one paragraph.

    Evidence fields are guard-specific; those absent are left out.

    Examples
    --------
    >>> a = Alert("0" * 32, "1" * 32, "warning", "home-ranker", "v2", "shadow", None, "",
    ...           {"statistic": "psi", "value": 0.1234, "threshold": 0.1, "n": 900,
    ...            "action": "pause", "baseline_version": "v1"}, 0.0)
    >>> for part in describe(a).split("; "):
    ...     print(part)
    shadow guard on home-ranker v2 (baseline v1), slice *: psi=0.1234 >= 0.1 over n=900
    action pause
    window ending 1970-01-01T00:00:00.000Z.
    """
    evidence = alert.evidence
    baseline = evidence.get("baseline_version")
    parts = [
        f"{alert.guard} guard on {alert.deployment} {alert.model_version}"
        + (f" (baseline {baseline})" if baseline else "")
        + f", slice {slice_label(alert.slice)}"
    ]
    if "statistic" in evidence:
        stat = f"{evidence['statistic']}={_number(evidence.get('value'))}"
        if "threshold" in evidence:
            stat += f" >= {_number(evidence['threshold'])}"
        if "n" in evidence:
            stat += f" over n={evidence['n']}"
        parts[0] += f": {stat}"
    if "action" in evidence:
        parts.append(f"action {evidence['action']}")
    onset = evidence.get("onset")
    if isinstance(onset, int | float) and math.isfinite(onset):
        parts.append(f"onset {rfc3339(onset)}")
    parts.append(f"window ending {rfc3339(alert.ts)}")
    return "; ".join(parts) + "."


def alertmanager_alert(
    alert: Alert,
    *,
    now: float,
    runbook_url: str = DEFAULT_RUNBOOK_URL,
    generator_url: str | None = None,
    alertname: str = ALERTNAME,
) -> dict[str, Any]:
    """One ``postableAlert`` of Alertmanager's API v2.

    Parameters
    ----------
    alert
        The alert from the alerts topic.
    now
        Epoch seconds of delivery. ``startsAt`` is the alert's event time, but never later
        than ``now``: Alertmanager sets a missing ``endsAt`` to receipt + ``resolve_timeout``
        and rejects an alert that ends before it starts, so an event-time clock ahead of the
        wall clock (simulated time, skew) would otherwise get the alert refused.
    runbook_url
        Link for the ``runbook_url`` annotation (``{guard}``, ``{deployment}`` are filled in).
    generator_url
        Optional back-link (``generatorURL``), for instance the worker's dashboard.
    alertname
        The ``alertname`` label.

    Returns
    -------
    dict
        Labels identify the alert (Alertmanager deduplicates and groups on them): alertname,
        deployment, model_version, guard, slice (``k=v,k=v`` or ``*``) and severity.
        Annotations carry the summary, the description, the runbook link, and the alert and
        command ids, so a receiver can deduplicate redeliveries by ``alert_id``.
    """
    out: dict[str, Any] = {
        "labels": {
            "alertname": alertname,
            "deployment": alert.deployment,
            "model_version": alert.model_version,
            "guard": alert.guard,
            "slice": slice_label(alert.slice),
            "severity": alert.severity,
        },
        "annotations": {
            "summary": alert.summary,
            "description": describe(alert),
            "runbook_url": runbook_for(alert, runbook_url),
            "alert_id": alert.alert_id,
            "command_id": alert.command_id,
        },
        "startsAt": rfc3339(min(alert.ts, now)),
    }
    if generator_url:
        out["generatorURL"] = generator_url
    return out


def alertmanager_body(alerts: list[dict[str, Any]]) -> bytes:
    """The JSON body of ``POST /api/v2/alerts``: a list of postable alerts.

    Examples
    --------
    >>> alertmanager_body([{"labels": {"alertname": "x"}}])
    b'[{"labels":{"alertname":"x"}}]'
    """
    return orjson.dumps(alerts)
