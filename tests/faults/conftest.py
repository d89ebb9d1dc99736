"""Fault-injection tests reuse the integration fixtures (a fresh embedded broker per test)."""

from tests.integration.conftest import broker, broker_with_topics  # noqa: F401 - pytest fixtures
