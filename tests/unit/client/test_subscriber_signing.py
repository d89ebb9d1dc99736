"""The subscriber's checks, record by record (no broker): what reaches the handler, what not.

The broker-level guarantees (commit after success, redelivery) are in
``tests/integration/test_client_signing.py``.
"""

import asyncio
import copy
import logging
from collections.abc import Callable
from types import SimpleNamespace
from typing import Any

import orjson
import pytest

from streamguard.client import ControlSubscriber
from streamguard.contracts import Command
from streamguard.exceptions import ConfigError
from streamguard.security import KeyRing, SigningKey, generate_key, sign_command

NOW = 1_790_000_300.0
TTL = 300.0
CURRENT = generate_key("streamguard-prod")
PREVIOUS = generate_key("streamguard-prod")
ATTACKER = generate_key("streamguard-prod")
RING = KeyRing([PREVIOUS.verifying_key(), CURRENT.verifying_key()])
COMMAND = Command(
    "pause", "home-ranker", "v42", "shadow", {"tier": "free"}, {"value": 0.06}, NOW - 5
)


def signed(key: SigningKey = CURRENT, now: float = NOW, **kwargs: Any) -> dict[str, Any]:
    return sign_command(COMMAND, key, TTL, now, **kwargs)


def changed(path: tuple[str, ...], value: Any) -> dict[str, Any]:
    message = copy.deepcopy(signed())
    target = message
    for name in path[:-1]:
        target = target[name]
    target[path[-1]] = value
    return message


class Handler:
    def __init__(self) -> None:
        self.calls: list[Command] = []

    async def __call__(self, command: Command) -> None:
        self.calls.append(command)


def make_subscriber(handler: Handler, **kwargs: Any) -> ControlSubscriber:
    args: dict[str, Any] = {"keyring": RING, "clock": lambda: NOW} | kwargs
    return ControlSubscriber("127.0.0.1:9", handler, "serving", **args)


def deliver(sub: ControlSubscriber, *messages: dict[str, Any] | bytes) -> list[bool]:
    """Run each message through the subscriber as consecutive records of one partition."""

    async def go() -> list[bool]:
        results = []
        for offset, message in enumerate(messages):
            value = message if isinstance(message, bytes) else orjson.dumps(message)
            record = SimpleNamespace(topic="control", partition=0, offset=offset, value=value)
            results.append(await sub._process(record))
        return results

    return asyncio.run(go())


impostor = SigningKey(ATTACKER.private_key, CURRENT.key_id, CURRENT.issuer)
CASES: list[tuple[str, Callable[[], list[dict[str, Any]]], dict[str, Any], str | None]] = [
    # (id, messages delivered, subscriber options, reason the last one is refused with)
    ("valid", lambda: [signed()], {}, None),
    ("valid-previous-key", lambda: [signed(PREVIOUS)], {}, None),
    ("forged", lambda: [signed(impostor)], {}, "bad_signature"),
    ("tampered-action", lambda: [changed(("action",), "rollback")], {}, "bad_signature"),
    ("tampered-slice", lambda: [changed(("slice", "tier"), "premium")], {}, "bad_signature"),
    ("tampered-evidence", lambda: [changed(("evidence", "value"), 0.5)], {}, "bad_signature"),
    ("tampered-exp", lambda: [changed(("signature", "exp"), NOW + 9e6)], {}, "bad_signature"),
    ("expired", lambda: [signed(now=NOW - TTL - 31)], {}, "expired"),
    ("expired-within-skew", lambda: [signed(now=NOW - TTL - 29)], {}, None),
    ("not-yet-valid", lambda: [signed(now=NOW + 31)], {}, "not_yet_valid"),
    ("skew-configurable", lambda: [signed(now=NOW + 31)], {"clock_skew_s": 60}, None),
    ("wrong-audience", lambda: [signed(audience="search")], {}, "wrong_audience"),
    ("fleet-audience", lambda: [signed(audience="eu")], {"audiences": {"eu"}}, None),
    ("unknown-key", lambda: [signed(generate_key("streamguard-prod"))], {}, "unknown_key"),
    ("wrong-issuer", lambda: [signed()], {"issuers": {"streamguard-staging"}}, "wrong_issuer"),
    ("unsigned-v1", lambda: [COMMAND.to_dict()], {}, "unsigned"),
    ("unsigned-v1-allowed", lambda: [COMMAND.to_dict()], {"require_signature": False}, None),
    ("malformed", lambda: [changed(("signature", "sig"), "short")], {}, "malformed_signature"),
    ("replayed", lambda: [signed(), signed()], {}, "replay"),
    ("replayed-re-signed", lambda: [signed(), signed(now=NOW + 1)], {}, "replay"),
]


@pytest.mark.parametrize(
    ("messages", "options", "reason"), [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
def test_only_authentic_fresh_commands_reach_the_handler(
    messages: Callable[[], list[dict[str, Any]]], options: dict[str, Any], reason: str | None
) -> None:
    handler = Handler()
    sub = make_subscriber(handler, **options)
    results = deliver(sub, *messages())
    stats = sub.stats()
    if reason is None:
        assert results == [True]
        assert handler.calls == [COMMAND]
        assert stats["rejected"] == {}
    elif reason == "replay":
        assert results == [True, False]
        assert handler.calls == [COMMAND]  # once
        assert stats["duplicates"] == 1
        assert stats["rejected"] == {}
    else:
        assert results == [False]
        assert handler.calls == []
        assert stats["rejected"] == {reason: 1}


def test_a_rejection_is_counted_every_time_and_logged_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    sub = make_subscriber(Handler())
    forged = signed(impostor)
    with caplog.at_level(logging.INFO, logger="streamguard.client"):
        deliver(sub, forged, forged, forged, signed(), signed(), signed())
    assert sub.stats()["rejected"] == {"bad_signature": 3}
    assert sub.stats()["duplicates"] == 2
    lines = [r.getMessage() for r in caplog.records]
    assert sum("bad_signature" in line for line in lines) == 1
    assert sum("replay" in line for line in lines) == 1
    assert any(COMMAND.command_id in line and "bad_signature" in line for line in lines)


def test_a_forged_copy_of_a_handled_command_is_forged_not_a_replay() -> None:
    handler = Handler()
    sub = make_subscriber(handler)
    deliver(sub, signed(), signed(impostor))
    assert sub.stats()["rejected"] == {"bad_signature": 1}
    assert sub.stats()["duplicates"] == 0
    assert len(handler.calls) == 1


def test_commands_for_other_deployments_are_filtered_before_their_audience_is_judged() -> None:
    handler = Handler()
    sub = make_subscriber(handler, deployments={"search-ranker"}, audiences={"search-ranker"})
    deliver(sub, signed())
    assert sub.stats()["filtered"] == 1
    assert sub.stats()["rejected"] == {}


def test_the_users_verify_hook_sees_only_authentic_commands() -> None:
    seen: list[str] = []

    def hook(raw: dict[str, Any]) -> str | None:
        seen.append(raw["action"])
        return "not in maintenance window" if raw["action"] == "pause" else None

    sub = make_subscriber(Handler(), verify=hook)
    deliver(sub, signed(impostor), signed())
    assert seen == ["pause"]
    assert sub.stats()["rejected"] == {"bad_signature": 1, "unverified": 1}


def test_signature_requirement_follows_the_keyring_unless_set() -> None:
    assert make_subscriber(Handler()).stats()["signatures_required"] is True
    assert make_subscriber(Handler(), keyring=None).stats()["signatures_required"] is False
    with pytest.raises(ConfigError, match="no keyring"):
        make_subscriber(Handler(), keyring=None, require_signature=True)
