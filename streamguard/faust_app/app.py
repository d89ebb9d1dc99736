"""The Faust worker, built by :func:`create_app`: a thin adapter around the pure engine.

Three agents, one per stage:

1. ``stage1`` reads the predictions topic (keyed by request id). Each message is decoded; bad
   events go to the dead-letter topic with their reason; good ones feed the engine's stage 1
   (pairing, per-slice partial summaries). A timer flushes partials every second to the
   partials topic, keyed by deployment, followed by a watermark heartbeat to every partials
   partition.
2. ``stage2`` reads partials: merges them (dropping already-applied offset ranges), closes
   event-time windows and runs the guards; verdicts go to the verdicts topic.
3. ``stage3`` reads verdicts (and the control topic, for approvals): decides, and publishes
   commands to the control topic and alerts to the alerts topic.

No app or agent exists at import time; every worker builds its own with ``create_app``.
"""

import logging
import math
import time
from dataclasses import dataclass
from typing import Any

import faust
import orjson

from streamguard.contracts import TopicSpec, dead_letter, decode_message, load_topic_specs
from streamguard.core import PartialError
from streamguard.core.partials import dumps
from streamguard.engine import Engine
from streamguard.faust_app.metrics import Metrics
from streamguard.faust_app.outbox import send_reliably
from streamguard.policy import Policy
from streamguard.settings import Settings, faust_broker_url

__all__ = ["Worker", "create_app"]

log = logging.getLogger("streamguard.worker")


@dataclass
class Worker:
    """What ``create_app`` returns: the Faust app and the state tests and the CLI look at."""

    app: faust.App
    engine: Engine
    metrics: Metrics
    specs: dict[str, TopicSpec]


def _topic(app: faust.App, spec: TopicSpec) -> Any:
    return app.topic(
        spec.name,
        key_type=bytes,
        value_type=bytes,
        key_serializer="raw",
        value_serializer="raw",
        partitions=spec.partitions,
        internal=False,
    )


def create_app(
    settings: Settings, policy: Policy, specs: dict[str, TopicSpec] | None = None
) -> Worker:
    """Build the Faust app (agents, timers, web pages) for ``settings`` and ``policy``."""
    if settings.broker is None:
        raise ValueError("create_app needs a broker URL; the CLI starts the embedded one")
    specs = specs or load_topic_specs()
    app = faust.App(
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
        broker_rebalance_timeout=settings.broker_rebalance_timeout_s,
        broker_session_timeout=settings.broker_session_timeout_s,
        broker_heartbeat_interval=settings.broker_heartbeat_interval_s,
        web_enabled=True,
        web_port=settings.web_port,
        web_bind=settings.web_host,
        web_host=settings.web_host,
    )
    metrics = Metrics()
    engine = Engine.create(policy, specs["predictions"].partitions, settings.idle_source_timeout_s)
    predictions = _topic(app, specs["predictions"])
    partials = _topic(app, specs["partials"])
    verdicts = _topic(app, specs["verdicts"])
    control = _topic(app, specs["control"])
    alerts = _topic(app, specs["alerts"])
    deadletters = _topic(app, specs["deadletters"])
    predictions_name = specs["predictions"].name
    control_name = specs["control"].name
    n_partials = specs["partials"].partitions

    def owned_sources() -> list[int]:
        assignment = app.consumer.assignment() if app.consumer else set()
        return sorted(tp.partition for tp in assignment if tp.topic == predictions_name)

    @app.agent(predictions, name="stage1")
    async def stage1(stream: Any) -> None:
        async for event in stream.events():
            message = event.message
            decoded = decode_message(event.value, max_ts=time.time() + settings.max_future_s)
            metrics.messages.inc()
            for rejected in decoded.rejected:
                metrics.decode_failures.labels(rejected.reason).inc()
                record = dead_letter(
                    rejected, message.topic, message.partition, message.offset, time.time()
                )
                await send_reliably(metrics, deadletters, record, key=rejected.reason.encode())
            report = engine.stage1.process(message.partition, message.offset, decoded)
            metrics.events.labels("prediction").inc(report.predictions)
            metrics.events.labels("outcome").inc(report.outcomes)
            metrics.pairs.inc(report.pairs)
            metrics.unpaired.inc(report.unpaired)
            metrics.duplicate_halves.inc(report.duplicates)
            metrics.late.labels("source").inc(report.late)
            metrics.late.labels("source_pairs").inc(report.late_pairs)

    @app.timer(interval=settings.flush_interval_s, name="flush")
    async def flush() -> None:
        sources = owned_sources()
        for partition in sources:
            for deployment, partial in engine.stage1.flush(partition):
                await send_reliably(metrics, partials, partial, key=deployment.encode())
        # The heartbeat follows the partials on every partials partition, so stage 2 never
        # sees a watermark before the data it covers.
        heartbeat = dumps(engine.stage1.heartbeat(sources))
        for partition in range(n_partials):
            await send_reliably(metrics, partials, heartbeat, partition=partition)
        metrics.pending.set(sum(engine.stage1.pending(p) for p in sources))
        for partition in sources:
            watermark = engine.stage1.watermark(partition)
            if math.isfinite(watermark):
                metrics.watermark.labels(str(partition)).set(watermark)

    async def publish_verdicts(now: float) -> None:
        for verdict in engine.stage2.advance(now=now):
            metrics.verdicts.labels(verdict.guard).inc()
            await send_reliably(
                metrics, verdicts, dumps(verdict.to_dict()), key=verdict.deployment.encode()
            )
        high = max(engine.stage2.source_watermarks(), default=-math.inf)
        for deployment in engine.stage2.deployments():
            end = engine.stage2.last_closed_end(deployment)
            if end is not None and math.isfinite(high):
                metrics.window_lag.labels(deployment).set(max(0.0, high - end))

    @app.agent(partials, name="stage2")
    async def stage2(stream: Any) -> None:
        async for event in stream.events():
            now = time.time()
            try:
                # The partials partition is the channel: only within it do heartbeats follow
                # the data they cover.
                message = orjson.loads(event.value)
                report = engine.stage2.apply(message, now=now, channel=event.message.partition)
            except (PartialError, orjson.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
                metrics.internal_errors.labels("stage2").inc()
                log.error("partial dropped: %s", exc)
                continue
            if report.applied:
                metrics.partials.labels("applied").inc()
            if report.duplicates:
                metrics.partials.labels("duplicate").inc()
            metrics.late.labels("merge").inc(report.late_at_merge)
            metrics.capped.inc(report.capped_slices)
            await publish_verdicts(now)

    @app.timer(interval=settings.flush_interval_s, name="idle-windows")
    async def close_idle() -> None:
        # Windows also close when sources fall idle, without any partial arriving.
        await publish_verdicts(time.time())

    @app.agent(
        app.topic(
            specs["verdicts"].name,
            control_name,
            key_type=bytes,
            value_type=bytes,
            key_serializer="raw",
            value_serializer="raw",
        ),
        name="stage3",
    )
    async def stage3(stream: Any) -> None:
        async for event in stream.events():
            try:
                message = orjson.loads(event.value)
            except orjson.JSONDecodeError:
                metrics.internal_errors.labels("stage3").inc()
                continue
            if event.message.topic == control_name:
                if isinstance(message, dict) and engine.decider.on_control(message):
                    log.warning("approval applied: %s", message.get("command_id"))
                continue
            for command, alert in engine.decider.on_verdict(message):
                await send_reliably(
                    metrics, control, command.to_json(), key=command.deployment.encode()
                )
                await send_reliably(
                    metrics, alerts, alert.to_json(), key=command.deployment.encode()
                )
                metrics.commands.labels(command.action, command.guard).inc()
                log.warning("command %s %s: %s", command.action, command.command_id, alert.summary)

    @app.page("/metrics")
    async def metrics_page(web: Any, request: Any) -> Any:
        return web.bytes(metrics.exposition(), content_type="text/plain; version=0.0.4")

    @app.page("/health")
    async def health_page(web: Any, request: Any) -> Any:
        sources = owned_sources()
        return web.json(
            {
                "status": "ok",
                "sources": sources,
                "pending_halves": sum(engine.stage1.pending(p) for p in sources),
                "deployments": engine.stage2.deployments(),
            }
        )

    # The decorators registered everything on the app; the names are not needed here.
    del stage1, flush, stage2, close_idle, stage3, metrics_page, health_page
    return Worker(app=app, engine=engine, metrics=metrics, specs=specs)
