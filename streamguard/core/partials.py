"""Encoding of internal messages: partial summaries split to fit Kafka's message size.

A deployment's partial from one flush may hold many windows and thousands of slices. It is
split into parts of at most ``max_bytes``, a group with too many slices by rows; each group is
serialised once (numpy arrays straight to JSON by orjson) and parts are assembled as bytes.
"""

from typing import Any

import orjson

from streamguard.core.summary import Array

__all__ = ["HEADER_RESERVE", "MAX_PARTIAL_BYTES", "dumps", "encode_group", "pack"]

#: Upper bound of one partial message (Kafka's default max message size is 1 MiB).
MAX_PARTIAL_BYTES = 512 * 1024
#: Bytes kept free in a part for the message header around its groups.
HEADER_RESERVE = 512


def dumps(message: dict[str, Any]) -> bytes:
    """JSON of an internal message; numpy arrays and scalars included."""
    return orjson.dumps(message, option=orjson.OPT_SERIALIZE_NUMPY)


def encode_group(
    header: dict[str, Any], labels: list[str], fields: dict[str, Array], max_bytes: int
) -> list[bytes]:
    """One group as JSON, split by slice rows until each piece fits ``max_bytes``."""
    encoded = dumps({**header, "slices": labels, "fields": fields})
    if len(encoded) <= max_bytes or len(labels) <= 1:
        return [encoded]
    half = len(labels) // 2
    return encode_group(
        header, labels[:half], {k: v[:half] for k, v in fields.items()}, max_bytes
    ) + encode_group(header, labels[half:], {k: v[half:] for k, v in fields.items()}, max_bytes)


def pack(groups: list[bytes], max_bytes: int) -> list[list[bytes]]:
    """Greedy packing of encoded groups into messages (always at least one, maybe empty)."""
    parts: list[list[bytes]] = [[]]
    size = 0
    for group in groups:
        if parts[-1] and size + len(group) > max_bytes:
            parts.append([])
            size = 0
        parts[-1].append(group)
        size += len(group) + 1
    return parts
