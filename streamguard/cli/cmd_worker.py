"""``streamguard worker``: run the Faust worker.

Without ``--broker`` (or ``STREAMGUARD_BROKER``) it starts the embedded broker and stops it on
exit. Missing topics are created from ``topics/*.toml`` before the worker joins its group.
"""

import argparse
import asyncio
import sys
from pathlib import Path
from typing import Any

from streamguard.cli.errors import EXIT_RUNTIME, fail, quiet_kafka_logs

__all__ = ["register", "run_worker"]


def register(sub: Any) -> None:
    """Add the ``worker`` command."""
    parser = sub.add_parser("worker", help="run the Faust worker (stages 1-3)")
    parser.add_argument(
        "--broker", default=None, help="Kafka URL (default: $STREAMGUARD_BROKER, else embedded)"
    )
    parser.add_argument(
        "--policy", type=Path, default=None, help="policy TOML file (default: built-in)"
    )
    parser.add_argument(
        "--web-port", type=int, default=None, help="HTTP port for /metrics and /health"
    )
    parser.add_argument(
        "--app-id", default=None, help="consumer group / app id (default: streamguard)"
    )
    parser.add_argument(
        "--no-create-topics", action="store_true", help="do not create missing topics"
    )
    parser.add_argument(
        "--signing-key",
        type=Path,
        default=None,
        metavar="FILE",
        help="sign commands and alerts with this key (default: $STREAMGUARD_SIGNING_KEY)",
    )
    parser.add_argument(
        "--keyring",
        type=Path,
        default=None,
        metavar="FILE",
        help="keys approvals may be signed with (default: the signing key only)",
    )
    parser.add_argument(
        "--insecure",
        action="store_true",
        default=None,
        help="run without a signing key: unsigned commands (demos only; announced loudly)",
    )
    parser.add_argument(
        "-v", "--verbose", action="store_true", help="log at INFO instead of WARNING"
    )
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    """Validate everything first (one plain error line on failure), then run until stopped."""
    from streamguard.policy import load_policy
    from streamguard.security import load_publisher
    from streamguard.settings import Settings

    settings = Settings.from_env(
        broker=args.broker,
        policy_path=args.policy,
        web_port=args.web_port,
        app_id=args.app_id,
        signing_key_path=args.signing_key,
        keyring_path=args.keyring,
        insecure=args.insecure,
    )
    policy = load_policy(settings.policy_path)
    # Checked before anything starts, so a missing key is one plain line, not a crashed worker.
    load_publisher(
        settings.signing_key_path,
        settings.keyring_path,
        insecure=settings.insecure,
        ttl_s=settings.command_ttl_s,
    )
    return run_worker(
        settings, policy, create_topics=not args.no_create_topics, verbose=args.verbose
    )


def run_worker(
    settings: Any, policy: Any, *, create_topics: bool = True, verbose: bool = False
) -> int:
    """Run a worker with ``settings`` (starting the embedded broker if it names none)."""
    from streamguard.broker import BrokerError, EmbeddedBroker
    from streamguard.broker.admin import apply_topics
    from streamguard.settings import bootstrap_servers

    embedded = None
    if settings.broker is None:
        embedded = EmbeddedBroker().start()
        settings = settings.on_embedded(embedded.url)
        print(
            f"streamguard: started embedded broker at {embedded.url}", file=sys.stderr, flush=True
        )
    try:
        bootstrap = bootstrap_servers(settings.broker)
        try:
            with quiet_kafka_logs():
                if create_topics:
                    reports = asyncio.run(apply_topics(bootstrap))
                else:  # Faust meets an unreachable broker with tracebacks, not one line
                    asyncio.run(_check_reachable(bootstrap))
                    reports = []
        except BrokerError as exc:
            fail(str(exc), EXIT_RUNTIME)
        for report in reports:
            if report.status == "mismatch":
                print(f"streamguard: warning: topic {report.name} {report.detail}", file=sys.stderr)
        return _run_faust(settings, policy, verbose)
    finally:
        if embedded is not None:
            embedded.stop()


async def _check_reachable(bootstrap: str, timeout_s: float = 10.0) -> None:
    """Raise BrokerError unless the broker answers; creates and describes no topic."""
    from aiokafka import AIOKafkaClient
    from aiokafka.errors import KafkaError

    from streamguard.broker import BrokerError

    client = AIOKafkaClient(bootstrap_servers=bootstrap, request_timeout_ms=int(timeout_s * 1000))
    try:
        await asyncio.wait_for(client.bootstrap(), timeout_s)
    except (KafkaError, TimeoutError, OSError) as exc:
        raise BrokerError(
            f"cannot reach Kafka at {bootstrap}: {exc or type(exc).__name__}"
        ) from exc
    finally:
        await client.close()


def _run_faust(settings: Any, policy: Any, verbose: bool) -> int:
    from faust import Worker

    from streamguard.cli.gc_tuning import tune_gc
    from streamguard.faust_app import create_app
    from streamguard.security import INSECURE_BANNER

    built = create_app(settings, policy)
    tune_gc(settings.gc_young_threshold)  # after the app is built: its objects are frozen
    if not built.runtime.publisher.signs:
        print(INSECURE_BANNER, file=sys.stderr, flush=True)
    worker = Worker(built.app, loglevel="info" if verbose else "warning", quiet=True)
    # execute_from_commandline() only ever leaves by SystemExit (mode's NoReturn).
    try:
        worker.execute_from_commandline()
    except SystemExit as exc:
        return int(exc.code or 0)
