"""The oRPC-compatible RPC endpoint: ``POST /rpc/tasks/{procedure}`` (docs/api.md, "RPC").

Everything under ``/rpc`` answers in oRPC's RPC framing (:mod:`spectral.api.orpc_wire`),
errors included, so that ``@orpc/client`` throws an ``ORPCError`` with the right code
and status for each. The procedures are the operations of the table that have an
:class:`~spectral.api.operations.Rpc` binding: their input is validated by the same
model as over REST, their answer adapted to the original system's shape, its
timestamps sent as Dates.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError

from spectral.api import once, orpc_wire
from spectral.api.call import Call, as_result
from spectral.api.context import Principal
from spectral.api.failures import refuse_nul, validation_error
from spectral.api.operations import Operation
from spectral.errors import ApiError
from spectral.front import Request, Response
from spectral.state import ServerState
from spectral.wire import encode, iso

if TYPE_CHECKING:
    from spectral.api.app import _Served

#: Where the RPC handler is mounted (the ``url`` of an ``RPCLink``, without the host).
PREFIX = "/rpc"
#: Request content types read as JSON (oRPC reads a missing one as JSON too).
_JSON_TYPES = frozenset({"", "application/json"})
_JSON = [("content-type", "application/json")]


def is_rpc_path(path: str) -> bool:
    """Whether ``path`` is under ``/rpc``."""
    return path == PREFIX or path.startswith(PREFIX + "/")


def route_name(request: Request) -> str:
    """The route a request under ``/rpc`` is logged with."""
    return PREFIX + (orpc_wire.procedure_path(request.raw_path, PREFIX) or "")


def error_response(error: ApiError) -> Response:
    """An error as oRPC's error body."""
    body = orpc_wire.error_body(orpc_wire.api_error_json(error))
    return Response(error.status, encode(body), [*_JSON, *error.headers.items()])


class Procedures:
    """The procedures by path (``/tasks/{name}``)."""

    def __init__(self, operations: dict[str, Operation]) -> None:
        self.by_path = operations

    @classmethod
    def from_operations(cls, operations: Iterable[Operation]) -> Procedures:
        """Every operation with an RPC binding."""
        return cls({f"/tasks/{o.rpc.name}": o for o in operations if o.rpc is not None})

    async def serve(
        self, state: ServerState, request: Request, who: Principal, served: _Served
    ) -> Response:
        """Call the procedure ``request`` names, in oRPC's framing."""
        operation = self._procedure(request)
        rpc = operation.rpc
        assert rpc is not None and operation.input is not None
        value = _input(operation, request)
        served.task_id = getattr(value, "task_id", None)
        call = Call(state, who, request)
        if operation.mutating:
            outcome = await once.run(call, operation.run, value, 200)
        else:
            result = as_result(await operation.run(call, value))
            outcome = once.Outcome(200, result.payload)
        output, shape = outcome.payload, rpc.dates
        if rpc.adapt is not None:
            output = rpc.adapt(output)
        if outcome.key is not None and isinstance(output, dict):
            info: dict[str, Any] = {"cached": outcome.replayed_at is not None,
                                    "key": outcome.key[:8]}  # fmt: skip
            if outcome.replayed_at is not None:
                info["cachedAt"] = iso(outcome.replayed_at)
                shape = {**shape, "__idempotency": {"cachedAt": orpc_wire.DATE}}
            output = {**output, "__idempotency": info}
        body = encode(orpc_wire.serialize(output, shape))
        return Response(200, body, [*_JSON, *once.replay_headers(outcome)])

    def _procedure(self, request: Request) -> Operation:
        # oRPC matches the path as sent (percent-encoded), not the decoded one.
        path = orpc_wire.procedure_path(request.raw_path, PREFIX) or ""
        operation = self.by_path.get(path)
        if operation is None:
            raise ApiError(404, "NOT_FOUND", f"no procedure at {path!r}")
        method = request.method
        get = operation.rpc is not None and operation.rpc.get
        if method not in ("GET", "HEAD", "POST") or (method != "POST" and not get):
            # As oRPC's StrictGetMethodPlugin: GET only for procedures that change nothing.
            raise ApiError(
                405, "METHOD_NOT_SUPPORTED", f"{method} is not supported for {path}; use POST"
            )
        return operation


def _input(operation: Operation, request: Request) -> Any:
    """The validated input model (400 naming the field, or a malformed request)."""
    assert operation.input is not None
    try:
        if request.method == "POST":
            if request.content_type not in _JSON_TYPES:
                raise ApiError(
                    415,
                    "UNSUPPORTED_MEDIA_TYPE",
                    f"send the input as application/json, not {request.content_type}",
                )
            value = orpc_wire.decode_body(request.body)
        else:
            value = orpc_wire.decode_query(request.query_list("data"))
        if value is orpc_wire.UNDEFINED:
            value = {}  # no input: every required field is named as missing
        text = json.dumps(value)
    except (orpc_wire.MalformedRequestError, RecursionError) as error:
        raise ApiError(400, "MALFORMED_REQUEST", f"Malformed request: {error}") from None
    try:
        # Revalidated from JSON: the very rules (and messages) of the REST bodies.
        value = operation.input.model_validate_json(text)
    except ValidationError as error:
        raise validation_error(error) from None
    refuse_nul(value, text)
    return value
