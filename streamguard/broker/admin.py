"""Apply the topic specs under ``topics/`` to a broker (``streamguard topics apply``)."""

import asyncio
from dataclasses import dataclass

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaConnectionError, KafkaError
from aiokafka.structs import TopicPartition

from streamguard.broker.embedded import BrokerError
from streamguard.contracts import TopicSpec, load_topic_specs

__all__ = ["TopicReport", "apply_topics", "describe_partitions", "publish", "read_all"]

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


async def read_all(bootstrap: str, topic: str, timeout_s: float = 10.0) -> list[bytes]:
    """Every value of ``topic`` up to its current end, in partition order then offset order.

    Raises
    ------
    BrokerError
        If the broker cannot be reached or the topic does not exist.
    """
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    values: list[bytes] = []
    try:
        await asyncio.wait_for(consumer.start(), timeout_s)
        partitions = consumer.partitions_for_topic(topic)
        if not partitions:
            raise BrokerError(f"topic {topic} does not exist on {bootstrap}")
        tps = [TopicPartition(topic, p) for p in sorted(partitions)]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        ends = await consumer.end_offsets(tps)
        for tp in tps:
            while await consumer.position(tp) < ends[tp]:
                batch = await asyncio.wait_for(consumer.getone(tp), timeout_s)
                if batch.value is not None:
                    values.append(batch.value)
    except (KafkaError, TimeoutError, OSError) as exc:
        raise BrokerError(f"cannot read {topic} from {bootstrap}: {exc}") from exc
    finally:
        await consumer.stop()
    return values


async def publish(
    bootstrap: str, topic: str, key: bytes, value: bytes, timeout_s: float = 10.0
) -> None:
    """Send one message and wait until the broker has it.

    Raises
    ------
    BrokerError
        If the broker does not take it within ``timeout_s``.
    """
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap)
    try:
        await asyncio.wait_for(producer.start(), timeout_s)
        await asyncio.wait_for(producer.send_and_wait(topic, value, key=key), timeout_s)
    except (KafkaError, TimeoutError, OSError) as exc:
        raise BrokerError(f"cannot publish to {topic} on {bootstrap}: {exc}") from exc
    finally:
        await producer.stop()
