"""Prometheus metrics of a worker (one registry per app, so tests can run several apps).

Label values come from small fixed sets (kinds, reasons, actions, guards) or from the
deployment names, never from request ids. Slices appear only in the per-slice gauges of
:class:`~streamguard.faust_app.slice_metrics.SliceMetrics`, under a hard cap.
"""

from dataclasses import dataclass, field

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from prometheus_client.process_collector import ProcessCollector

from streamguard.faust_app.slice_metrics import SliceMetrics

__all__ = ["Metrics"]

# Wall-clock latency of a window's outputs: guards run in milliseconds, a command crosses the
# verdicts topic to stage 3 (a fetch or two), a worker catching up can take minutes.
_LATENCY_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0)


@dataclass
class Metrics:
    """Every metric the worker exports."""

    registry: CollectorRegistry = field(
        default_factory=lambda: CollectorRegistry(auto_describe=True)
    )

    def __post_init__(self) -> None:
        r = self.registry
        # CPU, memory, file descriptors and start time of the worker process.
        ProcessCollector(registry=r)
        self.slices = SliceMetrics(r)
        self.messages = Counter(
            "streamguard_messages", "Kafka messages read from the predictions topic.", registry=r
        )
        self.events = Counter(
            "streamguard_events", "Events decoded, by kind.", ["kind"], registry=r
        )
        self.one_by_one = Counter(
            "streamguard_one_by_one_messages",
            "One-event messages of runs accounted one at a time, where accounting them "
            "together could have changed the result (a cost, never an error).",
            registry=r,
        )
        self.decode_failures = Counter(
            "streamguard_decode_failures",
            "Messages or events sent to the dead-letter topic, by reason.",
            ["reason"],
            registry=r,
        )
        self.pairs = Counter("streamguard_pairs", "Primary/shadow pairs completed.", registry=r)
        self.unpaired = Counter(
            "streamguard_unpaired",
            "Halves that expired or were evicted without a partner.",
            registry=r,
        )
        self.duplicate_halves = Counter(
            "streamguard_duplicate_halves", "Halves whose role was already waiting.", registry=r
        )
        self.late = Counter(
            "streamguard_late_events",
            "Not counted because their window had closed: single predictions (stage=source), "
            "pairs (source_pairs) and pairs whose window stage 2 had closed (merge).",
            ["stage"],
            registry=r,
        )
        self.pending = Gauge(
            "streamguard_pending_halves", "Halves waiting for a partner on this worker.", registry=r
        )
        self.partials = Counter(
            "streamguard_partials", "Partial summaries received, by result.", ["result"], registry=r
        )
        self.capped = Counter(
            "streamguard_capped_slices",
            "Slice rows dropped because a deployment hit max_slices.",
            registry=r,
        )
        self.verdicts = Counter(
            "streamguard_verdicts", "Guard verdicts, by guard.", ["guard"], registry=r
        )
        self.commands = Counter(
            "streamguard_commands",
            "Commands published, by action and guard.",
            ["action", "guard"],
            registry=r,
        )
        self.window_lag = Gauge(
            "streamguard_window_lag_seconds",
            "Event time between the newest watermark and the end of the last closed window.",
            ["deployment"],
            registry=r,
        )
        self.open_windows = Gauge(
            "streamguard_open_windows",
            "Windows stage 2 holds open (waiting for every source's watermark), by deployment.",
            ["deployment"],
            registry=r,
        )
        self.open_window_bytes = Gauge(
            "streamguard_open_window_bytes",
            "Bytes of the slice tables of the windows stage 2 holds open, by deployment.",
            ["deployment"],
            registry=r,
        )
        self.close_to_verdict = Histogram(
            "streamguard_window_close_to_verdict_seconds",
            "Wall-clock seconds from a window's close (stage 2 sees every source's watermark past "
            "its end plus the allowed lateness) to its verdict acknowledged by the broker.",
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.close_to_command = Histogram(
            "streamguard_window_close_to_command_seconds",
            "Wall-clock seconds from a window's close to a command its verdict caused "
            "acknowledged by the broker (two workers' clocks when stage 3 runs elsewhere).",
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.watermark = Gauge(
            "streamguard_source_watermark_seconds",
            "Event-time watermark of each predictions partition owned by this worker.",
            ["partition"],
            registry=r,
        )
        self.internal_errors = Counter(
            "streamguard_internal_errors",
            "Errors the worker survived: unappliable messages, lost logs, agent crashes.",
            ["stage"],
            registry=r,
        )

        self.send_failures = Counter(
            "streamguard_send_failures",
            "Failed sends, by topic and outcome (retried or dropped as too large).",
            ["topic", "outcome"],
            registry=r,
        )

        self.broker_ok = Gauge(
            "streamguard_broker_up",
            "1 while sends to the broker succeed, 0 while they fail.",
            registry=r,
        )
        self.broker_ok.set(1)
        self.outcomes_unmatched = Counter(
            "streamguard_outcomes_unmatched",
            "Outcome events that found no open exposure (too late, or before their prediction).",
            registry=r,
        )
        self.consumer_lag = Gauge(
            "streamguard_consumer_lag_messages",
            "Messages of the predictions topic not yet read, per owned partition.",
            ["partition"],
            registry=r,
        )
        self.paused_partitions = Gauge(
            "streamguard_paused_partitions",
            "Predictions partitions not read now because they ran more than max_ahead_s of "
            "event time ahead of stage 2's low watermark (backpressure).",
            registry=r,
        )
        self.pauses = Counter(
            "streamguard_partition_pauses",
            "Times a predictions partition was paused for running ahead of stage 2.",
            registry=r,
        )
        self.eager_flushes = Counter(
            "streamguard_eager_flushes",
            "Stage-1 flushes of one partition made as its watermark passed a window's close "
            "(besides the timer's), because data for the closing window was pending.",
            registry=r,
        )
        self.held_flushes = Counter(
            "streamguard_held_flushes",
            "Timer flushes of one partition that sent only a heartbeat with its live watermark: "
            "its data since the last flush is all for windows that have not ended, and waits.",
            registry=r,
        )
        self.close_heartbeats = Counter(
            "streamguard_close_heartbeats",
            "Partitions whose watermark reached stage 2 in a heartbeat alone as it passed a "
            "window's close (nothing pending for the closing window).",
            registry=r,
        )
        self.snapshot_seconds = Histogram(
            "streamguard_snapshot_seconds", "Time to store a state snapshot.", ["stage"], registry=r
        )
        self.snapshot_bytes = Gauge(
            "streamguard_snapshot_bytes",
            "Bytes the last state snapshot wrote: its record and the parts it stored first.",
            ["stage"],
            registry=r,
        )
        self.restores = Counter(
            "streamguard_restores",
            "Partitions whose state was restored from a snapshot.",
            ["stage"],
            registry=r,
        )
        self.control_rejected = Counter(
            "streamguard_control_rejected",
            "Approvals on the control topic ignored: signature not verified, or malformed.",
            ["reason"],
            registry=r,
        )
        self.leakage_violations = Counter(
            "streamguard_leakage_violations",
            "Training-example features computed later than their label plus the tolerance.",
            registry=r,
        )
        self.evicted = Counter(
            "streamguard_evicted",
            "Pending halves or exposures dropped because a buffer was full (overload).",
            ["buffer"],
            registry=r,
        )

    def exposition(self) -> bytes:
        """The metrics in Prometheus text format."""
        return generate_latest(self.registry)
