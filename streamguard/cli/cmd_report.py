"""``streamguard report --deployment D --out FILE``: a self-contained HTML report.

Data from the broker (the verdicts and control topics) or from files (``streamguard replay
EVENTS --verdicts V.jsonl > COMMANDS.jsonl``): per-slice statistics over time per guard, the
canary's slice mix against the baseline's, and the commands on the same time axis.
"""

import argparse
import asyncio
import os
from pathlib import Path
from typing import Any

from streamguard.cli.errors import EXIT_CONFIG, EXIT_USAGE, fail, quiet_kafka_logs

__all__ = ["register"]


def register(sub: Any) -> None:
    """Add the ``report`` command."""
    parser = sub.add_parser("report", help="write an HTML report of a deployment")
    parser.add_argument("--deployment", required=True, help="the guarded service")
    parser.add_argument("--out", type=Path, required=True, metavar="FILE", help="HTML file")
    parser.add_argument("--broker", default=None, help="read the topics of this Kafka")
    parser.add_argument("--verdicts", type=Path, default=None, metavar="FILE", help="JSON lines")
    parser.add_argument("--commands", type=Path, default=None, metavar="FILE", help="JSON lines")
    parser.set_defaults(handler=run)


def _lines(path: Path) -> list[dict[str, Any]]:
    import orjson

    try:
        text = path.read_bytes()
    except OSError as exc:
        fail(f"{path}: cannot read: {exc.strerror or exc}", EXIT_CONFIG)
    out = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            value = orjson.loads(line)
        except orjson.JSONDecodeError:
            fail(f"{path}:{number}: not a JSON line", EXIT_CONFIG)
        if isinstance(value, dict):
            out.append(value)
    return out


def _from_broker(url: str) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    import orjson

    from streamguard.broker.admin import read_all
    from streamguard.contracts import load_topic_specs
    from streamguard.settings import bootstrap_servers

    specs = load_topic_specs()
    bootstrap = bootstrap_servers(url)
    with quiet_kafka_logs():
        raw_verdicts = asyncio.run(read_all(bootstrap, specs["verdicts"].name))
        raw_commands = asyncio.run(read_all(bootstrap, specs["control"].name))

    def parsed(values: list[bytes]) -> list[dict[str, Any]]:
        out = []
        for value in values:
            try:
                message = orjson.loads(value)
            except orjson.JSONDecodeError:
                continue
            if isinstance(message, dict):
                out.append(message)
        return out

    return parsed(raw_verdicts), parsed(raw_commands)


def run(args: argparse.Namespace) -> int:
    """Write the report; print where."""
    from streamguard.report import build_report, report_data
    from streamguard.settings import BROKER_ENV

    url = args.broker or (None if args.verdicts else os.environ.get(BROKER_ENV))
    if url and args.verdicts:
        fail("give either --broker or --verdicts, not both", EXIT_USAGE)
    if url:
        verdicts, commands = _from_broker(url)
    elif args.verdicts:
        verdicts = _lines(args.verdicts)
        commands = _lines(args.commands) if args.commands else []
    else:
        fail(f"no data: pass --verdicts FILE or --broker URL (or set {BROKER_ENV})", EXIT_USAGE)
    data = report_data(args.deployment, verdicts, commands)
    if not data["guards"]:
        fail(f"no verdicts for deployment {args.deployment!r}", EXIT_CONFIG)
    try:
        args.out.write_text(build_report(args.deployment, verdicts, commands), encoding="utf-8")
    except OSError as exc:
        fail(f"{args.out}: cannot write: {exc.strerror or exc}", EXIT_CONFIG)
    print(f"wrote {args.out}: {len(data['guards'])} guard(s), {len(data['commands'])} command(s)")
    return 0
