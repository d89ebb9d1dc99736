"""Key and subscriber settings that do not fit are each named."""

from streamguard.security import KeyRing, VerifyingKey, generate_key
from streamguard.security.consistency import key_problems


def levels(findings: list) -> list[tuple[str, str]]:  # type: ignore[type-arg]
    return [(f.level, f.text) for f in findings]


def test_a_matching_set_up_has_no_failure() -> None:
    key = generate_key("prod")
    found = key_problems(
        key, KeyRing([key.verifying_key()]), issuers=["prod"], audiences=["d"], deployments=["d"]
    )
    assert [level for level, _ in levels(found)] == ["ok"]


def test_a_key_registered_for_another_issuer_or_retired_fails() -> None:
    key = generate_key("prod")
    public = key.verifying_key()
    other_issuer = VerifyingKey(public.public_key, key.key_id, "dev", None)
    assert any(
        "for issuer 'dev'" in text
        for level, text in levels(key_problems(key, KeyRing([other_issuer])))
        if level == "fail"
    )
    retired = VerifyingKey(public.public_key, key.key_id, "prod", not_after=100.0)
    found = levels(key_problems(key, KeyRing([retired]), now=200.0))
    assert ("fail", f"the keyring retired {key.key_id} (not_after passed)") in found
    assert not [
        t for level, t in levels(key_problems(key, KeyRing([retired]), now=50.0)) if level == "fail"
    ]


def test_a_different_public_key_under_the_same_id_fails() -> None:
    key, impostor = generate_key("prod"), generate_key("prod")
    forged = VerifyingKey(impostor.verifying_key().public_key, key.key_id, "prod", None)
    found = levels(key_problems(key, KeyRing([forged])))
    assert ("fail", f"the keyring's key {key.key_id} is a different public key") in found
