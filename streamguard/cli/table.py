"""The demo's per-slice table, rendered from a shadow-guard verdict."""

import time
from typing import Any

__all__ = ["render_verdict"]

_COLUMNS = (
    ("mean_abs_dev", "mean|d|"),
    ("p95_abs_dev", "p95|d|"),
    ("flip_rate", "flips"),
    ("psi", "PSI"),
    ("js_distance", "JS"),
)
_MARK = {"pause": "PAUSE", "rollback": "ROLLBACK", "insufficient": "(few)", "ok": "ok"}


def _cell(value: float | None) -> str:
    return "     -" if value is None else f"{value:6.3f}"


def _pick(slices: list[dict[str, Any]], limit: int, always: set[str]) -> list[dict[str, Any]]:
    """The whole deployment, every single dimension, then the worst of the rest."""
    coarse = [s for s in slices if s["slice"] == "*" or "," not in s["slice"]]
    fine = [s for s in slices if s not in coarse]

    def badness(s: dict[str, Any]) -> float:
        flips = s["stats"].get("flip_rate") or 0.0
        return (s["state"] in ("pause", "rollback")) * 10 + flips

    fine.sort(key=lambda s: (s["slice"] not in always, -badness(s), s["slice"]))
    return coarse[: limit // 2] + fine[: limit - min(len(coarse), limit // 2)]


def render_verdict(verdict: dict[str, Any], limit: int = 16, always: set[str] | None = None) -> str:
    """A fixed-width table of a verdict's slices (at most ``limit`` rows)."""
    header = f"{'slice':<40} {'n':>7} " + " ".join(f"{title:>7}" for _, title in _COLUMNS)
    ending = time.strftime("%H:%M:%S", time.gmtime(verdict["window_end"]))
    baseline = verdict.get("baseline_version", "?")
    lines = [
        f"{verdict['deployment']} {verdict['model_version']} vs {baseline}"
        f"  window ending {ending} UTC"
        f"  ({len(verdict['slices'])} slices judged over the horizon)",
        header + "  state",
        "-" * (len(header) + 10),
    ]
    for row in _pick(verdict["slices"], limit, always or set()):
        cells = " ".join(f"{_cell(row['stats'].get(key)):>7}" for key, _ in _COLUMNS)
        state = _MARK.get(row["state"], row["state"])
        lines.append(f"{row['slice'][:40]:<40} {row['n']:>7} {cells}  {state}")
    return "\n".join(lines)
