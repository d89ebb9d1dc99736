"""What the worker (and the approval CLI) publish with: signed messages, or loudly unsigned ones.

A :class:`Publisher` holds the signing key and the keyring that control messages from others
(approvals) must verify against. Without a key it exists only in *insecure* mode, which the
worker must be asked for explicitly (``--insecure``) and announces on every start.

Examples
--------
>>> from streamguard.contracts import Command
>>> from streamguard.security.keys import generate_key
>>> publisher = Publisher.with_key(generate_key("streamguard"), ttl_s=600)
>>> command = Command("pause", "home-ranker", "v2", "shadow", None, {}, 1790000300.0)
>>> signed = publisher.command(command, now=1790000301.0)
>>> publisher.check_control(signed, now=1790000302.0) is None
True
>>> publisher.check_control({**signed, "action": "resume"}, now=1790000302.0)
'bad_signature'
>>> Publisher.insecure().check_control({"action": "resume"}, now=0.0) is None
True
"""

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from streamguard.contracts import Alert, Command
from streamguard.exceptions import ConfigError
from streamguard.security.keyfiles import load_keyring, load_signing_key
from streamguard.security.keys import KeyRing, SigningKey
from streamguard.security.messages import sign_alert, sign_command
from streamguard.security.verifier import CommandVerifier

__all__ = ["INSECURE_BANNER", "Publisher", "load_publisher"]

INSECURE_BANNER = (
    "streamguard: INSECURE MODE: commands and alerts are NOT signed. Subscribers that require "
    "signatures reject them, and anyone who can write to the control topic can roll back "
    "models. Use it for demos only; production workers run with --signing-key."
)


@dataclass(frozen=True)
class Publisher:
    """Signs outgoing commands and alerts, verifies incoming control messages.

    Parameters
    ----------
    key
        The signing key; None only in insecure mode.
    keyring
        Keys that may sign control messages the worker acts on (approvals).
    ttl_s
        Validity of a signed message, from the time it is signed.
    skew_s
        Clock-skew tolerance when verifying.
    """

    key: SigningKey | None
    keyring: KeyRing | None
    ttl_s: float = 3600.0
    skew_s: float = 30.0

    @classmethod
    def with_key(
        cls, key: SigningKey, keyring: KeyRing | None = None, ttl_s: float = 3600.0
    ) -> "Publisher":
        """Sign with ``key``; verify control messages against ``keyring`` (default: the key)."""
        if not ttl_s > 0:
            raise ConfigError(f"command ttl must be > 0 seconds, got {ttl_s!r}")
        return cls(key, keyring or KeyRing([key.verifying_key()]), ttl_s)

    @classmethod
    def insecure(cls) -> "Publisher":
        """Publish unsigned messages and act on unsigned approvals (demos only)."""
        return cls(None, None)

    @property
    def signs(self) -> bool:
        """True unless in insecure mode."""
        return self.key is not None

    def describe(self) -> dict[str, Any]:
        """For /health: how messages are signed."""
        if self.key is None:
            return {"mode": "insecure"}
        return {"mode": "signed", "key_id": self.key.key_id, "issuer": self.key.issuer}

    def command(self, command: Command, now: float) -> dict[str, Any]:
        """The command as published: version 2 and signed, or version 1 when insecure."""
        if self.key is None:
            return command.to_dict()
        return sign_command(command, self.key, self.ttl_s, now)

    def command_bytes(self, command: Command, now: float) -> bytes:
        """:meth:`command` serialised."""
        return orjson.dumps(self.command(command, now))

    def alert_bytes(self, alert: Alert, now: float) -> bytes:
        """The alert as published (signed unless insecure)."""
        if self.key is None:
            return alert.to_json()
        return orjson.dumps(sign_alert(alert, self.key, self.ttl_s, now))

    def check_control(self, message: dict[str, Any], now: float) -> str | None:
        """Why a control message must be ignored (a forged approval), or None to act on it."""
        if self.keyring is None:
            return None
        verifier = CommandVerifier(self.keyring, skew_s=self.skew_s, clock=lambda: now)
        return verifier(message)


def load_publisher(
    key_path: Path | None, keyring_path: Path | None, *, insecure: bool, ttl_s: float
) -> Publisher:
    """The publisher a worker's settings ask for.

    Raises
    ------
    ConfigError
        If there is no signing key and insecure mode was not asked for, if both were, or if a
        key file cannot be read (the message names the file).
    """
    if key_path is None:
        if not insecure:
            raise ConfigError(
                "no signing key: pass --signing-key FILE (create one with `streamguard keys "
                "generate --issuer NAME --out DIR`), or --insecure for a demo"
            )
        return Publisher.insecure()
    if insecure:
        raise ConfigError("--insecure and a signing key exclude each other")
    key = load_signing_key(key_path)
    keyring = load_keyring(keyring_path) if keyring_path is not None else None
    return Publisher.with_key(key, keyring, ttl_s)
