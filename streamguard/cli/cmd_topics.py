"""``streamguard topics apply|list``: the topic specs under ``topics/`` and a broker."""

import argparse
import asyncio
import os
from typing import Any

from streamguard.cli.errors import fail, quiet_kafka_logs

__all__ = ["register"]


def register(sub: Any) -> None:
    """Add the ``topics`` command group."""
    parser = sub.add_parser("topics", help="create topics from topics/*.toml, or list the specs")
    actions = parser.add_subparsers(dest="topics_command", metavar="ACTION")
    actions.required = True
    apply = actions.add_parser("apply", help="create missing topics on a broker")
    apply.add_argument("--broker", default=None, help="Kafka URL (default: $STREAMGUARD_BROKER)")
    apply.set_defaults(handler=run_apply)
    listing = actions.add_parser("list", help="print the topic specs")
    listing.set_defaults(handler=run_list)


def run_apply(args: argparse.Namespace) -> int:
    """Create missing topics; exit 1 if an existing topic disagrees with its spec."""
    from streamguard.broker.admin import apply_topics
    from streamguard.settings import BROKER_ENV, bootstrap_servers

    url = args.broker or os.environ.get(BROKER_ENV)
    if not url:
        fail(f"no broker given: pass --broker URL or set {BROKER_ENV}", 2)
    with quiet_kafka_logs():
        reports = asyncio.run(apply_topics(bootstrap_servers(url)))
    for report in reports:
        line = f"{report.status:8} {report.name} ({report.partitions} partitions)"
        print(f"{line}: {report.detail}" if report.detail else line)
    return 1 if any(r.status == "mismatch" for r in reports) else 0


def run_list(args: argparse.Namespace) -> int:
    """Print one line per topic spec."""
    from streamguard.contracts import load_topic_specs

    for spec in load_topic_specs().values():
        kinds = ",".join(spec.value_schemas)
        print(f"{spec.name:28} partitions={spec.partitions:<3} key={spec.key:12} values={kinds}")
    return 0
