"""One plain line and a non-zero exit for every error a user can cause."""

import sys
from typing import NoReturn

__all__ = ["EXIT_CONFIG", "EXIT_RUNTIME", "EXIT_USAGE", "fail"]

EXIT_USAGE = 2  # bad arguments (argparse uses 2 as well)
EXIT_CONFIG = 3  # bad policy/config/contract files or unreadable input
EXIT_RUNTIME = 4  # the broker is unreachable or a run failed


def fail(message: str, code: int = EXIT_CONFIG) -> NoReturn:
    """Print ``streamguard: error: <message>`` on stderr and exit with ``code``."""
    first_line = message.strip().splitlines()[0] if message.strip() else "unknown error"
    print(f"streamguard: error: {first_line}", file=sys.stderr)
    raise SystemExit(code)
