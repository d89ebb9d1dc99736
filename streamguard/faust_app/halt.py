"""A stage that raises stops the worker at once, so a restart rebuilds its state exactly.

An exception inside a stage's work (a bug, ``MemoryError``) can leave its state half-changed:
a message half-accounted, a flush half-encoded, a window half-closed. Faust's own answers let
that state out: it restarts a crashed agent on the same state in the same process (the
message that raised is skipped), and a crashed timer stops the app *gracefully*, whose
shutdown checkpoint flushes and stores that state. Measured on 2026-11-25, an exception
injected into stage 1's accounting left the worker running with the message lost, and
``/health`` back at ``ok`` a minute later.

:func:`stops_worker` instead ends the process on the spot, with :data:`EXIT_STAGE_FAILED`, once the
traceback is logged (a counter would die with the process; the exit status and the log line are
what an operator sees). Nothing more is flushed, sent, acknowledged or stored (but for the record
of the input messages it was accounting, :mod:`streamguard.core.quarantine`), which is what
``kill -9`` does, and the fault tests prove that a worker started after a ``kill -9`` at any point
restores every partition from its last stored snapshot and gives the partials, verdicts and
commands of a worker that never stopped (``tests/faults/test_kill.py``; for this path
``test_internal_error.py``).

The price: an error that repeats on the same input (a bug) would stop every restart at the same
message. For stage 1's accounting of predictions and the leakage guard's of training examples, the
worker records which messages it was accounting before it exits, and a restart leaves out a message
that stopped two workers, dead-lettered as ``quarantined`` (:mod:`streamguard.core.quarantine`).
A guard that raises at a window close (but for ``MemoryError``) does not get here: stage 2
isolates it (:mod:`streamguard.core.guard_failure`). Any other repeating error keeps the guard
down, loudly (exit status, restarts, the log), until the bug is fixed.
"""

import contextlib
import logging
import os
import sys
from collections.abc import Callable, Iterator

__all__ = ["EXIT_STAGE_FAILED", "stops_worker"]

log = logging.getLogger("streamguard.worker")

#: Exit status of a worker stopped by a stage's exception (``EX_SOFTWARE`` of sysexits.h).
EXIT_STAGE_FAILED = 70


def _flush_logs() -> None:
    for handler in logging.getLogger().handlers + log.handlers:
        handler.flush()
    sys.stdout.flush()
    sys.stderr.flush()


@contextlib.contextmanager
def stops_worker(
    where: str,
    record: Callable[[str, BaseException], None],
    exit_: Callable[[int], object] = os._exit,
) -> Iterator[None]:
    """Run a stage's work; on an exception, ``record(where, exc)`` and exit the process at once.

    Cancellation (a rebalance, a stop) is a ``BaseException`` and passes through. ``exit_`` is
    ``os._exit``: no shutdown hook may run on the half-changed state (module docstring).
    """
    try:
        yield
    except Exception as exc:
        record(where, exc)
        log.critical(
            "%s raised %s; the worker stops now (exit status %d) and a restart resumes from "
            "the last stored snapshots",
            where,
            type(exc).__name__,
            EXIT_STAGE_FAILED,
        )
        _flush_logs()  # os._exit flushes nothing
        exit_(EXIT_STAGE_FAILED)
        raise  # only when ``exit_`` returned (tests)
