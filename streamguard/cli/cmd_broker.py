"""``streamguard broker``: run the embedded Kafka-protocol broker until interrupted."""

import argparse
import asyncio
import signal
import sys
import threading
from typing import Any

__all__ = ["register"]


def register(sub: Any) -> None:
    """Add the ``broker`` command."""
    parser = sub.add_parser("broker", help="run the embedded broker (Tansu) on a loopback port")
    parser.add_argument("--port", type=int, default=None, help="port (default: a free one)")
    parser.add_argument(
        "--no-topics", action="store_true", help="do not create streamguard's topics"
    )
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    """Start the broker, print its URL, and stop it cleanly on SIGINT/SIGTERM."""
    from streamguard.broker import EmbeddedBroker
    from streamguard.broker.admin import apply_topics

    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    with EmbeddedBroker(port=args.port) as broker:
        if not args.no_topics:
            asyncio.run(apply_topics(broker.bootstrap))
        print(broker.url, flush=True)
        print(f"embedded broker pid {broker.pid}; Ctrl-C stops it", file=sys.stderr, flush=True)
        stop.wait()
    print("broker stopped", file=sys.stderr)
    return 0
