"""Key files: one JSON file per private key (mode 0600), one JSON keyring of public keys.

Private key file (written by ``streamguard keys generate``, read by the worker)::

    {"kind": "streamguard-signing-key", "version": 1, "alg": "Ed25519",
     "key_id": "3f9c0a5d1e2b4c6f", "issuer": "streamguard-prod",
     "private_key_b64": "<standard base64 of the 32-byte Ed25519 private key (seed)>",
     "public_key_b64": "<standard base64 of the 32-byte public key>",
     "created_at": "2026-01-31T12:00:00Z"}

``created_at`` is informational and optional. The file is created with mode 0600; loading a
file that others can read works but logs a warning.

Keyring file (read by subscribers), a JSON list::

    [{"key_id": "3f9c0a5d1e2b4c6f", "issuer": "streamguard-prod",
      "public_key_b64": "<standard base64 of the 32-byte public key>",
      "not_after": 1790000000.0}]

``not_after`` (epoch seconds, optional) retires a key: signatures by it are refused after that
time. Both formats are checked on load: unknown fields, bad base64, a key id that does not match
the public key, or a public key that does not match the private one raise
:class:`KeyFileError` with one line naming the file and the problem.

Examples
--------
>>> import tempfile, pathlib
>>> from streamguard.security.keys import generate_key
>>> folder = pathlib.Path(tempfile.mkdtemp())
>>> key = generate_key("streamguard-prod")
>>> _ = save_signing_key(key, folder / "signing-key.json")
>>> load_signing_key(folder / "signing-key.json").key_id == key.key_id
True
>>> oct((folder / "signing-key.json").stat().st_mode & 0o777)
'0o600'
"""

import base64
import binascii
import contextlib
import logging
import math
import os
import stat
import tempfile
import time
from pathlib import Path
from typing import Any

import orjson
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from streamguard.security.exceptions import KeyFileError
from streamguard.security.keys import KeyRing, SigningKey, VerifyingKey, key_id_for

__all__ = [
    "KEY_FILE_KIND",
    "add_to_keyring",
    "keyring_document",
    "load_keyring",
    "load_signing_key",
    "save_keyring",
    "save_signing_key",
]

log = logging.getLogger(__name__)

KEY_FILE_KIND = "streamguard-signing-key"
_KEY_FIELDS = {
    "kind",
    "version",
    "alg",
    "key_id",
    "issuer",
    "private_key_b64",
    "public_key_b64",
    "created_at",
}
_RING_FIELDS = {"key_id", "issuer", "public_key_b64", "not_after"}


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _unb64(text: object, what: str, path: Path) -> bytes:
    if not isinstance(text, str):
        raise KeyFileError(f"{path}: {what} must be a base64 string")
    try:
        raw = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise KeyFileError(f"{path}: {what} is not valid base64") from exc
    if len(raw) != 32:
        raise KeyFileError(f"{path}: {what} holds {len(raw)} bytes, an Ed25519 key has 32")
    return raw


def _read_json(path: Path, what: str) -> Any:
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise KeyFileError(f"{path}: {what} not found") from None
    except OSError as exc:
        raise KeyFileError(f"{path}: cannot read {what}: {exc.strerror or exc}") from None
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise KeyFileError(f"{path}: {what} is not valid JSON ({exc})") from None


def _text_field(raw: dict[str, Any], name: str, where: str) -> str:
    value = raw.get(name)
    if not isinstance(value, str) or not value:
        raise KeyFileError(f"{where}: {name} must be a non-empty string")
    return value


def _checked_key_id(claimed: str, public: Ed25519PublicKey, where: str) -> str:
    derived = key_id_for(public)
    if claimed != derived:
        raise KeyFileError(
            f"{where}: key_id {claimed!r:.40} does not match the public key (its id is {derived})"
        )
    return derived


def load_signing_key(path: str | os.PathLike[str]) -> SigningKey:
    """Read a private key file (see the module's format).

    Raises
    ------
    KeyFileError
        If the file is missing, unreadable, not the format, or inconsistent.
    """
    path = Path(path)
    raw = _read_json(path, "signing key file")
    if not isinstance(raw, dict) or raw.get("kind") != KEY_FILE_KIND:
        raise KeyFileError(f"{path}: not a streamguard signing key file (kind {KEY_FILE_KIND!r})")
    unknown = sorted(set(raw) - _KEY_FIELDS)
    if unknown:
        raise KeyFileError(f"{path}: unknown field {unknown[0]!r:.40}")
    if raw.get("version") != 1:
        raise KeyFileError(f"{path}: version {raw.get('version')!r:.20} is not supported")
    if raw.get("alg") != "Ed25519":
        raise KeyFileError(f"{path}: alg {raw.get('alg')!r:.20} is not Ed25519")
    issuer = _text_field(raw, "issuer", str(path))
    claimed = _text_field(raw, "key_id", str(path))
    private = Ed25519PrivateKey.from_private_bytes(
        _unb64(raw.get("private_key_b64"), "private_key_b64", path)
    )
    public = private.public_key()
    if "public_key_b64" in raw:
        stored = _unb64(raw["public_key_b64"], "public_key_b64", path)
        if stored != public.public_bytes_raw():
            raise KeyFileError(f"{path}: public_key_b64 does not belong to private_key_b64")
    key_id = _checked_key_id(claimed, public, str(path))
    with contextlib.suppress(OSError):
        if path.stat().st_mode & (stat.S_IRWXG | stat.S_IRWXO):
            # Not an error: secret mounts (Kubernetes defaults to 0644) are often wider.
            log.warning("signing key file %s can be read by other users; chmod 600 it", path)
    return SigningKey(private, key_id, issuer)


def _write_atomically(path: Path, data: bytes, mode: int) -> None:
    """Write via a temporary file in the same folder, then rename: readers never see half."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as out:
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def save_signing_key(
    key: SigningKey, path: str | os.PathLike[str], *, overwrite: bool = False
) -> Path:
    """Write ``key`` as a private key file with mode 0600.

    Raises
    ------
    KeyFileError
        If the file exists and ``overwrite`` is false, or it cannot be written.
    """
    path = Path(path)
    document = {
        "kind": KEY_FILE_KIND,
        "version": 1,
        "alg": "Ed25519",
        "key_id": key.key_id,
        "issuer": key.issuer,
        "private_key_b64": _b64(key.private_key.private_bytes_raw()),
        "public_key_b64": _b64(key.private_key.public_key().public_bytes_raw()),
        "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    data = orjson.dumps(document, option=orjson.OPT_INDENT_2) + b"\n"
    if path.exists() and not overwrite:
        raise KeyFileError(f"{path}: a private key is already there; refusing to overwrite it")
    try:
        _write_atomically(path, data, 0o600)
    except OSError as exc:
        raise KeyFileError(f"{path}: cannot write signing key: {exc.strerror or exc}") from None
    return path


def _ring_entry(raw: object, index: int, path: Path) -> VerifyingKey:
    where = f"{path}: key {index}"
    if not isinstance(raw, dict):
        raise KeyFileError(f"{where} is not an object")
    unknown = sorted(set(raw) - _RING_FIELDS)
    if unknown:
        raise KeyFileError(f"{where}: unknown field {unknown[0]!r:.40}")
    issuer = _text_field(raw, "issuer", where)
    claimed = _text_field(raw, "key_id", where)
    public = Ed25519PublicKey.from_public_bytes(
        _unb64(raw.get("public_key_b64"), f"key {index} public_key_b64", path)
    )
    not_after = raw.get("not_after")
    if not_after is not None and (
        isinstance(not_after, bool)
        or not isinstance(not_after, int | float)
        or not math.isfinite(not_after)
    ):
        raise KeyFileError(f"{where}: not_after must be epoch seconds (a number)")
    key_id = _checked_key_id(claimed, public, where)
    return VerifyingKey(public, key_id, issuer, float(not_after) if not_after is not None else None)


def load_keyring(path: str | os.PathLike[str]) -> KeyRing:
    """Read a keyring file (see the module's format); it must hold at least one key.

    Raises
    ------
    KeyFileError
        If the file is missing, unreadable, not the format, empty, or an entry is inconsistent.
    """
    return _load_ring(Path(path), allow_empty=False)


def _load_ring(path: Path, allow_empty: bool) -> KeyRing:
    raw = _read_json(path, "keyring file")
    if not isinstance(raw, list):
        raise KeyFileError(f"{path}: a keyring file holds a JSON list of keys")
    if not raw and not allow_empty:
        # An empty keyring is a deployment mistake: every signed command would be refused.
        raise KeyFileError(f"{path}: the keyring holds no keys, so nothing would verify")
    keys = [_ring_entry(entry, i, path) for i, entry in enumerate(raw)]
    try:
        return KeyRing(keys)
    except ValueError as exc:
        raise KeyFileError(f"{path}: {exc}") from None


def keyring_document(ring: KeyRing) -> list[dict[str, Any]]:
    """The JSON list a keyring file holds."""
    out: list[dict[str, Any]] = []
    for key in ring:
        entry: dict[str, Any] = {
            "key_id": key.key_id,
            "issuer": key.issuer,
            "public_key_b64": _b64(key.public_bytes),
        }
        if key.not_after is not None:
            entry["not_after"] = key.not_after
        out.append(entry)
    return out


def save_keyring(ring: KeyRing, path: str | os.PathLike[str]) -> Path:
    """Write a keyring file (mode 0644: it holds public keys only), replacing it atomically.

    Raises
    ------
    KeyFileError
        If it cannot be written.
    """
    path = Path(path)
    data = orjson.dumps(keyring_document(ring), option=orjson.OPT_INDENT_2) + b"\n"
    try:
        _write_atomically(path, data, 0o644)
    except OSError as exc:
        raise KeyFileError(f"{path}: cannot write keyring: {exc.strerror or exc}") from None
    return path


def add_to_keyring(path: str | os.PathLike[str], key: VerifyingKey) -> KeyRing:
    """Add ``key`` to the keyring file at ``path`` (created if missing); returns the new ring.

    Keys already there stay, so signatures by the previous key keep verifying while the new
    one is rolled out.
    """
    path = Path(path)
    ring = _load_ring(path, allow_empty=True) if path.exists() else KeyRing()
    ring = ring.with_key(key)
    save_keyring(ring, path)
    return ring
