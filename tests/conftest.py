"""Shared test configuration."""

import os

from hypothesis import HealthCheck, settings

# CI runs the same profile; "dev" is quicker for local iteration.
settings.register_profile(
    "ci", max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
settings.register_profile("dev", max_examples=50, deadline=None)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))
