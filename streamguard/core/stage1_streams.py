"""Stage 1's side streams: request schemas, replicas and environments, per (version, window).

Each counts a batch's predictions (or pairs) into its own stream of partial groups, next to
the per-slice arms and pairs that :class:`streamguard.core.stage1.Stage1` accounts.
"""

import numpy as np
import numpy.typing as npt

from streamguard.contracts import ROLE_SHADOW, PredictionBatch
from streamguard.core.environments import ENV_PAIR_STREAM, ENV_STREAM
from streamguard.core.feature_schemas import SCHEMA_STREAM, schema_counts
from streamguard.core.pairing import Pairs
from streamguard.core.replicas import REPLICA_STREAM, replica_rows
from streamguard.core.stage1_state import (
    I64,
    DeploymentState,
    Source,
    by_version_window,
    factorize,
    group_of,
    merge,
)

__all__ = ["count_env_pairs", "count_environments", "count_replicas", "count_schemas"]


def count_schemas(
    source: Source,
    state: DeploymentState,
    batch: PredictionBatch,
    windows: I64,
    on_time: npt.NDArray[np.bool_],
) -> None:
    """Count each model version's predictions and errors per request schema.

    Only events that name their schema count (in a batch, the others hold "").
    """
    on_time = on_time & (np.asarray(batch.feature_schema, dtype=object) != "")
    errors = batch.errors()
    codes, names = factorize(batch.feature_schema)
    for version, window, idx in by_version_window(windows, batch.model_version, on_time):
        labels, contribution = schema_counts(codes[idx], errors[idx], names)
        if labels:
            group_key = (state.name, SCHEMA_STREAM, version, window)
            merge(group_of(source, state, group_key), labels, contribution, state)


def count_replicas(
    source: Source,
    state: DeploymentState,
    batch: PredictionBatch,
    windows: I64,
    on_time: npt.NDArray[np.bool_],
) -> None:
    """Served predictions into the ``replica`` stream, per (version, window).

    An event counts when it names its replica, gives its age, or says it was not ready:
    judged per event, so a batch counts what its events would count one by one.
    """
    ids = np.asarray(batch.replica_id or [""] * len(batch), dtype=str)
    ages, not_ready = batch.ages(), batch.not_ready()
    informed = (ids != "") | np.isfinite(ages) | not_ready
    served = on_time & (batch.role != ROLE_SHADOW) & informed
    if not served.any():
        return
    limit = state.policy.cold_start.max_replicas
    for version, window, idx in by_version_window(windows, batch.model_version, served):
        group = group_of(source, state, (batch.deployment[0], REPLICA_STREAM, version, window))
        rows, labels, _ = replica_rows(ids[idx].tolist(), limit)
        # "*" and "~overflow" come first, so they always have rows 0 and 1; replicas
        # beyond the cap of this flush's group are folded into "~overflow".
        group_rows = group.registry.rows_for(labels, limit=limit + 2)
        group_rows[group_rows < 0] = group_rows[1]
        mapped = np.where(rows >= 0, group_rows[np.maximum(rows, 0)], -1)
        n_rows = len(group.registry)
        contribution = state.replicas.contributions(
            mapped, n_rows, batch.latency_ms[idx], ages[idx], not_ready[idx]
        )
        group.table.add(np.arange(n_rows, dtype=np.int64), contribution)


def count_environments(
    source: Source,
    state: DeploymentState,
    batch: PredictionBatch,
    windows: I64,
    chosen: npt.NDArray[np.bool_],
    *,
    combos: I64,
) -> None:
    """Scores with a fingerprint into the ``env`` stream, per (version, window).

    Every role counts (a shadow of the primary's version in another environment too);
    failed predictions do not: their score is a fallback.
    """
    chosen = chosen & (np.asarray(batch.env_fingerprint, dtype=str) != "")
    for version, window, idx in by_version_window(windows, batch.model_version, chosen):
        slices = state.coder.rows(combos[idx])
        finest = slices.index[:, -1]  # the full combination: the strata
        rows, labels = state.envs.score_rows(
            [batch.env_fingerprint[i] for i in idx.tolist()], finest, slices.labels
        )
        contribution = state.envs.score_contributions(rows, len(labels), batch.score[idx])
        group_key = (state.name, ENV_STREAM, version, window)
        merge(group_of(source, state, group_key), labels, contribution, state)


def count_env_pairs(
    source: Source, state: DeploymentState, pairs: Pairs, idx: I64, window: int
) -> None:
    """Pairs of the primary's own version whose halves ran in different environments."""
    if not pairs.primary_env:
        return
    version = pairs.version[int(idx[0])]  # one shadow version per group
    same = np.asarray(pairs.baseline_version, dtype=object)[idx] == version
    p_env = np.asarray(pairs.primary_env, dtype=str)[idx]
    s_env = np.asarray(pairs.shadow_env, dtype=str)[idx]
    cross = np.flatnonzero(same & (p_env != s_env) & (p_env != "") & (s_env != ""))
    if not len(cross):
        return
    contribution, labels = state.envs.pair_contributions(
        p_env[cross].tolist(),
        s_env[cross].tolist(),
        pairs.primary[idx[cross]],
        pairs.shadow[idx[cross]],
    )
    group_key = (state.name, ENV_PAIR_STREAM, version, window)
    merge(group_of(source, state, group_key), labels, contribution, state)
