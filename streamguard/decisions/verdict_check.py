"""What a verdict read from the verdicts topic must hold before the decider acts on it.

Stage 2 writes verdicts and stage 3 reads them, but the topic is a Kafka topic like any other:
a worker of another version, or a tool writing to it by mistake, can put anything there.
:meth:`~streamguard.decisions.Decider.decide` changes its state as it goes, and an exception
stops the worker (:mod:`streamguard.faust_app.halt`), so a malformed verdict would stop every
restart at the same message. :func:`check_verdict` checks, without changing anything, every
field the decider reads; a verdict that passes cannot make it raise.

Examples
--------
>>> verdict = {"schema_version": 1, "kind": "verdict", "deployment": "d", "guard": "shadow",
...     "model_version": "v2", "window_start": 0, "window_end": 10, "horizon_start": 0,
...     "slices": [], "findings": []}
>>> check_verdict(verdict)
>>> check_verdict(verdict | {"findings": [{"slice": "*"}]})
Traceback (most recent call last):
...
streamguard.decisions.verdict_check.VerdictError: finding 0: action is missing
"""

import math
from typing import Any

from streamguard.contracts.checks import strings_ok
from streamguard.contracts.commands import ACTIONS, NOTICE
from streamguard.contracts.schemas import rules_for
from streamguard.core.guard_failure import ERROR_STATUS
from streamguard.core.slices import ROOT, label_dims
from streamguard.decisions.decider import COMPAT_GUARD

__all__ = ["VerdictError", "check_verdict"]

#: Actions a finding may ask for: a notice, or a command serving acts on (not ``resume``, which
#: only an operator's approval gives).
FINDING_ACTIONS = frozenset(ACTIONS) - {"resume", "schemas"} | {NOTICE}


class VerdictError(ValueError):
    """A verdict the decider cannot act on; the message says which field and why."""


def _number(value: object) -> bool:
    """A finite JSON number (``true`` is not one, though Python's bool is an int)."""
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _need(record: dict[str, Any], name: str, kind: str, where: str = "") -> Any:
    """``record[name]``, which must be a string (``kind="str"``) or a finite number."""
    if name not in record:
        raise VerdictError(f"{where}{name} is missing")
    value = record[name]
    ok = type(value) is str if kind == "str" else _number(value)
    if not ok:
        raise VerdictError(f"{where}{name} is {value!r:.40}, not a {kind}")
    return value


def _check_slice(label: str, where: str) -> None:
    """A finding's slice must be a canonical label: ``*``, or ``key=value`` parts, keys sorted.

    The decider turns the label into the command's slice (``label_dims``), which splits on
    ``,`` and ``=`` without complaint: ``""`` would become ``{"": ""}``, and
    ``platform=ios,platform=android`` would lose a dimension; serving would act on either.
    So the label must read back through ``label_dims`` unchanged, with keys and values that
    follow the prediction schema's slice rules (replica ids, the one other kind of label
    value, are a subset of them); sorted keys keep command ids deterministic.
    """
    if label == ROOT:
        return
    rules = rules_for("prediction")
    dims = label_dims(label)  # what the decider will read
    if not strings_ok(list(dims), rules.slice_key) or not strings_ok(
        list(dims.values()), rules.slice_value
    ):
        raise VerdictError(f"{where}slice {label!r:.80} is not a slice label (key=value,...)")
    canonical = ",".join(f"{key}={dims[key]}" for key in sorted(dims))
    if label != canonical or len(dims) > rules.slice_max_properties:
        raise VerdictError(f"{where}slice {label!r:.80}: dimensions not distinct and sorted")


def check_verdict(verdict: object) -> None:
    """Raise :class:`VerdictError` unless ``verdict`` holds what the decider reads.

    Checks the identity (deployment, guard, model version, baseline), the window bounds,
    every finding (a canonical slice label, action, and the statistic, threshold and n its
    summary quotes unless it brings its own), an error verdict's ``error``, the shadow guard's
    ``health`` findings and the compatibility guard's ``schemas`` table.
    """
    if type(verdict) is not dict:
        raise VerdictError(f"a verdict is a JSON object, not {type(verdict).__name__}")
    version = verdict.get("schema_version", 1)
    if type(version) is not int or version != 1:
        raise VerdictError(f"schema_version {version!r:.40}; this worker reads 1")
    if verdict.get("kind", "verdict") != "verdict":
        raise VerdictError(f"kind {verdict.get('kind')!r:.40} is not verdict")
    for name in ("deployment", "guard", "model_version"):
        _need(verdict, name, "str")
    if type(verdict.get("baseline_version", "")) is not str:
        raise VerdictError("baseline_version is not a string")
    for name in ("window_start", "window_end", "horizon_start"):
        _need(verdict, name, "number")
    if verdict.get("status") == ERROR_STATUS:
        _check_error(verdict.get("error"))
    findings = verdict.get("findings")
    if type(findings) is not list:
        raise VerdictError("findings is not a list")
    for index, finding in enumerate(findings):
        _check_finding(finding, f"finding {index}: ")
    health = verdict.get("health")
    if isinstance(health, dict):
        notes = health.get("findings", [])
        if type(notes) is not list:
            raise VerdictError("health findings is not a list")
        for index, note in enumerate(notes):
            where = f"health finding {index}: "
            if type(note) is not dict:
                raise VerdictError(f"{where}not an object")
            _check_slice(_need(note, "slice", "str", where), where)
            _need(note, "pairing_floor", "number", where)
            if "primaries" not in note:
                raise VerdictError(f"{where}primaries is missing")
    if verdict["guard"] == COMPAT_GUARD:
        _check_schemas(verdict.get("schemas") or {})


def _check_finding(finding: object, where: str) -> None:
    if type(finding) is not dict:
        raise VerdictError(f"{where}not an object")
    _check_slice(_need(finding, "slice", "str", where), where)
    action = _need(finding, "action", "str", where)
    if action not in FINDING_ACTIONS:
        raise VerdictError(f"{where}action {action!r:.40} is not one of {sorted(FINDING_ACTIONS)}")
    summary = finding.get("summary")
    if summary is not None and type(summary) is not str:
        raise VerdictError(f"{where}summary is not a string")
    if not summary:  # the decider quotes the statistic instead
        _need(finding, "threshold", "number", where)
        for name in ("statistic", "n"):
            if name not in finding:
                raise VerdictError(f"{where}{name} is missing")


def _check_error(error: object) -> None:
    """An error verdict's ``error``: what raised, where, and the signature notices dedupe on."""
    if type(error) is not dict:
        raise VerdictError("an error verdict's error is not an object")
    for name in ("type", "message", "where", "signature"):
        _need(error, name, "str", "error: ")


def _check_schemas(table: object) -> None:
    if type(table) is not dict:
        raise VerdictError("schemas is not an object")
    for model_version, row in table.items():
        if type(row) is not dict:
            raise VerdictError(f"schemas of {model_version!r:.40} is not an object")
        for name in ("accepted", "live"):
            if type(row.get(name, [])) is not list:
                raise VerdictError(f"schemas of {model_version!r:.40}: {name} is not a list")
