"""Crash recovery of the three stages, driven like the worker drives them.

Lists stand in for the topics (predictions per partition, partials per channel, verdicts);
snapshots and progress records are written as the worker writes them; a crash replaces a
stage's state with its last snapshot and rewinds its input to the snapshot's offset, as a
restarted worker does. The commands must equal those of an uninterrupted run, and no decision
may ever get two different command ids.
"""

import math
from dataclasses import dataclass, field
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from streamguard.contracts import Command, Decoded, decode_message, parse_message, partition_for
from streamguard.core import Stage1, Stage2
from streamguard.core.partials import dumps
from streamguard.core.snapshot import pack, split, unpack
from streamguard.decisions import Decider
from streamguard.engine import Pipeline, route
from streamguard.guards import default_guards
from streamguard.policy import parse_policy
from streamguard.sim import Canary, ShadowDeviation, TrafficGenerator
from streamguard.testing import envelopes

POLICY = parse_policy(
    """
    [defaults]
    window_s = 5
    horizon_s = 60
    allowed_lateness_s = 3
    pair_ttl_s = 10
    [defaults.guards.shadow]
    min_pairs = 200
    [defaults.guards.canary]
    min_samples = 100
    outcome_join_s = 20
    """
)
PARTITIONS = 3
CHANNELS = 2


def traffic(seed: int) -> list[bytes]:
    gen = TrafficGenerator(
        rate=120,
        seed=seed,
        start_ts=1_790_000_000.0,
        deviation=ShadowDeviation({"platform": "android"}, after_s=60, shift=0.2),
        canary=Canary(share=0.3, error={"*": 6.0}, after_s=40),
        outcomes=True,
        error_rate=0.02,
    )
    return [value for events in gen.seconds(200) for _, _, value in envelopes(events, PARTITIONS)]


def partition_of(value: bytes) -> int:
    """The partition the worker would read a message from (that of its request id)."""
    parsed = parse_message(value)
    if isinstance(parsed, Decoded):
        return route(parsed, PARTITIONS)
    return partition_for(parsed["request_id"].encode(), PARTITIONS)


def one_event_per_message(messages: list[bytes]) -> list[bytes]:
    """The same traffic as one event per message (runs of them are processed together)."""
    return [orjson.dumps(e) for m in messages for e in orjson.loads(m)["events"]]


@dataclass
class Harness:
    """The worker's loop with topics as lists, and crashes on demand."""

    flush_every: int = 7  # messages between flushes
    snapshot_every: int = 3  # flushes between stage-1 snapshots
    stage2_snapshot_every: int = 15  # partials between stage-2 snapshots
    stage3_snapshot_every: int = 4  # verdicts between decider snapshots
    # Small partials: flushes split into several parts, as a worker's do under a backlog.
    stage1: Stage1 = field(default_factory=lambda: Stage1(POLICY, max_partial_bytes=16 * 1024))
    stage2: Stage2 = field(
        default_factory=lambda: Stage2(POLICY, PARTITIONS, default_guards(POLICY))
    )
    decider: Decider = field(default_factory=lambda: Decider(POLICY))
    inputs: list[list[bytes]] = field(default_factory=lambda: [[] for _ in range(PARTITIONS)])
    cursor: list[int] = field(default_factory=lambda: [0] * PARTITIONS)
    partials: list[list[bytes]] = field(default_factory=lambda: [[] for _ in range(CHANNELS)])
    cursor2: list[int] = field(default_factory=lambda: [0] * CHANNELS)
    verdicts: list[bytes] = field(default_factory=list)
    cursor3: int = 0
    commands: list[Command] = field(default_factory=list)
    snapshots1: dict[int, bytes] = field(default_factory=dict)
    progress1: dict[int, dict[str, Any]] = field(default_factory=dict)
    snapshots2: dict[int, tuple[bytes, int]] = field(default_factory=dict)
    snapshot3: tuple[bytes, int] | None = None
    flushes: int = 0
    refused: set[int] = field(default_factory=set)  # partitions whose next snapshot is refused
    steps: int = 0
    parts_seen: int = 0
    # Tell stage 2 a partition's watermark in a heartbeat alone as it passes a window's close,
    # whenever Stage1.announceable allows, as the worker's eager flusher does.
    announce: bool = False
    announced: int = 0
    late_at_merge: int = 0

    def load(self, messages: list[bytes]) -> None:
        for value in messages:
            self.inputs[partition_of(value)].append(value)

    # -- stage 1 -------------------------------------------------------------------------------

    def step(self) -> bool:
        """Process one message of each partition that has one left; False when all are done."""
        progressed = False
        for p in range(PARTITIONS):
            offset = self.cursor[p]
            if offset < len(self.inputs[p]):
                value = self.inputs[p][offset]
                self.stage1.feed(p, offset, value, parse_message(value), math.inf)
                self.cursor[p] = offset + 1
                progressed = True
        self.steps += 1
        if self.steps % self.flush_every == 0 or not progressed:
            self.flush()
        elif self.announce:
            heard = [
                p
                for p in range(PARTITIONS)
                if self.stage1.closing(p) and self.stage1.announceable(p)
            ]
            if heard:
                self.announced += len(heard)
                heartbeat = dumps(self.stage1.announce(heard))
                for channel in range(CHANNELS):
                    self.partials[channel].append(heartbeat)
                self.consume()
        return progressed

    def flush(self) -> None:
        self.flushes += 1
        for p in range(PARTITIONS):
            self.stage1.cut(p, math.inf)
            for deployment, value in self.stage1.flush(p):
                channel = partition_for(deployment.encode(), CHANNELS)
                self.partials[channel].append(value)
                self.parts_seen = max(self.parts_seen, orjson.loads(value)["source"]["parts"])
        heartbeat = dumps(self.stage1.heartbeat(list(range(PARTITIONS))))
        for channel in range(CHANNELS):
            self.partials[channel].append(heartbeat)
        for p in range(PARTITIONS):
            self.progress1[p] = self.stage1.progress(p)
            if self.flushes % self.snapshot_every == 0 and self.stage1.settled(p):
                snapshot = self.stage1.snapshot(p)
                if p in self.refused:  # the state topic refused it (too large): not stored
                    self.refused.discard(p)
                    continue
                self.snapshots1[p] = pack(snapshot)
                self.stage1.snapshot_stored(p, snapshot["offset"])
        self.consume()

    # -- stages 2 and 3 ------------------------------------------------------------------------

    def consume(self) -> None:
        for channel in range(CHANNELS):
            log = self.partials[channel]
            while self.cursor2[channel] < len(log):
                value = log[self.cursor2[channel]]
                self.cursor2[channel] += 1
                report = self.stage2.apply(orjson.loads(value), channel=channel)
                self.late_at_merge += report.late_at_merge
                for verdict in self.stage2.advance():
                    self.verdicts.append(dumps(verdict.to_dict()))
                if self.cursor2[channel] % self.stage2_snapshot_every == 0:
                    self.snapshots2[channel] = (
                        pack(self.stage2.snapshot(channel)),
                        self.cursor2[channel],
                    )
        while self.cursor3 < len(self.verdicts):
            verdict = orjson.loads(self.verdicts[self.cursor3])
            self.cursor3 += 1
            self.commands.extend(command for command, _ in self.decider.on_verdict(verdict))
            if self.cursor3 % self.stage3_snapshot_every == 0:
                self.snapshot3 = (pack(self.decider.snapshot()), self.cursor3)

    # -- crashes -------------------------------------------------------------------------------

    def crash_stage1(self, p: int) -> None:
        saved = self.snapshots1.get(p)
        self.cursor[p] = self.stage1.restore(
            p, unpack(saved) if saved else None, self.progress1.get(p)
        )

    def crash_mid_flush(self, p: int) -> None:
        """Progress stored, then the worker dies before the flush's partials reach the topic."""
        self.stage1.cut(p, math.inf)
        self.stage1.flush(p)  # these partials are lost
        self.progress1[p] = self.stage1.progress(p)
        self.crash_stage1(p)

    def crash_stage2(self, channel: int) -> None:
        saved = self.snapshots2.get(channel)
        if saved is None:
            self.stage2.restore(channel, {"sources": [], "deployments": []})
            self.cursor2[channel] = 0
        else:
            self.stage2.restore(channel, unpack(saved[0]))
            self.cursor2[channel] = saved[1]

    def crash_stage3(self) -> None:
        if self.snapshot3 is None:
            self.decider, self.cursor3 = Decider(POLICY), 0
        else:
            self.decider = Decider.restore(unpack(self.snapshot3[0]), POLICY)
            self.cursor3 = self.snapshot3[1]

    def run(self, crashes: dict[int, str] | None = None) -> list[Command]:
        crashes = crashes or {}
        while self.step():
            what = crashes.get(self.steps)
            if what is not None:
                kind, _, index = what.partition(":")
                if kind == "stage1":
                    self.crash_stage1(int(index))
                elif kind == "refuse":
                    self.refused.add(int(index))
                elif kind == "midflush":
                    self.crash_mid_flush(int(index))
                elif kind == "stage2":
                    self.crash_stage2(int(index))
                else:
                    self.crash_stage3()
        self.flush()
        for verdict in self.stage2.advance(final=True):
            self.verdicts.append(dumps(verdict.to_dict()))
        self.consume()
        return self.commands


def unique(commands: list[Command]) -> dict[str, dict[str, Any]]:
    """Commands by id; the same decision must never get two ids."""
    by_decision: dict[tuple[Any, ...], set[str]] = {}
    for c in commands:
        key = (c.deployment, c.model_version, c.guard, str(c.slice), c.action)
        by_decision.setdefault(key, set()).add(c.command_id)
    assert all(len(ids) == 1 for ids in by_decision.values()), by_decision
    return {c.command_id: c.to_dict() for c in commands}


@pytest.fixture(scope="module", params=["envelopes", "one event per message"])
def messages(request: pytest.FixtureRequest) -> list[bytes]:
    envelopes = traffic(seed=4)
    return envelopes if request.param == "envelopes" else one_event_per_message(envelopes)


def harness(messages: list[bytes]) -> Harness:
    """A harness loaded with ``messages``; one-event messages flush every 49 steps, so that
    runs of up to 49 messages are cut by flushes (and the test takes seconds, not minutes)."""
    singles = not isinstance(parse_message(messages[0]), Decoded)
    made = Harness(flush_every=49 if singles else 7)
    made.load(messages)
    return made


@pytest.fixture(scope="module")
def reference(messages: list[bytes]) -> dict[str, dict[str, Any]]:
    loaded = harness(messages)
    commands = unique(loaded.run())
    assert {c["guard"] for c in commands.values()} >= {"shadow", "canary"}  # a real test
    assert loaded.parts_seen > 1  # flushes split into parts, and windows must wait for all
    return commands


def test_the_harness_without_crashes_equals_replay(
    messages: list[bytes], reference: dict[str, dict[str, Any]]
) -> None:
    pipeline = Pipeline(POLICY, PARTITIONS)
    for value in messages:
        pipeline.feed(value)
    assert set(unique(pipeline.finish())) == set(reference)


def equal_commands(got: dict[str, dict[str, Any]], want: dict[str, dict[str, Any]]) -> None:
    assert set(got) == set(want)
    for command_id, command in got.items():
        expected = want[command_id]
        assert command["slice"] == expected["slice"]
        assert command["evidence"]["n"] == expected["evidence"]["n"]
        stats = {k: v for k, v in command["evidence"]["stats"].items() if v is not None}
        assert stats == pytest.approx(
            {k: v for k, v in expected["evidence"]["stats"].items() if v is not None}, rel=1e-6
        )


@pytest.mark.parametrize(
    "stage", ["stage1:0", "stage1:2", "midflush:1", "stage2:0", "stage2:1", "stage3"]
)
def test_one_crash_of_each_stage_changes_nothing(
    messages: list[bytes], reference: dict[str, dict[str, Any]], stage: str
) -> None:
    equal_commands(unique(harness(messages).run({40: stage, 400: stage})), reference)


@pytest.mark.parametrize("crashes", [{}, {40: "stage1:0", 400: "midflush:1", 600: "stage2:1"}])
def test_watermarks_told_in_heartbeats_alone_at_closes_change_nothing(
    messages: list[bytes], reference: dict[str, dict[str, Any]], crashes: dict[int, str]
) -> None:
    """Windows close earlier, on heartbeats with no flush; what they hold is the same."""
    loaded = harness(messages)
    loaded.announce = True
    equal_commands(unique(loaded.run(crashes)), reference)
    # One-event messages wait in a run until a flush cuts it, so only a flush moves their
    # watermark: nothing is ever closing between flushes.
    singles = not isinstance(parse_message(messages[0]), Decoded)
    assert loaded.announced == 0 if singles else loaded.announced > 20
    assert loaded.late_at_merge == 0  # no data reached stage 2 after its window closed


def test_a_refused_snapshot_then_a_crash_mid_flush_changes_nothing(
    messages: list[bytes], reference: dict[str, dict[str, Any]]
) -> None:
    # Flush 6 (step 42) takes partition 1's snapshot and the state topic refuses it; the next
    # flush's partials are lost in a crash. The restart falls back to flush 3's snapshot and
    # must still cut at flushes 4-6, whose partials stage 2 applied.
    singles = not isinstance(parse_message(messages[0]), Decoded)
    at = 7 * 6 if not singles else 49 * 6
    equal_commands(
        unique(harness(messages).run({at - 2: "refuse:1", at + 3: "midflush:1"})), reference
    )


@pytest.mark.slow
@settings(max_examples=6, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.integers(5, 900),
            st.sampled_from(["stage1", "midflush", "stage2", "stage3", "refuse"]),
            st.integers(0, 5),
        ),
        min_size=1,
        max_size=8,
    )
)
def test_random_crashes_change_nothing(
    messages: list[bytes],
    reference: dict[str, dict[str, Any]],
    crash_plan: list[tuple[int, str, int]],
) -> None:
    crashes = {
        step: f"{stage}:{index % (CHANNELS if stage == 'stage2' else PARTITIONS)}"
        for step, stage, index in crash_plan
    }
    equal_commands(unique(harness(messages).run(crashes)), reference)


def test_snapshots_round_trip_exactly(messages: list[bytes]) -> None:
    harness = Harness()
    harness.load(messages[: len(messages) // 2])
    harness.run()
    for p in range(PARTITIONS):
        saved = pack(harness.stage1.snapshot(p))
        assert unpack(saved)["offset"] == harness.cursor[p] - 1
        again = Stage1(POLICY)
        again.restore(p, unpack(saved))
        assert pack(again.snapshot(p)) == saved
    carried = 0
    for channel in range(CHANNELS):
        saved = pack(harness.stage2.snapshot(channel))
        carried += len(unpack(saved)["deployments"])
        again = Stage2(POLICY, PARTITIONS, default_guards(POLICY))
        again.restore(channel, unpack(saved))
        assert pack(again.snapshot(channel)) == saved
        # As the state topic holds it: closed windows as parts apart from the snapshot.
        main, parts = split(harness.stage2.snapshot(channel))
        again = Stage2(POLICY, PARTITIONS, default_guards(POLICY))
        again.restore(channel, unpack(main, {n: part.packed() for n, part in parts.items()}))
        assert pack(again.snapshot(channel)) == saved
        assert bool(parts) == bool(unpack(saved)["deployments"])
    assert carried == 1  # the one deployment's windows are on its channel
    saved = pack(harness.decider.snapshot())
    assert pack(Decider.restore(unpack(saved), POLICY).snapshot()) == saved


def test_sources_not_heard_from_yet_survive_a_snapshot() -> None:
    """Their watermark is -inf, which JSON cannot hold (a worker once crashed restoring it)."""
    stage2 = Stage2(POLICY, PARTITIONS, default_guards(POLICY))
    heartbeat = {"partition": 0, "watermark": 1_790_000_010.0, "offset": 5}
    stage2.apply({"kind": "heartbeat", "sources": [heartbeat]}, channel=1)
    saved = pack(stage2.snapshot(1))
    assert [w for w, _ in unpack(saved)["sources"]] == [1_790_000_010.0] + [-math.inf] * (
        PARTITIONS - 1
    )
    again = Stage2(POLICY, PARTITIONS, default_guards(POLICY))
    again.restore(1, unpack(saved))
    assert pack(again.snapshot(1)) == saved
    fresh = Stage1(POLICY)
    fresh.process(0, 0, decode_message(b'{"schema_version": 1, "events": []}'))
    fresh.flush(0)
    state = unpack(pack(fresh.snapshot(0)))  # a partition whose messages held no event
    assert state["watermark"] == -math.inf
    Stage1(POLICY).restore(0, state)
