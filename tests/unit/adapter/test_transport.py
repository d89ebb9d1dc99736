"""The worker's Faust consumer fetches with the configured wait, not Faust's fixed 1.5 s."""

import asyncio

import pytest

from streamguard.faust_app.transport import App


def test_the_worker_consumer_takes_the_apps_fetch_wait() -> None:
    async def build() -> int:
        app = App("sg-transport-test", broker="kafka://127.0.0.1:1", autodiscover=False)
        app.fetch_max_wait_ms = 80
        thread = app.consumer._thread
        consumer = thread._create_worker_consumer(app.transport)
        return int(consumer._fetch_max_wait_ms)

    assert asyncio.run(build()) == 80


def test_snapshots_up_to_the_state_topics_limit_can_be_sent() -> None:
    """The 1 MB defaults refused a busy deployment's stage-2 snapshot (counted, never stored)."""
    from streamguard.contracts import load_topic_specs
    from streamguard.faust_app.app import create_app
    from streamguard.policy import Policy
    from streamguard.settings import Settings

    spec = load_topic_specs()["state"]
    assert spec.max_message_bytes is not None
    assert spec.max_message_bytes >= 32 << 20
    assert spec.broker_config()["max.message.bytes"] == str(spec.max_message_bytes)

    async def build() -> int:
        worker = create_app(Settings(broker="kafka://127.0.0.1:1", insecure=True), Policy())
        return int(worker.app.conf.producer_max_request_size)

    assert asyncio.run(build()) == spec.max_message_bytes


def test_the_session_timeout_comes_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tansu answers a join after half of it, so the tests' workers run with a shorter one."""
    from streamguard.faust_app.app import create_app
    from streamguard.policy import Policy
    from streamguard.settings import Settings

    monkeypatch.setenv("STREAMGUARD_BROKER_SESSION_TIMEOUT_S", "7.5")
    settings = Settings.from_env(broker="kafka://127.0.0.1:1", insecure=True)

    async def build() -> tuple[float, float]:
        conf = create_app(settings, Policy()).app.conf
        return float(conf.broker_session_timeout), float(conf.broker_heartbeat_interval)

    assert asyncio.run(build()) == (7.5, 1.0)
    monkeypatch.delenv("STREAMGUARD_BROKER_SESSION_TIMEOUT_S")
    assert Settings.from_env().broker_session_timeout_s == 10.0


def test_a_worker_on_the_embedded_broker_joins_with_a_short_session_unless_told(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """``streamguard worker`` without ``--broker``: Tansu answers joins after half of it."""
    from streamguard.settings import EMBEDDED_SESSION_TIMEOUT_S, SESSION_TIMEOUT_ENV, Settings

    monkeypatch.delenv(SESSION_TIMEOUT_ENV, raising=False)
    embedded = Settings.from_env().on_embedded("kafka://127.0.0.1:9")
    assert embedded.broker == "kafka://127.0.0.1:9"
    assert embedded.broker_session_timeout_s == EMBEDDED_SESSION_TIMEOUT_S < 10.0
    monkeypatch.setenv(SESSION_TIMEOUT_ENV, "12")
    assert Settings.from_env().on_embedded("kafka://127.0.0.1:9").broker_session_timeout_s == 12.0


def test_pages_asked_before_the_consumer_starts_see_no_partition_owned() -> None:
    """/health and /ready answer from the start; before Faust's consumer thread runs, its
    ``assignment()`` raises, which made /ready a 500 once in a CI rehearsal. Nothing is owned."""
    from faust.exceptions import ConsumerNotStarted

    from streamguard.faust_app.app import create_app
    from streamguard.policy import Policy
    from streamguard.settings import Settings

    async def owned_before_start() -> list[int]:
        worker = create_app(Settings(broker="kafka://127.0.0.1:1", insecure=True), Policy())
        with pytest.raises(ConsumerNotStarted):
            worker.app.consumer.assignment()
        return worker.runtime.owned("streamguard.predictions")

    assert asyncio.run(owned_before_start()) == []
