"""The CLI against real processes: broker, replay = worker, demo."""

import asyncio
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import orjson
import pytest

from streamguard.broker import EmbeddedBroker
from streamguard.contracts import load_topic_specs
from streamguard.security import INSECURE_BANNER
from streamguard.sim import ShadowDeviation, TrafficGenerator
from streamguard.testing import WorkerProcess, envelopes, read_topic
from tests.integration.conftest import produce

pytestmark = pytest.mark.integration

SPECS = load_topic_specs()
TARGET = {"platform": "android", "tier": "free"}


def test_broker_command_prints_url_and_stops_cleanly() -> None:
    process = subprocess.Popen(
        [sys.executable, "-m", "streamguard", "broker"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        url = process.stdout.readline().strip()
        assert url.startswith("kafka://127.0.0.1:")
        names = asyncio.run(_topic_names(url.removeprefix("kafka://")))
        assert {spec.name for spec in SPECS.values()} <= names
    finally:
        os.kill(process.pid, signal.SIGINT)
        assert process.wait(20) == 0


async def _topic_names(bootstrap: str) -> set[str]:
    from aiokafka.admin import AIOKafkaAdminClient

    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        return set(await admin.list_topics())
    finally:
        await admin.close()


@pytest.mark.slow
def test_replay_gives_the_commands_the_worker_publishes(
    broker_with_topics: EmbeddedBroker, tmp_path: Path
) -> None:
    start = float(int(time.time()) // 10 * 10 - 3600)
    gen = TrafficGenerator(
        rate=300,
        seed=11,
        start_ts=start,
        deviation=ShadowDeviation(TARGET, after_s=120, shift=0.15),
    )
    messages = []
    for events in gen.seconds(480):
        messages.extend(envelopes(events, SPECS["predictions"].partitions))
    recording = tmp_path / "events.jsonl"
    recording.write_bytes(b"".join(value + b"\n" for _, _, value in messages))
    replayed = subprocess.run(
        [sys.executable, "-m", "streamguard", "replay", str(recording)],
        capture_output=True,
        check=True,
        timeout=300,
    )
    expected = [orjson.loads(line) for line in replayed.stdout.splitlines()]
    assert expected[0]["action"] == "pause"
    assert expected[-1]["action"] == "rollback"
    assert expected[-1]["slice"] == TARGET
    assert all(TARGET.items() <= c["slice"].items() for c in expected)
    with WorkerProcess(broker_with_topics.url, tmp_path / "worker.log") as worker:
        worker.wait_ready(sources=8)
        produce(broker_with_topics.bootstrap, messages, SPECS["predictions"].name)
        published = asyncio.run(
            read_topic(
                broker_with_topics.bootstrap,
                SPECS["control"].name,
                120,
                until=lambda v: len(v) >= len(expected),
            )
        )
    assert [c["command_id"] for c in published] == [c["command_id"] for c in expected]
    for got, want in zip(published, expected, strict=True):
        assert got["slice"] == want["slice"]
        assert got["evidence"]["n"] == want["evidence"]["n"]
        assert got["evidence"]["stats"] == pytest.approx(want["evidence"]["stats"], rel=1e-6)


def test_an_insecure_worker_says_so_on_every_start_and_in_health(
    broker_with_topics: EmbeddedBroker, tmp_path: Path
) -> None:
    log = tmp_path / "worker.log"  # both runs append to it
    for starts in (1, 2):
        # Without a signing key WorkerProcess runs ``streamguard worker --insecure``.
        with WorkerProcess(broker_with_topics.url, log) as worker:
            worker.wait_ready()
            assert (worker.health() or {})["signing"] == {"mode": "insecure"}
            assert log.read_text().count(INSECURE_BANNER) == starts


def test_replay_is_deterministic(tmp_path: Path) -> None:
    gen = TrafficGenerator(
        rate=200, seed=5, start_ts=1_790_000_000.0, deviation=ShadowDeviation(TARGET, 100, 0.2)
    )
    recording = tmp_path / "events.jsonl"
    with recording.open("wb") as handle:
        for events in gen.seconds(300):
            for _, _, value in envelopes(events, 8):
                handle.write(value + b"\n")
    runs = [
        subprocess.run(
            [sys.executable, "-m", "streamguard", "replay", str(recording), "--no-progress"],
            capture_output=True,
            check=True,
            timeout=300,
        )
        for _ in range(2)
    ]
    assert runs[0].stdout == runs[1].stdout
    commands = [orjson.loads(line) for line in runs[0].stdout.splitlines()]
    assert commands
    assert commands[-1]["slice"] == TARGET
    assert b"replayed" in runs[0].stderr


@pytest.mark.slow
def test_demo_runs_end_to_end() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "streamguard", "demo", "--minutes", "6"],
        capture_output=True,
        text=True,
        timeout=400,
        check=False,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "[serving] received PAUSE" in result.stdout
    assert "command names the injected slice: yes" in result.stdout
    assert "[demo] broker stopped" in result.stdout
