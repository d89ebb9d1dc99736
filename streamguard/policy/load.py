"""Read a policy TOML file.

Examples
--------
>>> policy = parse_policy('''
... [defaults.guards.shadow.thresholds]
... psi = { pause = 0.2, rollback = 0.3 }
... [deployments.home-ranker]
... window_s = 5
... [deployments.home-ranker.slice_overrides."tier=free,platform=android".shadow]
... flip_rate = { pause = 0.1, rollback = 0.2 }
... ''')
>>> policy.for_deployment("home-ranker").window_s
5
>>> policy.for_deployment("home-ranker").shadow_band("platform=android,tier=free", "flip_rate")
Band(pause=0.1, rollback=0.2)
>>> policy.for_deployment("other").shadow.thresholds["psi"]
Band(pause=0.2, rollback=0.3)
"""

import tomllib
from collections.abc import Iterator
from dataclasses import fields, replace
from pathlib import Path
from typing import Any

from streamguard.contracts.checks import strings_ok
from streamguard.contracts.schemas import rules_for
from streamguard.exceptions import ConfigError
from streamguard.policy.model import (
    CANARY_METRICS,
    SHADOW_STATISTICS,
    Band,
    CanaryPolicy,
    ColdStartPolicy,
    CompatPolicy,
    DeploymentPolicy,
    DeterminismPolicy,
    LeakagePolicy,
    MetricTest,
    Policy,
    PopularityPolicy,
    ShadowPolicy,
    SlicePolicy,
    StratificationPolicy,
)

__all__ = ["load_policy", "parse_label", "parse_policy"]

_MAX_CHANGE_WINDOWS = 360  # an hour of 10 s windows: a longer look is the cumulative test's
_MAX_CHANGE_ALARMS = 100.0  # false pauses per day: more than this is not a guard
_MAX_DIMENSIONS = 6  # 2^6 slice levels at most; beyond that the lattice is not judgeable


def parse_label(label: str) -> dict[str, str]:
    """``"platform=android,tier=free"`` -> ``{"platform": "android", "tier": "free"}``.

    ``"*"`` (or ``""``) is the whole deployment.
    """
    if label in ("*", ""):
        return {}
    out = {}
    for part in label.split(","):
        key, sep, value = part.partition("=")
        if not sep or not key.strip() or not value.strip():
            raise ConfigError(f"slice {label!r}: expected dimension=value[,dimension=value]")
        out[key.strip()] = value.strip()
    return out


def _tracked_label(where: str, label: str, slices: SlicePolicy) -> str:
    """Canonical form of an override's slice label, which must name a tracked slice."""
    try:
        dims = parse_label(label)
    except ConfigError as exc:
        raise ConfigError(f"{where}: {exc}") from None
    unknown = sorted(set(dims) - set(slices.dimensions))
    if unknown:
        known = ", ".join(slices.dimensions)
        raise ConfigError(f"{where}: {unknown[0]!r} is not a slice dimension (known: {known})")
    full = len(dims) == len(slices.dimensions) and slices.include_full
    if len(dims) > slices.max_level and not full:
        raise ConfigError(f"{where}: slices with {len(dims)} dimensions are not tracked")
    return ",".join(f"{k}={dims[k]}" for k in sorted(dims)) or "*"


def _number(path: str, value: Any, *, integer: bool = False, positive: bool = True) -> Any:
    ok = type(value) is int if integer else type(value) in (int, float)
    if not ok:
        kind = "an integer" if integer else "a number"
        raise ConfigError(f"{path} must be {kind}, got {value!r}")
    if positive and value <= 0:
        raise ConfigError(f"{path} must be positive, got {value!r}")
    return value


def _band(path: str, raw: Any) -> Band:
    if not isinstance(raw, dict) or set(raw) != {"pause", "rollback"}:
        raise ConfigError(f"{path} must be {{ pause = X, rollback = Y }}")
    pause = float(_number(f"{path}.pause", raw["pause"], positive=False))
    rollback = float(_number(f"{path}.rollback", raw["rollback"], positive=False))
    if not 0 <= pause <= rollback:
        raise ConfigError(f"{path}: need 0 <= pause <= rollback, got {pause} and {rollback}")
    return Band(pause, rollback)


def _bands(path: str, raw: Any, base: dict[str, Band]) -> dict[str, Band]:
    if not isinstance(raw, dict):
        raise ConfigError(f"{path} must be a table")
    out = dict(base)
    for name, value in raw.items():
        if name not in SHADOW_STATISTICS:
            known = ", ".join(SHADOW_STATISTICS)
            raise ConfigError(f"{path}.{name} is not a shadow statistic (known: {known})")
        out[name] = _band(f"{path}.{name}", value)
    return out


def _check_keys(path: str, raw: dict[str, Any], allowed: set[str]) -> None:
    if not isinstance(raw, dict):
        raise ConfigError(f"{path} must be a table")
    unknown = sorted(set(raw) - allowed)
    if unknown:
        raise ConfigError(f"unknown key {path}.{unknown[0]} (known: {', '.join(sorted(allowed))})")


def _entries(path: str, raw: Any, policy: type) -> Iterator[tuple[str, str, Any]]:
    """(key, its path, value) of a guard's policy table, once it is a table of known keys."""
    if not isinstance(raw, dict):
        raise ConfigError(f"{path} must be a table")
    _check_keys(path, raw, {f.name for f in fields(policy)})
    for name, value in raw.items():
        yield name, f"{path}.{name}", value


def _shadow(path: str, raw: dict[str, Any], base: ShadowPolicy) -> ShadowPolicy:
    allowed = {f.name for f in fields(ShadowPolicy)}
    _check_keys(path, raw, allowed)
    values: dict[str, Any] = {}
    for name, value in raw.items():
        where = f"{path}.{name}"
        if name == "enabled":
            if type(value) is not bool:
                raise ConfigError(f"{where} must be true or false")
            values[name] = value
        elif name in ("min_pairs", "score_bins", "psi_groups", "health_min_primaries"):
            values[name] = _number(where, value, integer=True)
        elif name == "recent_windows":  # 0 turns the recent look off
            values[name] = _number(where, value, integer=True, positive=False)
            if values[name] < 0:
                raise ConfigError(f"{where} must be 0 or more, got {value!r}")
        elif name == "score_range":
            if not (isinstance(value, list) and len(value) == 2):
                raise ConfigError(f"{where} must be [low, high]")
            low = float(_number(f"{where}[0]", value[0], positive=False))
            high = float(_number(f"{where}[1]", value[1], positive=False))
            if high <= low:
                raise ConfigError(f"{where}: high must exceed low")
            values[name] = (low, high)
        elif name == "thresholds":
            values[name] = _bands(where, value, base.thresholds)
        elif name == "pairing_floor":
            values[name] = float(_number(where, value, positive=False))
            if not 0 <= values[name] <= 1:
                raise ConfigError(f"{where} must be between 0 and 1, got {value!r}")
        else:
            values[name] = float(_number(where, value, positive=name != "decision_threshold"))
    shadow = replace(base, **values)
    if not 0 < shadow.dev_alpha < 0.5:
        raise ConfigError(f"{path}.dev_alpha must be in (0, 0.5), got {shadow.dev_alpha}")
    if shadow.psi_groups > shadow.score_bins:
        raise ConfigError(f"{path}.psi_groups must not exceed score_bins")
    return shadow


def _fraction(where: str, value: Any) -> float:
    number = float(_number(where, value))
    if not 0 < number < 1:
        raise ConfigError(f"{where} must be between 0 and 1, got {number}")
    return number


def _flag(where: str, value: Any) -> bool:
    if type(value) is not bool:
        raise ConfigError(f"{where} must be true or false")
    return value


def _metric(where: str, raw: Any, base: MetricTest) -> MetricTest:
    if not isinstance(raw, dict):
        raise ConfigError(f"{where} must be a table")
    _check_keys(where, raw, {"min_effect", "relative", "worse"})
    metric = base
    if "min_effect" in raw:
        metric = replace(
            metric, min_effect=float(_number(f"{where}.min_effect", raw["min_effect"]))
        )
    if "relative" in raw:
        metric = replace(metric, relative=_flag(f"{where}.relative", raw["relative"]))
    if "worse" in raw:
        if raw["worse"] not in ("lower", "higher"):
            raise ConfigError(f'{where}.worse must be "lower" or "higher"')
        metric = replace(metric, worse=raw["worse"])
    return metric


def _canary(path: str, raw: Any, base: CanaryPolicy) -> CanaryPolicy:
    values: dict[str, Any] = {}
    for name, where, value in _entries(path, raw, CanaryPolicy):
        if name == "enabled":
            values[name] = _flag(where, value)
        elif name in ("alpha", "practical_fraction", "latency_alpha"):
            values[name] = _fraction(where, value)
        elif name in ("min_samples", "max_exposures"):
            values[name] = _number(where, value, integer=True)
        elif name == "change_windows":
            values[name] = _number(where, value, integer=True, positive=False)
            if not 0 <= value <= _MAX_CHANGE_WINDOWS:
                raise ConfigError(f"{where} must be between 0 and {_MAX_CHANGE_WINDOWS}")
        elif name == "change_alarms_per_day":
            values[name] = float(_number(where, value))
            if not values[name] <= _MAX_CHANGE_ALARMS:  # also refuses nan and inf
                raise ConfigError(f"{where} must be at most {_MAX_CHANGE_ALARMS:g}, got {value}")
        elif name == "metrics":
            if not isinstance(value, dict):
                raise ConfigError(f"{where} must be a table of metrics")
            _check_keys(where, value, set(CANARY_METRICS))
            metrics = dict(base.metrics)
            for metric, table in value.items():
                metrics[metric] = _metric(f"{where}.{metric}", table, base.metrics[metric])
            values[name] = metrics
        else:
            values[name] = float(_number(where, value))
    return replace(base, **values)


def _stratification(path: str, raw: Any, base: StratificationPolicy) -> StratificationPolicy:
    values: dict[str, Any] = {}
    for name, where, value in _entries(path, raw, StratificationPolicy):
        if name == "enabled":
            values[name] = _flag(where, value)
        elif name in ("alpha", "tv_floor", "uncovered_share", "max_uncovered_weight"):
            values[name] = _fraction(where, value)
        elif name == "min_canary_events":
            values[name] = _number(where, value, integer=True)
        else:
            values[name] = float(_number(where, value))
    return replace(base, **values)


def _popularity(path: str, raw: Any, base: PopularityPolicy) -> PopularityPolicy:
    values: dict[str, Any] = {}
    for name, where, value in _entries(path, raw, PopularityPolicy):
        if name == "enabled":
            values[name] = _flag(where, value)
        elif name == "top_fraction":
            values[name] = _fraction(where, value)
        elif name == "catalogue_size":
            values[name] = _number(where, value, integer=True, positive=False)
            if value < 0:
                raise ConfigError(f"{where} must be 0 (unknown) or more, got {value!r}")
        elif name == "hll_precision":
            values[name] = _number(where, value, integer=True)
            if not 4 <= value <= 18:
                raise ConfigError(f"{where} must be between 4 and 18, got {value!r}")
        elif name in ("gini_slope_margin", "z", "elasticity_margin"):
            values[name] = float(_number(where, value))
        elif name == "slice_level":
            values[name] = _number(where, value, integer=True, positive=False)
            if value < 0:
                raise ConfigError(f"{where} must be 0 (no slices) or more, got {value!r}")
        else:
            values[name] = _number(where, value, integer=True)
    policy = replace(base, **values)
    if policy.min_windows > policy.trend_windows or policy.min_windows < 3:
        raise ConfigError(f"{path}: need 3 <= min_windows <= trend_windows")
    return policy


def _compat(path: str, raw: Any, base: CompatPolicy) -> CompatPolicy:
    values: dict[str, Any] = {}
    for name, where, value in _entries(path, raw, CompatPolicy):
        if name == "enabled":
            values[name] = _flag(where, value)
        elif name == "max_error_rate":
            values[name] = _fraction(where, value)
        elif name == "declared":
            if not isinstance(value, dict) or not all(
                isinstance(v, list) and all(isinstance(x, str) and x for x in v)
                for v in value.values()
            ):
                raise ConfigError(f"{where} must map model versions to lists of schema versions")
            values[name] = {str(k): tuple(v) for k, v in value.items()}
        else:
            values[name] = _number(where, value, integer=True)
    return replace(base, **values)


def _cold_start(path: str, raw: Any, base: ColdStartPolicy) -> ColdStartPolicy:
    values: dict[str, Any] = {}
    for name, where, value in _entries(path, raw, ColdStartPolicy):
        if name == "enabled":
            values[name] = _flag(where, value)
        elif name in ("alpha", "latency_alpha"):
            values[name] = _fraction(where, value)
        elif name in ("young_age_s", "min_p99_ratio"):
            values[name] = float(_number(where, value))
        else:
            values[name] = _number(where, value, integer=True)
    policy = replace(base, **values)
    if policy.min_p99_ratio < 1:
        raise ConfigError(f"{path}.min_p99_ratio must be at least 1")
    return policy


def _determinism(path: str, raw: Any, base: DeterminismPolicy) -> DeterminismPolicy:
    values: dict[str, Any] = {}
    for name, where, value in _entries(path, raw, DeterminismPolicy):
        if name == "enabled":
            values[name] = _flag(where, value)
        elif name in ("alpha", "max_share"):
            values[name] = _fraction(where, value)
        elif name == "tolerance":
            values[name] = float(_number(where, value, positive=False))
            if value < 0:
                raise ConfigError(f"{where} must be 0 or more, got {value!r}")
        else:
            values[name] = _number(where, value, integer=True)
    policy = replace(base, **values)
    if policy.min_stratum_events < 2:
        raise ConfigError(f"{path}.min_stratum_events must be at least 2 (a variance needs two)")
    return policy


def _leakage(path: str, raw: Any, base: LeakagePolicy) -> LeakagePolicy:
    values: dict[str, Any] = {}
    for name, where, value in _entries(path, raw, LeakagePolicy):
        if name == "enabled":
            values[name] = _flag(where, value)
        elif name == "tolerance_s":
            values[name] = float(_number(where, value, positive=False))
            if value < 0:
                raise ConfigError(f"{where} must be 0 or more, got {value!r}")
        else:
            values[name] = _number(where, value, integer=True)
    return replace(base, **values)


def _slices(path: str, raw: dict[str, Any], base: SlicePolicy) -> SlicePolicy:
    _check_keys(path, raw, {f.name for f in fields(SlicePolicy)})
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
            values[name] = _number(where, value, integer=True, positive=False)
            if value < 0:
                raise ConfigError(f"{where} must be 0 or more, got {value!r}")
        else:
            values[name] = _number(where, value, integer=True)
    return replace(base, **values)


_DEPLOYMENT_KEYS = {
    "window_s",
    "horizon_s",
    "allowed_lateness_s",
    "pair_ttl_s",
    "max_pending",
    "confirm_windows",
    "slices",
    "guards",
    "slice_overrides",
}


def _deployment(path: str, raw: dict[str, Any], base: DeploymentPolicy) -> DeploymentPolicy:
    if not isinstance(raw, dict):
        raise ConfigError(f"{path} must be a table")
    _check_keys(path, raw, _DEPLOYMENT_KEYS)
    policy = base
    window_s = int(_number(f"{path}.window_s", raw.get("window_s", base.window_s), integer=True))
    horizon_s = _number(f"{path}.horizon_s", raw.get("horizon_s", base.horizon_s), integer=True)
    if horizon_s % window_s:
        raise ConfigError(f"{path}: horizon_s ({horizon_s}) must be a multiple of window_s")
    policy = replace(policy, window_s=window_s, horizon_windows=horizon_s // window_s)
    if "allowed_lateness_s" in raw:
        where = f"{path}.allowed_lateness_s"
        lateness = float(_number(where, raw["allowed_lateness_s"], positive=False))
        if lateness < 0:
            raise ConfigError(f"{where} must be 0 or more, got {lateness}")
        policy = replace(policy, allowed_lateness_s=lateness)
    if "pair_ttl_s" in raw:
        policy = replace(policy, pair_ttl_s=float(_number(f"{path}.pair_ttl_s", raw["pair_ttl_s"])))
    if "confirm_windows" in raw:
        confirm = _number(f"{path}.confirm_windows", raw["confirm_windows"], integer=True)
        policy = replace(policy, confirm_windows=confirm)
    if "max_pending" in raw:
        max_pending = _number(f"{path}.max_pending", raw["max_pending"], integer=True)
        policy = replace(policy, max_pending=max_pending)
    if "slices" in raw:
        policy = replace(policy, slices=_slices(f"{path}.slices", raw["slices"], base.slices))
    guards = raw.get("guards", {})
    known = {
        "shadow",
        "canary",
        "stratification",
        "popularity",
        "compat",
        "cold_start",
        "determinism",
    }
    _check_keys(f"{path}.guards", guards, known | {"leakage"})
    if "shadow" in guards:
        shadow = _shadow(f"{path}.guards.shadow", guards["shadow"], base.shadow)
        policy = replace(policy, shadow=shadow)
    if "canary" in guards:
        policy = replace(
            policy, canary=_canary(f"{path}.guards.canary", guards["canary"], base.canary)
        )
    if "stratification" in guards:
        stratification = _stratification(
            f"{path}.guards.stratification", guards["stratification"], base.stratification
        )
        policy = replace(policy, stratification=stratification)
    if "popularity" in guards:
        popularity = _popularity(f"{path}.guards.popularity", guards["popularity"], base.popularity)
        policy = replace(policy, popularity=popularity)
    if "compat" in guards:
        policy = replace(
            policy, compat=_compat(f"{path}.guards.compat", guards["compat"], base.compat)
        )
    if "cold_start" in guards:
        cold_start = _cold_start(f"{path}.guards.cold_start", guards["cold_start"], base.cold_start)
        policy = replace(policy, cold_start=cold_start)
    if "determinism" in guards:
        determinism = _determinism(
            f"{path}.guards.determinism", guards["determinism"], base.determinism
        )
        policy = replace(policy, determinism=determinism)
    if "leakage" in guards:
        leakage = _leakage(f"{path}.guards.leakage", guards["leakage"], base.leakage)
        policy = replace(policy, leakage=leakage)
    overrides = dict(base.shadow_slice_thresholds)
    slice_overrides = raw.get("slice_overrides", {})
    if not isinstance(slice_overrides, dict):
        raise ConfigError(f"{path}.slice_overrides must be a table of slice labels")
    for label, table in slice_overrides.items():
        where = f"{path}.slice_overrides.{label!r}"
        _check_keys(where, table, {"shadow"})
        key = _tracked_label(where, label, policy.slices)
        overrides[key] = _bands(f"{where}.shadow", table.get("shadow", {}), overrides.get(key, {}))
    return replace(policy, shadow_slice_thresholds=overrides)


def parse_policy(text: str, source: str = "policy") -> Policy:
    """Parse policy TOML text.

    Raises
    ------
    ConfigError
        On a TOML syntax error or any invalid key or value; the message names the key.
    """
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{source}: {exc}") from exc
    _check_keys(source, raw, {"defaults", "deployments"})
    defaults = _deployment("defaults", raw.get("defaults", {}), DeploymentPolicy())
    deployments = raw.get("deployments", {})
    if not isinstance(deployments, dict):
        raise ConfigError("deployments must be a table of deployment names")
    return Policy(
        defaults=defaults,
        deployments={
            name: _deployment(f"deployments.{name}", table, defaults)
            for name, table in deployments.items()
        },
    )


def load_policy(path: Path | None) -> Policy:
    """Load a policy file, or the defaults when ``path`` is None."""
    if path is None:
        return Policy()
    try:
        text = path.read_text()
    except OSError as exc:
        raise ConfigError(f"cannot read policy file {path}: {exc.strerror}") from exc
    return parse_policy(text, source=str(path))
