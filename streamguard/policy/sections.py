"""One reader per section of a deployment's policy: its slices, and each guard's table.

Each takes the section's dotted path, its raw TOML table and the policy it overrides (the
defaults, or a deployment's base), and returns the new section; unknown keys and bad values
are refused with the key named (:mod:`.values`). :data:`GUARD_SECTIONS` maps the keys of a
``guards`` table to their readers.
"""

from collections.abc import Callable
from dataclasses import fields, replace
from typing import Any

from streamguard.contracts.checks import strings_ok
from streamguard.contracts.schemas import rules_for
from streamguard.exceptions import ConfigError
from streamguard.policy.model import (
    CANARY_METRICS,
    CanaryPolicy,
    ColdStartPolicy,
    CompatPolicy,
    DeterminismPolicy,
    LeakagePolicy,
    MetricTest,
    PopularityPolicy,
    ShadowPolicy,
    SlicePolicy,
    StratificationPolicy,
)
from streamguard.policy.values import (
    bands,
    check_keys,
    entries,
    flag,
    fraction,
    number,
)

__all__ = [
    "GUARD_SECTIONS",
    "canary_section",
    "cold_start_section",
    "compat_section",
    "determinism_section",
    "leakage_section",
    "popularity_section",
    "shadow_section",
    "slices_section",
    "stratification_section",
]

_MAX_CHANGE_WINDOWS = 360  # an hour of 10 s windows: a longer look is the cumulative test's
_MAX_CHANGE_ALARMS = 100.0  # false pauses per day: more than this is not a guard
_MAX_DIMENSIONS = 6  # 2^6 slice levels at most; beyond that the lattice is not judgeable


def shadow_section(path: str, raw: dict[str, Any], base: ShadowPolicy) -> ShadowPolicy:
    allowed = {f.name for f in fields(ShadowPolicy)}
    check_keys(path, raw, allowed)
    values: dict[str, Any] = {}
    for name, value in raw.items():
        where = f"{path}.{name}"
        if name == "enabled":
            if type(value) is not bool:
                raise ConfigError(f"{where} must be true or false")
            values[name] = value
        elif name in ("min_pairs", "score_bins", "psi_groups", "health_min_primaries"):
            values[name] = number(where, value, integer=True)
        elif name == "recent_windows":  # 0 turns the recent look off
            values[name] = number(where, value, integer=True, positive=False)
            if values[name] < 0:
                raise ConfigError(f"{where} must be 0 or more, got {value!r}")
        elif name == "score_range":
            if not (isinstance(value, list) and len(value) == 2):
                raise ConfigError(f"{where} must be [low, high]")
            low = float(number(f"{where}[0]", value[0], positive=False))
            high = float(number(f"{where}[1]", value[1], positive=False))
            if high <= low:
                raise ConfigError(f"{where}: high must exceed low")
            values[name] = (low, high)
        elif name == "thresholds":
            values[name] = bands(where, value, base.thresholds)
        elif name == "pairing_floor":
            values[name] = float(number(where, value, positive=False))
            if not 0 <= values[name] <= 1:
                raise ConfigError(f"{where} must be between 0 and 1, got {value!r}")
        else:
            values[name] = float(number(where, value, positive=name != "decision_threshold"))
    shadow = replace(base, **values)
    if not 0 < shadow.dev_alpha < 0.5:
        raise ConfigError(f"{path}.dev_alpha must be in (0, 0.5), got {shadow.dev_alpha}")
    if shadow.psi_groups > shadow.score_bins:
        raise ConfigError(f"{path}.psi_groups must not exceed score_bins")
    return shadow


def _metric(where: str, raw: Any, base: MetricTest) -> MetricTest:
    if not isinstance(raw, dict):
        raise ConfigError(f"{where} must be a table")
    check_keys(where, raw, {"min_effect", "relative", "worse"})
    metric = base
    if "min_effect" in raw:
        metric = replace(metric, min_effect=float(number(f"{where}.min_effect", raw["min_effect"])))
    if "relative" in raw:
        metric = replace(metric, relative=flag(f"{where}.relative", raw["relative"]))
    if "worse" in raw:
        if raw["worse"] not in ("lower", "higher"):
            raise ConfigError(f'{where}.worse must be "lower" or "higher"')
        metric = replace(metric, worse=raw["worse"])
    return metric


def canary_section(path: str, raw: Any, base: CanaryPolicy) -> CanaryPolicy:
    values: dict[str, Any] = {}
    for name, where, value in entries(path, raw, CanaryPolicy):
        if name == "enabled":
            values[name] = flag(where, value)
        elif name in ("alpha", "practical_fraction", "latency_alpha"):
            values[name] = fraction(where, value)
        elif name in ("min_samples", "max_exposures"):
            values[name] = number(where, value, integer=True)
        elif name == "change_windows":
            values[name] = number(where, value, integer=True, positive=False)
            if not 0 <= value <= _MAX_CHANGE_WINDOWS:
                raise ConfigError(f"{where} must be between 0 and {_MAX_CHANGE_WINDOWS}")
        elif name == "change_alarms_per_day":
            values[name] = float(number(where, value))
            if not values[name] <= _MAX_CHANGE_ALARMS:  # also refuses nan and inf
                raise ConfigError(f"{where} must be at most {_MAX_CHANGE_ALARMS:g}, got {value}")
        elif name == "metrics":
            if not isinstance(value, dict):
                raise ConfigError(f"{where} must be a table of metrics")
            check_keys(where, value, set(CANARY_METRICS))
            metrics = dict(base.metrics)
            for metric, table in value.items():
                metrics[metric] = _metric(f"{where}.{metric}", table, base.metrics[metric])
            values[name] = metrics
        else:
            values[name] = float(number(where, value))
    return replace(base, **values)


def stratification_section(path: str, raw: Any, base: StratificationPolicy) -> StratificationPolicy:
    values: dict[str, Any] = {}
    for name, where, value in entries(path, raw, StratificationPolicy):
        if name == "enabled":
            values[name] = flag(where, value)
        elif name in ("alpha", "tv_floor", "uncovered_share", "max_uncovered_weight"):
            values[name] = fraction(where, value)
        elif name == "min_canary_events":
            values[name] = number(where, value, integer=True)
        else:
            values[name] = float(number(where, value))
    return replace(base, **values)


def popularity_section(path: str, raw: Any, base: PopularityPolicy) -> PopularityPolicy:
    values: dict[str, Any] = {}
    for name, where, value in entries(path, raw, PopularityPolicy):
        if name == "enabled":
            values[name] = flag(where, value)
        elif name == "top_fraction":
            values[name] = fraction(where, value)
        elif name == "catalogue_size":
            values[name] = number(where, value, integer=True, positive=False)
            if value < 0:
                raise ConfigError(f"{where} must be 0 (unknown) or more, got {value!r}")
        elif name == "hll_precision":
            values[name] = number(where, value, integer=True)
            if not 4 <= value <= 18:
                raise ConfigError(f"{where} must be between 4 and 18, got {value!r}")
        elif name in ("gini_slope_margin", "z", "elasticity_margin"):
            values[name] = float(number(where, value))
        elif name == "slice_level":
            values[name] = number(where, value, integer=True, positive=False)
            if value < 0:
                raise ConfigError(f"{where} must be 0 (no slices) or more, got {value!r}")
        else:
            values[name] = number(where, value, integer=True)
    policy = replace(base, **values)
    if policy.min_windows > policy.trend_windows or policy.min_windows < 3:
        raise ConfigError(f"{path}: need 3 <= min_windows <= trend_windows")
    return policy


def compat_section(path: str, raw: Any, base: CompatPolicy) -> CompatPolicy:
    values: dict[str, Any] = {}
    for name, where, value in entries(path, raw, CompatPolicy):
        if name == "enabled":
            values[name] = flag(where, value)
        elif name == "max_error_rate":
            values[name] = fraction(where, value)
        elif name == "declared":
            if not isinstance(value, dict) or not all(
                isinstance(v, list) and all(isinstance(x, str) and x for x in v)
                for v in value.values()
            ):
                raise ConfigError(f"{where} must map model versions to lists of schema versions")
            values[name] = {str(k): tuple(v) for k, v in value.items()}
        else:
            values[name] = number(where, value, integer=True)
    return replace(base, **values)


def cold_start_section(path: str, raw: Any, base: ColdStartPolicy) -> ColdStartPolicy:
    values: dict[str, Any] = {}
    for name, where, value in entries(path, raw, ColdStartPolicy):
        if name == "enabled":
            values[name] = flag(where, value)
        elif name in ("alpha", "latency_alpha"):
            values[name] = fraction(where, value)
        elif name in ("young_age_s", "min_p99_ratio"):
            values[name] = float(number(where, value))
        else:
            values[name] = number(where, value, integer=True)
    policy = replace(base, **values)
    if policy.min_p99_ratio < 1:
        raise ConfigError(f"{path}.min_p99_ratio must be at least 1")
    return policy


def determinism_section(path: str, raw: Any, base: DeterminismPolicy) -> DeterminismPolicy:
    values: dict[str, Any] = {}
    for name, where, value in entries(path, raw, DeterminismPolicy):
        if name == "enabled":
            values[name] = flag(where, value)
        elif name in ("alpha", "max_share"):
            values[name] = fraction(where, value)
        elif name == "tolerance":
            values[name] = float(number(where, value, positive=False))
            if value < 0:
                raise ConfigError(f"{where} must be 0 or more, got {value!r}")
        else:
            values[name] = number(where, value, integer=True)
    policy = replace(base, **values)
    if policy.min_stratum_events < 2:
        raise ConfigError(f"{path}.min_stratum_events must be at least 2 (a variance needs two)")
    return policy


def leakage_section(path: str, raw: Any, base: LeakagePolicy) -> LeakagePolicy:
    values: dict[str, Any] = {}
    for name, where, value in entries(path, raw, LeakagePolicy):
        if name == "enabled":
            values[name] = flag(where, value)
        elif name == "tolerance_s":
            values[name] = float(number(where, value, positive=False))
            if value < 0:
                raise ConfigError(f"{where} must be 0 or more, got {value!r}")
        else:
            values[name] = number(where, value, integer=True)
    return replace(base, **values)


def slices_section(path: str, raw: dict[str, Any], base: SlicePolicy) -> SlicePolicy:
    check_keys(path, raw, {f.name for f in fields(SlicePolicy)})
    values: dict[str, Any] = {}
    for name, value in raw.items():
        where = f"{path}.{name}"
        if name == "dimensions":
            if not (isinstance(value, list) and all(isinstance(v, str) and v for v in value)):
                raise ConfigError(f"{where} must be a list of dimension names")
            if len(set(value)) != len(value) or len(value) > _MAX_DIMENSIONS:
                raise ConfigError(f"{where}: at most {_MAX_DIMENSIONS} distinct dimensions")
            key = rules_for("prediction").slice_key
            unusable = [v for v in value if not strings_ok([v], key)]
            if unusable:  # no prediction can carry it: every event would be __missing__ there
                pattern = key.pattern.pattern if key.pattern else ""
                raise ConfigError(
                    f"{where}: {unusable[0]!r} is not a slice key a prediction can carry "
                    f"({key.min_length}-{key.max_length} characters of {pattern})"
                )
            values[name] = tuple(value)
        elif name == "include_full":
            if type(value) is not bool:
                raise ConfigError(f"{where} must be true or false")
            values[name] = value
        elif name == "max_level":
            values[name] = number(where, value, integer=True, positive=False)
            if value < 0:
                raise ConfigError(f"{where} must be 0 or more, got {value!r}")
        else:
            values[name] = number(where, value, integer=True)
    return replace(base, **values)


#: ``guards`` table key (the DeploymentPolicy field it sets) -> its reader.
GUARD_SECTIONS: dict[str, Callable[[str, Any, Any], Any]] = {
    "shadow": shadow_section,
    "canary": canary_section,
    "stratification": stratification_section,
    "popularity": popularity_section,
    "compat": compat_section,
    "cold_start": cold_start_section,
    "determinism": determinism_section,
    "leakage": leakage_section,
}
