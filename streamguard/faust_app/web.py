"""The worker's HTTP API (Faust's web server): health, metrics, status, Argo and Flagger.

* ``GET /health``: 200 ``ok``/``degraded`` or 503 ``unhealthy``.
* ``GET /ready``: 200 once the assigned partitions' state is restored and their backlog read,
  503 ``recovering`` or ``unhealthy`` before (Kubernetes' readiness probe); ``GET /live``: 200
  while the event loop runs (liveness). Both are registered by :mod:`streamguard.faust_app.app`.
* ``GET /metrics``: Prometheus text.
* ``GET /status``: every deployment's judgement and the pending approvals.
* ``GET /status/{deployment}/[?version=V]``: judgement, decisions, latest verdict per guard
  with per-slice statistics and findings (the evidence); with ``version``, only that version's
  verdicts, decisions and pending approvals.
* ``GET /judgement/{deployment}/[?version=V]``: ``{"judgement": healthy|paused|rolled_back|
  pending}`` for Argo Rollouts' web metric (``deploy/argo/``). ``healthy`` only for a version
  a model guard judged on trusted evidence, and only once the status feed has caught up
  (:mod:`streamguard.decisions.status`); anything unknown is ``pending``.
* ``POST /flagger/confirm-promotion/``: 200 when the canary may be promoted, 403 otherwise;
  ``POST /flagger/rollback/``: 200 when streamguard says roll back (Flagger then fails the
  canary), 409 otherwise. The deployment is the Canary's ``metadata.deployment`` or its name;
  ``metadata.model_version``, when given, is the version judged (else the deployment's
  current versions).
"""

from collections.abc import Callable
from typing import Any

import faust
from faust.web import Request, Response, View

from streamguard.faust_app.metrics import Metrics
from streamguard.faust_app.status_feed import StatusFeed

__all__ = ["register_pages"]


def _deployment_of(payload: Any) -> tuple[str | None, str | None]:
    """Deployment and model version of Flagger's webhook payload.

    The payload is ``{"name", "namespace", "phase", "metadata": {...}}``; the version is
    ``metadata.model_version`` (Flagger itself knows no model versions), None when absent.
    """
    if not isinstance(payload, dict):
        return None, None
    raw = payload.get("metadata")
    metadata: dict[str, Any] = raw if isinstance(raw, dict) else {}
    version = metadata.get("model_version")
    version = version if isinstance(version, str) and version else None
    if isinstance(metadata.get("deployment"), str):
        return str(metadata["deployment"]), version
    name = payload.get("name")
    return (name if isinstance(name, str) and name else None), version


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

        async def judge(self, request: Request) -> dict[str, Any]:
            try:
                payload = await request.json()
            except ValueError:
                payload = None
            deployment, version = _deployment_of(payload)
            judgement = feed.view.judgement(deployment, version) if deployment else "pending"
            return {
                "deployment": deployment,
                "version": version,
                "judgement": judgement,
                "caught_up": feed.caught_up,
            }

    @app.page("/flagger/confirm-promotion/")
    class ConfirmPromotion(FlaggerGate):
        async def post(self, request: Request) -> Response:
            body = await self.judge(request)
            ok = body["judgement"] == "healthy"
            return self.json({**body, "promote": ok}, status=200 if ok else 403)

    @app.page("/flagger/rollback/")
    class Rollback(FlaggerGate):
        async def post(self, request: Request) -> Response:
            body = await self.judge(request)
            roll_back = body["judgement"] in {"paused", "rolled_back"}
            return self.json({**body, "rollback": roll_back}, status=200 if roll_back else 409)

    # The decorators registered everything on the app; the names are not needed here.
    del metrics_page, health_page, status_page, deployment_page, judgement_page
    del ConfirmPromotion, Rollback
