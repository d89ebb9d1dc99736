"""The Alertmanager API v2 payload built from alerts-topic messages, and the message reader."""

import re
from datetime import datetime
from typing import Any

import orjson
import pytest

from streamguard.contracts import Alert, Command, alert_for
from streamguard.delivery import (
    ALERTNAME,
    DEFAULT_RUNBOOK_URL,
    AlertDecodeError,
    AlertmanagerSink,
    alertmanager_alert,
    parse_alert,
    rfc3339,
)

TS = 1_790_000_230.0
NOW = TS + 60.0
EVIDENCE = {
    "statistic": "flip_rate",
    "value": 0.0506,
    "threshold": 0.05,
    "n": 7706,
    "action": "pause",
    "baseline_version": "ranker-v41",
    "onset": 1_790_000_150.0,
}
# postableAlert's fields (Alertmanager api/v2/openapi.yaml); label names as in Prometheus.
POSTABLE_FIELDS = {"labels", "annotations", "startsAt", "endsAt", "generatorURL"}
LABEL_NAME = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*$")
RFC3339_MS = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")


def alert(action: str = "pause", slice_: dict[str, str] | None = None, ts: float = TS) -> Alert:
    command = Command(action, "home-ranker", "ranker-v42", "shadow", slice_, EVIDENCE, ts)
    return alert_for(command, f"home-ranker ranker-v42: deviation; {action} issued")


def test_slice_alert_has_the_labels_alertmanager_identifies_it_by() -> None:
    a = alert(slice_={"tier": "free", "platform": "android", "region": "eu"})
    payload = alertmanager_alert(a, now=NOW)
    assert set(payload) <= POSTABLE_FIELDS
    assert payload["labels"] == {
        "alertname": ALERTNAME,
        "deployment": "home-ranker",
        "model_version": "ranker-v42",
        "guard": "shadow",
        "slice": "platform=android,region=eu,tier=free",  # sorted, whatever the dict order
        "severity": "warning",
    }
    assert all(LABEL_NAME.match(name) for name in payload["labels"])
    assert "generatorURL" not in payload
    assert "endsAt" not in payload  # Alertmanager resolves it after its resolve_timeout


@pytest.mark.parametrize("slice_", [None, {}])
def test_whole_deployment_alert_has_slice_star(slice_: dict[str, str] | None) -> None:
    assert alertmanager_alert(alert(slice_=slice_), now=NOW)["labels"]["slice"] == "*"


@pytest.mark.parametrize(
    ("action", "severity"), [("rollback", "critical"), ("pause", "warning"), ("resume", "warning")]
)
def test_severity_follows_the_command(action: str, severity: str) -> None:
    assert alertmanager_alert(alert(action), now=NOW)["labels"]["severity"] == severity


def test_pause_and_rollback_of_one_slice_are_different_alertmanager_alerts() -> None:
    # Alertmanager merges alerts with equal labels: a rollback must not hide in a pause.
    pause = alertmanager_alert(alert("pause", {"platform": "ios"}), now=NOW)["labels"]
    rollback = alertmanager_alert(alert("rollback", {"platform": "ios"}), now=NOW)["labels"]
    assert pause != rollback


def test_annotations_carry_summary_evidence_runbook_and_ids() -> None:
    a = alert(slice_={"platform": "ios"})
    annotations = alertmanager_alert(a, now=NOW)["annotations"]
    assert annotations["summary"] == a.summary
    assert annotations["runbook_url"] == DEFAULT_RUNBOOK_URL
    assert DEFAULT_RUNBOOK_URL.endswith("#guards")
    assert annotations["alert_id"] == a.alert_id
    assert annotations["command_id"] == a.command_id
    description = annotations["description"]
    for fragment in (
        "shadow guard on home-ranker ranker-v42 (baseline ranker-v41)",
        "slice platform=ios",
        "flip_rate=0.0506 >= 0.05 over n=7706",
        "action pause",
        f"onset {rfc3339(1_790_000_150.0)}",
        f"window ending {rfc3339(TS)}",
    ):
        assert fragment in description
    assert all(isinstance(v, str) for v in annotations.values())


def test_runbook_url_is_configurable_per_guard_and_deployment() -> None:
    payload = alertmanager_alert(
        alert(), now=NOW, runbook_url="https://wiki.example/{deployment}/{guard}"
    )
    assert payload["annotations"]["runbook_url"] == "https://wiki.example/home-ranker/shadow"


def test_generator_url_when_configured() -> None:
    payload = alertmanager_alert(alert(), now=NOW, generator_url="http://worker:6066/health")
    assert payload["generatorURL"] == "http://worker:6066/health"


def test_description_without_the_usual_evidence_fields() -> None:
    bare = Alert("a" * 32, "b" * 32, "warning", "d", "v1", "custom", None, "s", {}, 0.0)
    description = alertmanager_alert(bare, now=NOW)["annotations"]["description"]
    assert description == "custom guard on d v1, slice *; window ending 1970-01-01T00:00:00.000Z."


@pytest.mark.parametrize(
    ("ts", "expected"),
    [
        (0.0, "1970-01-01T00:00:00.000Z"),
        (1_790_000_230.5, "2026-09-21T14:17:10.500Z"),
        (1_790_000_230.1234, "2026-09-21T14:17:10.123Z"),
    ],
)
def test_starts_at_is_rfc3339_utc(ts: float, expected: str) -> None:
    starts_at = alertmanager_alert(alert(ts=ts), now=NOW)["startsAt"]
    assert starts_at == expected
    assert RFC3339_MS.match(starts_at)
    assert datetime.fromisoformat(starts_at).timestamp() == pytest.approx(ts, abs=1e-3)


def test_starts_at_is_never_after_delivery_time() -> None:
    # Event time ahead of the wall clock (simulated time, skew): Alertmanager would refuse an
    # alert that starts after its resolve_timeout-based end.
    future = alert(ts=NOW + 3600)
    assert alertmanager_alert(future, now=NOW)["startsAt"] == rfc3339(NOW)


def test_alertmanager_sink_posts_a_list_of_one_alert() -> None:
    sink = AlertmanagerSink(
        "http://am:9093/", runbook_url="https://runbooks/{guard}", clock=lambda: NOW
    )
    assert sink.url == "http://am:9093/api/v2/alerts"
    a = alert("rollback", {"platform": "ios"})
    body = orjson.loads(sink.body(a, a.to_json()))
    assert body == [alertmanager_alert(a, now=NOW, runbook_url="https://runbooks/{guard}")]
    assert body[0]["annotations"]["runbook_url"] == "https://runbooks/shadow"


# --- reading the alerts topic -----------------------------------------------------------------


def test_version_1_alert_round_trips() -> None:
    a = alert(slice_={"platform": "ios"})
    assert parse_alert(a.to_json()) == a


def test_signed_version_2_alert_is_read_by_its_version_1_fields() -> None:
    a = alert()
    signed = a.to_dict() | {"schema_version": 2, "signature": {"alg": "Ed25519", "sig": "x"}}
    assert parse_alert(orjson.dumps(signed)) == a


def broken(**changes: Any) -> bytes:
    raw = alert().to_dict() | changes
    return orjson.dumps({k: v for k, v in raw.items() if v is not ...})


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        (None, "empty"),
        (b"", "empty"),
        (b"{not json", "invalid_json"),
        (b"[1, 2]", "not_an_object"),
        (broken(schema_version=0), "bad_version"),
        (broken(schema_version="1"), "bad_version"),
        (broken(alert_id=...), "missing_field"),
        (broken(deployment=7), "wrong_type"),
        (broken(alert_id="not-hex"), "bad_value"),
        (broken(slice={"platform": 1}), "wrong_type"),
        (broken(slice="ios"), "wrong_type"),
        (broken(evidence=[]), "wrong_type"),
        (broken(ts="soon"), "wrong_type"),
        (broken(ts=True), "wrong_type"),
    ],
)
def test_messages_that_are_not_alerts_are_refused_with_a_reason(
    value: bytes | None, reason: str
) -> None:
    with pytest.raises(AlertDecodeError) as caught:
        parse_alert(value)
    assert caught.value.reason == reason
