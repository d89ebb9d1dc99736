"""Signed control messages: Ed25519 keys, canonical JSON, signing and verification.

Pure: imports ``cryptography``, ``orjson``, the standard library and streamguard's contracts,
never Faust or a Kafka client.

* :func:`generate_key`, :func:`load_signing_key`, :func:`save_signing_key` and the keyring
  functions handle keys and their files (:mod:`streamguard.security.keyfiles`).
* :func:`sign` / :func:`verify` work on any JSON object; :func:`sign_command` and
  :func:`sign_alert` produce the version-2 (signed) messages.
* :class:`CommandVerifier` is a consumer's signature policy (keyring, audiences, issuers, skew).
* :class:`Publisher` is what the worker and the approval CLI publish with.
"""

from streamguard.security.canonical import canonical_bytes
from streamguard.security.exceptions import CanonicalError, KeyFileError
from streamguard.security.keyfiles import (
    add_to_keyring,
    load_keyring,
    load_signing_key,
    save_keyring,
    save_signing_key,
)
from streamguard.security.keys import KeyRing, SigningKey, VerifyingKey, generate_key, key_id_for
from streamguard.security.messages import SIGNED_VERSION, sign_alert, sign_command
from streamguard.security.publisher import INSECURE_BANNER, Publisher, load_publisher
from streamguard.security.signing import REASONS, Rejection, check, sign, signing_payload, verify
from streamguard.security.verifier import CommandVerifier

__all__ = [
    "INSECURE_BANNER",
    "REASONS",
    "SIGNED_VERSION",
    "CanonicalError",
    "CommandVerifier",
    "KeyFileError",
    "KeyRing",
    "Publisher",
    "Rejection",
    "SigningKey",
    "VerifyingKey",
    "add_to_keyring",
    "canonical_bytes",
    "check",
    "generate_key",
    "key_id_for",
    "load_keyring",
    "load_publisher",
    "load_signing_key",
    "save_keyring",
    "save_signing_key",
    "sign",
    "sign_alert",
    "sign_command",
    "signing_payload",
    "verify",
]
