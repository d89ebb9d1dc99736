"""``streamguard status``: every rollout's state from the control topic, pending approvals first."""

import argparse
import asyncio
import datetime
import os
from typing import Any

from streamguard.cli.errors import EXIT_USAGE, fail, quiet_kafka_logs

__all__ = ["register"]


def register(sub: Any) -> None:
    """Add the ``status`` command."""
    parser = sub.add_parser("status", help="rollout states and pending approvals")
    parser.add_argument("--broker", default=None, help="Kafka URL (default: $STREAMGUARD_BROKER)")
    parser.add_argument("--deployment", default=None, help="only this deployment")
    parser.set_defaults(handler=run)


def _when(ts: float) -> str:
    return datetime.datetime.fromtimestamp(ts, tz=datetime.UTC).strftime("%Y-%m-%d %H:%M:%SZ")


def run(args: argparse.Namespace) -> int:
    """Print pending approvals, then every rollout."""
    import orjson

    from streamguard.broker.admin import read_all
    from streamguard.contracts import load_topic_specs
    from streamguard.decisions.rollouts import RolloutView
    from streamguard.settings import BROKER_ENV, bootstrap_servers

    url = args.broker or os.environ.get(BROKER_ENV)
    if not url:
        fail(f"no broker given: pass --broker URL or set {BROKER_ENV}", EXIT_USAGE)
    view = RolloutView()
    with quiet_kafka_logs():
        values = asyncio.run(read_all(bootstrap_servers(url), load_topic_specs()["control"].name))
    for value in values:
        try:
            message = orjson.loads(value)
        except orjson.JSONDecodeError:
            continue
        if isinstance(message, dict) and args.deployment in (None, message.get("deployment")):
            view.apply(message)
    pending = view.pending()
    print(f"pending approvals: {len(pending)}")
    for r in pending:
        print(
            f"  {r.deployment} {r.model_version}: paused by {r.guard} on {r.slice} at "
            f"{_when(r.ts)} (command {r.command_id}); `streamguard approve|reject {r.deployment}`"
        )
    print("rollouts:")
    for r in view.rollouts():
        who = f" by {r.by}: {r.reason}" if r.by else ""
        print(f"  {r.deployment} {r.model_version}: {r.state} ({r.guard}, {r.slice}){who}")
    return 0
