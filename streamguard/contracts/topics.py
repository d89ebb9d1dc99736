"""Topic specs: one TOML file per topic under ``topics/``.

Examples
--------
>>> specs = load_topic_specs()
>>> specs["predictions"].key
'request_id'
>>> specs["control"].name
'streamguard.control'
"""

import tomllib
from dataclasses import dataclass
from functools import cache
from pathlib import Path

from streamguard.contracts.exceptions import ContractError
from streamguard.contracts.location import contracts_dir

__all__ = ["TopicSpec", "load_topic_specs"]

_CLEANUP_POLICIES = {"delete", "compact", "compact,delete"}


@dataclass(frozen=True, slots=True)
class TopicSpec:
    """How one topic is laid out on the broker.

    ``role`` is the spec's file stem (``predictions``, ``control``, ...); the code refers to topics
    by role and reads the name from here, so renaming a topic is a one-line change.
    """

    role: str
    name: str
    partitions: int
    replication_factor: int
    key: str
    value_schemas: tuple[str, ...]
    cleanup_policy: str
    retention_ms: int
    internal: bool
    #: Largest message the topic takes (Kafka's ``max.message.bytes``); None: the broker's.
    max_message_bytes: int | None = None

    def broker_config(self) -> dict[str, str]:
        """Topic-level configuration as the Kafka CreateTopics request takes it."""
        config = {"cleanup.policy": self.cleanup_policy, "retention.ms": str(self.retention_ms)}
        if self.max_message_bytes is not None:
            config["max.message.bytes"] = str(self.max_message_bytes)
        return config


def _parse(path: Path) -> TopicSpec:
    try:
        raw = tomllib.loads(path.read_text())
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ContractError(f"cannot read topic spec {path.name}: {exc}") from exc
    try:
        spec = TopicSpec(
            role=path.stem,
            name=str(raw["name"]),
            partitions=int(raw["partitions"]),
            replication_factor=int(raw["replication_factor"]),
            key=str(raw["key"]),
            value_schemas=tuple(str(s) for s in raw["value_schemas"]),
            cleanup_policy=str(raw["cleanup_policy"]),
            retention_ms=int(raw["retention_ms"]),
            internal=bool(raw["internal"]),
            max_message_bytes=(
                None if "max_message_bytes" not in raw else int(raw["max_message_bytes"])
            ),
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise ContractError(f"topic spec {path.name} is missing or mistypes {exc}") from exc
    if spec.partitions < 1 or spec.replication_factor < 1:
        raise ContractError(f"topic spec {path.name}: partitions and replication must be >= 1")
    if spec.max_message_bytes is not None and spec.max_message_bytes < 1 << 20:
        raise ContractError(f"topic spec {path.name}: max_message_bytes must be >= 1 MiB")
    if spec.cleanup_policy not in _CLEANUP_POLICIES:
        raise ContractError(f"topic spec {path.name}: unknown cleanup_policy {spec.cleanup_policy}")
    return spec


@cache
def load_topic_specs(folder: Path | None = None) -> dict[str, TopicSpec]:
    """Load every ``*.toml`` topic spec, keyed by role.

    Raises
    ------
    ContractError
        If a spec is unreadable, incomplete, or refers to a schema that does not exist.
    """
    root = folder or contracts_dir()
    specs = {p.stem: _parse(p) for p in sorted(root.glob("*.toml"))}
    for spec in specs.values():
        for schema in spec.value_schemas:
            if not (root / "schemas" / f"{schema}.schema.json").is_file():
                raise ContractError(f"topic {spec.role} names schema {schema!r} that has no file")
    if not specs:
        raise ContractError(f"no topic specs in {root}")
    return specs
