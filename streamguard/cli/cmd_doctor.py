"""``streamguard doctor``: check a worker's and its subscribers' configuration, and the broker.

Each check prints one line, ``ok``, ``WARN`` or ``FAIL``, in plain words; the exit code is 1 if
anything failed. Checked: the broker answers; every topic exists with the partitions of its
spec; the signing key and the subscribers' keyring are readable and agree (key id, public key,
issuer, audiences); the clock of this host against the broker's (where the broker stamps
append times).
"""

import argparse
import asyncio
import contextlib
import os
import time
from pathlib import Path
from typing import Any

from streamguard.cli.errors import EXIT_USAGE, fail, quiet_kafka_logs

__all__ = ["broker_skew", "register", "skew_verdict"]

_CLOCK_TOPIC = "streamguard.doctor"


def broker_skew(sent_s: float, received_s: float, append_time_ms: int) -> float:
    """Seconds the broker's clock is ahead of this host's (negative: behind).

    Parameters
    ----------
    sent_s, received_s
        This host's wall clock just before the send and once the broker acknowledged it.
    append_time_ms
        The broker's append time of the message, in milliseconds since the epoch.

    Returns
    -------
    float
        The append time minus the middle of the round trip, the best estimate of when the
        broker appended without knowing how the round trip splits.
    """
    return append_time_ms / 1000.0 - (sent_s + received_s) / 2


def skew_verdict(skew_s: float | None, max_skew_s: float) -> tuple[str, str]:
    """The doctor's line about clock skew: ``(level, text)``, level ``ok``, ``warn`` or ``fail``.

    Parameters
    ----------
    skew_s
        Measured skew (:func:`broker_skew`), or None when the broker does not stamp append
        times, which leaves it unknown.
    max_skew_s
        Largest tolerated skew, either way; exactly this much is still ``ok``.

    Returns
    -------
    tuple[str, str]
        The level and the sentence printed after it.

    Examples
    --------
    >>> skew_verdict(-1.5, 30.0)
    ('ok', 'clock skew with the broker -1.50 s (tolerated 30 s)')
    >>> skew_verdict(31.0, 30.0)[0]
    'fail'
    """
    if skew_s is None:
        return (
            "warn",
            "clock skew unknown: the broker does not stamp append times (the embedded broker "
            "never does); keep hosts on NTP, commands tolerate the subscribers' skew setting",
        )
    level = "ok" if abs(skew_s) <= max_skew_s else "fail"
    return (level, f"clock skew with the broker {skew_s:+.2f} s (tolerated {max_skew_s:.0f} s)")


def register(sub: Any) -> None:
    """Add the ``doctor`` command."""
    parser = sub.add_parser("doctor", help="check configuration, keys and topics against a broker")
    parser.add_argument("--broker", default=None, help="Kafka URL (default: $STREAMGUARD_BROKER)")
    parser.add_argument("--signing-key", type=Path, default=None, metavar="FILE")
    parser.add_argument("--keyring", type=Path, default=None, metavar="FILE", help="subscribers'")
    parser.add_argument("--issuer", action="append", default=None, help="accepted by subscribers")
    parser.add_argument("--audience", action="append", default=None, help="subscribers' audiences")
    parser.add_argument(
        "--deployment", action="append", default=[], help="deployments the worker guards"
    )
    parser.add_argument("--max-skew-s", type=float, default=30.0, help="tolerated clock skew")
    parser.set_defaults(handler=run)


def _print(level: str, text: str) -> None:
    print(f"{ {'ok': 'ok  ', 'warn': 'WARN', 'fail': 'FAIL'}[level] } {text}")


async def _broker_checks(bootstrap: str) -> list[tuple[str, str]]:
    from aiokafka import AIOKafkaClient
    from aiokafka.errors import KafkaError

    from streamguard.contracts import load_topic_specs

    specs = load_topic_specs()
    # A metadata request for all topics: describing a topic by name makes brokers that
    # auto-create topics (the embedded one does) create it, with the wrong partitions.
    client = AIOKafkaClient(bootstrap_servers=bootstrap, request_timeout_ms=10_000)
    try:
        await asyncio.wait_for(client.bootstrap(), 10)
        metadata = await asyncio.wait_for(client.fetch_all_metadata(), 10)
    except (KafkaError, TimeoutError, OSError) as exc:
        return [("fail", f"cannot reach Kafka at {bootstrap}: {exc or type(exc).__name__}")]
    finally:
        await client.close()
    out = [("ok", f"broker {bootstrap} answers")]
    for spec in specs.values():
        partitions = metadata.partitions_for_topic(spec.name)
        if not partitions:
            out.append(("fail", f"topic {spec.name} is missing (run `streamguard topics apply`)"))
        elif len(partitions) != spec.partitions:
            out.append(
                (
                    "fail",
                    f"topic {spec.name} has {len(partitions)} partitions, its spec "
                    f"{spec.partitions} (auto-created? turn off auto.create.topics.enable)",
                )
            )
        else:
            out.append(("ok", f"topic {spec.name}: {len(partitions)} partitions"))
    return out


async def _clock_check(bootstrap: str, max_skew_s: float) -> tuple[str, str]:
    from aiokafka import AIOKafkaProducer
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic
    from aiokafka.errors import KafkaError

    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap)
    try:
        await admin.start()
        with contextlib.suppress(KafkaError):  # it exists from an earlier run
            await admin.create_topics(
                [NewTopic(_CLOCK_TOPIC, 1, 1, {"message.timestamp.type": "LogAppendTime"})]
            )
        await producer.start()
        sent = time.time()
        meta = await asyncio.wait_for(
            producer.send_and_wait(_CLOCK_TOPIC, b"clock", timestamp_ms=0), 10
        )
        received = time.time()
    except (KafkaError, TimeoutError, OSError) as exc:
        return ("warn", f"clock skew unknown: {exc or type(exc).__name__}")
    finally:
        await producer.stop()
        await admin.close()
    # Type 1 is LogAppendTime: otherwise the timestamp is the producer's own clock.
    skew = broker_skew(sent, received, meta.timestamp) if meta.timestamp_type == 1 else None
    return skew_verdict(skew, max_skew_s)


def _key_checks(args: argparse.Namespace) -> list[tuple[str, str]]:
    from streamguard.security import KeyFileError, load_keyring, load_signing_key
    from streamguard.security.consistency import key_problems

    key_path = args.signing_key or (
        Path(p) if (p := os.environ.get("STREAMGUARD_SIGNING_KEY")) else None
    )
    if key_path is None:
        return [("warn", "no signing key given (--signing-key): commands would be unsigned")]
    try:
        key = load_signing_key(key_path)
    except KeyFileError as exc:
        return [("fail", str(exc))]
    out = [("ok", f"signing key {key.key_id}, issuer {key.issuer!r}")]
    if args.keyring is None:
        out.append(("warn", "no subscriber keyring given (--keyring): cannot check they agree"))
        return out
    try:
        ring = load_keyring(args.keyring)
    except KeyFileError as exc:
        return [*out, ("fail", str(exc))]
    findings = key_problems(
        key,
        ring,
        issuers=args.issuer,
        audiences=args.audience,
        deployments=args.deployment,
        now=time.time(),
    )
    return out + [(f.level, f.text) for f in findings]


def run(args: argparse.Namespace) -> int:
    """Run every check; exit 1 if one failed."""
    from streamguard.settings import BROKER_ENV, bootstrap_servers

    url = args.broker or os.environ.get(BROKER_ENV)
    if not url:
        fail(f"no broker given: pass --broker URL or set {BROKER_ENV}", EXIT_USAGE)
    bootstrap = bootstrap_servers(url)
    results = _key_checks(args)
    with quiet_kafka_logs():
        broker = asyncio.run(_broker_checks(bootstrap))
        results += broker
        if broker[0][0] == "ok":
            results.append(asyncio.run(_clock_check(bootstrap, args.max_skew_s)))
    for level, text in results:
        _print(level, text)
    failed = sum(level == "fail" for level, _ in results)
    print(f"{failed} problem(s)" if failed else "no problems found")
    return 1 if failed else 0
