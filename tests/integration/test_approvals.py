"""`streamguard status`, `approve` and `reject` against a broker: signed, attributed decisions."""

import subprocess
import sys
from pathlib import Path

import pytest

from streamguard.broker import EmbeddedBroker
from streamguard.contracts import Command, load_topic_specs
from streamguard.security import CommandVerifier, KeyRing, generate_key, save_signing_key
from streamguard.security.publisher import Publisher
from streamguard.testing import read_topic
from tests.integration.conftest import produce

pytestmark = pytest.mark.integration
CONTROL = load_topic_specs()["control"].name


def streamguard(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "streamguard", *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_pending_approvals_are_listed_then_approved_and_rejected_with_signatures(
    broker_with_topics: EmbeddedBroker, tmp_path: Path
) -> None:
    import asyncio

    key = generate_key("on-call")
    save_signing_key(key, tmp_path / "key.json")
    worker = Publisher.with_key(key)
    pauses = [
        Command("pause", "home-ranker", "v43", "shadow", {"tier": "free"}, {}, 1_790_000_300.0),
        Command("pause", "search", "s7", "canary", None, {}, 1_790_000_400.0),
    ]
    produce(
        broker_with_topics.bootstrap,
        [(None, c.deployment.encode(), worker.command_bytes(c, c.ts)) for c in pauses],
        CONTROL,
    )
    broker = ["--broker", broker_with_topics.url]
    status = streamguard("status", *broker)
    assert status.returncode == 0, status.stderr
    assert "pending approvals: 2" in status.stdout
    assert "home-ranker v43: paused by shadow on tier=free" in status.stdout

    key_arg = ["--signing-key", str(tmp_path / "key.json")]
    approved = streamguard(
        "approve", "home-ranker", "--reason", "seasonal shift", "--by", "ana", *broker, *key_arg
    )
    assert approved.returncode == 0, approved.stderr
    assert "resume home-ranker v43" in approved.stdout
    rejected = streamguard(
        "reject", "search", "--reason", "bad ctr", "--by", "bo", *broker, *key_arg
    )
    assert rejected.returncode == 0, rejected.stderr

    status = streamguard("status", *broker)
    assert "pending approvals: 0" in status.stdout
    assert "home-ranker v43: resumed (manual, *) by ana: seasonal shift" in status.stdout
    assert "search s7: rolled back (manual, *) by bo: bad ctr" in status.stdout

    messages = asyncio.run(
        read_topic(broker_with_topics.bootstrap, CONTROL, 10, until=lambda v: len(v) >= 4)
    )
    decisions = [m for m in messages if m["guard"] == "manual"]
    assert {
        (m["action"], m["evidence"].get("approved_by") or m["evidence"].get("rejected_by"))
        for m in decisions
    } == {("resume", "ana"), ("rollback", "bo")}
    verifier = CommandVerifier(KeyRing([key.verifying_key()]))
    assert all(verifier(m) is None for m in decisions)

    nothing = streamguard(
        "approve", "home-ranker", "--reason", "x", "--by", "ana", *broker, *key_arg
    )
    assert nothing.returncode == 3
    assert "no paused rollout" in nothing.stderr
    unsigned = streamguard(
        "approve", "search", "--version", "s7", "--reason", "x", "--by", "a", *broker
    )
    assert unsigned.returncode == 3
    assert "no signing key" in unsigned.stderr
