"""The Faust worker, built by :func:`create_app`: a thin adapter around the pure engine.

Three agents, one per stage (their work is in :class:`~streamguard.faust_app.runtime.Runtime`):

1. ``stage1`` reads the predictions topic (keyed by request id): decodes, dead-letters bad
   events, pairs, measures per slice. A timer flushes partials every second to the partials
   topic (keyed by deployment), then a watermark heartbeat to every partials partition; a
   partition whose watermark passes a window's close is flushed at once.
2. ``stage2`` reads partials: merges them (dropping already-applied offset ranges), closes
   event-time windows and runs the guards; verdicts go to the verdicts topic.
3. ``stage3`` reads verdicts (and the control topic, for approvals): decides, and publishes
   commands to the control topic and alerts to the alerts topic.

A fourth agent, ``leakage``, reads the training examples topic (keyed by pipeline): it counts
features computed after their label, exactly per partition, and publishes one ``block`` per
leaking pipeline to the control topic.

Besides the pages of :mod:`streamguard.faust_app.web`, two probes for Kubernetes: ``/live``
(200 while the event loop runs) and ``/ready`` (200 once the assigned partitions' state is
restored and stage 1 has caught up, see :meth:`~streamguard.faust_app.runtime.Runtime.readiness`).

Every stream is acknowledged manually, once a state snapshot covers the message (see
:mod:`streamguard.faust_app.runtime`), so a crash or a rebalance never loses or double counts.
An exception in any stage's work ends the process at once, as ``kill -9`` would
(:mod:`streamguard.faust_app.halt`): Faust would restart the agent on half-changed state.
No app or agent exists at import time; every worker builds its own with ``create_app``.
"""

from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any

import faust

from streamguard.contracts import TopicSpec, load_topic_specs
from streamguard.engine import Engine
from streamguard.faust_app.halt import stops_worker
from streamguard.faust_app.heap import HeapTrimmer
from streamguard.faust_app.metrics import Metrics
from streamguard.faust_app.pacing import PartitionPauser
from streamguard.faust_app.probe import BrokerProbe
from streamguard.faust_app.rewind import rewinder
from streamguard.faust_app.runtime import Runtime, Topics
from streamguard.faust_app.state import StateStore
from streamguard.faust_app.status_feed import StatusFeed
from streamguard.faust_app.transport import App
from streamguard.faust_app.web import register_pages
from streamguard.policy import Policy
from streamguard.security import load_publisher
from streamguard.settings import Settings, bootstrap_servers, faust_broker_url

__all__ = ["Worker", "create_app"]


@dataclass
class Worker:
    """What ``create_app`` returns: the Faust app and the state tests and the CLI look at."""

    app: faust.App
    engine: Engine
    metrics: Metrics
    specs: dict[str, TopicSpec]
    runtime: Runtime


def _topic(app: faust.App, *names: str) -> Any:
    return app.topic(
        *names, key_type=bytes, value_type=bytes, key_serializer="raw", value_serializer="raw"
    )


def create_app(
    settings: Settings, policy: Policy, specs: dict[str, TopicSpec] | None = None
) -> Worker:
    """Build the Faust app (agents, timers, web pages) for ``settings`` and ``policy``."""
    if settings.broker is None:
        raise ValueError("create_app needs a broker URL; the CLI starts the embedded one")
    specs = specs or load_topic_specs()
    app = App(
        settings.app_id,
        broker=faust_broker_url(settings.broker),
        autodiscover=False,
        store="memory://",
        datadir=str(settings.data_dir),
        key_serializer="raw",
        value_serializer="raw",
        # Topics come from topics/*.toml through `streamguard topics apply`; Faust must not
        # create them with its own defaults, nor its leader-election topic.
        topic_allow_declare=False,
        topic_disable_leader=True,
        consumer_auto_offset_reset="earliest",
        # Messages stay unacknowledged until a snapshot covers them; Faust must not wait for
        # them on a rebalance or at shutdown (uncommitted offsets are simply replayed).
        stream_wait_empty=False,
        broker_rebalance_timeout=settings.broker_rebalance_timeout_s,
        broker_session_timeout=settings.broker_session_timeout_s,
        broker_heartbeat_interval=settings.broker_heartbeat_interval_s,
        web_enabled=True,
        web_port=settings.web_port,
        web_bind=settings.web_host,
        web_host=settings.web_host,
        # Snapshots may be several MB (the state topic takes them: topics/state.toml).
        producer_max_request_size=max(1 << 20, specs["state"].max_message_bytes or 0),
    )
    app.fetch_max_wait_ms = settings.fetch_max_wait_ms
    app.stream_buffer_max_bytes = int(settings.stream_buffer_mb * (1 << 20))
    metrics = Metrics()
    engine = Engine.create(policy, specs["predictions"].partitions, settings.idle_source_timeout_s)
    topics = Topics(
        partials=_topic(app, specs["partials"].name),
        verdicts=_topic(app, specs["verdicts"].name),
        control=_topic(app, specs["control"].name),
        alerts=_topic(app, specs["alerts"].name),
        deadletters=_topic(app, specs["deadletters"].name),
        state=_topic(app, specs["state"].name),
    )
    store = StateStore(bootstrap_servers(settings.broker), specs["state"], topics.state, metrics)
    probe = BrokerProbe(bootstrap_servers(settings.broker), metrics, specs)
    predictions_name = specs["predictions"].name

    def owned(topic: str) -> list[int]:
        try:
            assignment = app.consumer.assignment() if app.consumer else set()
        except faust.exceptions.ConsumerNotStarted:
            # /health and /ready answer from the start, before Faust's consumer thread runs
            # (it raised through the page: a 500 where "nothing owned yet" is the answer).
            assignment = set()
        return sorted(tp.partition for tp in assignment if tp.topic == topic)

    publisher = load_publisher(
        settings.signing_key_path,
        settings.keyring_path,
        insecure=settings.insecure,
        ttl_s=settings.command_ttl_s,
    )
    runtime = Runtime(
        settings,
        engine,
        metrics,
        specs=specs,
        topics=topics,
        store=store,
        owned=owned,
        publisher=publisher,
        rewind=rewinder(app, bootstrap_servers(settings.broker), metrics),
    )
    control_name = specs["control"].name
    n_channels = specs["partials"].partitions

    def owned_sources() -> list[int]:
        return owned(predictions_name)

    def stops(where: str) -> AbstractContextManager[None]:
        # Any exception in a stage's work ends the process at once (faust_app.halt).
        return stops_worker(where, runtime.agent_crashed)

    @app.agent(_topic(app, predictions_name), name="stage1")
    async def stage1(stream: Any) -> None:
        with stops("stage1"):
            async for event in stream.noack().events():
                await runtime.on_prediction(event)

    @app.agent(_topic(app, specs["partials"].name), name="stage2")
    async def stage2(stream: Any) -> None:
        with stops("stage2"):
            async for event in stream.noack().events():
                await runtime.on_partial(event)

    @app.agent(_topic(app, specs["training_examples"].name), name="leakage")
    async def leakage(stream: Any) -> None:
        with stops("leakage"):
            async for event in stream.noack().events():
                await runtime.on_training_example(event)

    @app.agent(_topic(app, specs["verdicts"].name, control_name), name="stage3")
    async def stage3(stream: Any) -> None:
        with stops("stage3"):
            async for event in stream.noack().events():
                await runtime.on_decision_input(event, control_name)

    def refresh_lag() -> list[int]:
        """Record lag; return partitions whose log ends before what was already read."""
        lost = []
        for tp in app.consumer.assignment() if app.consumer else set():
            highwater = app.consumer.highwater(tp)
            if tp.topic == predictions_name and not runtime.record_lag(tp.partition, highwater):
                lost.append(tp.partition)
        return lost

    runtime.pause = PartitionPauser(app, predictions_name).apply

    @app.timer(interval=settings.flush_interval_s, name="flush")
    async def flush() -> None:
        with stops("flush"):
            lost = refresh_lag()  # heartbeats say which sources are caught up
            if lost:
                await runtime.forget_everything(f"predictions partitions {lost} shrank")
            # Backpressure: partitions far ahead of stage 2 wait (core.pacing).
            await runtime.repace()
            await runtime.flush(owned_sources(), n_channels)

    @app.task
    async def eager_flushes() -> None:
        # Partitions whose watermark passed a window's close, flushed together (runtime).
        with stops("eager_flush"):
            await runtime.eager_flushes(owned_sources, n_channels)

    @app.timer(interval=settings.flush_interval_s, name="idle-windows")
    async def close_idle() -> None:
        # Windows also close when sources fall idle, without any partial arriving.
        with stops("close_idle"):
            await runtime.close_idle()

    heap = HeapTrimmer()

    @app.timer(interval=settings.stage_snapshot_interval_s, name="snapshots")
    async def snapshots() -> None:
        with stops("snapshots"):
            await runtime.snapshot_stage2()
            await runtime.snapshot_stage3()
            await runtime.snapshot_leakage()
        heap.maybe_trim()  # after the snapshots, the largest transient allocations

    @app.timer(interval=settings.broker_probe_interval_s, name="broker-probe")
    async def probe_broker() -> None:
        await probe.check()

    @app.on_partitions_revoked.connect
    async def revoked(sender: Any, /, *args: Any, signal: Any, **kwargs: Any) -> None:
        # mode's signals call receivers with (sender, *args, signal=...): args[0] is the set.
        await runtime.on_revoked(set(args[0]) if args else set(kwargs.get("revoked", ())))

    @app.on_partitions_assigned.connect
    async def assigned(sender: Any, /, *args: Any, signal: Any, **kwargs: Any) -> None:
        runtime.on_assigned(set(args[0]) if args else set(kwargs.get("assigned", ())))

    @app.on_before_shutdown.connect
    async def checkpoint(sender: Any, /, *args: Any, signal: Any, **kwargs: Any) -> None:
        # A graceful stop stores every stage's state so the next start replays nothing.
        await runtime.checkpoint(owned_sources(), n_channels)
        await probe.close()

    feed = StatusFeed(bootstrap_servers(settings.broker), specs["verdicts"].name, control_name)

    @app.task
    async def status_feed() -> None:
        await feed.run()

    def health() -> tuple[int, dict[str, Any]]:
        return runtime.health(owned_sources(), probe.topic_problems)

    register_pages(app, metrics, feed, health)

    # Kubernetes' probes. Liveness only asks whether the event loop runs: a worker that is
    # restoring state or catching up must not be restarted for it, only kept out of the Service.
    @app.page("/live")
    async def live_page(web: Any, request: Any) -> Any:
        return web.json({"status": "alive"})

    @app.page("/ready")
    async def ready_page(web: Any, request: Any) -> Any:
        status, document = runtime.readiness(health()[1])
        return web.json(document, status=status)

    # The decorators registered everything on the app; the names are not needed here.
    del (
        stage1,
        stage2,
        stage3,
        leakage,
        flush,
        close_idle,
        snapshots,
        probe_broker,
        revoked,
        assigned,
        checkpoint,
    )
    del status_feed, eager_flushes, live_page, ready_page
    return Worker(app=app, engine=engine, metrics=metrics, specs=specs, runtime=runtime)
