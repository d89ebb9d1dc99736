"""The worker's HTTP API (Faust's web server): health, metrics, status, Argo and Flagger.

* ``GET /health``: 200 ``ok``/``degraded`` or 503 ``unhealthy`` (readiness).
* ``GET /metrics``: Prometheus text.
* ``GET /status``: every deployment's judgement and the pending approvals.
* ``GET /status/{deployment}/[?version=V]``: judgement, decisions, latest verdict per guard
  with per-slice statistics and findings (the evidence).
* ``GET /judgement/{deployment}/[?version=V]``: ``{"judgement": healthy|paused|rolled_back|
  pending}`` for Argo Rollouts' web metric (``deploy/argo/``).
* ``POST /flagger/confirm-promotion/``: 200 when the canary may be promoted, 403 otherwise;
  ``POST /flagger/rollback/``: 200 when streamguard says roll back (Flagger then fails the
  canary), 409 otherwise. The deployment is the Canary's ``metadata.deployment`` or its name.
"""

from collections.abc import Callable
from typing import Any

import faust
from faust.web import Request, Response, View

from streamguard.faust_app.metrics import Metrics
from streamguard.faust_app.status_feed import StatusFeed

__all__ = ["register_pages"]


def _deployment_of(payload: Any) -> str | None:
    """Flagger's webhook payload: ``{"name", "namespace", "phase", "metadata": {...}}``."""
    if not isinstance(payload, dict):
        return None
    metadata = payload.get("metadata")
    if isinstance(metadata, dict) and isinstance(metadata.get("deployment"), str):
        return str(metadata["deployment"])
    name = payload.get("name")
    return name if isinstance(name, str) and name else None


def register_pages(
    app: faust.App,
    metrics: Metrics,
    feed: StatusFeed,
    health: Callable[[], tuple[int, dict[str, Any]]],
) -> None:
    """Add every route to ``app``."""

    @app.page("/metrics")
    async def metrics_page(web: Any, request: Request) -> Any:
        return web.bytes(metrics.exposition(), content_type="text/plain; version=0.0.4")

    @app.page("/health")
    async def health_page(web: Any, request: Request) -> Any:
        status, document = health()
        return web.json(document, status=status)

    @app.page("/status")
    async def status_page(web: Any, request: Request) -> Any:
        _, document = health()
        overview = feed.view.overview()
        return web.json({**overview, "caught_up": feed.caught_up, "health": document})

    @app.page("/status/{deployment}/")
    async def deployment_page(web: Any, request: Request, deployment: str) -> Any:
        version = request.query.get("version") or None
        return web.json({**feed.view.deployment(deployment, version), "caught_up": feed.caught_up})

    @app.page("/judgement/{deployment}/")
    async def judgement_page(web: Any, request: Request, deployment: str) -> Any:
        version = request.query.get("version") or None
        judgement = feed.view.judgement(deployment, version)
        return web.json(
            {
                "deployment": deployment,
                "version": version,
                "judgement": judgement,
                "healthy": judgement == "healthy",
                "caught_up": feed.caught_up,
            }
        )

    class FlaggerGate(View):
        """Base of the two Flagger webhooks: read the payload, judge the deployment."""

        async def judge(self, request: Request) -> tuple[str | None, str]:
            try:
                payload = await request.json()
            except ValueError:
                return None, "pending"
            deployment = _deployment_of(payload)
            return deployment, feed.view.judgement(deployment) if deployment else "pending"

    @app.page("/flagger/confirm-promotion/")
    class ConfirmPromotion(FlaggerGate):
        async def post(self, request: Request) -> Response:
            deployment, judgement = await self.judge(request)
            ok = judgement == "healthy"
            body = {"deployment": deployment, "judgement": judgement, "promote": ok}
            return self.json(body, status=200 if ok else 403)

    @app.page("/flagger/rollback/")
    class Rollback(FlaggerGate):
        async def post(self, request: Request) -> Response:
            deployment, judgement = await self.judge(request)
            roll_back = judgement in {"paused", "rolled_back"}
            body = {"deployment": deployment, "judgement": judgement, "rollback": roll_back}
            return self.json(body, status=200 if roll_back else 409)

    # The decorators registered everything on the app; the names are not needed here.
    del metrics_page, health_page, status_page, deployment_page, judgement_page
    del ConfirmPromotion, Rollback
