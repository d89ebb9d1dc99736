"""Ed25519 keys with a key id and an issuer, and the keyring a subscriber verifies with.

A key id is derived from the public key (the first 16 hex digits of SHA-256 over the 32 raw
public-key bytes), so it cannot drift from the key it names and a keyring entry can be checked
on load. Rotation is done with the keyring: publish the new public key next to the old one,
switch the signer to the new key, and drop the old entry once no command signed with it is
still valid.

Examples
--------
>>> key = generate_key("streamguard-prod")
>>> ring = KeyRing([key.verifying_key()])
>>> ring.get(key.key_id).issuer
'streamguard-prod'
>>> len(key.key_id)
16
"""

import hashlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

__all__ = ["KeyRing", "SigningKey", "VerifyingKey", "generate_key", "key_id_for"]


def key_id_for(public_key: Ed25519PublicKey) -> str:
    """The key id of a public key: the first 16 hex digits of SHA-256 of its raw bytes."""
    return hashlib.sha256(public_key.public_bytes_raw()).hexdigest()[:16]


@dataclass(frozen=True, slots=True)
class VerifyingKey:
    """A public key that commands may be signed with.

    Parameters
    ----------
    public_key
        The Ed25519 public key.
    key_id
        Its id, as :func:`key_id_for` derives it.
    issuer
        Who signs with it (the ``iss`` claim a signature by this key must carry).
    not_after
        Epoch seconds after which signatures by this key are refused (a retired key), or None.
    """

    public_key: Ed25519PublicKey = field(repr=False)
    key_id: str
    issuer: str
    not_after: float | None = None

    @property
    def public_bytes(self) -> bytes:
        """The 32 raw public-key bytes."""
        return self.public_key.public_bytes_raw()


@dataclass(frozen=True, slots=True)
class SigningKey:
    """A private Ed25519 key with its key id and issuer; its repr never shows the key."""

    private_key: Ed25519PrivateKey = field(repr=False)
    key_id: str
    issuer: str

    def verifying_key(self, not_after: float | None = None) -> VerifyingKey:
        """The public half, for a keyring."""
        return VerifyingKey(self.private_key.public_key(), self.key_id, self.issuer, not_after)


def generate_key(issuer: str) -> SigningKey:
    """A new random signing key for ``issuer`` (the worker or deployment that signs).

    Raises
    ------
    ValueError
        If ``issuer`` is empty.
    """
    if not issuer:
        raise ValueError("issuer must not be empty")
    private = Ed25519PrivateKey.generate()
    return SigningKey(private, key_id_for(private.public_key()), issuer)


class KeyRing:
    """Verifying keys by key id; several at once, so old and new keys overlap while rotating.

    Parameters
    ----------
    keys
        The keys; two different public keys under one key id raise ValueError (the same key
        twice is kept once).
    """

    __slots__ = ("_keys",)

    def __init__(self, keys: Iterable[VerifyingKey] = ()) -> None:
        self._keys: dict[str, VerifyingKey] = {}
        for key in keys:
            known = self._keys.get(key.key_id)
            if known is not None and known.public_bytes != key.public_bytes:
                raise ValueError(f"two different public keys share key id {key.key_id}")
            self._keys[key.key_id] = key

    def get(self, key_id: str) -> VerifyingKey | None:
        """The key with this id, or None."""
        return self._keys.get(key_id)

    def with_key(self, key: VerifyingKey) -> "KeyRing":
        """A copy with ``key`` added (replacing an entry with the same id)."""
        return KeyRing([*(k for k in self if k.key_id != key.key_id), key])

    def without(self, key_id: str) -> "KeyRing":
        """A copy without the key ``key_id`` (retiring it)."""
        return KeyRing(k for k in self if k.key_id != key_id)

    @property
    def key_ids(self) -> list[str]:
        """Key ids, in insertion order."""
        return list(self._keys)

    def __contains__(self, key_id: object) -> bool:
        return key_id in self._keys

    def __iter__(self) -> Iterator[VerifyingKey]:
        return iter(self._keys.values())

    def __len__(self) -> int:
        return len(self._keys)

    def __repr__(self) -> str:
        return f"KeyRing({', '.join(f'{k.key_id}@{k.issuer}' for k in self)})"
