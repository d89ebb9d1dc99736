"""Readers of single policy values: each checks one value and names its key when it refuses.

Every refusal is a :class:`~streamguard.exceptions.ConfigError` whose message starts with the
dotted path of the key (``deployments.home-ranker.window_s``), so the CLI prints one plain line.
"""

from collections.abc import Iterator
from dataclasses import fields
from typing import Any

from streamguard.exceptions import ConfigError
from streamguard.policy.model import SHADOW_STATISTICS, Band, SlicePolicy

__all__ = [
    "band",
    "bands",
    "check_keys",
    "entries",
    "flag",
    "fraction",
    "number",
    "parse_label",
    "tracked_label",
]


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


def tracked_label(where: str, label: str, slices: SlicePolicy) -> str:
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


def number(path: str, value: Any, *, integer: bool = False, positive: bool = True) -> Any:
    ok = type(value) is int if integer else type(value) in (int, float)
    if not ok:
        kind = "an integer" if integer else "a number"
        raise ConfigError(f"{path} must be {kind}, got {value!r}")
    if positive and value <= 0:
        raise ConfigError(f"{path} must be positive, got {value!r}")
    return value


def band(path: str, raw: Any) -> Band:
    if not isinstance(raw, dict) or set(raw) != {"pause", "rollback"}:
        raise ConfigError(f"{path} must be {{ pause = X, rollback = Y }}")
    pause = float(number(f"{path}.pause", raw["pause"], positive=False))
    rollback = float(number(f"{path}.rollback", raw["rollback"], positive=False))
    if not 0 <= pause <= rollback:
        raise ConfigError(f"{path}: need 0 <= pause <= rollback, got {pause} and {rollback}")
    return Band(pause, rollback)


def bands(path: str, raw: Any, base: dict[str, Band]) -> dict[str, Band]:
    if not isinstance(raw, dict):
        raise ConfigError(f"{path} must be a table")
    out = dict(base)
    for name, value in raw.items():
        if name not in SHADOW_STATISTICS:
            known = ", ".join(SHADOW_STATISTICS)
            raise ConfigError(f"{path}.{name} is not a shadow statistic (known: {known})")
        out[name] = band(f"{path}.{name}", value)
    return out


def check_keys(path: str, raw: dict[str, Any], allowed: set[str]) -> None:
    if not isinstance(raw, dict):
        raise ConfigError(f"{path} must be a table")
    unknown = sorted(set(raw) - allowed)
    if unknown:
        raise ConfigError(f"unknown key {path}.{unknown[0]} (known: {', '.join(sorted(allowed))})")


def entries(path: str, raw: Any, policy: type) -> Iterator[tuple[str, str, Any]]:
    """(key, its path, value) of a guard's policy table, once it is a table of known keys."""
    if not isinstance(raw, dict):
        raise ConfigError(f"{path} must be a table")
    check_keys(path, raw, {f.name for f in fields(policy)})
    for name, value in raw.items():
        yield name, f"{path}.{name}", value


def fraction(where: str, value: Any) -> float:
    share = float(number(where, value))
    if not 0 < share < 1:
        raise ConfigError(f"{where} must be between 0 and 1, got {share}")
    return share


def flag(where: str, value: Any) -> bool:
    if type(value) is not bool:
        raise ConfigError(f"{where} must be true or false")
    return value
