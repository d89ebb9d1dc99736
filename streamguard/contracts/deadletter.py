"""Dead-letter records: what failed, why, and the exact bytes."""

import base64
from typing import Any

import orjson

from streamguard.contracts.decode import Rejected

__all__ = ["dead_letter"]


def dead_letter(
    rejected: Rejected, topic: str, partition: int, offset: int, received_at: float
) -> bytes:
    """The dead-letter message (schema ``dead_letter``) for one rejected message or event."""
    record: dict[str, Any] = {
        "schema_version": 1,
        "kind": "dead_letter",
        "reason": rejected.reason,
        "detail": rejected.detail,
        "source": {
            "topic": topic,
            "partition": partition,
            "offset": offset,
            "event_index": rejected.event_index,
        },
        "original_b64": base64.b64encode(rejected.original).decode("ascii"),
        "received_at": received_at,
    }
    return orjson.dumps(record)
