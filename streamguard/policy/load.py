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
from dataclasses import replace
from pathlib import Path
from typing import Any

from streamguard.exceptions import ConfigError
from streamguard.policy.model import DeploymentPolicy, Policy
from streamguard.policy.sections import GUARD_SECTIONS, slices_section
from streamguard.policy.values import bands, check_keys, number, parse_label, tracked_label

__all__ = ["load_policy", "parse_label", "parse_policy"]


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
    check_keys(path, raw, _DEPLOYMENT_KEYS)
    policy = base
    window_s = int(number(f"{path}.window_s", raw.get("window_s", base.window_s), integer=True))
    horizon_s = number(f"{path}.horizon_s", raw.get("horizon_s", base.horizon_s), integer=True)
    if horizon_s % window_s:
        raise ConfigError(f"{path}: horizon_s ({horizon_s}) must be a multiple of window_s")
    policy = replace(policy, window_s=window_s, horizon_windows=horizon_s // window_s)
    if "allowed_lateness_s" in raw:
        where = f"{path}.allowed_lateness_s"
        lateness = float(number(where, raw["allowed_lateness_s"], positive=False))
        if lateness < 0:
            raise ConfigError(f"{where} must be 0 or more, got {lateness}")
        policy = replace(policy, allowed_lateness_s=lateness)
    if "pair_ttl_s" in raw:
        policy = replace(policy, pair_ttl_s=float(number(f"{path}.pair_ttl_s", raw["pair_ttl_s"])))
    if "confirm_windows" in raw:
        confirm = number(f"{path}.confirm_windows", raw["confirm_windows"], integer=True)
        policy = replace(policy, confirm_windows=confirm)
    if "max_pending" in raw:
        max_pending = number(f"{path}.max_pending", raw["max_pending"], integer=True)
        policy = replace(policy, max_pending=max_pending)
    if "slices" in raw:
        policy = replace(
            policy, slices=slices_section(f"{path}.slices", raw["slices"], base.slices)
        )
    guards = raw.get("guards", {})
    check_keys(f"{path}.guards", guards, set(GUARD_SECTIONS))
    for name, section in GUARD_SECTIONS.items():
        if name in guards:
            table = section(f"{path}.guards.{name}", guards[name], getattr(base, name))
            policy = replace(policy, **{name: table})
    overrides = dict(base.shadow_slice_thresholds)
    slice_overrides = raw.get("slice_overrides", {})
    if not isinstance(slice_overrides, dict):
        raise ConfigError(f"{path}.slice_overrides must be a table of slice labels")
    for label, table in slice_overrides.items():
        where = f"{path}.slice_overrides.{label!r}"
        check_keys(where, table, {"shadow"})
        key = tracked_label(where, label, policy.slices)
        overrides[key] = bands(f"{where}.shadow", table.get("shadow", {}), overrides.get(key, {}))
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
    check_keys(source, raw, {"defaults", "deployments"})
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
