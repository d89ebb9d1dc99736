"""Contracts: message kinds, topic specs and decoding. Pure: no Kafka client imported here."""

from streamguard.contracts.commands import (
    Alert,
    Command,
    alert_for,
    command_id,
    notice_for,
    slice_label,
)
from streamguard.contracts.deadletter import dead_letter
from streamguard.contracts.decode import (
    Decoded,
    Rejected,
    decode_message,
    parse_message,
    validate_event,
)
from streamguard.contracts.events import (
    ROLE_CANARY,
    ROLE_PRIMARY,
    ROLE_SHADOW,
    ROLES,
    OutcomeBatch,
    PredictionBatch,
    TrainingBatch,
)
from streamguard.contracts.exceptions import ContractError, DecodeError
from streamguard.contracts.partitioning import murmur2, partition_for
from streamguard.contracts.schemas import load_schema
from streamguard.contracts.topics import TopicSpec, load_topic_specs

__all__ = [
    "ROLES",
    "ROLE_CANARY",
    "ROLE_PRIMARY",
    "ROLE_SHADOW",
    "Alert",
    "Command",
    "ContractError",
    "DecodeError",
    "Decoded",
    "OutcomeBatch",
    "PredictionBatch",
    "Rejected",
    "TopicSpec",
    "TrainingBatch",
    "alert_for",
    "command_id",
    "dead_letter",
    "decode_message",
    "load_schema",
    "load_topic_specs",
    "murmur2",
    "notice_for",
    "parse_message",
    "partition_for",
    "slice_label",
    "validate_event",
]
