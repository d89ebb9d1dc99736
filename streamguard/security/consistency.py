"""Do a worker's signing key and a subscriber's verification settings fit together?

Token checks break after deployment through issuer, audience, key or clock mismatches; this
module says which, in plain words, before a command is ever refused. Pure: used by
``streamguard doctor``.

Examples
--------
>>> from streamguard.security.keys import KeyRing, generate_key
>>> key = generate_key("streamguard-prod")
>>> problems = key_problems(key, KeyRing([key.verifying_key()]), issuers=["streamguard-dev"])
>>> [p.text for p in problems if p.level == "fail"]
["subscribers accept issuers ['streamguard-dev'], the worker signs as 'streamguard-prod'"]
"""

from collections.abc import Collection
from dataclasses import dataclass

from streamguard.security.keys import KeyRing, SigningKey

__all__ = ["Finding", "key_problems"]


@dataclass(frozen=True)
class Finding:
    """One line of a configuration check: ``ok``, ``warn`` or ``fail``."""

    level: str
    text: str


def key_problems(
    key: SigningKey,
    keyring: KeyRing,
    *,
    issuers: Collection[str] | None = None,
    audiences: Collection[str] | None = None,
    deployments: Collection[str] = (),
    now: float | None = None,
) -> list[Finding]:
    """Findings for a worker signing with ``key`` and subscribers verifying with the rest.

    Parameters
    ----------
    key
        The worker's signing key.
    keyring
        The subscribers' keyring.
    issuers
        Issuers the subscribers accept (None: the issuer each key is registered for).
    audiences
        Audiences the subscribers accept (None: each command's own deployment).
    deployments
        Deployments the worker guards (their names are the commands' audience).
    now
        Epoch seconds, to check that the key has not been retired (``not_after``).
    """
    out: list[Finding] = []
    entry = keyring.get(key.key_id)
    if entry is None:
        out.append(Finding("fail", f"the keyring does not hold the worker's key {key.key_id}"))
    elif entry.public_bytes != key.verifying_key().public_bytes:
        out.append(Finding("fail", f"the keyring's key {key.key_id} is a different public key"))
    else:
        out.append(Finding("ok", f"the keyring holds the worker's key {key.key_id}"))
        if entry.issuer != key.issuer:
            out.append(
                Finding(
                    "fail",
                    f"the keyring registers {key.key_id} for issuer {entry.issuer!r}, the "
                    f"worker signs as {key.issuer!r}",
                )
            )
        if entry.not_after is not None and now is not None and entry.not_after < now:
            out.append(Finding("fail", f"the keyring retired {key.key_id} (not_after passed)"))
    if issuers is not None and key.issuer not in issuers:
        out.append(
            Finding(
                "fail",
                f"subscribers accept issuers {sorted(issuers)}, the worker signs as {key.issuer!r}",
            )
        )
    if audiences is not None:
        missing = sorted(set(deployments) - set(audiences))
        if missing:
            out.append(
                Finding(
                    "fail",
                    f"commands for {missing} are addressed to their deployment, which the "
                    f"subscribers' audiences {sorted(audiences)} do not include",
                )
            )
    return out
