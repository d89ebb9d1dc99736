"""Which control messages a consumer accepts: valid, authentic, and passed by its own check.

Shared by :class:`~streamguard.client.ControlSubscriber` and
:func:`~streamguard.client.read_commands`, so both refuse the same messages for the same
reasons. Signatures are checked by :class:`~streamguard.security.CommandVerifier` (see
:mod:`streamguard.client.subscriber` for the reasons it gives); the caller's ``verify`` runs
after it, on authentic commands only.
"""

from collections.abc import Callable, Collection
from typing import Any

from streamguard.client.validate import DecodeError, parse_json, validate_any_command
from streamguard.contracts import Command, load_topic_specs
from streamguard.security import CommandVerifier, KeyRing

__all__ = [
    "Verifier",
    "accept_all",
    "authenticate",
    "claimed_id",
    "control_topic",
    "decode_command",
    "signature_policy",
]

#: Checks a valid command's JSON object; returns a rejection reason, or None to accept it.
Verifier = Callable[[dict[str, Any]], str | None]


def accept_all(raw: dict[str, Any]) -> str | None:
    """Default verifier: accept every valid command.

    Signature verification replaces this with a check of ``raw``'s signature.
    """
    return None


def control_topic(topic: str | None) -> str:
    return topic or load_topic_specs()["control"].name


def signature_policy(
    keyring: KeyRing | None,
    *,
    audiences: Collection[str] | None,
    require_signature: bool | None,
    clock_skew_s: float,
    issuers: Collection[str] | None,
    clock: Callable[[], float],
) -> CommandVerifier:
    """The :class:`~streamguard.security.CommandVerifier` for a consumer's arguments.

    ``require_signature=None`` means "required if a keyring is given": existing callers that
    pass no keyring keep receiving unsigned commands, and are warned at start.
    """
    required = keyring is not None if require_signature is None else require_signature
    return CommandVerifier(
        keyring,
        audiences,
        require_signature=required,
        skew_s=clock_skew_s,
        issuers=issuers,
        clock=clock,
    )


def claimed_id(raw: object) -> str | None:
    """The command id a (possibly invalid) message claims, for logging it once."""
    if isinstance(raw, dict) and isinstance(raw.get("command_id"), str):
        return str(raw["command_id"])[:64]
    return None


def authenticate(
    raw: dict[str, Any], command: Command, signatures: CommandVerifier, verify: Verifier
) -> None:
    """Signature policy, then the caller's own check; raises DecodeError with the reason."""
    rejection = signatures.check(raw)
    if rejection is not None:
        raise DecodeError(rejection.reason, f"command {command.command_id}: {rejection.detail}")
    refusal = verify(raw)
    if refusal is not None:
        raise DecodeError("unverified", refusal)


def decode_command(value: bytes | None, signatures: CommandVerifier, verify: Verifier) -> Command:
    """Parse, validate, authenticate and verify one message value."""
    raw = parse_json(value)
    command = validate_any_command(raw)
    assert isinstance(raw, dict)  # validate_any_command accepted it, so it is an object
    authenticate(raw, command, signatures, verify)
    return command
