"""Kafka's default partitioner, so replay and the emitter route exactly like the broker clients.

Kafka (Java client and aiokafka) sends a keyed record to ``toPositive(murmur2(key)) % n``. The
emitter uses it to put a request's primary and shadow events into the same partition, and
``streamguard replay`` uses it to rebuild the per-partition order a worker sees.

Examples
--------
>>> partition_for(b"req-123", 8) == partition_for(b"req-123", 8)
True
>>> 0 <= partition_for(b"", 3) < 3
True
"""

from collections import defaultdict
from collections.abc import Iterable
from typing import Any

import orjson

__all__ = ["envelopes", "is_training_example", "murmur2", "partition_for", "routed"]

_M = 0x5BD1E995
_SEED = 0x9747B28C
_MASK = 0xFFFFFFFF


def murmur2(data: bytes) -> int:
    """Return the 32-bit MurmurHash2 of ``data`` as Kafka computes it (seed 0x9747b28c).

    The result is the unsigned 32-bit value; Kafka's Java client reads the same bits as a
    signed int.
    """
    length = len(data)
    h = (_SEED ^ length) & _MASK
    whole = length & ~3
    for i in range(0, whole, 4):
        k = int.from_bytes(data[i : i + 4], "little")
        k = (k * _M) & _MASK
        k ^= k >> 24
        k = (k * _M) & _MASK
        h = (h * _M) & _MASK
        h ^= k
    rest = length & 3
    if rest == 3:
        h ^= data[whole + 2] << 16
    if rest >= 2:
        h ^= data[whole + 1] << 8
    if rest >= 1:
        h ^= data[whole]
        h = (h * _M) & _MASK
    h ^= h >> 13
    h = (h * _M) & _MASK
    h ^= h >> 15
    return h


def partition_for(key: bytes, partitions: int) -> int:
    """Partition of a keyed record among ``partitions`` (Kafka's ``toPositive(h) % n``)."""
    return (murmur2(key) & 0x7FFFFFFF) % partitions


def envelopes(
    events: Iterable[dict[str, Any]], partitions: int, key: str = "request_id"
) -> list[tuple[int, bytes, bytes]]:
    """(partition, key, value) of one batch envelope per partition, keyed by its first event.

    Routed as :class:`streamguard.client.Emitter` routes: each event to the partition of its
    ``key`` field, ``request_id`` for predictions (a request's primary and shadow share a
    partition) or ``pipeline`` for training examples.
    """
    by_partition: dict[int, list[dict[str, Any]]] = defaultdict(list)
    for event in events:
        by_partition[partition_for(event[key].encode(), partitions)].append(event)
    return [
        (
            partition,
            evs[0][key].encode(),
            orjson.dumps({"schema_version": 1, "events": evs}),
        )
        for partition, evs in sorted(by_partition.items())
    ]


def is_training_example(event: dict[str, Any]) -> bool:
    """Whether ``event`` belongs on the training examples topic rather than the predictions."""
    return bool(event.get("kind") == "training_example")


def routed(
    events: list[dict[str, Any]], partitions: int, training_partitions: int
) -> list[tuple[int, bytes, bytes]]:
    """Envelopes of mixed events as the two emitters route them.

    Serving events (predictions, outcomes) go by request id among ``partitions``; training
    examples, which have their own topic, by pipeline among ``training_partitions``.
    """
    training = [e for e in events if is_training_example(e)]
    if not training:
        return envelopes(events, partitions)
    serving = [e for e in events if not is_training_example(e)]
    return envelopes(serving, partitions) + envelopes(training, training_partitions, "pipeline")
