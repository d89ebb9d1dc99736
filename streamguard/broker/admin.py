"""Apply the topic specs under ``topics/`` to a broker (``streamguard topics apply``)."""

import asyncio
from dataclasses import dataclass

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaConnectionError, KafkaError

from streamguard.broker.embedded import BrokerError
from streamguard.contracts import TopicSpec, load_topic_specs

__all__ = ["TopicReport", "apply_topics", "describe_partitions"]

_TOPIC_ALREADY_EXISTS = 36


@dataclass(frozen=True, slots=True)
class TopicReport:
    """What applying one spec did."""

    name: str
    status: str  # created | exists | mismatch
    partitions: int
    detail: str = ""


async def _admin(bootstrap: str, timeout_s: float) -> AIOKafkaAdminClient:
    admin = AIOKafkaAdminClient(
        bootstrap_servers=bootstrap, request_timeout_ms=int(timeout_s * 1000)
    )
    try:
        await asyncio.wait_for(admin.start(), timeout_s)
    except (TimeoutError, KafkaConnectionError, KafkaError, OSError) as exc:
        await admin.close()
        raise BrokerError(
            f"cannot reach Kafka at {bootstrap}: {exc or type(exc).__name__}"
        ) from exc
    return admin


async def describe_partitions(
    bootstrap: str, names: list[str], timeout_s: float = 10.0
) -> dict[str, int]:
    """Partition count of each existing topic among ``names``."""
    admin = await _admin(bootstrap, timeout_s)
    try:
        described = await admin.describe_topics(names)
    finally:
        await admin.close()
    return {t["topic"]: len(t["partitions"]) for t in described if t.get("error_code", 0) == 0}


async def apply_topics(
    bootstrap: str, specs: dict[str, TopicSpec] | None = None, timeout_s: float = 10.0
) -> list[TopicReport]:
    """Create every topic that does not exist; report those whose partitions differ.

    Partition counts are never changed on an existing topic: adding partitions moves keys to
    other partitions, which would split the primary and shadow events of in-flight requests.
    """
    specs = specs or load_topic_specs()
    admin = await _admin(bootstrap, timeout_s)
    try:
        new = [
            NewTopic(s.name, s.partitions, s.replication_factor, topic_configs=s.broker_config())
            for s in specs.values()
        ]
        response = await admin.create_topics(new, timeout_ms=int(timeout_s * 1000))
        errors = {name: code for name, code, *_ in response.topic_errors}
        described = await admin.describe_topics([s.name for s in specs.values()])
    finally:
        await admin.close()
    actual = {t["topic"]: len(t["partitions"]) for t in described if t.get("error_code", 0) == 0}
    reports = []
    for spec in specs.values():
        code = errors.get(spec.name, 0)
        have = actual.get(spec.name, 0)
        if code not in (0, _TOPIC_ALREADY_EXISTS):
            raise BrokerError(f"creating topic {spec.name} failed with Kafka error code {code}")
        if have != spec.partitions:
            detail = f"has {have} partitions, spec says {spec.partitions}"
            reports.append(TopicReport(spec.name, "mismatch", have, detail))
        else:
            status = "created" if code == 0 else "exists"
            reports.append(TopicReport(spec.name, status, have))
    return reports
