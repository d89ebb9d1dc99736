"""A worker with a signing key: signed commands out, only signed approvals acted on."""

import time
from pathlib import Path

import orjson
import pytest

from streamguard.broker import EmbeddedBroker
from streamguard.contracts import Command
from streamguard.security import (
    CommandVerifier,
    KeyRing,
    generate_key,
    save_signing_key,
    sign_command,
)
from streamguard.sim import ShadowDeviation
from streamguard.testing import WorkerProcess
from tests.integration.conftest import produce
from tests.integration.test_worker_shadow import PREDICTIONS, SPECS, TARGET, commands, traffic

pytestmark = pytest.mark.integration


def wait_for_text(read: object, fragment: str, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if fragment in read():  # type: ignore[operator]
            return True
        time.sleep(0.5)
    return False


def test_signed_commands_out_and_only_signed_approvals_in(
    broker_with_topics: EmbeddedBroker, tmp_path: Path
) -> None:
    key = generate_key("streamguard-test")
    save_signing_key(key, tmp_path / "key.json")
    log = tmp_path / "w.log"
    worker = WorkerProcess(broker_with_topics.url, log, signing_key=tmp_path / "key.json")
    worker.start()
    try:
        worker.wait_ready(sources=8)
        assert (worker.health() or {})["signing"] == {
            "mode": "signed",
            "key_id": key.key_id,
            "issuer": "streamguard-test",
        }
        # A moderate shift: a pause and no rollback within the run (a rolled-back version
        # stays rolled back, so an approval racing a rollback would not apply).
        deviation = ShadowDeviation(TARGET, after_s=150, shift=0.08)
        produce(broker_with_topics.bootstrap, traffic(deviation), PREDICTIONS.name)
        pause = commands(broker_with_topics, 60, expect=1)[0]
        assert pause["action"] == "pause"
        assert pause["schema_version"] == 2
        verifier = CommandVerifier(KeyRing([key.verifying_key()]))
        assert verifier(pause) is None
        assert verifier({**pause, "slice": None}) == "bad_signature"

        resume = Command(
            "resume", pause["deployment"], pause["model_version"], "manual", None, {}, time.time()
        )
        forged = sign_command(resume, generate_key("intruder"), ttl_s=600, now=time.time())
        genuine = sign_command(resume, key, ttl_s=600, now=time.time())
        control = SPECS["control"].name
        deployment = pause["deployment"].encode()
        produce(broker_with_topics.bootstrap, [(None, deployment, orjson.dumps(forged))], control)
        assert wait_for_text(
            worker.metrics, 'streamguard_control_rejected_total{reason="unknown_key"} 1.0', 30
        )
        assert "approval applied" not in log.read_text()
        produce(broker_with_topics.bootstrap, [(None, deployment, orjson.dumps(genuine))], control)
        assert wait_for_text(log.read_text, "approval applied", 30)
    finally:
        worker.stop()
    assert "INSECURE" not in log.read_text()
