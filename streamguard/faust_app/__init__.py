"""The Faust adapter: ``create_app`` builds the worker around the pure engine."""

from streamguard.faust_app.app import Worker, create_app
from streamguard.faust_app.metrics import Metrics

__all__ = ["Metrics", "Worker", "create_app"]
