"""The consumer's signature policy: required or not, which audiences, which clock."""

from typing import Any

import pytest

from streamguard.exceptions import ConfigError
from streamguard.security import CommandVerifier, sign_command
from tests.unit.security._keys import NOW, TTL, Keys, make_command


def signed_for(keys: Keys, deployment: str, audience: str | None = None) -> dict[str, Any]:
    return sign_command(make_command(deployment), keys.current, TTL, NOW, audience=audience)


def test_a_signature_cannot_be_required_without_a_keyring() -> None:
    with pytest.raises(ConfigError, match="no keyring"):
        CommandVerifier(None)
    with pytest.raises(ConfigError, match="skew"):
        CommandVerifier(None, require_signature=False, skew_s=-1)


def test_default_audience_is_the_commands_own_deployment(keys: Keys) -> None:
    check = CommandVerifier(keys.ring, clock=lambda: NOW)
    assert check(signed_for(keys, "home-ranker")) is None
    assert check(signed_for(keys, "search-ranker")) is None
    # Signed for one deployment, relabelled for another: the signature covers the deployment,
    # and an honest signer's aud for search-ranker does not cover home-ranker.
    assert check(signed_for(keys, "search-ranker", audience="home-ranker")) == "wrong_audience"


def test_explicit_audiences_accept_a_fleet(keys: Keys) -> None:
    check = CommandVerifier(keys.ring, {"fleet-eu"}, clock=lambda: NOW)
    assert check(signed_for(keys, "home-ranker", audience="fleet-eu")) is None
    assert check(signed_for(keys, "home-ranker")) == "wrong_audience"


def test_unsigned_commands_pass_only_when_not_required(keys: Keys) -> None:
    unsigned = make_command().to_dict()
    assert CommandVerifier(keys.ring, clock=lambda: NOW)(unsigned) == "unsigned"
    lenient = CommandVerifier(keys.ring, require_signature=False, clock=lambda: NOW)
    assert lenient(unsigned) is None
    # Not requiring a signature does not mean accepting a bad one.
    forged = signed_for(keys, "home-ranker") | {"action": "rollback"}
    assert lenient(forged) == "bad_signature"


def test_insecure_mode_without_keyring_verifies_nothing(keys: Keys) -> None:
    insecure = CommandVerifier(None, require_signature=False)
    assert not insecure.verifies
    assert insecure(make_command().to_dict()) is None
    assert insecure(signed_for(keys, "home-ranker") | {"action": "rollback"}) is None


def test_the_clock_and_skew_are_the_verifiers(keys: Keys) -> None:
    now = [NOW]
    check = CommandVerifier(keys.ring, skew_s=5, clock=lambda: now[0])
    message = signed_for(keys, "home-ranker")
    assert check(message) is None
    now[0] = NOW + TTL + 6
    assert check(message) == "expired"
    now[0] = NOW - 6
    assert check(message) == "not_yet_valid"
    rejection = check.check(message)
    assert rejection is not None
    assert "issued at" in rejection.detail
