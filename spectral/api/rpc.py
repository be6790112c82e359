"""The oRPC-compatible RPC endpoint: ``POST /rpc/tasks/{procedure}`` (docs/api.md, "RPC").

Everything under ``/rpc`` answers in oRPC's RPC framing (:mod:`spectral.api.orpc_wire`),
errors included: the routes live in their own blueprint whose error handlers render
``ApiError``, HTTP errors (413, ...) and the unexpected as oRPC error bodies, so that
``@orpc/client`` throws an ``ORPCError`` with the right code and status for each.
The work itself is :mod:`spectral.api.rpc_procedures`, shared with the REST form.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from pydantic import ValidationError
from quart import Blueprint, Quart, Response, request
from werkzeug.exceptions import HTTPException

from spectral.api import orpc_wire
from spectral.api.context import name_task, principal
from spectral.api.failures import validation_error
from spectral.api.once import Outcome, replay_headers, run_once
from spectral.api.rpc_procedures import PROCEDURES, Procedure
from spectral.errors import ApiError
from spectral.state import ServerState
from spectral.wire import dumps, iso

log = logging.getLogger("spectral.rpc")

#: Where the RPC handler is mounted (the ``url`` of an ``RPCLink``, without the host).
PREFIX = "/rpc"
#: Every procedure's path is ``/tasks/{name}`` (a client's ``client.tasks.name(...)``).
_BY_PATH = {f"/tasks/{name}": procedure for name, procedure in PROCEDURES.items()}
#: Methods routed here, so that the wrong one gets an oRPC 405 rather than quart's.
_METHODS = ["GET", "POST", "PUT", "PATCH", "DELETE"]
#: Request content types read as JSON (oRPC reads a missing one as JSON too).
_JSON_TYPES = frozenset({"", "application/json"})


def register(app: Quart, state: ServerState) -> None:
    """Serve every procedure at ``/rpc/tasks/{name}``, and oRPC's 404 for anything else."""
    rpc = Blueprint("rpc", __name__)
    view = _view(state)
    for name in PROCEDURES:
        rpc.add_url_rule(f"{PREFIX}/tasks/{name}", f"tasks_{name}", view, methods=_METHODS)
    rpc.add_url_rule(PREFIX, "root", view, methods=_METHODS)
    rpc.add_url_rule(f"{PREFIX}/", "root_slash", view, methods=_METHODS)
    rpc.add_url_rule(f"{PREFIX}/<path:rest>", "unknown", view, methods=_METHODS)
    rpc.register_error_handler(ApiError, _api_error)
    rpc.register_error_handler(HTTPException, _http_error)
    rpc.register_error_handler(Exception, _unexpected)
    app.register_blueprint(rpc)


def _view(state: ServerState) -> Callable[..., Awaitable[Response]]:
    async def call(**_: str) -> Response:
        # The body is read first, whatever the answer: answering before hypercorn has
        # handed quart the body can stall the connection's next request.
        data = b"" if request.method in ("GET", "HEAD") else await request.get_data(cache=False)
        procedure = _procedure()
        who = principal()
        body = _input(procedure, data)
        name_task(body)
        if procedure.reads:
            output = await procedure.run(state, who, body)
            return _answer(200, orpc_wire.serialize(output, procedure.shape))

        async def work() -> tuple[int, Any]:
            return 200, await procedure.run(state, who, body)

        outcome = await run_once(state, who, f"rpc {request.path}", data, work)
        output, shape = outcome.payload, procedure.shape
        if outcome.key is not None:
            output, shape = _with_idempotency(output, shape, outcome)
        return _answer(outcome.status, orpc_wire.serialize(output, shape), replay_headers(outcome))

    call.__doc__ = "Call a procedure in oRPC's RPC framing."
    return call


def _with_idempotency(output: Any, shape: Any, outcome: Outcome) -> tuple[Any, Any]:
    """The output with the original's ``__idempotency`` (``cachedAt`` a Date, when cached)."""
    if not isinstance(output, dict) or outcome.key is None:
        return output, shape
    info: dict[str, Any] = {"cached": outcome.replayed_at is not None, "key": outcome.key[:8]}
    if outcome.replayed_at is not None:
        info["cachedAt"] = iso(outcome.replayed_at)
        shape = {**shape, "__idempotency": {"cachedAt": orpc_wire.DATE}}
    return {**output, "__idempotency": info}, shape


def _procedure() -> Procedure:
    # oRPC matches the path as sent (percent-encoded), not werkzeug's decoded one.
    raw = request.scope.get("raw_path") or request.path.encode()
    path = orpc_wire.procedure_path(raw.decode("latin-1"), PREFIX) or ""
    procedure = _BY_PATH.get(path)
    if procedure is None:
        raise ApiError(404, "NOT_FOUND", f"no procedure at {path!r}")
    method = request.method
    if method not in ("GET", "HEAD", "POST") or (method != "POST" and not procedure.reads):
        # As oRPC's StrictGetMethodPlugin: GET only for procedures that change nothing.
        raise ApiError(
            405, "METHOD_NOT_SUPPORTED", f"{method} is not supported for {path}; use POST"
        )
    return procedure


def _input(procedure: Procedure, data: bytes) -> Any:
    """The validated input model (400 naming the field, or a malformed request)."""
    try:
        if request.method == "POST":
            if request.mimetype not in _JSON_TYPES:
                raise ApiError(
                    415,
                    "UNSUPPORTED_MEDIA_TYPE",
                    f"send the input as application/json, not {request.mimetype}",
                )
            value = orpc_wire.decode_body(data)
        else:
            value = orpc_wire.decode_query(request.args.getlist("data"))
        if value is orpc_wire.UNDEFINED:
            value = {}  # no input: every required field is named as missing
        text = json.dumps(value)
    except (orpc_wire.MalformedRequestError, RecursionError) as error:
        raise ApiError(400, "MALFORMED_REQUEST", f"Malformed request: {error}") from None
    try:
        # Revalidated from JSON: the very rules (and messages) of the REST bodies.
        return procedure.model.model_validate_json(text)
    except ValidationError as error:
        raise validation_error(error) from None


def _answer(status: int, envelope: dict[str, Any], headers: Any = None) -> Response:
    response = Response(dumps(envelope), status=status, content_type="application/json")
    for name, value in (headers or {}).items():
        response.headers[name] = value
    return response


async def _api_error(error: ApiError) -> Response:
    body = orpc_wire.error_body(orpc_wire.api_error_json(error))
    return _answer(error.status, body, getattr(error, "headers", None))


async def _http_error(error: HTTPException) -> Response:
    status = error.code or 500
    if status == 413:
        message = "the request body is larger than 1 MiB"
    else:
        message = error.description or error.name
    code = orpc_wire.code_for_status(status)
    body = orpc_wire.error_body(orpc_wire.error_json(status, message, {"code": code}))
    headers = {
        name: value
        for name, value in error.get_headers()
        if name.lower() not in {"content-type", "content-length"}
    }
    if status == 413:
        # The rest of the body is never read: this connection cannot carry another request.
        headers["Connection"] = "close"
    return _answer(status, body, headers)


async def _unexpected(error: Exception) -> Response:
    log.exception("unhandled error on %s %s", request.method, request.path)
    body = orpc_wire.error_json(500, "Internal server error", {"code": "INTERNAL"})
    return _answer(500, orpc_wire.error_body(body))
