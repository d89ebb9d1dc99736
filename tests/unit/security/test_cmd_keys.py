"""``streamguard keys generate|show``: files, modes, rotation, and one-line errors."""

import argparse
import stat
from pathlib import Path

import orjson
import pytest

from streamguard.cli import cmd_keys
from streamguard.security import load_keyring, load_signing_key


def run(*argv: str) -> int:
    """Parse and run a ``keys`` command as ``streamguard`` would once it is registered."""
    parser = argparse.ArgumentParser(prog="streamguard")
    cmd_keys.register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["keys", *argv])
    code: int = args.handler(args)
    return code


def error_line(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str]:
    with pytest.raises(SystemExit) as caught:
        run(*argv)
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1
    assert lines[0].startswith("streamguard: error: ")
    assert isinstance(caught.value.code, int)
    return caught.value.code, lines[0]


def test_generate_writes_a_private_key_and_a_keyring(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = tmp_path / "keys"
    assert run("generate", "--issuer", "streamguard-prod", "--out", str(folder)) == 0
    key = load_signing_key(folder / "signing-key.json")
    assert key.issuer == "streamguard-prod"
    assert stat.S_IMODE((folder / "signing-key.json").stat().st_mode) == 0o600
    assert stat.S_IMODE(folder.stat().st_mode) == 0o700
    assert load_keyring(folder / "keyring.json").key_ids == [key.key_id]
    out = capsys.readouterr().out
    assert key.key_id in out
    assert "mode 0600" in out


def test_generate_refuses_to_overwrite_and_rotates_with_force(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run("generate", "--issuer", "prod", "--out", str(tmp_path))
    first = load_signing_key(tmp_path / "signing-key.json")
    code, line = error_line(capsys, "generate", "--issuer", "prod", "--out", str(tmp_path))
    assert code == 3
    assert "--force" in line
    assert str(tmp_path / "signing-key.json") in line
    assert load_signing_key(tmp_path / "signing-key.json").key_id == first.key_id

    run("generate", "--issuer", "prod", "--out", str(tmp_path), "--force")
    second = load_signing_key(tmp_path / "signing-key.json")
    assert second.key_id != first.key_id
    # Both public keys stay in the keyring: old and new signatures verify during the rollout.
    assert load_keyring(tmp_path / "keyring.json").key_ids == [first.key_id, second.key_id]


def test_show_prints_ids_issuers_and_public_keys_never_the_private_key(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run("generate", "--issuer", "prod", "--out", str(tmp_path))
    capsys.readouterr()
    document = orjson.loads((tmp_path / "signing-key.json").read_bytes())
    assert run("show", "--key", str(tmp_path / "signing-key.json")) == 0
    from_key = capsys.readouterr().out
    assert run("show", "--keyring", str(tmp_path / "keyring.json")) == 0
    from_ring = capsys.readouterr().out
    for out in (from_key, from_ring):
        assert document["key_id"] in out
        assert "prod" in out
        assert document["public_key_b64"] in out
        assert document["private_key_b64"] not in out
    assert from_key == from_ring


def test_show_of_a_broken_file_is_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ring = tmp_path / "keyring.json"
    ring.write_text("[]")
    code, line = error_line(capsys, "show", "--keyring", str(ring))
    assert code == 3
    assert str(ring) in line
    assert "no keys" in line
    code, line = error_line(capsys, "show", "--key", str(tmp_path / "missing.json"))
    assert code == 3
    assert "not found" in line


def test_empty_issuer_is_a_usage_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, line = error_line(capsys, "generate", "--issuer", " ", "--out", str(tmp_path))
    assert code == 2
    assert "--issuer" in line
