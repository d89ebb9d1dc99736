"""``streamguard approve|reject DEPLOYMENT``: a person's decision on a paused rollout.

``approve`` publishes a signed ``resume`` for the paused version, ``reject`` a signed
``rollback``; both carry who decided and why in their evidence, and go to the control topic
where serving and the worker (which resumes its guards only on a verified approval) read them.
Without ``--version`` the deployment's paused version is looked up on the control topic.
"""

import argparse
import asyncio
import os
import time
from pathlib import Path
from typing import Any

from streamguard.cli.errors import EXIT_USAGE, fail, quiet_kafka_logs

__all__ = ["register"]


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("deployment", help="the guarded service")
    parser.add_argument("--reason", required=True, help="why (kept in the command's evidence)")
    parser.add_argument("--by", required=True, help="who decides (kept in the evidence)")
    parser.add_argument("--version", default=None, help="model version (default: the paused one)")
    parser.add_argument("--broker", default=None, help="Kafka URL (default: $STREAMGUARD_BROKER)")
    parser.add_argument(
        "--signing-key",
        type=Path,
        default=None,
        metavar="FILE",
        help="key to sign with (default: $STREAMGUARD_SIGNING_KEY)",
    )
    parser.add_argument("--insecure", action="store_true", help="publish unsigned (demos only)")


def register(sub: Any) -> None:
    """Add the ``approve`` and ``reject`` commands."""
    approve = sub.add_parser("approve", help="resume a paused rollout (signed resume command)")
    _common(approve)
    approve.set_defaults(handler=run, action="resume", who="approved_by")
    reject = sub.add_parser("reject", help="roll back a paused rollout (signed rollback command)")
    _common(reject)
    reject.set_defaults(handler=run, action="rollback", who="rejected_by")


def run(args: argparse.Namespace) -> int:
    """Publish the decision; print the command id."""
    import orjson

    from streamguard.broker.admin import publish, read_all
    from streamguard.contracts import Command, load_topic_specs
    from streamguard.decisions.rollouts import RolloutView
    from streamguard.security import load_publisher
    from streamguard.settings import BROKER_ENV, bootstrap_servers

    for name in ("reason", "by"):
        if not getattr(args, name).strip():
            fail(f"--{name} must not be empty", EXIT_USAGE)
    url = args.broker or os.environ.get(BROKER_ENV)
    if not url:
        fail(f"no broker given: pass --broker URL or set {BROKER_ENV}", EXIT_USAGE)
    key_path = args.signing_key or (
        Path(p) if (p := os.environ.get("STREAMGUARD_SIGNING_KEY")) else None
    )
    publisher = load_publisher(key_path, None, insecure=args.insecure, ttl_s=3600.0)
    bootstrap = bootstrap_servers(url)
    control = load_topic_specs()["control"].name
    version = args.version
    with quiet_kafka_logs():
        if version is None:
            view = RolloutView()
            for value in asyncio.run(read_all(bootstrap, control)):
                try:
                    message = orjson.loads(value)
                except orjson.JSONDecodeError:
                    continue  # not a command; the subscriber counts those
                if isinstance(message, dict):
                    view.apply(message)
            version = view.paused_version(args.deployment)
            if version is None:
                fail(f"{args.deployment} has no paused rollout; name one with --version", 3)
        command = Command(
            action=args.action,
            deployment=args.deployment,
            model_version=version,
            guard="manual",
            slice=None,
            evidence={args.who: args.by.strip(), "reason": args.reason.strip()},
            ts=time.time(),
        )
        value = publisher.command_bytes(command, command.ts)
        asyncio.run(publish(bootstrap, control, args.deployment.encode(), value))
    signed = "signed" if publisher.signs else "UNSIGNED (insecure)"
    print(f"{args.action} {args.deployment} {version}: command {command.command_id} ({signed})")
    return 0
