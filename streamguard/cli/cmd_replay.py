"""``streamguard replay EVENTS.jsonl``: run the engine in event time over recorded messages.

Each line is one Kafka message value (a single event or a batch envelope). Lines are routed to
the partition Kafka would give their request id, so the result is the worker's. Stdout has one
JSON line per decision, in the order the engine made them:

* every command, byte for byte what the worker publishes on the control topic (unsigned): it
  has an ``action``;
* every alert that comes with no command (a *notice*: non-determinism, shadow health), byte for
  byte what the worker publishes on the alerts topic (unsigned): it has an ``alert_id`` and no
  ``action``. The alerts that accompany commands are not printed; they repeat the command.

Progress and a summary (counting commands, alerts and notices) go to stderr. The same input
always prints the same output.
"""

import argparse
import os
import sys
import time
from pathlib import Path
from typing import IO, Any

from streamguard.cli.errors import EXIT_CONFIG, EXIT_RUNTIME, fail

__all__ = ["register"]


def register(sub: Any) -> None:
    """Add the ``replay`` command."""
    parser = sub.add_parser(
        "replay", help="run the engine over recorded events; print commands and notices"
    )
    parser.add_argument("events", help="JSON-lines file of messages ('-' for stdin)")
    parser.add_argument("--policy", type=Path, default=None, help="policy TOML file")
    parser.add_argument(
        "--partitions", type=int, default=None, help="predictions partitions (default: topic spec)"
    )
    parser.add_argument("--verdicts", type=Path, default=None, help="also write verdicts here")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")
    parser.set_defaults(handler=run)


class _Progress:
    """A one-line progress bar on stderr, redrawn at most 10 times a second."""

    def __init__(self, total: int | None, enabled: bool) -> None:
        self.total = total
        self.enabled = enabled and sys.stderr.isatty()
        self._last = 0.0

    def update(self, done: int, messages: int, commands: int, notices: int) -> None:
        now = time.monotonic()
        if not self.enabled or now - self._last < 0.1:
            return
        self._last = now
        counts = f"{messages} messages, {commands} commands, {notices} notices"
        if self.total:
            share = min(1.0, done / self.total)
            bar = "#" * int(share * 30)
            line = f"[{bar:<30}] {share:6.1%} {counts}"
        else:
            line = f"{done / 1e6:.1f} MB, {counts}"
        sys.stderr.write("\r" + line)
        sys.stderr.flush()

    def close(self) -> None:
        if self.enabled:
            sys.stderr.write("\n")
            self.enabled = False


def _open(path: str) -> tuple[IO[bytes], int | None]:
    if path == "-":
        return sys.stdin.buffer, None
    try:
        handle = open(path, "rb")  # noqa: SIM115 - closed by the caller
    except OSError as exc:
        fail(f"cannot read {path}: {exc.strerror}", EXIT_CONFIG)
    return handle, os.fstat(handle.fileno()).st_size


def run(args: argparse.Namespace) -> int:
    """Replay the file and print commands and notices; exit 0 (decisions or not)."""
    import orjson

    from streamguard.contracts import load_topic_specs
    from streamguard.core.exceptions import AccountingError
    from streamguard.engine import Pipeline
    from streamguard.guards import Verdict
    from streamguard.policy import load_policy

    policy = load_policy(args.policy)
    partitions = args.partitions or load_topic_specs()["predictions"].partitions
    if partitions < 1:
        fail(f"--partitions must be at least 1, got {partitions}", 2)
    verdict_out = None
    if args.verdicts is not None:
        try:
            verdict_out = open(args.verdicts, "wb")  # noqa: SIM115 - closed below
        except OSError as exc:
            fail(f"cannot write {args.verdicts}: {exc.strerror}", EXIT_CONFIG)

    printed = noticed = 0
    out = sys.stdout.buffer

    def emit() -> None:
        """Print what the engine decided since the last call: commands, then notices.

        Called before each verdict is decided too, so what one verdict calls for is printed in
        the order the decider made it (its commands before its notices) and the order does not
        depend on how many verdicts one flush closes.
        """
        nonlocal printed, noticed
        if len(pipeline.commands) == printed and len(pipeline.notices) == noticed:
            return
        for command in pipeline.commands[printed:]:
            out.write(command.to_json() + b"\n")
        for notice in pipeline.notices[noticed:]:
            out.write(notice.to_json() + b"\n")
        printed, noticed = len(pipeline.commands), len(pipeline.notices)
        out.flush()

    def on_verdict(verdict: Verdict) -> None:
        emit()  # the previous verdict's decisions are complete
        if verdict_out is not None:
            verdict_out.write(orjson.dumps(verdict.to_dict()) + b"\n")

    pipeline = Pipeline(policy, partitions, on_verdict=on_verdict)
    handle, total = _open(args.events)
    progress = _Progress(total, not args.no_progress)

    done = number = 0
    try:
        for number, line in enumerate(handle, start=1):  # noqa: B007 - read in the handler
            done += len(line)
            value = line.strip()
            if not value:
                continue
            pipeline.feed(value)
            emit()
            progress.update(done, pipeline.stats.messages, printed, noticed)
        pipeline.finish()
        emit()
    except AccountingError as exc:
        # A bug a message triggers: the worker leaves such a message out after it stopped
        # twice on it (core.quarantine); replay has no earlier state to go back to.
        progress.close()
        fail(f"line {number}: {exc} (a bug in streamguard: please report it)", EXIT_RUNTIME)
    finally:
        progress.close()
        if handle is not sys.stdin.buffer:
            handle.close()
        if verdict_out is not None:
            verdict_out.close()
    stats = pipeline.stats
    for failure in pipeline.failures.values():  # a guard's bug: the worker logs the same
        print(
            f"guard {failure.guard} failed on {failure.deployment} from the window ending at "
            f"{failure.window_end:.0f} ({failure.error}); its verdicts there are error "
            f"verdicts (a bug in streamguard: please report it):\n{failure.traceback}",
            file=sys.stderr,
        )
    rejected = ", ".join(f"{k}={v}" for k, v in sorted(stats.rejected.items())) or "none"
    print(
        f"replayed {stats.messages} messages, {stats.events} events, {stats.pairs} pairs, "
        f"{stats.unpaired} unpaired, {stats.late} late events, {stats.late_pairs} late pairs, "
        f"{stats.training_examples} training examples ({stats.leakage_violations} leaking "
        f"features); "
        f"dead letters: {rejected}; "
        f"{stats.verdicts} verdicts ({stats.guard_errors} guard errors), {printed} commands, "
        f"{len(pipeline.alerts)} alerts "
        f"({noticed} notices with no command)",
        file=sys.stderr,
    )
    return 0
