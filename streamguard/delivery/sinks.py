"""HTTP sinks for alerts: an Alertmanager (API v2) and a generic webhook, with retries.

A sink delivers one alert until the receiver accepts it (any 2xx) or refuses it for good:

* **retried** with capped exponential back-off, for as long as it takes: connection errors,
  timeouts, 5xx, 408 (request timeout) and 429 (too many requests; a numeric ``Retry-After`` is
  honoured up to the cap). While a sink retries, the relay does not commit the alert's offset,
  so the alert stays on the topic and survives a restart of the relay.
* **rejected** without retrying: any other status (4xx, and 3xx since a redirect target should
  be configured directly). Sending the same body again would get the same answer and would
  hold up every later alert, so the rejection is logged with the status and the receiver's
  reason, counted in :attr:`SinkStats.rejected`, and the relay moves on.

Every request carries ``Idempotency-Key: <alert_id>``; the generic webhook's body holds the
``alert_id`` as well, and the Alertmanager body holds it as an annotation, so a receiver can
drop the redeliveries at-least-once delivery allows.

Examples
--------
>>> alertmanager_endpoint("http://alertmanager:9093/")
'http://alertmanager:9093/api/v2/alerts'
>>> alertmanager_endpoint("http://alertmanager:9093/api/v2/alerts")
'http://alertmanager:9093/api/v2/alerts'
>>> [retryable(s) for s in (500, 503, 408, 429, 400, 404, 302)]
[True, True, True, True, False, False, False]
"""

import asyncio
import logging
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from enum import StrEnum
from typing import ClassVar
from urllib.parse import urlsplit

import aiohttp

from streamguard import __version__
from streamguard.contracts import Alert
from streamguard.delivery.alertmanager import (
    DEFAULT_RUNBOOK_URL,
    alertmanager_alert,
    alertmanager_body,
)
from streamguard.exceptions import ConfigError

__all__ = [
    "AlertmanagerSink",
    "Backoff",
    "HttpSink",
    "Outcome",
    "SinkStats",
    "WebhookSink",
    "alertmanager_endpoint",
    "check_url",
    "retryable",
]

log = logging.getLogger(__name__)

_ALERTS_PATH = "/api/v2/alerts"
#: Statuses outside 5xx that still say "try again later".
_RETRY_STATUSES = frozenset({408, 429})
#: How much of a refusing receiver's body goes into the log line.
_REASON_CHARS = 200


@dataclass(frozen=True, slots=True)
class Backoff:
    """Capped exponential back-off between delivery attempts.

    Examples
    --------
    >>> [Backoff(initial_s=0.5, max_s=4.0).delay(n) for n in range(1, 7)]
    [0.5, 1.0, 2.0, 4.0, 4.0, 4.0]
    >>> Backoff().delay(100_000)  # days of retrying: still the cap, no overflow
    30.0
    """

    initial_s: float = 0.5
    max_s: float = 30.0
    factor: float = 2.0

    def delay(self, failures: int) -> float:
        """Seconds to wait after the ``failures``-th failed attempt (1-based)."""
        # The exponent is bounded: float ** 1100 overflows, and a sink may retry for days.
        exponent = min(max(0, failures - 1), 64)
        return min(self.max_s, self.initial_s * self.factor**exponent)


@dataclass(slots=True)
class SinkStats:
    """What one sink did since the relay started."""

    delivered: int = 0  # alerts the receiver accepted
    retried: int = 0  # failed attempts followed by another attempt
    rejected: int = 0  # alerts refused for good (counted once per alert)
    last_error: str = ""  # the latest failed attempt (retried)
    last_rejection: str = ""  # the latest refusal (not retried), with the receiver's reason


class Outcome(StrEnum):
    """How an alert's delivery to one sink ended."""

    DELIVERED = "delivered"
    REJECTED = "rejected"


def retryable(status: int) -> bool:
    """Whether an HTTP status means "the same request may succeed later"."""
    return status >= 500 or status in _RETRY_STATUSES


def check_url(url: str, what: str) -> str:
    """``url`` if it is an absolute http(s) URL, else a :class:`ConfigError` naming ``what``.

    Examples
    --------
    >>> check_url("https://hooks.example/streamguard", "--webhook")
    'https://hooks.example/streamguard'
    >>> check_url("hooks.example", "--webhook")
    Traceback (most recent call last):
    ...
    streamguard.exceptions.ConfigError: --webhook 'hooks.example' is not an http(s) URL
    """
    parts = urlsplit(url)
    if parts.scheme not in {"http", "https"} or not parts.hostname:
        raise ConfigError(f"{what} {url!r} is not an http(s) URL")
    return url


def alertmanager_endpoint(url: str) -> str:
    """The ``/api/v2/alerts`` endpoint of an Alertmanager given by its base URL (or by it)."""
    base = url.rstrip("/")
    return base if base.endswith(_ALERTS_PATH) else base + _ALERTS_PATH


def _retry_after(headers: Mapping[str, str]) -> float | None:
    """A numeric ``Retry-After`` in seconds (the HTTP-date form is ignored)."""
    value = headers.get("Retry-After", "").strip()
    try:
        seconds = float(value)
    except ValueError:
        return None
    return seconds if seconds >= 0 else None


class HttpSink(ABC):
    """A receiver that gets each alert by one ``POST``.

    Parameters
    ----------
    url
        Where to POST.
    name
        Key of this sink in the relay's counters and log lines (default: its kind).
    timeout_s
        Limit of one attempt (connect, send, read the answer).
    backoff
        Delays between attempts.
    headers
        Extra request headers (an ``Authorization`` header, for instance).
    clock
        Epoch seconds (tests pass a fake clock).
    """

    kind: ClassVar[str] = "http"

    def __init__(
        self,
        url: str,
        *,
        name: str | None = None,
        timeout_s: float = 10.0,
        backoff: Backoff | None = None,
        headers: Mapping[str, str] | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.url = check_url(url, f"{self.kind} URL")
        self.name = name or self.kind
        self.timeout = aiohttp.ClientTimeout(total=timeout_s)
        self.backoff = backoff or Backoff()
        self.headers = {
            "Content-Type": "application/json",
            "User-Agent": f"streamguard-relay/{__version__}",
            **(headers or {}),
        }
        self.clock = clock
        self.stats = SinkStats()

    @abstractmethod
    def body(self, alert: Alert, raw: bytes) -> bytes:
        """The request body for ``alert`` (``raw``: the message bytes from the topic)."""

    def counters(self) -> dict[str, int | str]:
        """The sink's counters as a plain dict."""
        return asdict(self.stats)

    async def deliver(self, session: aiohttp.ClientSession, alert: Alert, raw: bytes) -> Outcome:
        """POST ``alert`` until it is accepted or refused for good; cancel to give up.

        Raises
        ------
        asyncio.CancelledError
            When the relay stops; the alert is then neither delivered nor committed.
        """
        headers = {**self.headers, "Idempotency-Key": alert.alert_id}
        failures = 0
        while True:
            wait: float | None = None
            try:
                async with session.post(
                    self.url,
                    data=self.body(alert, raw),
                    headers=headers,
                    timeout=self.timeout,
                    allow_redirects=False,
                ) as response:
                    if 200 <= response.status < 300:
                        self.stats.delivered += 1
                        if failures:
                            log.warning(
                                "%s: alert %s delivered after %d failed attempts",
                                self.name,
                                alert.alert_id,
                                failures,
                            )
                        return Outcome.DELIVERED
                    text = (await response.text(errors="replace")).strip()
                    error = f"HTTP {response.status} {response.reason or ''}".rstrip()
                    if text:
                        error += f": {' '.join(text.split())[:_REASON_CHARS]}"
                    if not retryable(response.status):
                        self.stats.rejected += 1
                        self.stats.last_rejection = error
                        log.error(
                            "%s refused alert %s (%s %s): %s; not retried",
                            self.name,
                            alert.alert_id,
                            alert.deployment,
                            alert.guard,
                            error,
                        )
                        return Outcome.REJECTED
                    wait = _retry_after(response.headers)
            except (aiohttp.ClientError, TimeoutError, OSError) as exc:
                error = f"{type(exc).__name__}: {exc}".rstrip(": ")
            failures += 1
            self.stats.retried += 1
            self.stats.last_error = error
            delay = self.backoff.delay(failures)
            if wait is not None:
                delay = min(max(delay, wait), self.backoff.max_s)
            # One line when an alert first fails, then every tenth attempt: a receiver that is
            # down for hours must not flood the log.
            level = logging.WARNING if failures == 1 or failures % 10 == 0 else logging.DEBUG
            log.log(
                level,
                "%s: alert %s not delivered (attempt %d: %s); retrying in %.2fs",
                self.name,
                alert.alert_id,
                failures,
                error,
                delay,
            )
            await asyncio.sleep(delay)


class AlertmanagerSink(HttpSink):
    """Alertmanager's ``POST /api/v2/alerts``, one postable alert per request.

    Parameters
    ----------
    url
        The Alertmanager's base URL (``http://alertmanager:9093``) or its alerts endpoint.
    runbook_url
        Link for the ``runbook_url`` annotation; ``{guard}`` and ``{deployment}`` are filled in.
    generator_url
        Optional ``generatorURL`` (a back-link, for instance to the worker's dashboard).
    name, timeout_s, backoff, headers, clock
        As for :class:`HttpSink`.
    """

    kind: ClassVar[str] = "alertmanager"

    def __init__(
        self,
        url: str,
        *,
        runbook_url: str = DEFAULT_RUNBOOK_URL,
        generator_url: str | None = None,
        name: str | None = None,
        timeout_s: float = 10.0,
        backoff: Backoff | None = None,
        headers: Mapping[str, str] | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        super().__init__(
            alertmanager_endpoint(url),
            name=name,
            timeout_s=timeout_s,
            backoff=backoff,
            headers=headers,
            clock=clock,
        )
        self.runbook_url = runbook_url
        # Alertmanager refuses a generatorURL that is not a URI: better refuse it at start.
        self.generator_url = check_url(generator_url, "generator URL") if generator_url else None

    def body(self, alert: Alert, raw: bytes) -> bytes:
        """A one-element list of postable alerts, ``startsAt`` clamped to now."""
        payload = alertmanager_alert(
            alert,
            now=self.clock(),
            runbook_url=self.runbook_url,
            generator_url=self.generator_url,
        )
        return alertmanager_body([payload])


class WebhookSink(HttpSink):
    """A generic webhook: the alert's JSON exactly as it is on the topic.

    The bytes are not re-encoded, so a signed alert (schema version 2) reaches the receiver
    with its signature intact and can be verified there.
    """

    kind: ClassVar[str] = "webhook"

    def body(self, alert: Alert, raw: bytes) -> bytes:
        """The message value, unchanged."""
        return raw
