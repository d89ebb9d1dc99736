"""Halves and exposures whose time ran out, counted as the partition's watermark passes them.

When a message moves a source partition's watermark (or a buffer is over its cap), stage 1
takes from each deployment's buffers what the new watermark passes (:func:`settle`):

* halves that waited longer than the pairing TTL count as *unpaired* against their arm
  (:meth:`PairingBuffer.expire <streamguard.core.pairing.PairingBuffer.expire>`), and
* exposures whose outcome join window closed are *matured*: counted once for the arm and slice
  that served them, with the outcome values they collected (0 when none came)
  (:meth:`OutcomeJoin.mature <streamguard.core.outcomes.OutcomeJoin.mature>`).

Both go to the window the watermark is in, which is never late, so the counts depend only on
the partition's own order of events.
"""

import math
from collections import defaultdict

import numpy as np

from streamguard.core.outcomes import Matured
from streamguard.core.pairing import Half
from streamguard.core.stage1_state import (
    DeploymentState,
    Source,
    Stage1Report,
    arm_stream,
    defer_outcomes,
    group_of,
    merge,
)

__all__ = ["settle"]


def settle(source: Source, *, advanced: bool, report: Stage1Report) -> None:
    """Expire halves and mature exposures up to ``source.watermark`` (just ``advanced``, or not).

    A deployment is looked at when the watermark advanced, or when one of its buffers holds
    more than its cap (the oldest then leave early and are counted as evicted).
    """
    watermark = source.watermark
    for state in source.deployments.values():
        full = (
            len(state.pairing) > state.pairing.max_pending
            or len(state.join) > state.join.max_pending
        )
        if not (advanced or full):
            continue
        evicted = (state.pairing.evicted, state.join.evicted)
        expired = state.pairing.expire(watermark)
        if expired:
            report.unpaired += len(expired)
            _unpaired(source, state, expired)
        matured = state.join.mature(watermark)
        if matured:
            report.matured += len(matured)
            _matured(source, state, matured)
        report.evicted_halves += state.pairing.evicted - evicted[0]
        report.evicted_exposures += state.join.evicted - evicted[1]


def _unpaired(source: Source, state: DeploymentState, halves: list[Half]) -> None:
    # Attributed to the window in which they expired (the watermark's), which is never late.
    window = math.floor(source.watermark / state.policy.window_s)
    by_key: dict[tuple[int, str], list[Half]] = defaultdict(list)
    for half in halves:
        by_key[(half.role, half.model_version)].append(half)
    for (role, version), group_halves in sorted(by_key.items()):
        combos = np.fromiter((h.combo for h in group_halves), np.int64, len(group_halves))
        rows = state.coder.rows(combos)
        key = (group_halves[0].deployment, arm_stream(role), version, window)
        group = group_of(source, state, key)
        contribution = state.arms.unpaired(rows.index, len(rows.labels))
        merge(group, rows.labels, contribution, state)


def _matured(source: Source, state: DeploymentState, matured: Matured) -> None:
    # Counted in the window in which their join window closed, which is never late.
    window = math.floor(source.watermark / state.policy.window_s)
    deployment = state.name
    for role, version, positions in matured.groups():
        group = group_of(source, state, (deployment, arm_stream(role), version, window))
        defer_outcomes(group, state, matured.combo[positions], matured.value[positions])
