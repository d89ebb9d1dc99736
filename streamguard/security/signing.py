"""Sign a message with Ed25519 and verify it against a keyring, audiences and the clock.

A signed message is the original JSON object plus one field, ``signature``::

    "signature": {"alg": "Ed25519", "kid": "<key id>", "iss": "<issuer>",
                  "aud": "<deployment or fleet>", "iat": <epoch s>, "exp": <epoch s>,
                  "sig": "<base64url, unpadded, of the 64-byte signature>"}

What is signed (:func:`signing_payload`) is, byte for byte::

    b"streamguard.signature.v1\\n" + canonical(claims) + b"\\n" + canonical(body)

where ``claims`` is the signature block without ``sig`` and ``body`` is the message without
``signature`` (see :mod:`streamguard.security.canonical`). Every field of the message and every
claim is therefore covered, including fields this version does not know about; the context
prefix keeps the signature from being valid for anything else; canonical JSON has no raw newline,
so the two parts cannot be shifted into each other.

:func:`verify` checks, in this order, and returns the first failure as one of :data:`REASONS`:

==========================  =====================================================================
``unsigned``                no ``signature`` field
``malformed_signature``     the block is not an object with the claims above, of the right types
``unknown_key``             ``kid`` is not in the keyring, or its key was retired (``not_after``)
``bad_signature``           the signature does not verify: forged, or tampered with after signing
``wrong_issuer``            ``iss`` is not the key's issuer, or not among the accepted issuers
``wrong_audience``          ``aud`` is not among the accepted audiences
``expired``                 ``exp`` is more than ``skew_s`` in the past
``not_yet_valid``           ``iat`` is more than ``skew_s`` in the future
==========================  =====================================================================

Claims are only trusted after the signature verified, so a tampered ``exp`` is reported as
``bad_signature``, not as ``expired``.

Examples
--------
>>> from streamguard.security.keys import KeyRing, generate_key
>>> key = generate_key("streamguard-prod")
>>> signed = sign({"command_id": "c1", "action": "pause"}, key, "home-ranker", 600, now=1000.0)
>>> ring = KeyRing([key.verifying_key()])
>>> verify(signed, ring, {"home-ranker"}, now=1010.0) is None
True
>>> verify(signed | {"action": "rollback"}, ring, {"home-ranker"}, now=1010.0)
'bad_signature'
>>> verify(signed, ring, {"search-ranker"}, now=1010.0)
'wrong_audience'
>>> verify(signed, ring, {"home-ranker"}, now=2000.0)
'expired'
"""

import base64
import binascii
import math
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from typing import Any

from cryptography.exceptions import InvalidSignature

from streamguard.security.canonical import canonical_bytes
from streamguard.security.exceptions import CanonicalError
from streamguard.security.keys import KeyRing, SigningKey

__all__ = [
    "ALGORITHM",
    "CLAIMS",
    "REASONS",
    "SIGNATURE_FIELD",
    "SIGNING_CONTEXT",
    "Rejection",
    "check",
    "sign",
    "signing_payload",
    "verify",
]

ALGORITHM = "Ed25519"
SIGNATURE_FIELD = "signature"
#: Prefix of every signed payload (domain separation; bump it with the payload's layout).
SIGNING_CONTEXT = b"streamguard.signature.v1\n"
#: Claims every signature block carries besides ``sig``.
CLAIMS = ("alg", "kid", "iss", "aud", "iat", "exp")
#: Every reason :func:`verify` can return; a small fixed set, used as a metric label.
REASONS = (
    "unsigned",
    "malformed_signature",
    "unknown_key",
    "bad_signature",
    "wrong_issuer",
    "wrong_audience",
    "expired",
    "not_yet_valid",
)
_SIGNATURE_BYTES = 64


@dataclass(frozen=True, slots=True)
class Rejection:
    """Why a message was refused: ``reason`` from :data:`REASONS`, ``detail`` for the log."""

    reason: str
    detail: str


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64url(text: str) -> bytes | None:
    """Decode unpadded base64url; None unless ``text`` is exactly the canonical spelling."""
    try:
        raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError):
        return None
    # Lenient decoders accept several spellings of the same bytes; only one is accepted here.
    return raw if _b64url(raw) == text else None


def _payload(body: Mapping[str, Any], claims: Mapping[str, Any]) -> bytes:
    return SIGNING_CONTEXT + canonical_bytes(claims) + b"\n" + canonical_bytes(body)


def signing_payload(message: Mapping[str, Any]) -> bytes:
    """The bytes the signature of a signed ``message`` covers (see the module docstring).

    Raises
    ------
    KeyError
        If ``message`` has no signature block.
    CanonicalError
        If the message holds values canonical JSON cannot encode.
    """
    block = message[SIGNATURE_FIELD]
    body = {k: v for k, v in message.items() if k != SIGNATURE_FIELD}
    claims = {k: v for k, v in block.items() if k != "sig"}
    return _payload(body, claims)


def sign(
    message: Mapping[str, Any], key: SigningKey, audience: str, ttl_s: float, now: float
) -> dict[str, Any]:
    """A copy of ``message`` with a ``signature`` block (an existing one is replaced).

    Parameters
    ----------
    message
        A JSON object; every field is covered by the signature.
    key
        The signing key; its key id and issuer go into ``kid`` and ``iss``.
    audience
        Who may act on the message: the deployment it is for, or a fleet name.
    ttl_s
        Seconds from ``now`` until the signature expires.
    now
        Epoch seconds of signing (``iat``).

    Raises
    ------
    ValueError
        For an empty audience or a non-positive or non-finite ``ttl_s`` or ``now``.
    CanonicalError
        If the message holds values canonical JSON cannot encode (NaN, ...).
    """
    if not audience:
        raise ValueError("audience must not be empty")
    if not (math.isfinite(ttl_s) and ttl_s > 0 and math.isfinite(now)):
        raise ValueError(f"ttl_s must be positive and now finite (got {ttl_s!r}, {now!r})")
    body = {k: v for k, v in message.items() if k != SIGNATURE_FIELD}
    claims: dict[str, Any] = {
        "alg": ALGORITHM,
        "kid": key.key_id,
        "iss": key.issuer,
        "aud": audience,
        "iat": now,
        "exp": now + ttl_s,
    }
    signature = key.private_key.sign(_payload(body, claims))
    return {**body, SIGNATURE_FIELD: {**claims, "sig": _b64url(signature)}}


def _is_time(value: object) -> bool:
    # bool is an int subclass, but true is not a time.
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _malformed(block: object) -> str | None:
    """What is wrong with a signature block's shape, or None."""
    if type(block) is not dict:
        return "signature is not an object"
    for name in ("kid", "iss", "aud", "sig"):
        if type(block.get(name)) is not str or not block[name]:
            return f"signature.{name} must be a non-empty string"
    if block.get("alg") != ALGORITHM:
        return f"signature.alg {block.get('alg')!r:.30} is not {ALGORITHM}"
    if not (_is_time(block.get("iat")) and _is_time(block.get("exp"))):
        return "signature.iat and signature.exp must be epoch seconds"
    if block["exp"] <= block["iat"]:
        return "signature.exp is not after signature.iat"
    return None


def check(
    message: Mapping[str, Any],
    keyring: KeyRing,
    audiences: Collection[str],
    now: float,
    *,
    skew_s: float = 30.0,
    issuers: Collection[str] | None = None,
) -> Rejection | None:
    """As :func:`verify`, with a detail for the log.

    Returns
    -------
    Rejection or None
        None if the message is authentic and valid now.
    """
    if SIGNATURE_FIELD not in message:
        return Rejection("unsigned", "the message carries no signature")
    block = message[SIGNATURE_FIELD]
    problem = _malformed(block)
    if problem is not None:
        return Rejection("malformed_signature", problem)
    signature = _unb64url(block["sig"])
    if signature is None or len(signature) != _SIGNATURE_BYTES:
        return Rejection("malformed_signature", "signature.sig is not 64 bytes of base64url")
    kid = block["kid"]
    key = keyring.get(kid)
    if key is None:
        return Rejection("unknown_key", f"key id {kid!r:.40} is not in the keyring")
    if key.not_after is not None and now - skew_s > key.not_after:
        return Rejection("unknown_key", f"key {kid} was retired at {key.not_after}")
    try:
        key.public_key.verify(signature, signing_payload(message))
    except (InvalidSignature, CanonicalError):
        return Rejection("bad_signature", f"signature by key {kid} does not match the message")
    # From here on the claims are authentic.
    if block["iss"] != key.issuer or (issuers is not None and block["iss"] not in issuers):
        return Rejection("wrong_issuer", f"issuer {block['iss']!r:.60} is not accepted")
    if block["aud"] not in audiences:
        return Rejection("wrong_audience", f"audience {block['aud']!r:.60} is not accepted here")
    if now - skew_s > block["exp"]:
        return Rejection("expired", f"expired at {block['exp']}, now {now:.3f}")
    if block["iat"] > now + skew_s:
        return Rejection("not_yet_valid", f"issued at {block['iat']}, now {now:.3f}")
    return None


def verify(
    message: Mapping[str, Any],
    keyring: KeyRing,
    audiences: Collection[str],
    now: float,
    *,
    skew_s: float = 30.0,
    issuers: Collection[str] | None = None,
) -> str | None:
    """Check a signed message; None if valid, else a reason from :data:`REASONS`.

    Parameters
    ----------
    message
        The received JSON object, signature block included.
    keyring
        Keys that may have signed it.
    audiences
        Audiences accepted here (deployments or fleet names).
    now
        Current epoch seconds.
    skew_s
        Clock-skew tolerance, applied to both ``exp`` and ``iat``.
    issuers
        Accepted issuers; None accepts the issuer each key is registered for.
    """
    rejection = check(message, keyring, audiences, now, skew_s=skew_s, issuers=issuers)
    return None if rejection is None else rejection.reason
