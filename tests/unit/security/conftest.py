"""The keys fixture of the signing tests (generated once per session: Ed25519 keys are cheap)."""

import pytest

from streamguard.security import generate_key
from tests.unit.security._keys import Keys


@pytest.fixture(scope="session")
def keys() -> Keys:
    return Keys(
        generate_key("streamguard-prod"), generate_key("streamguard-prod"), generate_key("x")
    )
