"""Malformed input never crashes the decoder or the worker; each bad event is dead-lettered.

Hypothesis-driven damage of large envelopes: ``test_fuzz_envelopes.py``.
"""

import json
import random
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import orjson
import pytest

from streamguard.broker import EmbeddedBroker
from streamguard.contracts import decode_message
from streamguard.contracts.decode import REASONS
from streamguard.testing import WorkerProcess, envelopes
from tests.faults.helpers import PARTITIONS, SPECS, read, valid_events
from tests.integration.conftest import produce

GARBAGE: list[Any] = [
    None,
    True,
    -1,
    2**70,
    1e308,
    "",
    "x" * 5000,
    [],
    {},
    [1, [2]],
    {"a": {"b": []}},
]


def mutate(event: dict[str, Any], rng: random.Random) -> Any:
    """One malformed variant of a valid event."""
    kind = rng.randrange(7)
    bad = dict(event)
    field = rng.choice(sorted(event))
    if kind == 0:
        del bad[field]
    elif kind == 1:
        bad[field] = rng.choice(GARBAGE)
    elif kind == 2:
        bad["schema_version"] = rng.choice([0, 2, "1", 1.5, None])
    elif kind == 3:
        bad["slice"] = rng.choice(
            [{"platform": rng.choice(GARBAGE)}, {"a=b": "x"}, {"p": "a,b"}, "ios"]
        )
    elif kind == 4:
        bad["role"] = rng.choice(["judge", "", 3, None])
    elif kind == 5:
        bad["ts"] = rng.choice([-5, "soon", 4e9 * 1000, None])
    else:
        bad["score"] = rng.choice(["0.5", None, [0.5], {"v": 1}])
    return bad


def message(batch: list[Any]) -> bytes:
    """An envelope as JSON text (the standard library, since 2**70 is beyond orjson's range)."""
    return json.dumps({"schema_version": 1, "events": batch}).encode()


@pytest.mark.faults
def test_100k_malformed_events_never_crash_the_decoder() -> None:
    rng = random.Random(7)
    good = valid_events(2000)
    rejected = accepted = 0
    for i in range(100):
        batch = [mutate(rng.choice(good), rng) for _ in range(1000)]
        if i % 10 == 0:  # whole-message damage: truncation, bit flips, wrong JSON values
            raw = message(batch)
            for damaged in (
                raw[: rng.randrange(len(raw))],
                bytes(b ^ 0x20 for b in raw[:200]),
                b"[]",
                b"",
            ):
                decoded = decode_message(damaged)
                assert all(r.reason in REASONS for r in decoded.rejected)
        decoded = decode_message(message(batch))
        assert all(r.reason in REASONS for r in decoded.rejected)
        assert len(decoded.rejected) + len(decoded.predictions) + len(decoded.outcomes) == len(
            batch
        )
        rejected += len(decoded.rejected)
        accepted += len(decoded.predictions) + len(decoded.outcomes)
    # A mutation sometimes yields a valid event (a field replaced by an equal value): rare.
    assert rejected >= 95_000
    assert rejected + accepted == 100_000


@pytest.mark.faults
@pytest.mark.integration
@pytest.mark.slow
def test_the_worker_dead_letters_every_bad_event_and_processes_the_good_ones(
    broker_with_topics: EmbeddedBroker, tmp_path: Path
) -> None:
    rng = random.Random(11)
    good = valid_events(4000)
    messages = list(envelopes(good, PARTITIONS))
    expected: Counter[str] = Counter({"invalid_json": 1})
    for _ in range(20):
        batch = [mutate(rng.choice(good), rng) for _ in range(250)]
        expected.update(
            r.reason for r in decode_message(message(batch), max_ts=time.time() + 300).rejected
        )
        messages.append((rng.randrange(PARTITIONS), b"fuzz", message(batch)))
    messages.append((0, b"fuzz", b"\xff\xfe not json"))
    expected_bad = sum(expected.values())
    worker = WorkerProcess(broker_with_topics.url, tmp_path / "w.log").start()
    try:
        worker.wait_ready(sources=8)
        produce(broker_with_topics.bootstrap, messages, SPECS["predictions"].name)
        letters = read(
            broker_with_topics, "deadletters", 90, until=lambda v: len(v) >= expected_bad
        )
        assert Counter(letter["reason"] for letter in letters) == expected
        assert all(letter["detail"] and letter["original_b64"] for letter in letters)
        text = worker.metrics()
        pairs = [line for line in text.splitlines() if line.startswith("streamguard_pairs_total")]
        assert float(pairs[0].split()[-1]) >= len(good) // 2 * 0.99  # the good ones were paired
        assert worker.health() is not None
    finally:
        worker.stop()


@pytest.mark.faults
@pytest.mark.slow
def test_atheris_fuzzes_the_decoder_100k_times(tmp_path: Path) -> None:
    """Coverage-guided fuzzing (atheris/libFuzzer) from a corpus of valid messages.

    100,000 inputs mutated by libFuzzer toward new decoder branches; ``atheris_decode.py``
    fails the run if the decoder raises or its bookkeeping does not add up.
    """
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    events = valid_events(60)
    for i, (_, _, value) in enumerate(envelopes(events, 2)):
        (corpus / f"envelope-{i}").write_bytes(value)
    for i, event in enumerate(events[:10]):
        (corpus / f"event-{i}").write_bytes(orjson.dumps(event))
    harness = Path(__file__).with_name("atheris_decode.py")
    done = subprocess.run(
        [sys.executable, str(harness), "-runs=100000", "-seed=1", "-max_len=20000", str(corpus)],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "Done 100000 runs" in done.stderr
