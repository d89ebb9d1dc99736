"""The worker's publisher: signed output, verified approvals, and the insecure mode's limits."""

from pathlib import Path

import orjson
import pytest

from streamguard.contracts import Alert, Command
from streamguard.exceptions import ConfigError
from streamguard.security import (
    CommandVerifier,
    KeyRing,
    Publisher,
    generate_key,
    load_publisher,
    save_keyring,
    save_signing_key,
    sign_command,
)

NOW = 1_790_000_000.0


def command(action: str = "pause") -> Command:
    return Command(action, "home-ranker", "v2", "shadow", {"platform": "ios"}, {"n": 5}, NOW)


def test_commands_and_alerts_are_signed_for_their_deployment() -> None:
    key = generate_key("streamguard-prod")
    publisher = Publisher.with_key(key, ttl_s=600)
    signed = publisher.command(command(), NOW)
    assert signed["schema_version"] == 2
    assert signed["signature"]["kid"] == key.key_id
    assert signed["signature"]["exp"] == NOW + 600
    verifier = CommandVerifier(KeyRing([key.verifying_key()]), clock=lambda: NOW + 1)
    assert verifier(signed) is None
    alert = Alert("a1", "c1", "warning", "home-ranker", "v2", "shadow", None, "s", {}, NOW)
    assert verifier(orjson.loads(publisher.alert_bytes(alert, NOW))) is None


@pytest.mark.parametrize(
    ("case", "reason"),
    [
        ("own key", None),
        ("other key", "unknown_key"),
        ("tampered", "bad_signature"),
        ("unsigned", "unsigned"),
        ("expired", "expired"),
    ],
)
def test_approvals_count_only_when_signed_by_a_known_key(case: str, reason: str | None) -> None:
    key = generate_key("streamguard-prod")
    publisher = Publisher.with_key(key, ttl_s=600)
    signer = generate_key("intruder") if case == "other key" else key
    approval = sign_command(command("resume"), signer, ttl_s=600, now=NOW)
    if case == "tampered":
        approval["model_version"] = "v1"
    if case == "unsigned":
        approval = command("resume").to_dict()
    when = NOW + 3600 if case == "expired" else NOW + 1
    assert publisher.check_control(approval, when) == reason


def test_an_approvers_keyring_replaces_the_default(tmp_path: Path) -> None:
    worker_key, approver = generate_key("worker"), generate_key("on-call")
    save_signing_key(worker_key, tmp_path / "worker.json")
    save_keyring(KeyRing([approver.verifying_key()]), tmp_path / "ring.json")
    publisher = load_publisher(
        tmp_path / "worker.json", tmp_path / "ring.json", insecure=False, ttl_s=60
    )
    approval = sign_command(command("resume"), approver, ttl_s=600, now=NOW)
    assert publisher.check_control(approval, NOW) is None
    own = sign_command(command("resume"), worker_key, ttl_s=600, now=NOW)
    assert publisher.check_control(own, NOW) == "unknown_key"


def test_insecure_mode_must_be_asked_for_and_excludes_a_key(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no signing key"):
        load_publisher(None, None, insecure=False, ttl_s=60)
    insecure = load_publisher(None, None, insecure=True, ttl_s=60)
    assert not insecure.signs
    assert insecure.command(command(), NOW) == command().to_dict()  # version 1, unsigned
    save_signing_key(generate_key("w"), tmp_path / "k.json")
    with pytest.raises(ConfigError, match="exclude"):
        load_publisher(tmp_path / "k.json", None, insecure=True, ttl_s=60)
    with pytest.raises(ConfigError):
        load_publisher(tmp_path / "missing.json", None, insecure=False, ttl_s=60)
