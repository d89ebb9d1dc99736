"""A guard that raises at a window close: its verdict becomes an error report, the others judge.

Guards hold most of the statistics code, so a bug that some data trigger (a zero variance, a
slice with one label, a NaN from a division) is most likely to raise there. Stopping the
worker (:mod:`streamguard.faust_app.halt`) would not help: a restart closes the same windows
with the same data and raises again, so every guard of every deployment would stay down until
a fix ships. Stage 2 therefore runs each guard on its own:

- before a guard judges a deployment, its state there (``ctx.state(guard)``) is pickled; if
  the guard raises, the pickle is put back, so the failed close leaves the guard as if it had
  not run (a state that cannot be pickled fails the guard the same way, before it runs);
- the sums and labels the context handed out are copies, and the ones it cached are dropped,
  so what the guard scribbled on before raising reaches no other guard;
- the guard's verdict is replaced by an *error verdict* (:func:`failure_verdict`): no slices,
  no findings, ``status: "error"`` and what raised, where. Stage 3 turns it into one critical
  notice per deployment, guard and error (:mod:`streamguard.decisions.decider`), and the status
  API judges the deployment ``pending`` while a model guard, or the stratification guard,
  fails (until a whole later close comes without its error verdict);
- the other guards judge the same close as they would without the failing one (their
  verdicts are byte-identical: ``tests/unit/core/test_guard_failure.py``), with two
  exceptions on purpose: the canary guard, which reads the stratification guard's state,
  calls its mix ``failed`` (untrusted) at a close where that guard raised, and a rollback's
  compatibility evidence is marked ``stale`` while the compatibility guard fails.

What this does not give:

- the window of a failed close is lost for good to guards that add up closed windows (the
  canary's sequential tests, the stratification and compatibility totals, the shadow guard's
  onset series): the next close takes in its own window only;
- the item windows handed to the popularity guard are stage 2's own objects, not copies;
- a ``MemoryError`` is not isolated (it says nothing about the data: the worker stops as
  before), nor are errors outside the guards (merging partials, window bookkeeping).

The failure is deterministic like the rest of stage 2: a restart, or ``streamguard replay`` of
the same traffic, reports the same errors at the same closes (an exception message that prints
an object's address is the exception).

Examples
--------
>>> try:
...     1 / 0
... except ZeroDivisionError as exc:
...     failure = GuardFailure.of("home-ranker", "canary", 1790000010.0, exc)
>>> failure.error, failure.where.endswith(":2 in <module>")  # line 2 of the example
('ZeroDivisionError: division by zero', True)
>>> verdict = failure_verdict(failure, window_start=1790000000.0, horizon_start=1789999710.0)
>>> verdict.to_dict()["status"], verdict.to_dict()["error"]["type"]
('error', 'ZeroDivisionError')
"""

import traceback
from dataclasses import dataclass
from pathlib import Path

from streamguard.core.verdict import Verdict

__all__ = ["ERROR_STATUS", "GuardFailure", "failure_verdict"]

#: ``status`` of an error verdict.
ERROR_STATUS = "error"

_MESSAGE_MAX = 300  # characters of the exception's message in the verdict
_PACKAGE = Path(__file__).resolve().parents[1]  # streamguard/


def _inside(frame: traceback.FrameSummary) -> str | None:
    """The frame's file from the package (``streamguard/guards/canary.py``); None if outside."""
    try:
        return str(Path(_PACKAGE.name) / Path(frame.filename).resolve().relative_to(_PACKAGE))
    except ValueError:
        return None


def _where(exc: BaseException) -> str:
    """Where the guard raised, as ``path:line in function``.

    The innermost frame of streamguard's own code below the catcher (the first frame, stage 2
    calling the guard): when numpy or the standard library raises, the line of the guard that
    called it says more. Outside the package (a test's guard, a doctest) the innermost frame,
    by file name only, so the verdict names no folder of the machine it ran on.
    """
    every = list(traceback.extract_tb(exc.__traceback__))
    frames = every[1:] or every
    for frame in reversed(frames):
        shown = _inside(frame)
        if shown is not None:
            return f"{shown}:{frame.lineno} in {frame.name}"
    if not frames:
        return "unknown"
    frame = frames[-1]
    return f"{Path(frame.filename).name}:{frame.lineno} in {frame.name}"


@dataclass(frozen=True, slots=True)
class GuardFailure:
    """One guard's exception at one window close of one deployment."""

    deployment: str
    guard: str
    window_end: float
    type: str
    message: str
    where: str
    traceback: str  # the whole of it, for the worker's log (not in the verdict)

    @classmethod
    def of(
        cls, deployment: str, guard: str, window_end: float, exc: BaseException
    ) -> "GuardFailure":
        """The failure ``exc`` is, raised by ``guard`` at the close ending at ``window_end``.

        ``exc`` as its catcher got it: the first frame of its traceback is the catcher's.
        """
        try:
            # A lone surrogate would make the verdict's JSON fail outside stage 2's isolation.
            message = str(exc).encode("utf-8", "backslashreplace").decode("utf-8")
        except Exception:  # an exception whose __str__ raises must not escape stage 2
            message = f"<{type(exc).__name__} whose message cannot be printed>"
        return cls(
            deployment=deployment,
            guard=guard,
            window_end=window_end,
            type=type(exc).__name__,
            message=message if len(message) <= _MESSAGE_MAX else message[:_MESSAGE_MAX] + "...",
            where=_where(exc),
            traceback="".join(traceback.format_exception(exc)),
        )

    @property
    def error(self) -> str:
        """``Type: message``, as Python prints it."""
        return f"{self.type}: {self.message}" if self.message else self.type

    @property
    def signature(self) -> str:
        """The same bug at every close: the exception's type and where it was raised.

        The message is left out, since it often quotes the numbers of one close.
        """
        return f"{self.type} at {self.where}"


def failure_verdict(failure: GuardFailure, window_start: float, horizon_start: float) -> Verdict:
    """The error verdict that stands in for the failing guard's verdict at that close."""
    return Verdict(
        deployment=failure.deployment,
        guard=failure.guard,
        model_version="",  # the guard failed before it could say which version it judged
        baseline_version="",
        window_start=window_start,
        window_end=failure.window_end,
        horizon_start=horizon_start,
        slices=[],
        findings=[],
        extra={
            "status": ERROR_STATUS,
            "error": {
                "type": failure.type,
                "message": failure.message,
                "where": failure.where,
                "signature": failure.signature,
            },
        },
    )
