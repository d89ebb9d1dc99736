"""`streamguard doctor` says in plain words what does not fit, and exits 1 for it."""

import asyncio
import dataclasses
import subprocess
import sys
from pathlib import Path

import pytest

from streamguard.broker import EmbeddedBroker
from streamguard.broker.admin import apply_topics
from streamguard.contracts import load_topic_specs
from streamguard.security import KeyRing, generate_key, save_keyring, save_signing_key

pytestmark = pytest.mark.integration


def doctor(broker: EmbeddedBroker, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "streamguard", "doctor", "--broker", broker.url, *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_a_consistent_set_up_passes(broker_with_topics: EmbeddedBroker, tmp_path: Path) -> None:
    key = generate_key("streamguard-prod")
    save_signing_key(key, tmp_path / "key.json")
    save_keyring(KeyRing([key.verifying_key()]), tmp_path / "ring.json")
    result = doctor(
        broker_with_topics,
        "--signing-key",
        str(tmp_path / "key.json"),
        "--keyring",
        str(tmp_path / "ring.json"),
        "--issuer",
        "streamguard-prod",
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "no problems found" in result.stdout
    assert f"ok   the keyring holds the worker's key {key.key_id}" in result.stdout
    assert "WARN clock skew unknown" in result.stdout  # the embedded broker has no append time


def test_mismatched_keys_issuers_audiences_and_topics_are_named(
    broker: EmbeddedBroker, tmp_path: Path
) -> None:
    key, other = generate_key("streamguard-prod"), generate_key("streamguard-dev")
    save_signing_key(key, tmp_path / "key.json")
    save_keyring(KeyRing([other.verifying_key()]), tmp_path / "ring.json")
    result = doctor(
        broker,  # no topics created
        "--signing-key",
        str(tmp_path / "key.json"),
        "--keyring",
        str(tmp_path / "ring.json"),
        "--issuer",
        "streamguard-dev",
        "--audience",
        "fleet-a",
        "--deployment",
        "home-ranker",
    )
    assert result.returncode == 1
    fails = [line for line in result.stdout.splitlines() if line.startswith("FAIL")]
    assert f"FAIL the keyring does not hold the worker's key {key.key_id}" in fails
    assert any("the worker signs as 'streamguard-prod'" in line for line in fails)
    assert any("['home-ranker']" in line and "fleet-a" in line for line in fails)
    assert any("topic streamguard.control is missing" in line for line in fails)
    assert "Traceback" not in result.stderr


def test_a_topic_with_the_wrong_partition_count_is_named(
    broker: EmbeddedBroker, tmp_path: Path
) -> None:
    """As when a broker auto-created a topic: it exists, with partitions its spec does not have."""
    specs = load_topic_specs()
    alerts = specs["alerts"]
    wrong = dataclasses.replace(alerts, partitions=alerts.partitions + 2)
    asyncio.run(apply_topics(broker.bootstrap, {**specs, "alerts": wrong}))
    result = doctor(broker)
    assert result.returncode == 1, result.stdout + result.stderr
    fails = [line for line in result.stdout.splitlines() if line.startswith("FAIL")]
    assert fails == [
        f"FAIL topic {alerts.name} has {wrong.partitions} partitions, its spec {alerts.partitions} "
        "(auto-created? turn off auto.create.topics.enable)"
    ]
    for spec in specs.values():  # the others are fine, and said to be
        if spec.name != alerts.name:
            assert f"ok   topic {spec.name}: {spec.partitions} partitions" in result.stdout
    assert result.stdout.rstrip().endswith("1 problem(s)")
    assert "Traceback" not in result.stderr
