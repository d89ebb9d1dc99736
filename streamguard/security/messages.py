"""Signed commands and alerts: schema version 2 = version 1 plus the ``signature`` block.

Version 1's schemas forbid extra fields, so a signed message says ``"schema_version": 2``.
Readers of version 2 and later accept fields they do not know (the signature covers them), so
a later version can add fields without stranding consumers that only know version 2.

Examples
--------
>>> from streamguard.contracts import Command
>>> from streamguard.security.keys import generate_key
>>> cmd = Command("pause", "home-ranker", "v2", "shadow", None, {}, 1790000300.0)
>>> signed = sign_command(cmd, generate_key("streamguard"), ttl_s=600, now=1790000301.0)
>>> signed["schema_version"], signed["signature"]["aud"]
(2, 'home-ranker')
"""

from typing import Any

from streamguard.contracts import Alert, Command
from streamguard.security.keys import SigningKey
from streamguard.security.signing import sign

__all__ = ["SIGNED_VERSION", "sign_alert", "sign_command"]

#: Schema version of signed commands and alerts.
SIGNED_VERSION = 2


def sign_command(
    command: Command, key: SigningKey, ttl_s: float, now: float, audience: str | None = None
) -> dict[str, Any]:
    """The version-2 JSON object of ``command``, signed.

    Parameters
    ----------
    command
        The decision.
    key
        The worker's signing key.
    ttl_s
        How long the command stays actionable, in seconds from ``now``. A subscriber that
        reads it later (a new consumer group starting from the earliest offset) refuses it
        as ``expired``.
    now
        Epoch seconds of signing.
    audience
        The deployment (default: the command's) or the fleet the command addresses.
    """
    message = command.to_dict() | {"schema_version": SIGNED_VERSION}
    return sign(message, key, audience or command.deployment, ttl_s, now)


def sign_alert(
    alert: Alert, key: SigningKey, ttl_s: float, now: float, audience: str | None = None
) -> dict[str, Any]:
    """The version-2 JSON object of ``alert``, signed (audience: its deployment by default)."""
    message = alert.to_dict() | {"schema_version": SIGNED_VERSION}
    return sign(message, key, audience or alert.deployment, ttl_s, now)
