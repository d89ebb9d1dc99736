"""The alert relay against a real broker and a real HTTP receiver started by the test.

Alerts are published to the alerts topic as the worker publishes them (keyed by deployment);
the relay runs in-process; the receiver is an aiohttp server on a loopback port that records
what it accepted and can answer with scripted statuses.
"""

import asyncio
import signal
import sys
import time
from collections.abc import Callable
from typing import Any

import orjson
import pytest
from aiohttp import web

from streamguard.broker import EmbeddedBroker, free_port
from streamguard.contracts import Alert, Command, alert_for, load_topic_specs
from streamguard.delivery import (
    AlertmanagerSink,
    AlertRelay,
    Backoff,
    HttpSink,
    WebhookSink,
    alertmanager_alert,
)
from tests.integration.conftest import produce

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]

TOPIC = load_topic_specs()["alerts"].name
AM_PATH = "/api/v2/alerts"
HOOK_PATH = "/hook"
# Tansu answers a JoinGroup after half the session timeout: a short session keeps tests fast.
FAST_GROUP = {
    "session_timeout_ms": 4000,
    "heartbeat_interval_ms": 500,
    "rebalance_timeout_ms": 2000,
}
FAST_RETRY = Backoff(initial_s=0.05, max_s=0.2)


def make_alert(
    deployment: str, action: str, slice_: dict[str, str] | None, ts: float = 1_790_000_230.0
) -> Alert:
    evidence = {"statistic": "flip_rate", "value": 0.06, "threshold": 0.05, "n": 900}
    command = Command(action, deployment, "v2", "shadow", slice_, evidence | {"action": action}, ts)
    return alert_for(command, f"{deployment} v2: shadow deviates; {action} issued")


async def publish(bootstrap: str, values: list[tuple[str, bytes]]) -> None:
    """(deployment, value) pairs, keyed by deployment like the worker's alerts."""
    messages = [(None, key.encode(), value) for key, value in values]
    await asyncio.to_thread(produce, bootstrap, messages, TOPIC)


async def until(condition: Callable[[], bool], timeout_s: float = 20.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError("condition not met in time")
        await asyncio.sleep(0.02)


class Receiver:
    """Alertmanager endpoint and generic webhook on one loopback port.

    ``script[(path, alert_id)]`` lists statuses to answer, in turn, before accepting.
    """

    def __init__(self, port: int) -> None:
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        self.alertmanager: list[dict[str, Any]] = []  # accepted postable alerts
        self.webhook: list[bytes] = []  # accepted bodies
        self.requests: list[tuple[str, str]] = []  # (path, alert_id) of every request
        self.headers: list[dict[str, str]] = []
        self.script: dict[tuple[str, str], list[int]] = {}
        self._runner: web.AppRunner | None = None

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post(AM_PATH, self._handle)
        app.router.add_post(HOOK_PATH, self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self.port).start()

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    async def _handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        parsed = orjson.loads(body)
        if request.path == AM_PATH:
            assert isinstance(parsed, list)
            alert_id = parsed[0]["annotations"]["alert_id"]
        else:
            alert_id = parsed["alert_id"]
        self.requests.append((request.path, alert_id))
        self.headers.append(dict(request.headers))
        statuses = self.script.get((request.path, alert_id))
        if statuses:
            status = statuses.pop(0)
            headers = {"Retry-After": "0"} if status == 429 else None
            return web.Response(status=status, text=f"scripted {status}", headers=headers)
        if request.path == AM_PATH:
            self.alertmanager.extend(parsed)
        else:
            self.webhook.append(body)
        return web.Response(status=200)

    def ids(self, path: str) -> list[str]:
        """Alert ids accepted on ``path``, in arrival order."""
        if path == AM_PATH:
            return [a["annotations"]["alert_id"] for a in self.alertmanager]
        return [orjson.loads(b)["alert_id"] for b in self.webhook]


def relay_for(
    bootstrap: str, group: str, alertmanager: str | None = None, webhook: str | None = None
) -> AlertRelay:
    sinks: list[HttpSink] = []
    if alertmanager:
        sinks.append(AlertmanagerSink(alertmanager, backoff=FAST_RETRY, timeout_s=2.0))
    if webhook:
        sinks.append(WebhookSink(webhook, backoff=FAST_RETRY, timeout_s=2.0))
    return AlertRelay(bootstrap, sinks, group_id=group, consumer_config=FAST_GROUP)


def test_alerts_reach_both_sinks_and_a_restarted_relay_does_not_deliver_them_again(
    broker_with_topics: EmbeddedBroker,
) -> None:
    bootstrap = broker_with_topics.bootstrap
    alerts = [
        make_alert("home-ranker", "pause", {"platform": "android", "region": "eu", "tier": "free"}),
        make_alert("search-ranker", "rollback", None),
        make_alert("home-ranker", "rollback", {"platform": "ios"}),
    ]
    late = make_alert("ads-ranker", "pause", {"tier": "free"})
    receiver = Receiver(free_port())

    async def scenario() -> tuple[dict[str, Any], dict[str, Any]]:
        await receiver.start()
        try:
            await publish(bootstrap, [(a.deployment, a.to_json()) for a in alerts])
            urls = {"alertmanager": receiver.url, "webhook": receiver.url + HOOK_PATH}
            async with relay_for(bootstrap, "oncall", **urls) as relay:
                await until(lambda: relay.committed == 3)
                first = relay.stats()
            # Same group again: everything so far was committed, so only the new alert comes.
            async with relay_for(bootstrap, "oncall", **urls) as relay:
                await publish(bootstrap, [(late.deployment, late.to_json())])
                await until(lambda: late.alert_id in receiver.ids(HOOK_PATH))
                await until(lambda: relay.committed >= 1)
                second = relay.stats()
        finally:
            await receiver.stop()
        return first, second

    first, second = asyncio.run(scenario())
    everything = [*alerts, late]
    # Alertmanager format, in topic order, each alert once (startsAt is in the past: exact).
    assert receiver.alertmanager == [alertmanager_alert(a, now=time.time()) for a in everything]
    assert receiver.alertmanager[0]["labels"] == {
        "alertname": "StreamguardGuard",
        "deployment": "home-ranker",
        "model_version": "v2",
        "guard": "shadow",
        "slice": "platform=android,region=eu,tier=free",
        "severity": "warning",
    }
    assert receiver.alertmanager[1]["labels"]["slice"] == "*"
    assert receiver.alertmanager[1]["labels"]["severity"] == "critical"
    assert receiver.alertmanager[0]["startsAt"] == "2026-09-21T14:17:10.000Z"
    # The generic webhook gets the message bytes unchanged.
    assert receiver.webhook == [a.to_json() for a in everything]
    assert all(h["Idempotency-Key"] in {a.alert_id for a in everything} for h in receiver.headers)
    assert all(h["Content-Type"] == "application/json" for h in receiver.headers)
    assert len(receiver.requests) == 2 * len(everything)  # no retries, no redelivery
    for stats in (first, second):
        assert stats["commit_errors"] == 0
        assert stats["invalid"] == {}
        for sink in ("alertmanager", "webhook"):
            assert stats["sinks"][sink]["retried"] == 0
            assert stats["sinks"][sink]["rejected"] == 0
    assert first["sinks"]["alertmanager"]["delivered"] == 3
    assert first["handled"] == 3
    # The restarted relay resumed at the committed offset: it read only the new alert.
    assert second["received"] == 1
    assert second["sinks"]["webhook"]["delivered"] == 1


def test_alert_waits_on_the_topic_while_the_receiver_is_down_and_arrives_when_it_is_up(
    broker_with_topics: EmbeddedBroker,
) -> None:
    bootstrap = broker_with_topics.bootstrap
    alerts = [
        make_alert("home-ranker", "pause", {"platform": "ios"}),
        make_alert("home-ranker", "rollback", {"platform": "ios"}),
    ]
    receiver = Receiver(free_port())  # not started: connections are refused

    async def scenario() -> tuple[dict[str, Any], dict[str, Any]]:
        await publish(bootstrap, [(a.deployment, a.to_json()) for a in alerts])
        async with relay_for(bootstrap, "oncall", alertmanager=receiver.url) as relay:
            await until(lambda: relay.sinks["alertmanager"].stats.retried >= 3)
            down = relay.stats()
        # That relay gave up while the receiver was down; its successor must still have it.
        async with relay_for(bootstrap, "oncall", alertmanager=receiver.url) as relay:
            await until(lambda: relay.sinks["alertmanager"].stats.retried >= 1)
            assert receiver.requests == []
            await receiver.start()
            try:
                await until(lambda: relay.committed == 2)
                up = relay.stats()
            finally:
                await receiver.stop()
        return down, up

    down, up = asyncio.run(scenario())
    assert down["committed"] == 0
    assert down["handled"] == 0
    assert down["sinks"]["alertmanager"]["delivered"] == 0
    assert "ClientConnectorError" in down["sinks"]["alertmanager"]["last_error"]
    # Both arrived after the receiver came up, in order, once each; nothing was lost.
    assert receiver.ids(AM_PATH) == [a.alert_id for a in alerts]
    assert receiver.requests == [(AM_PATH, a.alert_id) for a in alerts]
    assert up["sinks"]["alertmanager"]["delivered"] == 2
    assert up["sinks"]["alertmanager"]["retried"] >= 1
    assert up["sinks"]["alertmanager"]["rejected"] == 0


def test_refused_alerts_are_counted_not_retried_and_transient_errors_are_retried(
    broker_with_topics: EmbeddedBroker,
) -> None:
    bootstrap = broker_with_topics.bootstrap
    refused = make_alert("home-ranker", "pause", {"platform": "ios"})
    flaky = make_alert("home-ranker", "pause", {"platform": "web"})
    fine = make_alert("home-ranker", "pause", {"platform": "android"})
    receiver = Receiver(free_port())
    receiver.script[(AM_PATH, refused.alert_id)] = [400] * 5
    receiver.script[(AM_PATH, flaky.alert_id)] = [503, 429, 408]
    values = [
        ("home-ranker", refused.to_json()),
        ("home-ranker", b"{not json"),
        ("home-ranker", flaky.to_json()),
        ("home-ranker", b'{"schema_version": 1, "alert_id": "x"}'),
        ("home-ranker", fine.to_json()),
    ]

    async def scenario() -> dict[str, Any]:
        await receiver.start()
        try:
            await publish(bootstrap, values)
            urls = {"alertmanager": receiver.url, "webhook": receiver.url + HOOK_PATH}
            async with relay_for(bootstrap, "oncall", **urls) as relay:
                await until(lambda: relay.committed == 5)
                return relay.stats()
        finally:
            await receiver.stop()

    stats = asyncio.run(scenario())
    am, hook = stats["sinks"]["alertmanager"], stats["sinks"]["webhook"]
    # The 400 is asked once, counted with its reason, and does not hold up later alerts.
    assert receiver.requests.count((AM_PATH, refused.alert_id)) == 1
    assert am["rejected"] == 1
    assert am["last_rejection"] == "HTTP 400 Bad Request: scripted 400"
    # 503, 429 and 408 are retried until accepted.
    assert receiver.requests.count((AM_PATH, flaky.alert_id)) == 4
    assert am["retried"] == 3
    assert am["last_error"] == "HTTP 408 Request Timeout: scripted 408"
    assert receiver.ids(AM_PATH) == [flaky.alert_id, fine.alert_id]
    assert am["delivered"] == 2
    # The other sink is independent: it accepted all three at the first attempt.
    assert receiver.ids(HOOK_PATH) == [refused.alert_id, flaky.alert_id, fine.alert_id]
    assert hook == {
        "delivered": 3,
        "retried": 0,
        "rejected": 0,
        "last_error": "",
        "last_rejection": "",
    }
    assert stats["invalid"] == {"invalid_json": 1, "missing_field": 1}
    assert stats["received"] == 5
    assert stats["handled"] == 3


def test_relay_command_delivers_and_stops_cleanly_on_sigterm(
    broker_with_topics: EmbeddedBroker,
) -> None:
    alert = make_alert("home-ranker", "rollback", None)
    receiver = Receiver(free_port())

    async def scenario() -> tuple[int | None, str]:
        await receiver.start()
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "streamguard",
            "relay",
            "--broker",
            broker_with_topics.url,
            "--alertmanager",
            receiver.url,
            "--runbook-url",
            "https://runbooks.example/{guard}",
            stderr=asyncio.subprocess.PIPE,
        )
        try:
            await publish(broker_with_topics.bootstrap, [(alert.deployment, alert.to_json())])
            await until(lambda: len(receiver.alertmanager) == 1 or process.returncode is not None)
            process.send_signal(signal.SIGTERM)  # stopped by its pid
            _, stderr = await asyncio.wait_for(process.communicate(), 20)
        finally:
            if process.returncode is None:
                process.kill()
                await process.wait()
            await receiver.stop()
        return process.returncode, stderr.decode()

    code, stderr = asyncio.run(scenario())
    assert code == 0, stderr
    assert "Traceback" not in stderr
    assert receiver.ids(AM_PATH) == [alert.alert_id]
    annotations = receiver.alertmanager[0]["annotations"]
    assert annotations["runbook_url"] == "https://runbooks.example/shadow"
