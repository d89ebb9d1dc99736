"""Worker settings: where the broker is, where the policy is, how the worker is tuned.

Every value comes from an argument, else an environment variable, else a default. The pure
core never reads settings; the adapters pass what the core needs explicitly.
"""

import math
import os
from dataclasses import dataclass, field, replace
from pathlib import Path

from streamguard.exceptions import ConfigError

__all__ = [
    "BROKER_ENV",
    "EMBEDDED_SESSION_TIMEOUT_S",
    "GC_YOUNG_THRESHOLD",
    "MAX_AHEAD_S",
    "SESSION_TIMEOUT_ENV",
    "Settings",
    "bootstrap_servers",
    "faust_broker_url",
]

BROKER_ENV = "STREAMGUARD_BROKER"
SESSION_TIMEOUT_ENV = "STREAMGUARD_BROKER_SESSION_TIMEOUT_S"
#: Session timeout of a worker on the embedded broker, unless ``SESSION_TIMEOUT_ENV`` says
#: otherwise: Tansu answers a join only after half the session timeout and sets no lower
#: limit, so 4 s instead of 10 s makes every join ~3 s quicker (see
#: ``Settings.broker_session_timeout_s``).
EMBEDDED_SESSION_TIMEOUT_S = 4.0
#: The worker's default young-generation threshold (see :mod:`streamguard.cli.gc_tuning`).
GC_YOUNG_THRESHOLD = 20_000
#: The worker's default backpressure bound in event-time seconds (``Settings.max_ahead_s``).
MAX_AHEAD_S = 120.0


def bootstrap_servers(url: str) -> str:
    """``kafka://h1:9092;h2:9092`` or ``h1:9092,h2:9092`` -> ``h1:9092,h2:9092``.

    Raises
    ------
    ConfigError
        If a host has no numeric port.

    Examples
    --------
    >>> bootstrap_servers("kafka://127.0.0.1:9092")
    '127.0.0.1:9092'
    >>> bootstrap_servers("a:1,b:2")
    'a:1,b:2'
    """
    text = url.strip()
    for scheme in ("kafka://", "tcp://", "aiokafka://"):
        if text.startswith(scheme):
            text = text[len(scheme) :]
    hosts = [h.strip() for h in text.replace(";", ",").split(",") if h.strip()]
    if not hosts:
        raise ConfigError(f"broker URL {url!r} names no host")
    for host in hosts:
        name, _, port = host.rpartition(":")
        if not name or not port.isdigit() or not 0 < int(port) < 65536:
            raise ConfigError(f"broker URL {url!r}: {host!r} is not host:port")
    return ",".join(hosts)


def faust_broker_url(url: str) -> str:
    """The same brokers in Faust's ``kafka://h1:p1;h2:p2`` form."""
    return "kafka://" + ";".join(bootstrap_servers(url).split(","))


def _env_path(name: str) -> Path | None:
    raw = os.environ.get(name)
    return Path(raw) if raw else None


def _env_float(name: str, default: float) -> float:
    raw = os.environ.get(name)
    if raw is None:
        return default
    try:
        return float(raw)
    except ValueError as exc:
        raise ConfigError(f"{name}={raw!r} is not a number") from exc


def _env_int(name: str, default: int) -> int:
    raw = os.environ.get(name)
    if raw is None:
        return default
    try:
        return int(raw)
    except ValueError as exc:  # "nan", "1.5", "lots": one plain error, not a traceback
        raise ConfigError(f"{name}={raw!r} is not a whole number") from exc


@dataclass(frozen=True)
class Settings:
    """How one worker runs.

    ``broker`` is None when the worker should start the embedded broker itself.
    """

    broker: str | None = None
    policy_path: Path | None = None
    app_id: str = "streamguard"
    web_port: int = 6066
    web_host: str = "127.0.0.1"
    #: Stage 1 sends partials and watermark heartbeats this often, and besides at once for a
    #: partition whose watermark passes a window's close (``Stage1.closing``), so the interval
    #: bounds memory and idle detection, not the latency (benchmarks/latency.py: 0.5 s and
    #: 1.0 s gave the same at 4 deployments; at 20, 1.0 s left more CPU to the rest).
    flush_interval_s: float = 1.0
    snapshot_interval_s: float = 10.0  # stage-1 snapshots; events are acked only once covered
    #: A stage-1 partition is due for a snapshot as soon as it holds this many messages, too:
    #: reading a backlog of one-event messages, 10 s of them held a fifth of a worker's RSS.
    snapshot_held_messages: int = 4096
    stage_snapshot_interval_s: float = 2.0  # stage-2 and stage-3 snapshots (when changed)
    broker_probe_interval_s: float = 2.0  # metadata round trip that feeds /health
    signing_key_path: Path | None = None  # commands and alerts are signed with it
    keyring_path: Path | None = None  # keys approvals may be signed with (default: own key)
    insecure: bool = False  # no key: unsigned commands, announced loudly (demos only)
    command_ttl_s: float = 3600.0  # validity of a signed command
    idle_source_timeout_s: float = 30.0
    max_future_s: float = 300.0
    data_dir: Path = field(default_factory=lambda: Path(".streamguard-data"))
    # Tansu's group coordination is slow with Faust's defaults (first join ~30 s); these
    # values bring it to ~5 s and are harmless on Apache Kafka.
    broker_rebalance_timeout_s: float = 2.0
    #: Tansu answers a join only after half the session timeout (measured with aiokafka:
    #: 6 s -> 3.0 s, 10 s -> 5.0 s, 30 s -> 15.0 s), and a member that left without a word
    #: stays in the group that long. Apache Kafka refuses less than its
    #: ``group.min.session.timeout.ms`` (6 s by default); workers on the embedded broker run
    #: with ``EMBEDDED_SESSION_TIMEOUT_S``.
    broker_session_timeout_s: float = 10.0
    broker_heartbeat_interval_s: float = 1.0
    #: Longest wait of one consumer fetch (see streamguard/faust_app/transport.py).
    fetch_max_wait_ms: int = 100
    #: Bytes of message values each stream buffers before fetching pauses, in MB, beside
    #: Faust's bound of 4096 messages (see streamguard/faust_app/buffer.py).
    stream_buffer_mb: float = 64.0
    #: The worker's young-generation garbage-collection threshold (CPython's is 700): 20000
    #: (the default) for ~10 % less CPU at the cost of ~6 % higher burst peaks; 0 leaves the
    #: interpreter's collector as it is. See :mod:`streamguard.cli.gc_tuning`.
    gc_young_threshold: int = GC_YOUNG_THRESHOLD
    #: Backpressure (:mod:`streamguard.core.pacing`): a predictions partition whose watermark
    #: is this many event-time seconds ahead of stage 2's low watermark stops being read
    #: until it is within half of it; 0 turns it off. 120 s (2026-11-26, one worker,
    #: benchmarks/HISTORY.md): the 10,000-slice burst peaked at 740-769 MB with stage 2 done
    #: 3 s after stage 1, against 893-926 MB and 21-25 s unpaced; a 2.4M-event backlog read at
    #: the unpaced rate. 60 s paused at every flush tick and cost a sixth of that rate.
    max_ahead_s: float = MAX_AHEAD_S
    #: Crashes of stage 1 (or of the leakage guard) on the same message after which a restarted
    #: worker dead-letters it as ``quarantined`` and goes on without it
    #: (:mod:`streamguard.core.quarantine`); 0 never does, and every restart stops at that message
    #: (exit status 70) until the bug is fixed.
    quarantine_after: int = 2

    @classmethod
    def from_env(cls, **overrides: object) -> "Settings":
        """Settings from ``STREAMGUARD_*`` environment variables, then ``overrides``."""
        base = cls(
            broker=os.environ.get(BROKER_ENV) or None,
            policy_path=Path(p) if (p := os.environ.get("STREAMGUARD_POLICY")) else None,
            app_id=os.environ.get("STREAMGUARD_APP_ID", "streamguard"),
            web_port=_env_int("STREAMGUARD_WEB_PORT", 6066),
            web_host=os.environ.get("STREAMGUARD_WEB_HOST", "127.0.0.1"),
            flush_interval_s=_env_float("STREAMGUARD_FLUSH_INTERVAL_S", 1.0),
            snapshot_interval_s=_env_float("STREAMGUARD_SNAPSHOT_INTERVAL_S", 10.0),
            snapshot_held_messages=_env_int("STREAMGUARD_SNAPSHOT_HELD_MESSAGES", 4096),
            stage_snapshot_interval_s=_env_float("STREAMGUARD_STAGE_SNAPSHOT_INTERVAL_S", 2.0),
            broker_probe_interval_s=_env_float("STREAMGUARD_BROKER_PROBE_INTERVAL_S", 2.0),
            signing_key_path=_env_path("STREAMGUARD_SIGNING_KEY"),
            keyring_path=_env_path("STREAMGUARD_KEYRING"),
            insecure=os.environ.get("STREAMGUARD_INSECURE", "").lower() in {"1", "true", "yes"},
            command_ttl_s=_env_float("STREAMGUARD_COMMAND_TTL_S", 3600.0),
            idle_source_timeout_s=_env_float("STREAMGUARD_IDLE_SOURCE_TIMEOUT_S", 30.0),
            fetch_max_wait_ms=_env_int("STREAMGUARD_FETCH_MAX_WAIT_MS", 100),
            stream_buffer_mb=_env_float("STREAMGUARD_STREAM_BUFFER_MB", 64.0),
            gc_young_threshold=_env_int("STREAMGUARD_GC_YOUNG_THRESHOLD", GC_YOUNG_THRESHOLD),
            max_ahead_s=_env_float("STREAMGUARD_MAX_AHEAD_S", MAX_AHEAD_S),
            quarantine_after=_env_int("STREAMGUARD_QUARANTINE_AFTER", 2),
            broker_session_timeout_s=_env_float(SESSION_TIMEOUT_ENV, 10.0),
        )
        given = {k: v for k, v in overrides.items() if v is not None}
        settings = replace(base, **given)  # type: ignore[arg-type]
        settings.validate()
        return settings

    def on_embedded(self, url: str) -> "Settings":
        """These settings for a worker on the embedded broker at ``url``.

        The session timeout drops to ``EMBEDDED_SESSION_TIMEOUT_S`` (joins ~3 s sooner on
        Tansu) unless ``SESSION_TIMEOUT_ENV`` sets one.
        """
        explicit = SESSION_TIMEOUT_ENV in os.environ
        session = self.broker_session_timeout_s if explicit else EMBEDDED_SESSION_TIMEOUT_S
        return replace(self, broker=url, broker_session_timeout_s=session)

    def validate(self) -> None:
        """Raise :class:`ConfigError` on values that cannot work."""
        if self.broker is not None:
            bootstrap_servers(self.broker)
        if self.flush_interval_s <= 0:
            raise ConfigError(f"flush interval must be positive, got {self.flush_interval_s}")
        if not 0 < self.fetch_max_wait_ms <= 60_000:
            raise ConfigError(f"fetch wait must be 1 to 60000 ms, got {self.fetch_max_wait_ms}")
        if self.snapshot_held_messages < 1:
            raise ConfigError(
                f"snapshot held messages must be at least 1, got {self.snapshot_held_messages}"
            )
        if not 0.0625 <= self.stream_buffer_mb <= 4096:
            raise ConfigError(
                f"stream buffer must be 0.0625 to 4096 MB, got {self.stream_buffer_mb}"
            )
        if self.broker_session_timeout_s < 3 * self.broker_heartbeat_interval_s:
            # Kafka's rule of thumb: a member must be able to miss two heartbeats.
            least, given = 3 * self.broker_heartbeat_interval_s, self.broker_session_timeout_s
            raise ConfigError(
                "broker session timeout must be at least 3 heartbeat intervals "
                f"({least:g} s), got {given:g} s"
            )
        if self.gc_young_threshold < 0:
            raise ConfigError(
                f"gc young threshold must be 0 (leave the collector alone) or more, "
                f"got {self.gc_young_threshold}"
            )
        if not (math.isfinite(self.max_ahead_s) and self.max_ahead_s >= 0):
            raise ConfigError(
                f"max ahead must be 0 (no backpressure) or a positive number of seconds, "
                f"got {self.max_ahead_s}"
            )
        if self.quarantine_after < 0:
            raise ConfigError(
                f"quarantine after must be 0 (never leave a message out) or a number of "
                f"crashes, got {self.quarantine_after}"
            )
        if not 0 < self.web_port < 65536:
            raise ConfigError(f"web port {self.web_port} is not a TCP port")
        if self.policy_path is not None and not self.policy_path.is_file():
            raise ConfigError(f"policy file {self.policy_path} does not exist")
