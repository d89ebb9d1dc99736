"""Shadow health end to end: a shadow timing out on one slice gives an alert, never a command."""

import time
from pathlib import Path

import pytest

from streamguard.broker import EmbeddedBroker
from streamguard.contracts import load_topic_specs
from streamguard.sim import ShadowOutage, TrafficGenerator
from streamguard.testing import envelopes
from tests.integration.conftest import Messages, notices_through_worker, replay_notices, strip

pytestmark = [pytest.mark.integration, pytest.mark.slow]

SPECS = load_topic_specs()
PARTITIONS = SPECS["predictions"].partitions
TARGET = {"platform": "android", "region": "eu"}


def traffic(outage: ShadowOutage | None, seed: int, seconds: int = 150) -> Messages:
    start = float(int(time.time()) // 10 * 10 - 3600)
    gen = TrafficGenerator(rate=300, seed=seed, start_ts=start, shadow_outage=outage)
    messages: Messages = []
    for events in gen.seconds(seconds):
        messages.extend(envelopes(events, PARTITIONS))
    return messages


def test_a_shadow_timing_out_on_one_slice_is_reported_untrusted_and_alerted(
    broker_with_topics: EmbeddedBroker, tmp_path: Path
) -> None:
    outage = ShadowOutage(TARGET, after_s=20, timeout_share=0.7, error_share=0.1)
    messages = traffic(outage, seed=1)
    notices, commands, last = replay_notices(messages, "shadow", PARTITIONS)
    assert commands == []
    assert [(n["guard"], n["slice"]) for n in notices] == [("shadow", TARGET)]
    alerts, control, verdicts = notices_through_worker(
        broker_with_topics, tmp_path, messages, "shadow", last, 1
    )
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
    notices, commands, last = replay_notices(messages, "shadow", PARTITIONS)
    assert (notices, commands) == ([], [])
    alerts, control, verdicts = notices_through_worker(
        broker_with_topics, tmp_path, messages, "shadow", last, 0
    )
    assert (alerts, control) == ([], [])
    final = max(verdicts, key=lambda v: v["window_end"])
    assert final["health"]["untrusted"] == []
    assert all(s["state"] != "untrusted" for s in final["slices"])
