"""The operations' own routes: ``/health``, ``/metrics``, ``/openapi.json``, ``/api-reference``."""

from __future__ import annotations

from functools import cache
from typing import Any

import orjson
import trio
from prometheus_client import CONTENT_TYPE_LATEST

from spectral import __version__
from spectral.api.call import Call
from spectral.api.context import require_admin
from spectral.api.reference import (
    SOCKETIO_CLIENT,
    accepts_gzip,
    asset,
    compress,
    reference_page,
    vendored,
)
from spectral.errors import ApiError
from spectral.front import Response
from spectral.ops import metrics


async def health(call: Call, _: None) -> dict[str, Any]:
    """Liveness and a few runtime figures; needs no key."""
    state = call.state
    stats = state.router.statistics()
    return {
        "status": "shutting_down" if state.shutting_down.is_set() else "healthy",
        "version": __version__,
        "uptimeSeconds": round(state.uptime(), 3),
        "actors": {"live": stats.live, "evicted": stats.evicted},
        "connections": stats.watchers,
        **({} if state.cluster is None else {"cluster": _cluster_health(state.cluster.node)}),
    }


def _cluster_health(node: Any) -> dict[str, Any]:
    """This node's id, incarnation, lease status and forwarding counters."""
    membership = node.membership
    joined = membership is not None and membership.node is not None
    return {
        "node": node.node_id,
        "epoch": membership.node.epoch if joined else 1,
        "status": membership.status.value if membership is not None else "fenced",
        "forwarded": node.forwarded,
        "served": node.served,
    }


async def prometheus_metrics(call: Call, _: None) -> Response:
    """Prometheus text exposition; admin keys only."""
    require_admin(call.who, "read metrics")
    return Response(200, metrics.render(), [("content-type", CONTENT_TYPE_LATEST)])


@cache
def _document_bytes() -> bytes:
    from spectral.api.openapi import build_document  # the document reads the operation table

    return orjson.dumps(build_document(__version__))


async def openapi_document(call: Call, _: None) -> Response:
    """The OpenAPI 3.1 document of every route."""
    return Response(200, _document_bytes(), [("content-type", "application/json")])


@cache
def _page() -> tuple[bytes, str]:
    page = reference_page()
    return page.html.encode(), page.policy


async def api_reference(call: Call, _: None) -> Response:
    """The document as a readable page, rendered without internet access."""
    html, policy = _page()
    headers = [("content-type", "text/html; charset=utf-8"), ("content-security-policy", policy)]
    return Response(200, html, headers)


#: Vendored files compressed once (by name), and the lock that makes it once.
_compressed: dict[str, bytes] = {}
_compressing = trio.Lock()


async def api_reference_asset(call: Call, _: None) -> Response:
    """A vendored file of the page (its name carries its version: cached for a year),
    gzipped when the client accepts it (4.9 MB → about a quarter)."""
    name = call.params.get("file", "")
    body = asset(name)
    if body is None:
        raise ApiError(404, "NOT_FOUND", f"no file {name!r} under /api-reference/")
    return await _script(call, name, body, "public, max-age=31536000, immutable")


async def socketio_client(call: Call, _: None) -> Response:
    """The socket.io-client bundle (vendored), where a Socket.IO server serves it, so
    that pages with ``<script src="/socket.io/socket.io.js">`` work unchanged."""
    return await _script(call, SOCKETIO_CLIENT, vendored(SOCKETIO_CLIENT), "public, max-age=3600")


async def _script(call: Call, name: str, body: bytes, cache_control: str) -> Response:
    """A vendored script, gzipped when the client accepts it (compressed once, in a
    worker thread, then kept)."""
    headers = [
        ("content-type", "text/javascript; charset=utf-8"),
        ("cache-control", cache_control),
        ("x-content-type-options", "nosniff"),
        ("vary", "accept-encoding"),
    ]
    if accepts_gzip(call.request.header("accept-encoding")):
        async with _compressing:
            if name not in _compressed:
                _compressed[name] = await trio.to_thread.run_sync(compress, body)
        body = _compressed[name]
        headers.append(("content-encoding", "gzip"))
    return Response(200, body, headers)
