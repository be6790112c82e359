"""The HTTP application: routes, JSON errors and the request log.

Handlers only parse, authorize and forward to the router; they hold no state of
their own beyond :class:`~spectral.state.ServerState`.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST
from quart import Response, g, jsonify, request
from quart_trio import QuartTrio
from werkzeug.exceptions import HTTPException

from spectral import __version__, metrics
from spectral.api import rest, sse
from spectral.errors import ApiError, code_for_status, envelope
from spectral.logs import log_request
from spectral.state import ServerState

log = logging.getLogger("spectral.http")


def create_app(state: ServerState) -> QuartTrio:
    """Build the quart-trio application serving ``state``."""
    app = QuartTrio("spectral")
    app.config["MAX_CONTENT_LENGTH"] = 1024 * 1024
    app.config["RESPONSE_TIMEOUT"] = None  # event streams stay open
    app.json.sort_keys = False  # type: ignore[attr-defined]
    app.extensions["spectral"] = state

    @app.before_request
    async def _start_timer() -> None:
        g.started = time.perf_counter()

    @app.after_request
    async def _log_request(response: Response) -> Response:
        rule = request.url_rule.rule if request.url_rule is not None else "(unmatched)"
        started = g.get("started", 0.0)
        metrics.REQUEST_SECONDS.labels(request.method, rule, str(response.status_code)).observe(
            time.perf_counter() - started
        )
        log_request(log, request.method, rule, response.status_code, started)
        return response

    @app.errorhandler(ApiError)
    async def _api_error(error: ApiError) -> tuple[Any, int]:
        return jsonify(error.body()), error.status

    @app.errorhandler(HTTPException)
    async def _http_error(error: HTTPException) -> Response:
        status = error.code or 500
        if status == 404:
            message = f"no route for {request.method} {request.path}"
        elif status == 405:
            message = f"method {request.method} is not allowed on {request.path}"
        elif status == 413:
            message = "the request body is larger than 1 MiB"
        else:
            message = error.description or error.name
        response = jsonify(envelope(code_for_status(status), message))
        response.status_code = status
        for name, value in error.get_headers():
            if name.lower() not in {"content-type", "content-length"}:
                response.headers[name] = value
        if status == 413:
            # The rest of the body is never read: this connection cannot carry another request.
            response.headers["Connection"] = "close"
        return response

    @app.errorhandler(Exception)
    async def _unexpected(error: Exception) -> tuple[Any, int]:
        log.exception("unhandled error on %s %s", request.method, request.path)
        return jsonify(envelope("INTERNAL", "internal server error")), 500

    @app.get("/health")
    async def health() -> dict[str, Any]:
        """Liveness and a few runtime figures; needs no key (SPEC §4)."""
        stats = state.router.statistics()
        return {
            "status": "shutting_down" if state.shutting_down.is_set() else "healthy",
            "version": __version__,
            "uptimeSeconds": round(state.uptime(), 3),
            "actors": {"live": stats.live, "evicted": stats.evicted},
            "connections": stats.watchers,
        }

    @app.get("/metrics")
    async def prometheus_metrics() -> Response:
        """Prometheus text exposition (SPEC §11)."""
        return Response(metrics.render(), content_type=CONTENT_TYPE_LATEST)

    rest.register(app, state)
    sse.register(app, state)
    return app
