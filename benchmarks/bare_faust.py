"""The baseline of the end-to-end benchmark: a Faust agent that reads a topic and does nothing.

    python -m benchmarks.bare_faust --broker kafka://127.0.0.1:PORT --expect N --out FILE
                                    [--fetch-loop faust|streamguard]

A minimal faust-streaming app configured like the worker (raw bytes, the same consumer group
timings, no topic declaration, no leader topic), with one agent that iterates the stream's
events (acknowledging each, Faust's default). When the agent has seen ``--expect`` messages it
writes ``{"messages", "first", "last", "cpu_first", "cpu_last"}`` (``time.time()`` and the
process's CPU time, ``time.process_time()``, at the first and the last message) to ``--out``;
whoever started the process then stops it by pid.

``--fetch-loop streamguard`` runs the same agent on the worker's Faust app class, whose
consumer delivers messages without Faust's four tasks per message
(:mod:`streamguard.faust_app.drain`): what Faust would deliver per message with that loop.
The issue's baseline is Faust's own loop, the default.
"""

import argparse
import asyncio
import json
import tempfile
import time
from pathlib import Path
from typing import Any

import faust  # noqa: TID251 - the baseline is a Faust app by definition

from streamguard.faust_app.transport import App as WorkerApp
from streamguard.settings import Settings, faust_broker_url

__all__ = ["main"]


def main() -> None:
    """Run the bare agent until stopped (it writes ``--out`` once it saw ``--expect``)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--broker", required=True)
    parser.add_argument("--topic", default="streamguard.predictions")
    parser.add_argument("--expect", type=int, required=True, help="messages to wait for")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--app-id", default="bench-bare-faust")
    parser.add_argument("--datadir", type=Path, default=None, help="Faust's data folder")
    parser.add_argument(
        "--fetch-loop",
        choices=("faust", "streamguard"),
        default="faust",
        help="Faust's own fetch loop, or the worker's (streamguard.faust_app.drain)",
    )
    args = parser.parse_args()
    defaults = Settings()
    app_class = faust.App if args.fetch_loop == "faust" else WorkerApp
    app = app_class(
        args.app_id,
        broker=faust_broker_url(args.broker),
        autodiscover=False,
        store="memory://",
        datadir=str(args.datadir or tempfile.mkdtemp(prefix="bench-bare-faust-")),
        key_serializer="raw",
        value_serializer="raw",
        topic_allow_declare=False,
        topic_disable_leader=True,
        consumer_auto_offset_reset="earliest",
        broker_rebalance_timeout=defaults.broker_rebalance_timeout_s,
        broker_session_timeout=defaults.broker_session_timeout_s,
        broker_heartbeat_interval=defaults.broker_heartbeat_interval_s,
        web_enabled=False,
    )
    topic = app.topic(
        args.topic, key_type=bytes, value_type=bytes, key_serializer="raw", value_serializer="raw"
    )
    expect: int = args.expect
    out: Path = args.out

    @app.agent(topic, name="bare")
    async def bare(stream: Any) -> None:
        count = 0
        first = cpu_first = 0.0
        async for _event in stream.events():
            count += 1
            if count == 1:
                first, cpu_first = time.time(), time.process_time()
            if count == expect:
                last, cpu_last = time.time(), time.process_time()
                text = json.dumps(
                    {
                        "messages": count,
                        "first": first,
                        "last": last,
                        "cpu_first": cpu_first,
                        "cpu_last": cpu_last,
                    }
                )
                await asyncio.to_thread(out.write_text, text)

    del bare
    worker = faust.Worker(app, loglevel="warning", quiet=True)
    worker.execute_from_commandline()


if __name__ == "__main__":
    main()
