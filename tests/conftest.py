"""Shared test configuration."""

import os

from hypothesis import HealthCheck, settings

from streamguard.settings import EMBEDDED_SESSION_TIMEOUT_S, SESSION_TIMEOUT_ENV

# CI runs the same profile; "dev" is quicker for local iteration.
settings.register_profile(
    "ci", max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
settings.register_profile("dev", max_examples=50, deadline=None)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))

# The embedded broker (Tansu) answers a group join only after half the session timeout, and
# keeps a member that left without a word that long: 4 s instead of the worker's 10 s starts
# every test worker ~3 s sooner, and a restarted one ~16 s sooner (measured, see
# ``Settings.broker_session_timeout_s``). Subprocesses inherit it.
os.environ.setdefault(SESSION_TIMEOUT_ENV, str(EMBEDDED_SESSION_TIMEOUT_S))
