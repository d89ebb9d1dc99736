"""The tolerant reader: version 1 exactly, version 2 and later by their version-1 fields."""

from typing import Any

import pytest

from streamguard.client.validate import DecodeError, validate_any_command, validate_command
from streamguard.contracts import Command

COMMAND = Command(
    "rollback", "home-ranker", "v2", "shadow", {"platform": "ios"}, {"p": 1e-4}, 1790000300.0
)
V1 = COMMAND.to_dict()
SIGNATURE = {"alg": "Ed25519", "kid": "k", "iss": "i", "aud": "a", "iat": 1, "exp": 2, "sig": "s"}


@pytest.mark.parametrize(
    "raw",
    [
        V1,
        V1 | {"schema_version": 1.0},
        V1 | {"schema_version": 2, "signature": SIGNATURE},
        V1 | {"schema_version": 2.0, "signature": SIGNATURE},
        V1 | {"schema_version": 2},  # unsigned v2: the signature policy decides, not the schema
        V1 | {"schema_version": 3, "signature": SIGNATURE, "priority": 1, "ttl": {"s": 5}},
        V1 | {"schema_version": 17, "reason": "still read"},
    ],
    ids=["v1", "v1-float", "v2", "v2-float", "v2-unsigned", "v3-extra-fields", "v17"],
)
def test_supported_versions_give_the_same_command(raw: dict[str, Any]) -> None:
    command = validate_any_command(raw)
    assert (command.command_id, command.action, command.slice) == (
        COMMAND.command_id,
        COMMAND.action,
        COMMAND.slice,
    )


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        ([V1], "not_an_object"),
        (V1 | {"signature": SIGNATURE}, "unknown_field"),  # version 1 has no signature field
        (V1 | {"schema_version": 0}, "unsupported_version"),
        (V1 | {"schema_version": True}, "unsupported_version"),
        (V1 | {"schema_version": "2"}, "unsupported_version"),
        (V1 | {"schema_version": 2.5}, "unsupported_version"),
        ({k: v for k, v in V1.items() if k != "schema_version"}, "missing_field"),
        ({k: v for k, v in V1.items() if k != "ts"} | {"schema_version": 3}, "missing_field"),
        (V1 | {"schema_version": 3, "ts": "soon"}, "wrong_type"),
        (V1 | {"schema_version": 3, "action": "explode"}, "bad_value"),
        (V1 | {"schema_version": 3, "command_id": "XYZ"}, "bad_value"),
        (V1 | {"schema_version": 3, "slice": {"k": 1}}, "wrong_type"),
        (V1 | {"schema_version": 3, "reason": 5}, "wrong_type"),
    ],
    ids=[
        "array",
        "v1-signed",
        "v0",
        "bool",
        "text",
        "fraction",
        "no-version",
        "v3-missing",
        "v3-ts",
        "v3-action",
        "v3-id",
        "v3-slice",
        "v3-reason",
    ],
)
def test_known_fields_are_still_checked(raw: object, reason: str) -> None:
    with pytest.raises(DecodeError) as caught:
        validate_any_command(raw)
    assert caught.value.reason == reason


def test_validate_command_stays_exactly_version_1() -> None:
    assert validate_command(V1) == COMMAND
    with pytest.raises(DecodeError, match="unknown_field"):
        validate_command(V1 | {"schema_version": 2, "signature": SIGNATURE})
