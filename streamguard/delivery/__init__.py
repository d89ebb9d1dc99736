"""Alert delivery to on-call: a relay from the alerts topic to Alertmanager and webhooks.

* :mod:`~streamguard.delivery.alertmanager` (pure): read an alerts-topic message, build the
  Alertmanager API v2 payload.
* :mod:`~streamguard.delivery.sinks`: HTTP sinks that retry with capped back-off until the
  receiver accepts, and give up only on a definitive refusal.
* :mod:`~streamguard.delivery.relay`: :class:`AlertRelay`, the consumer that commits an
  alert's offset only once every sink has answered for it (at-least-once, nothing lost while
  a receiver is down).

This package is an adapter (it talks to Kafka and HTTP); the pure core never imports it.
"""

from streamguard.delivery.alertmanager import (
    ALERTNAME,
    DEFAULT_RUNBOOK_URL,
    alertmanager_alert,
    alertmanager_body,
    parse_alert,
    rfc3339,
)
from streamguard.delivery.exceptions import AlertDecodeError, DeliveryError, RelayError
from streamguard.delivery.relay import DEFAULT_GROUP, AlertRelay
from streamguard.delivery.sinks import (
    AlertmanagerSink,
    Backoff,
    HttpSink,
    Outcome,
    SinkStats,
    WebhookSink,
    alertmanager_endpoint,
)

__all__ = [
    "ALERTNAME",
    "DEFAULT_GROUP",
    "DEFAULT_RUNBOOK_URL",
    "AlertDecodeError",
    "AlertRelay",
    "AlertmanagerSink",
    "Backoff",
    "DeliveryError",
    "HttpSink",
    "Outcome",
    "RelayError",
    "SinkStats",
    "WebhookSink",
    "alertmanager_alert",
    "alertmanager_body",
    "alertmanager_endpoint",
    "parse_alert",
    "rfc3339",
]
