"""The application: requests routed from the operation table, answered as JSON.

For each request: match its route (:mod:`spectral.api.routing`), authenticate unless
the operation is public, validate its input with the operation's model, run it
(once per ``Idempotency-Key`` for a mutation), and encode the answer; under
``/rpc`` the same operations speak oRPC's framing (:mod:`spectral.api.rpc`). Every
request ends in one log line and one latency observation; CORS headers are added
for allowed origins. Nothing here holds state between requests beyond
:class:`~spectral.state.ServerState`.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import trio
from pydantic import BaseModel, ValidationError

from spectral.access import tokens
from spectral.api import once, rpc
from spectral.api.call import Call, as_result
from spectral.api.context import Principal
from spectral.api.cors import Cors
from spectral.api.failures import refuse_nul, sql_error_in, storage_error, validation_error
from spectral.api.operations import OPERATIONS, Operation, Rest
from spectral.api.routing import Match, Routes
from spectral.api.watch import serve_websocket
from spectral.errors import ApiError, envelope
from spectral.front import Answer, Request, Response, StreamingResponse
from spectral.ops import metrics
from spectral.socketio import http as socketio
from spectral.state import ServerState
from spectral.wire import encode

log = logging.getLogger("spectral.http")

JSON = [("content-type", "application/json")]
#: Path prefixes of the WebSocket routes (served by :mod:`spectral.api.watch`).
WATCH_PREFIXES = ("/ws/", "/rooms/", "/admin/feed")


def json_response(
    status: int, payload: Any, headers: list[tuple[str, str]] | None = None
) -> Response:
    """A JSON answer."""
    return Response(status, encode(payload), [*JSON, *(headers or ())])


def error_response(request: Request | None, error: ApiError) -> Response:
    """The answer for an error: our envelope, or oRPC's error body under ``/rpc``."""
    if request is not None and rpc.is_rpc_path(request.path):
        return rpc.error_response(error)
    headers = list(error.headers.items())
    return json_response(error.status, error.body(), headers)


class Application:
    """Serves :data:`~spectral.api.operations.OPERATIONS` for one running server."""

    def __init__(self, state: ServerState) -> None:
        self.state = state
        self.requests = state.requests
        self.routes = Routes.from_operations(OPERATIONS)
        self.procedures = rpc.Procedures.from_operations(OPERATIONS)
        self.cors = Cors(state.settings.cors_origins) if state.settings.cors_origins else None
        self._timers: dict[tuple[str, str, int], Any] = {}

    # -- the front's interface --------------------------------------------------------------

    async def handle(self, request: Request) -> Answer:
        """Answer one request (errors are answers too)."""
        started = time.perf_counter()
        served = _Served()
        if socketio.is_socketio(request.path) and self.state.socketio is not None:
            served.route = socketio.ROUTE  # Engine.IO's own answers, CORS included
            engine = await self.state.socketio.handle(request)
            self._finish(request, served, engine.status, started)
            return engine
        try:
            answer = await self._dispatch(request, served)
        except ApiError as error:
            answer = error_response(request, error)
        except Exception as error:
            answer = error_response(request, self._unhandled(request, error))
        if self.cors is not None:
            self.cors.decorate(request, answer)
        self._finish(request, served, answer.status, started)
        return answer

    @staticmethod
    def _unhandled(request: Request, error: Exception) -> ApiError:
        """A database error is 503 ``STORAGE_UNAVAILABLE`` (logged); anything else 500."""
        failed = sql_error_in(error)
        if failed is not None:
            log.warning(
                "database error on %s %s: %s",
                request.method,
                request.path,
                failed,
                exc_info=failed,
            )
            return storage_error(failed)
        log.exception("unhandled error on %s %s", request.method, request.path)
        return ApiError(500, "INTERNAL", "internal server error")

    def takes_upgrade(self, request: Request) -> bool:
        """WebSocket upgrades of the watch routes and of ``/socket.io/``."""
        if request.method != "GET" or request.headers.get("upgrade", "").lower() != "websocket":
            return False
        if socketio.is_socketio(request.path):
            return self.state.socketio is not None and self.state.socketio.takes_upgrade(request)
        return request.path.startswith(WATCH_PREFIXES)

    async def upgrade(self, request: Request, stream: trio.abc.Stream) -> None:
        """Serve a watch (or Socket.IO) WebSocket on the upgraded connection."""
        head = f"GET {request.target} HTTP/1.1\r\n".encode("latin-1") + b"".join(
            f"{name}: {value}\r\n".encode("latin-1") for name, value in request.headers.items()
        )
        head += b"\r\n"
        server = self.state.socketio
        if server is not None and socketio.is_socketio(request.path):
            started = time.perf_counter()
            ended = await server.upgrade(request, stream, head)
            who = ended.who
            fields = {} if who is None else {"keyId": who.key_id, "owner": who.owner}
            self.requests.request(
                "GET",
                request.path,
                socketio.ROUTE,
                101,
                started,
                closeCode=ended.close_code,
                **fields,
            )
            return
        await serve_websocket(self.state, stream, head)

    def refuse(self, request: Request | None, status: int, message: str) -> Response:
        """A request refused by the front (400, 408, 413, 431): answered and logged."""
        started = time.perf_counter()
        answer = error_response(request, ApiError(status, _front_code(status), message))
        if request is not None:
            self._finish(request, _Served(), status, started)
        return answer

    # -- dispatch ----------------------------------------------------------------------------

    async def _dispatch(self, request: Request, served: _Served) -> Answer:
        method = "GET" if request.method == "HEAD" else request.method
        if rpc.is_rpc_path(request.path):
            served.route = rpc.route_name(request)
            who = served.who = await self._authenticate(request, None)
            return await self.procedures.serve(self.state, request, who, served)
        match = self.routes.match(method, request.path, request.raw_path)
        if method == "OPTIONS":
            return await self._options(request, match, served)
        if match.operation is None:
            if not match.public:  # routes are not revealed to anonymous callers
                served.who = await self._authenticate(request, None)
            return self._no_route(request, match)
        operation, rest = match.operation, match.rest
        assert rest is not None
        served.route = rest.path
        if operation.access in ("public", "signed"):
            who = Principal("-", "-", "reader")
        else:
            scope = None
            if operation.access == "token":
                scope = tokens.task_scope(match.params.get("taskId", ""))
            who = served.who = await self._authenticate(request, scope)
        value = parse_input(operation, rest, request, match.params)
        served.task_id = getattr(value, "task_id", None)
        call = Call(self.state, who, request, match.params)
        if operation.mutating:
            outcome = await once.run(call, operation.run, value, operation.status)
        else:
            result = as_result(await operation.run(call, value))
            outcome = once.Outcome(result.status or operation.status, result.payload)
        if isinstance(outcome.payload, Response | StreamingResponse):
            return outcome.payload
        return json_response(outcome.status, outcome.payload, once.replay_headers(outcome))

    async def _authenticate(self, request: Request, scope: str | None) -> Principal:
        # ``?token=``: a watch token (watch routes) or a JWT (any route, when configured).
        query = request.query() if "token=" in request.query_string else {}
        return await self.state.auth.authenticate(
            request.headers.get, token=query.get("token"), scope=scope
        )

    async def _options(self, request: Request, match: Match, served: _Served) -> Answer:
        if self.cors is not None and self.cors.is_preflight(request):
            return self.cors.preflight(request)
        if not match.allowed:
            served.who = await self._authenticate(request, None)
            return self._no_route(request, match)
        allow = ", ".join(sorted({*match.allowed, "OPTIONS"}))
        return Response(204, b"", [("allow", allow)])

    def _no_route(self, request: Request, match: Match) -> Response:
        if match.allowed:
            message = f"method {request.method} is not allowed on {request.path}"
            methods = {*match.allowed, "OPTIONS"} | ({"HEAD"} if "GET" in match.allowed else set())
            allow = [("allow", ", ".join(sorted(methods)))]
            return json_response(405, envelope("METHOD_NOT_ALLOWED", message), allow)
        message = f"no route for {request.method} {request.path}"
        return json_response(404, envelope("NOT_FOUND", message))

    def _finish(self, request: Request, served: _Served, status: int, started: float) -> None:
        elapsed = time.perf_counter() - started
        key = (request.method, served.route, status)
        timer = self._timers.get(key)
        if timer is None:
            timer = self._timers[key] = metrics.REQUEST_SECONDS.labels(
                request.method, served.route, str(status)
            )
        timer.observe(elapsed)
        fields: dict[str, Any] = {}
        who = served.who
        if who is not None:
            fields["keyId"] = who.key_id
            fields["owner"] = who.owner
        if served.task_id is not None:
            fields["taskId"] = served.task_id
        self.requests.request(request.method, request.path, served.route, status, started, **fields)


class _Served:
    """What the log line says about a request, filled in as it is served."""

    __slots__ = ("route", "task_id", "who")

    def __init__(self) -> None:
        self.route = "(unmatched)"
        self.who: Principal | None = None
        self.task_id: str | None = None


def parse_input(
    operation: Operation, rest: Rest, request: Request, params: dict[str, str]
) -> BaseModel | None:
    """The operation's validated input from where the route takes it (400 naming the field)."""
    model = operation.input
    if model is None or rest.source in ("none", "raw"):
        return None
    try:
        if rest.source == "body":
            body = request.body
            if not body:
                if not rest.empty_is_object:
                    raise ApiError(400, "INVALID_JSON", "the body is empty; send a JSON object")
                body = b"{}"
            value = model.model_validate_json(body)
            refuse_nul(value, body)
            return value
        if rest.source == "query":
            data: dict[str, Any] = {**request.query(), **params}
            for name in getattr(model, "repeated", ()):
                if name in data:
                    data[name] = request.query_list(name)
            value = model.model_validate(data)
        else:
            value = model.model_validate(params)
    except ValidationError as error:
        raise validation_error(error) from None
    refuse_nul(value)
    return value


def _front_code(status: int) -> str:
    return {
        400: "BAD_REQUEST",
        408: "REQUEST_TIMEOUT",
        413: "PAYLOAD_TOO_LARGE",
        431: "REQUEST_HEADER_FIELDS_TOO_LARGE",
    }.get(status, "BAD_REQUEST")
