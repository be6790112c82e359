"""The HTTP application: routes, JSON errors and the request log.

Handlers only parse, authorize and forward to the router; they hold no state of
their own beyond :class:`~spectral.state.ServerState`.
"""

from __future__ import annotations

import contextlib
import logging
import time
from typing import Any

import trio
from prometheus_client import CONTENT_TYPE_LATEST
from quart import Response, g, jsonify, request
from quart_cors import cors
from quart_trio import QuartTrio
from werkzeug.exceptions import HTTPException

from spectral import __version__, metrics, tokens
from spectral.api import admin, reference, rest, rooms, rpc, sse, webhooks
from spectral.api.context import principal, require_admin
from spectral.errors import ApiError, code_for_status, envelope
from spectral.logs import log_request
from spectral.state import ServerState

log = logging.getLogger("spectral.http")

#: Longest wait for the rest of a body that the answer did not need.
DRAIN_SECONDS = 10.0
#: Routes that need no key.
PUBLIC_PATHS = frozenset({"/health", "/openapi.json", "/api-reference"})
#: Endpoints that accept a watch token (``?token=``) scoped to their task.
TOKEN_ENDPOINTS = frozenset({"task_events"})
#: Request headers a browser may send cross-origin, and response headers it may read.
CORS_ALLOW_HEADERS = [
    "X-API-Key", "Authorization", "Content-Type", "Idempotency-Key", "Last-Event-ID",
]  # fmt: skip
CORS_EXPOSE_HEADERS = ["Retry-After", "Idempotent-Replayed"]


async def _drain_body() -> None:
    """Read what is left of the request body (at most 1 MiB) before answering.

    An answer given before the body was read (401, 404, an early 400) otherwise
    stalls the next request on the same keep-alive connection now and then:
    hypercorn waits for the body that quart-trio stopped reading. A body over the
    limit is not read (413 closes the connection).
    """
    # Over the limit, or the client went away: nothing to drain.
    with trio.move_on_after(DRAIN_SECONDS), contextlib.suppress(Exception):
        await request.get_data(cache=False)


def create_app(state: ServerState) -> QuartTrio:
    """Build the quart-trio application serving ``state``."""
    app = QuartTrio("spectral")
    app.config["MAX_CONTENT_LENGTH"] = 1024 * 1024
    app.config["RESPONSE_TIMEOUT"] = None  # event streams stay open
    app.json.sort_keys = False  # type: ignore[attr-defined]
    app.extensions["spectral"] = state

    @app.before_request
    async def _authenticate() -> None:
        g.started = time.perf_counter()
        if request.method == "OPTIONS" or request.path in PUBLIC_PATHS:
            return  # CORS preflights carry no credentials; public paths need none
        scope = None
        if request.endpoint in TOKEN_ENDPOINTS and request.view_args:
            scope = tokens.task_scope(str(request.view_args.get("task_id", "")))
        g.principal = state.auth.authenticate(
            request.headers.get, token=request.args.get("token"), scope=scope
        )

    @app.after_request
    async def _log_request(response: Response) -> Response:
        await _drain_body()
        rule = request.url_rule.rule if request.url_rule is not None else "(unmatched)"
        started = g.get("started", 0.0)
        metrics.REQUEST_SECONDS.labels(request.method, rule, str(response.status_code)).observe(
            time.perf_counter() - started
        )
        who = g.get("principal")
        fields = {} if who is None else {"keyId": who.key_id, "owner": who.owner}
        if g.get("task_id") is not None:
            fields["taskId"] = g.task_id  # named in the body (POST /tasks/updateProgress, ...)
        # The path without its query string: tokens travel there.
        log_request(
            log, request.method, rule, response.status_code, started, path=request.path, **fields
        )
        return response

    @app.errorhandler(ApiError)
    async def _api_error(error: ApiError) -> tuple[Any, int, dict[str, str]]:
        return jsonify(error.body()), error.status, error.headers

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
        """Liveness and a few runtime figures; needs no key."""
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
        """Prometheus text exposition; admin keys only."""
        require_admin(principal(), "read metrics")
        return Response(metrics.render(), content_type=CONTENT_TYPE_LATEST)

    rest.register(app, state)
    rpc.register(app, state)
    sse.register(app, state)
    admin.register(app, state)
    rooms.register(app, state)
    webhooks.register(app, state)
    reference.register(app)
    if state.settings.cors_origins:
        app = cors(
            app,
            allow_origin=list(state.settings.cors_origins),
            allow_headers=CORS_ALLOW_HEADERS,
            allow_methods=["GET", "POST", "PUT", "DELETE"],
            expose_headers=CORS_EXPOSE_HEADERS,
            max_age=600,
        )
    return app
