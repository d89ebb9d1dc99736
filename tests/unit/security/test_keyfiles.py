"""Key files round-trip, private keys are 0600, and every broken file is named in one line."""

import base64
import hashlib
import logging
import os
import stat
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import pytest

from streamguard.exceptions import ConfigError
from streamguard.security import (
    KeyFileError,
    KeyRing,
    add_to_keyring,
    generate_key,
    load_keyring,
    load_signing_key,
    save_keyring,
    save_signing_key,
    sign,
    verify,
)
from tests.unit.security._keys import NOW, Keys


def test_signing_key_round_trips_and_is_private(tmp_path: Path, keys: Keys) -> None:
    path = save_signing_key(keys.current, tmp_path / "signing-key.json")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    loaded = load_signing_key(path)
    assert (loaded.key_id, loaded.issuer) == (keys.current.key_id, keys.current.issuer)
    # The loaded key signs what the original key's public half verifies.
    message = sign({"a": 1}, loaded, "aud", 60, NOW)
    assert verify(message, KeyRing([keys.current.verifying_key()]), {"aud"}, NOW) is None
    assert "private_key" not in repr(loaded)


def test_private_key_is_0600_even_with_a_permissive_umask(tmp_path: Path, keys: Keys) -> None:
    old = os.umask(0)
    try:
        path = save_signing_key(keys.current, tmp_path / "k.json")
    finally:
        os.umask(old)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_existing_private_key_is_not_overwritten_unless_asked(tmp_path: Path, keys: Keys) -> None:
    path = save_signing_key(keys.previous, tmp_path / "k.json")
    with pytest.raises(KeyFileError, match="refusing to overwrite"):
        save_signing_key(keys.current, path)
    assert load_signing_key(path).key_id == keys.previous.key_id
    save_signing_key(keys.current, path, overwrite=True)
    assert load_signing_key(path).key_id == keys.current.key_id
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_keyring_round_trips_with_retirement(tmp_path: Path, keys: Keys) -> None:
    ring = KeyRing([keys.previous.verifying_key(not_after=NOW + 60), keys.current.verifying_key()])
    path = save_keyring(ring, tmp_path / "keyring.json")
    loaded = load_keyring(path)
    assert loaded.key_ids == ring.key_ids
    assert [k.public_bytes for k in loaded] == [k.public_bytes for k in ring]
    assert [k.not_after for k in loaded] == [NOW + 60, None]
    assert stat.S_IMODE(path.stat().st_mode) == 0o644


def test_add_to_keyring_keeps_the_keys_already_there(tmp_path: Path, keys: Keys) -> None:
    path = tmp_path / "keyring.json"
    add_to_keyring(path, keys.previous.verifying_key())
    ring = add_to_keyring(path, keys.current.verifying_key())
    assert ring.key_ids == [keys.previous.key_id, keys.current.key_id]
    assert load_keyring(path).key_ids == ring.key_ids
    again = add_to_keyring(path, keys.current.verifying_key())
    assert again.key_ids == ring.key_ids  # the same key is not listed twice


def test_loose_permissions_on_a_private_key_are_warned_about(
    tmp_path: Path, keys: Keys, caplog: pytest.LogCaptureFixture
) -> None:
    path = save_signing_key(keys.current, tmp_path / "k.json")
    path.chmod(0o644)
    with caplog.at_level(logging.WARNING, logger="streamguard.security"):
        load_signing_key(path)
    assert "chmod 600" in caplog.text


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def key_document(keys: Keys) -> dict[str, Any]:
    key = keys.current
    return {
        "kind": "streamguard-signing-key",
        "version": 1,
        "alg": "Ed25519",
        "key_id": key.key_id,
        "issuer": key.issuer,
        "private_key_b64": b64(key.private_key.private_bytes_raw()),
        "public_key_b64": b64(key.verifying_key().public_bytes),
    }


KEY_FILE_ERRORS: list[tuple[str, Callable[[dict[str, Any], Keys], Any], str]] = [
    ("not-an-object", lambda d, k: [d], "not a streamguard signing key file"),
    ("wrong-kind", lambda d, k: d | {"kind": "keyring"}, "not a streamguard signing key file"),
    ("unknown-field", lambda d, k: d | {"comment": "x"}, "unknown field 'comment'"),
    ("version", lambda d, k: d | {"version": 2}, "version 2 is not supported"),
    ("alg", lambda d, k: d | {"alg": "RS256"}, "alg 'RS256' is not Ed25519"),
    ("no-issuer", lambda d, k: d | {"issuer": ""}, "issuer must be a non-empty string"),
    ("bad-base64", lambda d, k: d | {"private_key_b64": "%%%"}, "not valid base64"),
    ("short-key", lambda d, k: d | {"private_key_b64": b64(b"x" * 16)}, "holds 16 bytes"),
    (
        "other-public-key",
        lambda d, k: d | {"public_key_b64": b64(k.previous.verifying_key().public_bytes)},
        "does not belong to private_key_b64",
    ),
    ("wrong-key-id", lambda d, k: d | {"key_id": "0" * 16}, "does not match the public key"),
]


@pytest.mark.parametrize(
    ("mutate", "fragment"), [c[1:] for c in KEY_FILE_ERRORS], ids=[c[0] for c in KEY_FILE_ERRORS]
)
def test_broken_key_files_name_the_file_and_the_problem(
    tmp_path: Path, keys: Keys, mutate: Callable[[dict[str, Any], Keys], Any], fragment: str
) -> None:
    path = tmp_path / "signing-key.json"
    path.write_bytes(orjson.dumps(mutate(key_document(keys), keys)))
    with pytest.raises(ConfigError) as caught:
        load_signing_key(path)
    message = str(caught.value)
    assert message.startswith(f"{path}: ")
    assert fragment in message
    assert "\n" not in message


def ring_entry(keys: Keys) -> dict[str, Any]:
    key = keys.current
    return {
        "key_id": key.key_id,
        "issuer": key.issuer,
        "public_key_b64": b64(key.verifying_key().public_bytes),
    }


RING_ERRORS: list[tuple[str, Callable[[dict[str, Any], Keys], Any], str]] = [
    ("not-a-list", lambda e, k: e, "holds a JSON list"),
    ("empty", lambda e, k: [], "holds no keys"),
    ("entry-not-object", lambda e, k: [e, "x"], "key 1 is not an object"),
    ("unknown-field", lambda e, k: [e | {"private_key_b64": "x"}], "unknown field"),
    ("wrong-key-id", lambda e, k: [e | {"key_id": "f" * 16}], "does not match the public key"),
    ("not-after-text", lambda e, k: [e | {"not_after": "2027"}], "not_after must be epoch"),
    ("bad-base64", lambda e, k: [e | {"public_key_b64": "??"}], "not valid base64"),
    (
        "same-id-two-keys",
        lambda e, k: [e, e | {"public_key_b64": b64(k.previous.verifying_key().public_bytes)}],
        "does not match the public key",
    ),
]


@pytest.mark.parametrize(
    ("mutate", "fragment"), [c[1:] for c in RING_ERRORS], ids=[c[0] for c in RING_ERRORS]
)
def test_broken_keyrings_name_the_file_and_the_problem(
    tmp_path: Path, keys: Keys, mutate: Callable[[dict[str, Any], Keys], Any], fragment: str
) -> None:
    path = tmp_path / "keyring.json"
    path.write_bytes(orjson.dumps(mutate(ring_entry(keys), keys)))
    with pytest.raises(ConfigError) as caught:
        load_keyring(path)
    message = str(caught.value)
    assert message.startswith(f"{path}: ")
    assert fragment in message
    assert "\n" not in message


@pytest.mark.parametrize("loader", [load_keyring, load_signing_key], ids=["keyring", "key"])
def test_missing_and_unparsable_files(tmp_path: Path, loader: Callable[[Path], object]) -> None:
    with pytest.raises(KeyFileError, match="not found"):
        loader(tmp_path / "missing.json")
    garbage = tmp_path / "garbage.json"
    garbage.write_text("{not json")
    with pytest.raises(KeyFileError, match="is not valid JSON"):
        loader(garbage)


def test_keyring_refuses_two_public_keys_under_one_id(keys: Keys) -> None:
    first = keys.current.verifying_key()
    impostor = type(first)(keys.previous.verifying_key().public_key, first.key_id, "prod")
    with pytest.raises(ValueError, match="share key id"):
        KeyRing([first, impostor])


def test_generated_keys_derive_their_id_from_the_public_key() -> None:
    key = generate_key("prod")
    public = key.verifying_key().public_bytes
    assert key.key_id == hashlib.sha256(public).hexdigest()[:16]
    with pytest.raises(ValueError, match="issuer"):
        generate_key("")
