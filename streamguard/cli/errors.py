"""One plain line and a non-zero exit for every error a user can cause."""

import contextlib
import logging
import sys
from collections.abc import Iterator
from typing import NoReturn

__all__ = ["EXIT_CONFIG", "EXIT_RUNTIME", "EXIT_USAGE", "fail", "quiet_kafka_logs"]

EXIT_USAGE = 2  # bad arguments (argparse uses 2 as well)
EXIT_CONFIG = 3  # bad policy/config/contract files or unreadable input
EXIT_RUNTIME = 4  # the broker is unreachable or a run failed


def fail(message: str, code: int = EXIT_CONFIG) -> NoReturn:
    """Print ``streamguard: error: <message>`` on stderr and exit with ``code``."""
    first_line = message.strip().splitlines()[0] if message.strip() else "unknown error"
    print(f"streamguard: error: {first_line}", file=sys.stderr)
    raise SystemExit(code)


@contextlib.contextmanager
def quiet_kafka_logs() -> Iterator[None]:
    """Mute aiokafka's own log lines while the CLI talks to a broker before the worker runs.

    Its connection errors would print a second, noisier line next to ours.
    """
    logger = logging.getLogger("aiokafka")
    level = logger.level
    logger.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        logger.setLevel(level)
