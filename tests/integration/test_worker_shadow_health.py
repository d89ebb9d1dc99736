"""Shadow health end to end: a shadow timing out on one slice gives an alert, never a command."""

import asyncio
import time
from pathlib import Path

import pytest

from streamguard.broker import EmbeddedBroker
from streamguard.contracts import load_topic_specs
from streamguard.engine import Pipeline
from streamguard.policy import Policy
from streamguard.sim import ShadowOutage, TrafficGenerator
from streamguard.testing import WorkerProcess, envelopes, read_topic
from tests.integration.conftest import produce

pytestmark = [pytest.mark.integration, pytest.mark.slow]

SPECS = load_topic_specs()
PARTITIONS = SPECS["predictions"].partitions
TARGET = {"platform": "android", "region": "eu"}
Messages = list[tuple[int | None, bytes | None, bytes]]


def traffic(outage: ShadowOutage | None, seed: int, seconds: int = 150) -> Messages:
    start = float(int(time.time()) // 10 * 10 - 3600)
    gen = TrafficGenerator(rate=300, seed=seed, start_ts=start, shadow_outage=outage)
    messages: Messages = []
    for events in gen.seconds(seconds):
        messages.extend(envelopes(events, PARTITIONS))
    return messages


def replay(messages: Messages) -> tuple[list[dict], list[dict], float]:
    """Notices, commands and the end of the last shadow window the replay judged."""
    judged: list[float] = []
    pipe = Pipeline(
        Policy(),
        PARTITIONS,
        on_verdict=lambda v: judged.append(v.window_end) if v.guard == "shadow" else None,
    )
    for _, _, value in messages:
        pipe.feed(value)
    pipe.flush()  # what the worker can judge: its last windows stay open
    notices = [a.to_dict() for a in pipe.notices]
    return notices, [c.to_dict() for c in pipe.commands], max(judged)


def through_worker(
    broker: EmbeddedBroker, tmp_path: Path, messages: Messages, judged_until: float, alerts: int
) -> tuple[list[dict], list[dict], list[dict]]:
    with WorkerProcess(broker.url, tmp_path / "worker.log") as worker:
        worker.wait_ready(sources=PARTITIONS)
        produce(broker.bootstrap, messages, SPECS["predictions"].name)

        def judged(values: list[dict]) -> bool:
            return any(v["guard"] == "shadow" and v["window_end"] >= judged_until for v in values)

        verdicts = asyncio.run(
            read_topic(broker.bootstrap, SPECS["verdicts"].name, 90, until=judged)
        )
        assert judged(verdicts)
        found = asyncio.run(
            read_topic(
                broker.bootstrap,
                SPECS["alerts"].name,
                30 if alerts else 3,
                until=lambda v: alerts > 0 and len(v) >= alerts,
            )
        )
        control = asyncio.run(read_topic(broker.bootstrap, SPECS["control"].name, 3))
    shadow = [v for v in verdicts if v["guard"] == "shadow"]
    return found, control, shadow


def strip(message: dict) -> dict:
    return {k: v for k, v in message.items() if k not in ("signature", "schema_version")}


def test_a_shadow_timing_out_on_one_slice_is_reported_untrusted_and_alerted(
    broker_with_topics: EmbeddedBroker, tmp_path: Path
) -> None:
    outage = ShadowOutage(TARGET, after_s=20, timeout_share=0.7, error_share=0.1)
    messages = traffic(outage, seed=1)
    notices, commands, last = replay(messages)
    assert commands == []
    assert [(n["guard"], n["slice"]) for n in notices] == [("shadow", TARGET)]
    alerts, control, verdicts = through_worker(broker_with_topics, tmp_path, messages, last, 1)
    assert control == []  # shadow health never pauses or rolls back the model
    assert [strip(a) for a in alerts] == [strip(n) for n in notices]
    evidence = alerts[0]["evidence"]
    assert evidence["pairing_rate"] < evidence["pairing_floor"] == 0.9
    assert evidence["error_rate"] > 0
    final = max(verdicts, key=lambda v: v["window_end"])
    states = {s["slice"]: s for s in final["slices"]}
    target = states["platform=android,region=eu"]
    assert target["state"] == "untrusted"
    assert target["stats"]["pairing_rate"] < 0.9
    assert states["platform=ios"]["state"] == "ok"
    assert states["platform=ios"]["stats"]["pairing_rate"] == 1.0
    assert [f["slice"] for f in final["health"]["findings"]] == ["platform=android,region=eu"]


def test_a_healthy_shadow_gives_no_alert(
    broker_with_topics: EmbeddedBroker, tmp_path: Path
) -> None:
    messages = traffic(None, seed=2)
    notices, commands, last = replay(messages)
    assert (notices, commands) == ([], [])
    alerts, control, verdicts = through_worker(broker_with_topics, tmp_path, messages, last, 0)
    assert (alerts, control) == ([], [])
    final = max(verdicts, key=lambda v: v["window_end"])
    assert final["health"]["untrusted"] == []
    assert all(s["state"] != "untrusted" for s in final["slices"])
