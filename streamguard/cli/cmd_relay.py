"""``streamguard relay``: deliver the alerts topic to Alertmanager and/or a generic webhook.

Each alert goes to every configured sink; its offset is committed only once all of them have
accepted it (or refused it for good), so an alert is not lost while a receiver is down, and a
restarted relay resumes where its group left off. SIGTERM or Ctrl-C stops it cleanly (exit 0).
"""

import argparse
import asyncio
import logging
import signal
import sys
from typing import Any

from streamguard.cli.errors import EXIT_USAGE, fail, quiet_kafka_logs

__all__ = ["register"]


def register(sub: Any) -> None:
    """Add the ``relay`` command."""
    parser = sub.add_parser(
        "relay", help="deliver alerts to an Alertmanager and/or a webhook (on-call)"
    )
    parser.add_argument(
        "--broker", default=None, metavar="URL", help="Kafka URL (default: $STREAMGUARD_BROKER)"
    )
    parser.add_argument(
        "--alertmanager",
        default=None,
        metavar="URL",
        help="Alertmanager base URL (POST /api/v2/alerts)",
    )
    parser.add_argument(
        "--webhook", default=None, metavar="URL", help="webhook URL; gets the alert JSON as is"
    )
    parser.add_argument(
        "--runbook-url",
        default=None,
        metavar="URL",
        help="runbook link for Alertmanager ({guard}, {deployment} are filled in; "
        "default: the README's guards section)",
    )
    parser.add_argument(
        "--group", default=None, metavar="ID", help="consumer group (default: streamguard-relay)"
    )
    parser.add_argument(
        "-v", "--verbose", action="store_true", help="log at INFO instead of WARNING"
    )
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    """Check the arguments (one plain error line on failure), then relay until stopped."""
    if not args.alertmanager and not args.webhook:
        fail("relay needs a sink: pass --alertmanager URL and/or --webhook URL", EXIT_USAGE)

    from streamguard.delivery import (
        DEFAULT_GROUP,
        DEFAULT_RUNBOOK_URL,
        AlertmanagerSink,
        AlertRelay,
        HttpSink,
        WebhookSink,
    )
    from streamguard.delivery.sinks import check_url
    from streamguard.settings import Settings, bootstrap_servers

    settings = Settings.from_env(broker=args.broker)
    if settings.broker is None:
        fail("relay needs a broker: pass --broker URL or set STREAMGUARD_BROKER", EXIT_USAGE)
    bootstrap = bootstrap_servers(settings.broker)
    sinks: list[HttpSink] = []
    if args.alertmanager:
        check_url(args.alertmanager, "--alertmanager")
        sinks.append(
            AlertmanagerSink(args.alertmanager, runbook_url=args.runbook_url or DEFAULT_RUNBOOK_URL)
        )
    if args.webhook:
        sinks.append(WebhookSink(check_url(args.webhook, "--webhook")))
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    relay = AlertRelay(bootstrap, sinks, group_id=args.group or DEFAULT_GROUP)
    asyncio.run(_serve(relay))
    return 0


async def _serve(relay: Any) -> None:
    """Run ``relay`` until SIGTERM/SIGINT; a broker failure surfaces as a RelayError."""
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, relay.request_stop)
    # aiokafka logs each failed connection itself; the one plain line comes from RelayError.
    with quiet_kafka_logs():
        await relay.start()
    where = ", ".join(f"{name} {sink.url}" for name, sink in relay.sinks.items())
    print(
        f"streamguard: relaying {relay.topic} (group {relay.group_id}) to {where}",
        file=sys.stderr,
        flush=True,
    )
    await relay.run()
