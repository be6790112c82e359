"""The wire format of oRPC's RPC protocol, as ``@orpc/client`` 1.x speaks it. Pure: no I/O.

A call is ``POST {prefix}/{path segments, each encodeURIComponent'ed}`` whose body is
``{"json": input, "meta": [[type, ...path], ...]}`` (or ``GET ...?data=<that JSON>``).
``meta`` marks the values JSON cannot carry; each entry is a type and the path to the
value: 0 bigint (a decimal string), 1 Date (an ISO string, or null for an invalid
date), 2 NaN (null), 3 undefined in an array (null), 4 URL, 5 RegExp (strings),
6 Set, 7 Map (arrays). Either key may be absent: no ``json`` is an undefined input, no
``meta`` is ``[]``. A success is 200 with the same framing around the output; an
error is its status with ``{"json": {"defined", "code", "status", "message",
"data"?}}``, which the client turns back into an ``ORPCError``.

Read from the oRPC sources: ``packages/client/src/adapters/standard/``
``rpc-json-serializer.ts``, ``rpc-serializer.ts``, ``rpc-link-codec.ts`` and
``packages/client/src/error.ts`` (tag v1.9.4, and the published 1.16.1 dist, which
validates meta more strictly), ``packages/server/src/adapters/standard/rpc-codec.ts``,
``handler.ts``, ``rpc-matcher.ts`` and ``packages/server/src/plugins/strict-get-method.ts``
(v1.9.4; unchanged in substance on the 1.x branch at 1.15.0).
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from enum import IntEnum
from typing import Any, Final

from spectral.errors import ApiError


class MetaType(IntEnum):
    """``STANDARD_RPC_JSON_SERIALIZER_BUILT_IN_TYPES``."""

    BIGINT = 0
    DATE = 1
    NAN = 2
    UNDEFINED = 3
    URL = 4
    REGEXP = 5
    SET = 6
    MAP = 7


#: ``COMMON_ORPC_ERROR_DEFS``: code → (status, default message).
COMMON_ERRORS: Final[dict[str, tuple[int, str]]] = {
    "BAD_REQUEST": (400, "Bad Request"),
    "UNAUTHORIZED": (401, "Unauthorized"),
    "FORBIDDEN": (403, "Forbidden"),
    "NOT_FOUND": (404, "Not Found"),
    "METHOD_NOT_SUPPORTED": (405, "Method Not Supported"),
    "NOT_ACCEPTABLE": (406, "Not Acceptable"),
    "TIMEOUT": (408, "Request Timeout"),
    "CONFLICT": (409, "Conflict"),
    "PRECONDITION_FAILED": (412, "Precondition Failed"),
    "PAYLOAD_TOO_LARGE": (413, "Payload Too Large"),
    "UNSUPPORTED_MEDIA_TYPE": (415, "Unsupported Media Type"),
    "UNPROCESSABLE_CONTENT": (422, "Unprocessable Content"),
    "TOO_MANY_REQUESTS": (429, "Too Many Requests"),
    "CLIENT_CLOSED_REQUEST": (499, "Client Closed Request"),
    "INTERNAL_SERVER_ERROR": (500, "Internal Server Error"),
    "NOT_IMPLEMENTED": (501, "Not Implemented"),
    "BAD_GATEWAY": (502, "Bad Gateway"),
    "SERVICE_UNAVAILABLE": (503, "Service Unavailable"),
    "GATEWAY_TIMEOUT": (504, "Gateway Timeout"),
}
_CODE_FOR_STATUS: Final = {status: code for code, (status, _) in COMMON_ERRORS.items()}

#: oRPC's ``DEFAULT_MAX_BIGINT_DIGITS`` (also CPython's int/str conversion limit).
MAX_BIGINT_DIGITS: Final = 4300
_BIGINT = re.compile(r"-?(?:0|[1-9][0-9]*)")

Segment = str | int
Path = tuple[Segment, ...]


class _Undefined:
    __slots__ = ()

    def __repr__(self) -> str:
        return "UNDEFINED"


#: JavaScript's ``undefined`` as an input: an empty body, or a body without ``json``.
UNDEFINED: Final = _Undefined()


class MalformedRequestError(ValueError):
    """The request is not oRPC RPC framing (answered 400 ``BAD_REQUEST``)."""


# -- requests ------------------------------------------------------------------------


def decode_body(data: bytes) -> Any:
    """The input of a POST body (empty → :data:`UNDEFINED`).

    Raises:
        MalformedRequestError: not JSON, or not ``{"json"?, "meta"?}`` with valid meta.
    """
    if not data.strip():
        return UNDEFINED
    try:
        envelope = json.loads(data, parse_constant=_no_constant)
    except (ValueError, RecursionError) as error:  # UnicodeDecodeError is a ValueError
        raise MalformedRequestError(f"the body is not JSON: {error}") from None
    return deserialize(envelope)


def _no_constant(name: str) -> Any:
    # JSON.parse refuses NaN and Infinity; so does oRPC (NaN travels as null + meta 2).
    raise ValueError(f"{name} is not JSON")


def decode_query(values: Sequence[str]) -> Any:
    """The input of a GET: the last ``data`` query parameter (none or empty → undefined).

    Raises:
        MalformedRequestError: as :func:`decode_body`.
    """
    if not values or not values[-1]:
        return UNDEFINED
    return decode_body(values[-1].encode())


def deserialize(envelope: Any) -> Any:
    """``{"json", "meta"}`` → the value, with every meta entry applied in order.

    Dates stay ISO strings (JSON has no date type), bigints become ints, NaN a float
    NaN, undefined in an array None, URLs and RegExps their strings, Sets lists and
    Maps dicts (when every key is a string; otherwise the list of pairs). Types this
    module does not know (custom serializers) are left as sent, as oRPC 1.16 does.

    Raises:
        MalformedRequestError: the framing or a meta entry is invalid.
    """
    if not isinstance(envelope, dict):
        raise MalformedRequestError('the body must be a JSON object {"json": ..., "meta": [...]}')
    root: list[Any] = [envelope.get("json", UNDEFINED)]
    meta = envelope.get("meta")
    if meta is None:
        return root[0]
    if not isinstance(meta, list):
        raise MalformedRequestError("meta must be an array")
    for entry in meta:
        _apply(root, entry)
    return root[0]


def _apply(root: list[Any], entry: Any) -> None:
    if (
        not isinstance(entry, list)
        or not entry
        or type(entry[0]) is not int
        or not all(type(s) in (str, int) for s in entry[1:])
    ):
        raise MalformedRequestError(f"invalid meta entry {entry!r}: expected [type, ...path]")
    kind, path = entry[0], entry[1:]
    if kind not in MetaType._value2member_map_:
        return
    container: Any = root
    key: Segment = 0
    for segment in path:
        container = container[key]
        key = _segment(container, segment, entry)
    container[key] = _revive(MetaType(kind), container[key], entry)


def _segment(container: Any, segment: Segment, entry: list[Any]) -> Segment:
    if isinstance(container, dict):
        key = str(segment)  # a JavaScript property name is a string
        if key in container:
            return key
    if isinstance(container, list):
        index = segment if isinstance(segment, int) else _index(segment)
        if index is not None and 0 <= index < len(container):
            return index
    raise MalformedRequestError(f"invalid meta entry {entry!r}: segment {segment!r} does not exist")


def _index(segment: str) -> int | None:
    return int(segment) if segment.isascii() and segment.isdigit() else None


def _revive(kind: MetaType, value: Any, entry: list[Any]) -> Any:
    def expect(ok: bool, what: str) -> None:
        if not ok:
            raise MalformedRequestError(
                f"invalid meta entry {entry!r}: type {kind.value} ({kind.name.lower()}) "
                f"expects {what}"
            )

    match kind:
        case MetaType.BIGINT:
            expect(
                isinstance(value, str)
                and _BIGINT.fullmatch(value) is not None
                and len(value.lstrip("-")) <= MAX_BIGINT_DIGITS,
                f"a decimal integer string of at most {MAX_BIGINT_DIGITS} digits",
            )
            return int(value)
        case MetaType.DATE:
            expect(value is None or isinstance(value, str), "a string or null")
            return value
        case MetaType.NAN:
            expect(value is None, "null")
            return math.nan
        case MetaType.UNDEFINED:
            expect(value is None, "null")
            return None
        case MetaType.URL | MetaType.REGEXP:
            expect(isinstance(value, str), "a string")
            return value
        case MetaType.SET:
            expect(isinstance(value, list), "an array")
            return value
        case MetaType.MAP:
            expect(isinstance(value, list), "an array")
            pairs = [p for p in value if isinstance(p, list) and len(p) == 2]
            if len(pairs) == len(value) and all(isinstance(k, str) for k, _ in pairs):
                return dict(pairs)
            return value


def procedure_path(path: str, prefix: str) -> str | None:
    """The procedure's HTTP path as oRPC's matcher sees it (``/tasks/create``).

    ``path`` is the request's path as sent (still percent-encoded: oRPC matches the
    encoded form); one leading and one trailing slash are dropped after the prefix.
    None when the path is not under ``prefix``.
    """
    if path != prefix and not path.startswith(prefix + "/"):
        return None
    rest = path[len(prefix) :]
    rest = rest.removeprefix("/").removesuffix("/")
    return "/" + rest


# -- responses -----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Each:
    """A shape for a list: every item has shape ``item``."""

    item: Shape


class _Date:
    __slots__ = ()

    def __repr__(self) -> str:
        return "DATE"


#: A shape: this value is a timestamp (an ISO string) that travels as an oRPC Date.
DATE: Final = _Date()

#: Where an output's timestamps are: :data:`DATE`, :class:`Each`, or key → shape.
Shape = _Date | Each | Mapping[str, "Shape"]


def date_paths(value: Any, shape: Shape, path: Path = ()) -> Iterator[Path]:
    """Paths of the timestamps in ``value`` that ``shape`` names (nulls are skipped)."""
    if isinstance(shape, _Date):
        if isinstance(value, str):
            yield path
    elif isinstance(shape, Each):
        if isinstance(value, list):
            for index, item in enumerate(value):
                yield from date_paths(item, shape.item, (*path, index))
    elif isinstance(value, dict):
        for key, item in value.items():
            inner = shape.get(key)
            if inner is not None:
                yield from date_paths(item, inner, (*path, key))


def serialize(value: Any, shape: Shape | None = None) -> dict[str, Any]:
    """``{"json": value, "meta"?: [[1, ...path], ...]}``: each timestamp marked a Date.

    ``meta`` is left out when empty, as oRPC's own serializer does.
    """
    envelope: dict[str, Any] = {"json": value}
    if shape is not None:
        meta = [[MetaType.DATE.value, *path] for path in date_paths(value, shape)]
        if meta:
            envelope["meta"] = meta
    return envelope


def code_for_status(status: int) -> str:
    """oRPC's common error code for an HTTP status (fallback: 5xx internal, else bad request)."""
    code = _CODE_FOR_STATUS.get(status)
    if code is not None:
        return code
    return "INTERNAL_SERVER_ERROR" if status >= 500 else "BAD_REQUEST"


def error_json(
    status: int, message: str, data: Any = None, code: str | None = None
) -> dict[str, Any]:
    """``ORPCError.toJSON()``: ``{"defined": false, "code", "status", "message", "data"?}``."""
    body: dict[str, Any] = {
        "defined": False,
        "code": code or code_for_status(status),
        "status": status,
        "message": message,
    }
    if data is not None:
        body["data"] = data
    return body


def api_error_json(error: ApiError) -> dict[str, Any]:
    """An :class:`ApiError` as an oRPC error; our own code and details go in ``data``."""
    data: dict[str, Any] = {"code": error.code}
    if error.details is not None:
        data["details"] = error.details
    return error_json(error.status, error.message, data)


def error_body(error: Mapping[str, Any]) -> dict[str, Any]:
    """An error JSON in the RPC framing (it holds no dates: no meta)."""
    return {"json": dict(error)}
