"""Non-determinism end to end: environments that disagree give a signed alert naming their
fingerprints and no command; identical ones (with a mix that differs by slice) give nothing."""

import time
from pathlib import Path

import pytest

from streamguard.broker import EmbeddedBroker
from streamguard.contracts import load_topic_specs
from streamguard.sim.scenarios import A100, SCENARIOS, V100
from streamguard.testing import envelopes
from tests.integration.conftest import Messages, notices_through_worker, replay_notices, strip

pytestmark = [pytest.mark.integration, pytest.mark.slow]

SPECS = load_topic_specs()
PARTITIONS = SPECS["predictions"].partitions
SECONDS = 120
START = float(int(time.time()) // 10 * 10 - 3600)


def traffic(scenario: str, seed: int) -> Messages:
    gen = SCENARIOS[scenario].source(100, SECONDS, seed, START)
    messages: Messages = []
    for events in gen.seconds(SECONDS):
        messages.extend(envelopes(events, PARTITIONS))
    return messages


def test_environments_that_disagree_give_an_alert_naming_their_fingerprints(
    broker_with_topics: EmbeddedBroker, tmp_path: Path
) -> None:
    messages = traffic("nondeterministic-env", seed=1)
    notices, commands, last = replay_notices(messages, "determinism", PARTITIONS)
    assert commands == []
    assert [(n["guard"], n["slice"]) for n in notices] == [("determinism", None)]
    alerts, control, verdicts = notices_through_worker(
        broker_with_topics, tmp_path, messages, "determinism", last, 1
    )
    assert control == []  # never a command: the model is not at fault
    assert [strip(a) for a in alerts] == [strip(n) for n in notices]  # replay = worker
    (alert,) = alerts
    assert V100 in alert["summary"]
    assert A100 in alert["summary"]
    evidence = alert["evidence"]
    assert evidence["fingerprints"] == [A100, V100]
    assert evidence["check"] == "paired"
    assert evidence["comparison"]["confidence_interval"][0] > 1e-3  # beyond the tolerance
    onset = SCENARIOS["nondeterministic-env"].onset_s(SECONDS)
    assert onset is not None
    assert alert["ts"] >= START + onset  # never before the environments diverged
    final = max(verdicts, key=lambda v: v["window_end"])
    assert final["slices"][0]["state"] == "notice"


def test_identical_environments_give_no_alert(
    broker_with_topics: EmbeddedBroker, tmp_path: Path
) -> None:
    messages = traffic("healthy-envs", seed=2)
    notices, commands, last = replay_notices(messages, "determinism", PARTITIONS)
    assert (notices, commands) == ([], [])
    alerts, control, verdicts = notices_through_worker(
        broker_with_topics, tmp_path, messages, "determinism", last, 0
    )
    assert (alerts, control) == ([], [])
    final = max(verdicts, key=lambda v: v["window_end"])
    assert final["slices"][0]["state"] == "ok"
    assert set(final["determinism"]["fingerprints"]) == {A100, V100}
