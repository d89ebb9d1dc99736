"""Entry point: ``streamguard <command> ...``.

Each command lives in its own module exposing ``register(subparsers)``; the module's handler
does its heavy imports (faust, aiokafka) only when that command runs, so ``streamguard replay``
never loads Faust.
"""

import argparse
import importlib
import sys
from collections.abc import Sequence

from streamguard import __version__
from streamguard.cli.errors import EXIT_CONFIG, EXIT_RUNTIME, EXIT_USAGE, fail
from streamguard.exceptions import ConfigError, StreamguardError

__all__ = ["build_parser", "main"]

#: Command modules, in the order ``--help`` lists them.
COMMANDS = (
    "worker",
    "broker",
    "topics",
    "replay",
    "simulate",
    "evaluate",
    "demo",
    "keys",
    "relay",
    "approve",
    "status",
    "doctor",
    "report",
)


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        # argparse prints usage plus the message; one plain line is the project's rule.
        fail(f"{message} (see streamguard --help)", EXIT_USAGE)


def build_parser() -> argparse.ArgumentParser:
    """The full argument parser with every command registered."""
    parser = _Parser(prog="streamguard", description="Guard live model rollouts on Kafka.")
    parser.add_argument("--version", action="version", version=f"streamguard {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True
    for name in COMMANDS:
        module = importlib.import_module(f"streamguard.cli.cmd_{name}")
        module.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI and return the exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        code: int = args.handler(args)
    except KeyboardInterrupt:
        print("streamguard: interrupted", file=sys.stderr)
        return 130
    except ConfigError as exc:
        fail(str(exc), EXIT_CONFIG)
    except StreamguardError as exc:
        fail(str(exc), EXIT_RUNTIME)
    return code


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
