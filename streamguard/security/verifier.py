"""The signature policy of a command consumer: which keys, audiences and issuers, what skew.

:class:`CommandVerifier` is what :class:`streamguard.client.ControlSubscriber` runs on each
valid command before the handler sees it. It is pure (no Kafka) so it can be tested and reused
by any consumer of the control topic.

Examples
--------
>>> from streamguard.contracts import Command
>>> from streamguard.security.keys import KeyRing, generate_key
>>> from streamguard.security.messages import sign_command
>>> key = generate_key("streamguard")
>>> cmd = Command("pause", "home-ranker", "v2", "shadow", None, {}, 1000.0)
>>> check = CommandVerifier(KeyRing([key.verifying_key()]), clock=lambda: 1000.0)
>>> check(sign_command(cmd, key, ttl_s=60, now=1000.0)) is None
True
>>> check(cmd.to_dict())
'unsigned'
"""

import time
from collections.abc import Callable, Collection, Mapping
from typing import Any

from streamguard.exceptions import ConfigError
from streamguard.security.keys import KeyRing
from streamguard.security.signing import SIGNATURE_FIELD, Rejection, check

__all__ = ["CommandVerifier"]


class CommandVerifier:
    """Checks the signature of each command a consumer receives.

    Parameters
    ----------
    keyring
        Keys commands may be signed with. None only with ``require_signature=False``: nothing
        is verified then (an insecure set-up for demos and tests).
    audiences
        Audiences accepted (deployments or fleet names). None: a command is accepted for the
        deployment it names, i.e. its ``aud`` must equal its ``deployment``.
    require_signature
        Refuse unsigned commands (reason ``unsigned``). When false, unsigned commands pass, and
        signed ones are still verified if a keyring is given.
    skew_s
        Clock-skew tolerance for ``exp`` and ``iat``, in seconds.
    issuers
        Accepted issuers; None accepts the issuer each key is registered for.
    clock
        Current epoch seconds.

    Raises
    ------
    ConfigError
        If a signature is required but no keyring is given, or ``skew_s`` is negative.
    """

    def __init__(
        self,
        keyring: KeyRing | None,
        audiences: Collection[str] | None = None,
        *,
        require_signature: bool = True,
        skew_s: float = 30.0,
        issuers: Collection[str] | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if require_signature and keyring is None:
            raise ConfigError("signed commands are required but no keyring was given")
        if not skew_s >= 0:
            raise ConfigError(f"clock skew tolerance must be >= 0 seconds, got {skew_s!r}")
        self.keyring = keyring
        self.audiences = frozenset(audiences) if audiences is not None else None
        self.require_signature = require_signature
        self.skew_s = skew_s
        self.issuers = frozenset(issuers) if issuers is not None else None
        self.clock = clock

    @property
    def verifies(self) -> bool:
        """True if signatures are checked at all (a keyring is configured)."""
        return self.keyring is not None

    def check(self, raw: Mapping[str, Any]) -> Rejection | None:
        """None to accept the command's JSON object, else why it is refused."""
        if SIGNATURE_FIELD not in raw:
            if self.require_signature:
                return Rejection("unsigned", "the command carries no signature")
            return None
        if self.keyring is None:
            return None  # insecure mode: nothing to verify with
        audiences = self.audiences
        if audiences is None:
            deployment = raw.get("deployment")
            audiences = frozenset([deployment]) if isinstance(deployment, str) else frozenset()
        return check(
            raw, self.keyring, audiences, self.clock(), skew_s=self.skew_s, issuers=self.issuers
        )

    def __call__(self, raw: Mapping[str, Any]) -> str | None:
        """The rejection reason for ``raw``, or None (a :data:`streamguard.client.Verifier`)."""
        rejection = self.check(raw)
        return None if rejection is None else rejection.reason
