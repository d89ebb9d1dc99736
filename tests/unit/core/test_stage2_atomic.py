"""Stage 2 merges a partial whole or not at all, whatever is wrong with it.

A partial that raises must leave stage 2 as it was: its stamp is not recorded, so a
redelivery (or a corrected copy) is merged in full, and anything merged before the bad group
would then count twice.
"""

import copy
import functools
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from streamguard.contracts import decode_message
from streamguard.core import PartialError, Stage1, Stage2
from streamguard.core.snapshot import pack
from streamguard.policy import parse_policy
from streamguard.sim import Canary, Environments, FeatureSchemas, Items, Replicas, TrafficGenerator
from tests.unit._mutations import mutated
from tests.unit.core._events import sim_messages

POLICY = parse_policy("[defaults]\nwindow_s = 10\nhorizon_s = 60\nallowed_lateness_s = 5\n")
#: What the worker's partials handler catches and counts: anything else stops the worker.
HANDLED = (PartialError, KeyError, TypeError, ValueError)


@functools.cache
def _partials() -> list[dict[str, Any]]:
    """Partials of one flush over traffic with every stream: pairs, arms, items, replicas..."""
    generator = TrafficGenerator(
        rate=30,
        seed=5,
        canary=Canary(share=0.2),
        outcomes=True,
        items=Items(catalogue=50, per_request=3),
        feature_schemas=FeatureSchemas(),
        replicas=Replicas(),
        environments=Environments(),
    )
    stage1 = Stage1(POLICY, max_partial_bytes=16 * 1024)
    for offset, message in enumerate(sim_messages(generator, 8, 1)):
        stage1.process(0, offset, decode_message(message))
    out = [orjson.loads(raw) for _, raw in stage1.flush(0)]
    streams = {group["stream"] for message in out for group in message["groups"]}
    assert {"pair", "arm:canary", "items:canary", "replica", "schema", "env"} <= streams
    assert len(out) > 1  # parts, so a bad part can follow good ones
    return out


@pytest.fixture
def partials() -> list[dict[str, Any]]:
    return copy.deepcopy(_partials())


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_a_malformed_partial_changes_nothing(data) -> None:
    partials = _partials()  # not a fixture: hypothesis would print it with every failure
    stage2 = Stage2(POLICY, n_sources=1, guards=[])
    stage2.apply(copy.deepcopy(partials[0]))  # state for the bad part to spoil
    index = data.draw(st.integers(min_value=1, max_value=len(partials) - 1), label="part")
    broken = mutated(partials[index], data)
    before = pack(stage2.snapshot(0))
    try:
        stage2.apply(broken)
    except HANDLED:
        assert pack(stage2.snapshot(0)) == before
        # The good copy then applies whole, exactly as it would have without the bad one.
        assert stage2.apply(copy.deepcopy(partials[index])).applied == 1
        clean = Stage2(POLICY, n_sources=1, guards=[])
        for message in (partials[0], partials[index]):
            clean.apply(copy.deepcopy(message))
        assert pack(stage2.snapshot(0)) == pack(clean.snapshot(0))


def test_a_bad_last_group_leaves_the_groups_before_it_unmerged(partials) -> None:
    stage2 = Stage2(POLICY, n_sources=1, guards=[])
    message = copy.deepcopy(partials[0])
    assert len(message["groups"]) > 1
    message["groups"][-1]["window"] = "soon"
    empty = pack(stage2.snapshot(0))
    with pytest.raises(ValueError, match="soon"):
        stage2.apply(message)
    assert pack(stage2.snapshot(0)) == empty
    assert stage2.apply(copy.deepcopy(partials[0])).applied == 1
    assert pack(stage2.snapshot(0)) != empty


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"schema_version": 2}, "schema_version 2"),
        ({"schema_version": True}, "schema_version True"),
        ({"schema_version": "1"}, "schema_version '1'"),
    ],
)
def test_partials_of_another_schema_version_are_refused(partials, change, reason) -> None:
    stage2 = Stage2(POLICY, n_sources=1, guards=[])
    with pytest.raises(PartialError, match=reason):
        stage2.apply({**copy.deepcopy(partials[0]), **change})
    assert stage2.apply(copy.deepcopy(partials[0])).applied == 1


@pytest.mark.parametrize("message", [[], "partial", 3, None])
def test_a_message_that_is_not_an_object_is_a_partial_error(message) -> None:
    with pytest.raises(PartialError, match="not a JSON object"):
        Stage2(POLICY, n_sources=1, guards=[]).apply(message)
