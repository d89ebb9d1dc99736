"""One HTML file, no external resources: the data as JSON, and a small script drawing SVG.

Plots: per guard, one statistic per slice over time (the whole deployment and the slices that
moved most), with the commands as markers on the same time axis; the concentration of item
exposure (Gini index and top-1 % share) of the canary against the baseline's, from the
popularity guard; the canary's slice mix against the baseline's from the latest
stratification verdict; a table of the commands.

Examples
--------
>>> verdict = {"deployment": "d", "guard": "shadow", "window_end": 10.0, "model_version": "v2",
...            "slices": [{"slice": "*", "n": 5, "stats": {"psi": 0.01}}], "findings": []}
>>> data = report_data("d", [verdict], [])
>>> data["guards"][0]["statistic"], data["guards"][0]["series"]
('psi', [{'slice': '*', 'points': [[10.0, 0.01]]}])
>>> "<script>" in build_report("d", [verdict], [])
True
"""

import html
import math
from pathlib import Path
from typing import Any

import orjson

__all__ = ["build_report", "report_data"]

#: The statistic plotted per guard (others: the first numeric statistic of the first slice).
PLOTTED = {"shadow": "psi", "canary": "outcome_rate.delta", "stratification": "residual"}
MAX_SERIES = 8


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if math.isfinite(value) else None


def _statistic(guard: str, verdicts: list[dict[str, Any]]) -> str | None:
    wanted = PLOTTED.get(guard)
    for verdict in verdicts:
        for s in verdict.get("slices", []):
            stats = s.get("stats") or {}
            if wanted in stats:
                return wanted
            for key, value in stats.items():
                if wanted is None and _number(value) is not None:
                    return str(key)
    return None


def _series(verdicts: list[dict[str, Any]], statistic: str) -> list[dict[str, Any]]:
    points: dict[str, list[list[float]]] = {}
    for verdict in sorted(verdicts, key=lambda v: v["window_end"]):
        for s in verdict.get("slices", []):
            value = _number((s.get("stats") or {}).get(statistic))
            if value is not None:
                points.setdefault(str(s.get("slice")), []).append(
                    [float(verdict["window_end"]), value]
                )
    # The deployment as a whole, then the slices that moved most over the run (the mean, not
    # the maximum: one noisy window of a tiny slice must not crowd out a sustained shift).
    ranked = sorted(
        (k for k in points if k != "*"),
        key=lambda k: -sum(abs(v) for _, v in points[k]) / len(points[k]),
    )
    keep = (["*"] if "*" in points else []) + ranked[: MAX_SERIES - ("*" in points)]
    return [{"slice": k, "points": points[k]} for k in keep]


def _mix(verdicts: list[dict[str, Any]]) -> list[dict[str, Any]]:
    latest = [v for v in verdicts if v.get("guard") == "stratification"]
    if not latest:
        return []
    last = max(latest, key=lambda v: v["window_end"])
    rows = []
    for s in last.get("slices", []):
        stats = s.get("stats") or {}
        canary, baseline = _number(stats.get("canary_share")), _number(stats.get("baseline_share"))
        if canary is not None and baseline is not None:
            rows.append({"slice": s.get("slice"), "canary": canary, "baseline": baseline})
    return rows


#: Concentration measures of the popularity guard plotted per arm (names as in its verdicts).
CONCENTRATION = ("gini", "top_share")


def _concentration(verdicts: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per measure, the canary's and the baseline's value for the whole deployment per window."""
    mine = sorted(
        (v for v in verdicts if v.get("guard") == "popularity"), key=lambda v: v["window_end"]
    )
    charts = []
    for measure in CONCENTRATION:
        series = []
        for arm in ("canary", "baseline"):
            points = [
                [float(v["window_end"]), value]
                for v in mine
                for s in v.get("slices", [])
                if s.get("slice") == "*"
                and (value := _number((s.get("stats") or {}).get(f"{measure}.{arm}"))) is not None
            ]
            if points:
                series.append({"slice": arm, "points": points})
        if series:
            charts.append({"guard": "popularity", "statistic": measure, "series": series})
    return charts


def report_data(
    deployment: str, verdicts: list[dict[str, Any]], commands: list[dict[str, Any]]
) -> dict[str, Any]:
    """What the report plots, as plain JSON."""
    mine = [
        v
        for v in verdicts
        if v.get("deployment") == deployment and _number(v.get("window_end")) is not None
    ]
    guards = []
    for guard in sorted({str(v.get("guard")) for v in mine}):
        of_guard = [v for v in mine if v.get("guard") == guard]
        statistic = _statistic(guard, of_guard)
        if statistic is not None:
            guards.append(
                {"guard": guard, "statistic": statistic, "series": _series(of_guard, statistic)}
            )
    marks = [
        {
            "ts": float(c["ts"]),
            "action": c.get("action"),
            "guard": c.get("guard"),
            "slice": c.get("slice"),
            "model_version": c.get("model_version"),
            "command_id": c.get("command_id"),
        }
        for c in commands
        if c.get("deployment") == deployment and _number(c.get("ts")) is not None
    ]
    return {
        "deployment": deployment,
        "guards": guards,
        "concentration": _concentration(mine),
        "mix": _mix(mine),
        "commands": marks,
    }


# The drawing code ships next to this module and is inlined: the report has no dependencies.
_SCRIPT = (Path(__file__).parent / "plots.js").read_text(encoding="utf-8")


def build_report(
    deployment: str, verdicts: list[dict[str, Any]], commands: list[dict[str, Any]]
) -> str:
    """The report as one HTML document."""
    data = report_data(deployment, verdicts, commands)
    # "</" must not appear inside the <script> element that carries the data.
    payload = orjson.dumps(data).decode().replace("</", "<\\/")
    rows = "".join(
        "<tr>"
        + "".join(
            f"<td>{html.escape(str(c.get(k) if c.get(k) is not None else '*'))}</td>"
            for k in ("ts", "action", "guard", "slice", "model_version", "command_id")
        )
        + "</tr>"
        for c in data["commands"]
    )
    title = html.escape(f"streamguard report: {deployment}")
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{title}</title>
<style>body{{font-family:sans-serif;margin:24px}}td,th{{padding:2px 8px;font-size:13px}}
svg.plot{{border:1px solid #ddd;margin:6px 0}}</style></head>
<body><h1>{title}</h1>
<p>{len(data["guards"])} guard(s), {len(data["commands"])} command(s). Dashed lines mark
commands (orange: pause, red: rollback).</p>
<div id="plots"></div>
<h2>Commands</h2>
<table><tr><th>ts</th><th>action</th><th>guard</th><th>slice</th><th>version</th>
<th>command id</th></tr>{rows}</table>
<script type="application/json" id="data">{payload}</script>
<script>{_SCRIPT}</script>
</body></html>
"""
