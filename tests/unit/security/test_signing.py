"""Signing and verification: every way a command can be wrong is refused with its reason."""

import base64
import copy
from collections.abc import Callable
from typing import Any

import orjson
import pytest
from cryptography.exceptions import InvalidSignature
from hypothesis import assume, given
from hypothesis import strategies as st

from streamguard.contracts import alert_for
from streamguard.security import (
    REASONS,
    KeyRing,
    SigningKey,
    canonical_bytes,
    check,
    sign,
    sign_alert,
    sign_command,
    signing_payload,
    verify,
)
from streamguard.security.signing import SIGNING_CONTEXT
from tests.unit.security._keys import NOW, SKEW, TTL, Keys, make_command

AUDIENCES = {"home-ranker"}


def signed(keys: Keys, **overrides: Any) -> dict[str, Any]:
    """A command signed by the current key at NOW, unless overridden."""
    args: dict[str, Any] = {"key": keys.current, "ttl_s": TTL, "now": NOW} | overrides
    return sign_command(make_command(), **args)


def tampered(path: tuple[str, ...], value: Any) -> Callable[[Keys], dict[str, Any]]:
    """A valid signed command with one field changed after signing."""

    def build(keys: Keys) -> dict[str, Any]:
        message = copy.deepcopy(signed(keys))
        target = message
        for name in path[:-1]:
            target = target[name]
        target[path[-1]] = value
        return message

    return build


def with_block(**changes: Any) -> Callable[[Keys], dict[str, Any]]:
    """A valid signed command whose signature block is changed (None deletes a claim)."""

    def build(keys: Keys) -> dict[str, Any]:
        message = signed(keys)
        block = dict(message["signature"])
        for name, value in changes.items():
            if value is None:
                block.pop(name, None)
            else:
                block[name] = value
        return message | {"signature": block}

    return build


def forged(keys: Keys) -> dict[str, Any]:
    """Signed by the attacker's key, claiming the worker's key id and issuer."""
    impostor = SigningKey(keys.attacker.private_key, keys.current.key_id, keys.current.issuer)
    return signed(keys, key=impostor)


def resigned_with_other_issuer(keys: Keys) -> dict[str, Any]:
    """Authentic signature by the current key, but claiming another issuer."""
    return signed(keys, key=SigningKey(keys.current.private_key, keys.current.key_id, "staging"))


def unsigned(keys: Keys) -> dict[str, Any]:
    return make_command().to_dict() | {"schema_version": 2}


CASES: list[tuple[str, Callable[[Keys], dict[str, Any]], float, str | None]] = [
    # (id, message builder, verification time, expected reason)
    ("valid", signed, NOW + 1, None),
    ("valid-by-previous-key", lambda k: signed(k, key=k.previous), NOW + 1, None),
    ("forged", forged, NOW + 1, "bad_signature"),
    ("tampered-action", tampered(("action",), "rollback"), NOW + 1, "bad_signature"),
    ("tampered-slice", tampered(("slice", "platform"), "ios"), NOW + 1, "bad_signature"),
    ("tampered-slice-removed", tampered(("slice",), None), NOW + 1, "bad_signature"),
    ("tampered-evidence", tampered(("evidence", "value"), 0.9), NOW + 1, "bad_signature"),
    ("tampered-deployment", tampered(("deployment",), "search"), NOW + 1, "bad_signature"),
    ("tampered-field-added", tampered(("reason",), "obey"), NOW + 1, "bad_signature"),
    ("tampered-exp", tampered(("signature", "exp"), NOW + 10**6), NOW + 1, "bad_signature"),
    ("tampered-iat", tampered(("signature", "iat"), NOW - 1), NOW + 1, "bad_signature"),
    ("tampered-aud", tampered(("signature", "aud"), "x"), NOW + 1, "bad_signature"),
    ("tampered-version", tampered(("schema_version",), 3), NOW + 1, "bad_signature"),
    ("expired", signed, NOW + TTL + SKEW + 1, "expired"),
    ("expired-within-skew", signed, NOW + TTL + SKEW - 1, None),
    ("not-yet-valid-beyond-skew", signed, NOW - SKEW - 1, "not_yet_valid"),
    ("not-yet-valid-within-skew", signed, NOW - SKEW + 1, None),
    ("wrong-audience", lambda k: signed(k, audience="search-ranker"), NOW + 1, "wrong_audience"),
    ("unknown-key", lambda k: signed(k, key=k.attacker), NOW + 1, "unknown_key"),
    ("wrong-issuer", resigned_with_other_issuer, NOW + 1, "wrong_issuer"),
    ("unsigned", unsigned, NOW + 1, "unsigned"),
    ("malformed-not-object", tampered(("signature",), "sig"), NOW + 1, "malformed_signature"),
    ("malformed-null", tampered(("signature",), None), NOW + 1, "malformed_signature"),
    ("malformed-alg", with_block(alg="HS256"), NOW + 1, "malformed_signature"),
    ("malformed-no-kid", with_block(kid=None), NOW + 1, "malformed_signature"),
    ("malformed-no-aud", with_block(aud=None), NOW + 1, "malformed_signature"),
    ("malformed-exp-text", with_block(exp="tomorrow"), NOW + 1, "malformed_signature"),
    ("malformed-exp-bool", with_block(exp=True), NOW + 1, "malformed_signature"),
    ("malformed-exp-before-iat", with_block(exp=NOW - 1), NOW + 1, "malformed_signature"),
    ("malformed-sig-base64", with_block(sig="!!not base64!!"), NOW + 1, "malformed_signature"),
    ("malformed-sig-short", with_block(sig="AAAA"), NOW + 1, "malformed_signature"),
    ("malformed-sig-padded", lambda k: padded(signed(k)), NOW + 1, "malformed_signature"),
]


def padded(message: dict[str, Any]) -> dict[str, Any]:
    """The same signature bytes spelled with base64 padding: only one spelling is accepted."""
    block = message["signature"] | {"sig": message["signature"]["sig"] + "=="}
    return message | {"signature": block}


@pytest.mark.parametrize(
    ("build", "now", "expected"), [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
def test_each_case_is_accepted_or_refused_with_its_reason(
    keys: Keys, build: Callable[[Keys], dict[str, Any]], now: float, expected: str | None
) -> None:
    message = build(keys)
    assert verify(message, keys.ring, AUDIENCES, now, skew_s=SKEW) == expected
    # The reason survives the wire: parse the JSON the subscriber would receive.
    assert verify(orjson.loads(orjson.dumps(message)), keys.ring, AUDIENCES, now) == expected


def test_every_reason_is_exercised_by_the_table() -> None:
    assert {c[3] for c in CASES} - {None} == set(REASONS)


def test_accepted_issuers_narrow_the_keyring(keys: Keys) -> None:
    message = signed(keys)
    assert verify(message, keys.ring, AUDIENCES, NOW, issuers={"streamguard-prod"}) is None
    assert verify(message, keys.ring, AUDIENCES, NOW, issuers={"other"}) == "wrong_issuer"


def test_a_fleet_audience_is_accepted_by_subscribers_of_that_fleet(keys: Keys) -> None:
    message = signed(keys, audience="fleet-eu")
    assert verify(message, keys.ring, {"fleet-eu", "home-ranker"}, NOW) is None
    assert verify(message, keys.ring, {"home-ranker"}, NOW) == "wrong_audience"


def test_rotation_old_and_new_keys_overlap_then_the_old_one_is_dropped(keys: Keys) -> None:
    old_message = signed(keys, key=keys.previous)
    new_message = signed(keys, key=keys.current)
    only_old = KeyRing([keys.previous.verifying_key()])
    both = only_old.with_key(keys.current.verifying_key())
    only_new = both.without(keys.previous.key_id)
    assert verify(old_message, only_old, AUDIENCES, NOW) is None
    assert verify(new_message, only_old, AUDIENCES, NOW) == "unknown_key"
    assert verify(old_message, both, AUDIENCES, NOW) is None
    assert verify(new_message, both, AUDIENCES, NOW) is None
    assert verify(old_message, only_new, AUDIENCES, NOW) == "unknown_key"
    assert verify(new_message, only_new, AUDIENCES, NOW) is None


def test_a_retired_key_stops_verifying_after_its_not_after(keys: Keys) -> None:
    retiring = KeyRing([keys.previous.verifying_key(not_after=NOW + 100)])
    message = signed(keys, key=keys.previous)
    assert verify(message, retiring, AUDIENCES, NOW + 100 + SKEW) is None
    rejection = check(message, retiring, AUDIENCES, NOW + 101 + SKEW)
    assert rejection is not None
    assert rejection.reason == "unknown_key"
    assert "retired" in rejection.detail


def test_re_signing_replaces_the_signature_and_signs_every_field(keys: Keys) -> None:
    once = signed(keys)
    twice = sign(once, keys.previous, "home-ranker", TTL, NOW)
    assert twice["signature"]["kid"] == keys.previous.key_id
    assert verify(twice, keys.ring, AUDIENCES, NOW) is None
    payload = signing_payload(twice)
    assert payload.startswith(SIGNING_CONTEXT)
    body = {k: v for k, v in twice.items() if k != "signature"}
    assert payload.endswith(b"\n" + canonical_bytes(body))


def test_alerts_are_signed_as_version_2(keys: Keys) -> None:
    alert = sign_alert(alert_for(make_command(), "flip rate above 5%"), keys.current, TTL, NOW)
    assert alert["schema_version"] == 2
    assert verify(alert, keys.ring, AUDIENCES, NOW) is None
    assert verify(alert | {"severity": "critical"}, keys.ring, AUDIENCES, NOW) == "bad_signature"


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [({"audience": ""}, "audience"), ({"ttl_s": 0}, "ttl_s"), ({"ttl_s": float("inf")}, "ttl_s")],
    ids=["empty-audience", "zero-ttl", "infinite-ttl"],
)
def test_sign_refuses_bad_arguments(keys: Keys, kwargs: dict[str, Any], error: str) -> None:
    args: dict[str, Any] = {"audience": "home-ranker", "ttl_s": TTL, "now": NOW} | kwargs
    with pytest.raises(ValueError, match=error):
        sign({"a": 1}, keys.current, **args)


# --- any change breaks the signature -------------------------------------------------------------


@given(
    evidence=st.dictionaries(
        st.text(max_size=6),
        st.none()
        | st.booleans()
        | st.integers(-(2**53), 2**53)
        | st.floats(allow_nan=False, allow_infinity=False)
        | st.text(max_size=8),
        max_size=4,
    ),
    data=st.data(),
)
def test_any_single_byte_change_of_the_signed_payload_fails(
    keys: Keys, evidence: dict[str, Any], data: st.DataObject
) -> None:
    command = make_command()
    message = sign(
        command.to_dict() | {"schema_version": 2, "evidence": evidence},
        keys.current,
        "home-ranker",
        TTL,
        NOW,
    )
    payload = signing_payload(message)
    public = keys.current.verifying_key().public_key
    raw_sig = base64.urlsafe_b64decode(message["signature"]["sig"] + "==")
    index = data.draw(st.integers(0, len(payload) - 1), label="index")
    byte = data.draw(st.integers(0, 255).filter(lambda b: b != payload[index]), label="byte")
    changed = payload[:index] + bytes([byte]) + payload[index + 1 :]
    with pytest.raises(InvalidSignature):
        public.verify(raw_sig, changed)
    # The same change made to the message on the wire: whatever still parses as a different
    # message is refused (a change that canonicalises back, like 1e-7 -> 1E-7, is no change).
    body = canonical_bytes({k: v for k, v in message.items() if k != "signature"})
    at = data.draw(st.integers(0, len(body) - 1), label="body index")
    other = data.draw(st.integers(0, 255).filter(lambda b: b != body[at]), label="body byte")
    try:
        parsed = orjson.loads(body[:at] + bytes([other]) + body[at + 1 :])
    except orjson.JSONDecodeError:
        return
    assume(isinstance(parsed, dict))
    assume(canonical_bytes(parsed) != body)
    result = verify(parsed | {"signature": message["signature"]}, keys.ring, AUDIENCES, NOW)
    assert result == "bad_signature"


def leaf_paths(value: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    if isinstance(value, dict) and value:
        return [p for k, v in value.items() for p in leaf_paths(v, (*prefix, k))]
    if isinstance(value, list) and value:
        return [p for i, v in enumerate(value) for p in leaf_paths(v, (*prefix, i))]
    return [prefix]


new_values = (
    st.none()
    | st.booleans()
    | st.integers(-(2**53), 2**53)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=10)
    | st.lists(st.integers(0, 9), max_size=2)
    | st.dictionaries(st.text(max_size=3), st.integers(0, 9), max_size=2)
)


@given(data=st.data(), value=new_values)
def test_any_field_value_change_fails(keys: Keys, data: st.DataObject, value: Any) -> None:
    message = signed(keys)
    path = data.draw(st.sampled_from(leaf_paths(message)), label="path")
    current: Any = message
    for step in path:
        current = current[step]
    assume(canonical_bytes(value) != canonical_bytes(current))
    changed = copy.deepcopy(message)
    target: Any = changed
    for step in path[:-1]:
        target = target[step]
    target[path[-1]] = value
    assert verify(changed, keys.ring, AUDIENCES, NOW) is not None
