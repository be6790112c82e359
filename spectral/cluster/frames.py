"""The node-to-node frame codec, sans-I/O: 4-byte big-endian length + an orjson payload.

Theory of operation
-------------------
A frame is ``length (4 bytes, big-endian) || payload`` where the payload is one JSON
value encoded by orjson. :func:`encode_frame` turns a value into bytes to write;
:class:`FrameDecoder` is fed bytes as they arrive, cut anywhere, and hands back whole
values from :meth:`FrameDecoder.next_frame`, or :data:`NEED_DATA`. Nothing here reads
a socket or a clock (like h11), so every split point and every bad input is tested
without an event loop.

A frame longer than ``max_size`` is refused on both sides: :func:`encode_frame` raises
before anything is written, and the decoder raises as soon as the 4-byte header says
so, without buffering the payload. A decoder that raised is broken: the stream has lost
its framing, so the connection must close.

On top of the frames, the messages of one connection (:func:`parse_request`,
:func:`parse_reply`) are small frozen values:

- client → server: ``{"id": int, "op": str, "body": any}`` (:class:`Call`);
- server → client: ``{"id", "ok": body}`` (:class:`Ok`), ``{"id", "error": {"code",
  "message", "status", "details"?}}`` (:class:`Failed`), or ``{"goaway": last_id}``
  (:class:`GoAway`: the server is shutting down; it ran every request up to
  ``last_id`` and will run none after it).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Any, Final, TypeGuard

import orjson

#: Largest payload of one frame, in bytes. A task's answer is a few KiB, a listing page
#: of 1,000 rows about 1 MiB; 16 MiB leaves room without letting one peer pin the memory.
MAX_FRAME: Final = 16 * 1024 * 1024
_HEADER = struct.Struct(">I")
HEADER_SIZE: Final = _HEADER.size


class _NeedData:
    """The sentinel type of :data:`NEED_DATA`."""

    def __repr__(self) -> str:
        return "NEED_DATA"


#: Returned by :meth:`FrameDecoder.next_frame` when no whole frame is buffered yet.
NEED_DATA: Final = _NeedData()


class FrameError(ValueError):
    """A frame or message that breaks the protocol (the connection must close)."""


class FrameTooLargeError(FrameError):
    """A frame longer than the limit: raised by the encoder before anything is written,
    and by the decoder as soon as the header announces it."""

    def __init__(self, size: int, limit: int) -> None:
        super().__init__(f"frame of {size} bytes exceeds the limit of {limit} bytes")
        self.size = size
        self.limit = limit


class FrameDecodeError(FrameError):
    """A payload that is not JSON, or a message without the fields it must have."""


def encode_frame(value: Any, max_size: int = MAX_FRAME) -> bytes:
    """The frame of one JSON value.

    Raises:
        FrameTooLargeError: the payload would exceed ``max_size`` bytes.
        TypeError: the value is not JSON-serialisable (orjson's ``JSONEncodeError``).
    """
    payload = orjson.dumps(value)
    if len(payload) > max_size:
        raise FrameTooLargeError(len(payload), max_size)
    return _HEADER.pack(len(payload)) + payload


class FrameDecoder:
    """Incremental decoder: :meth:`feed` bytes, then :meth:`next_frame` until NEED_DATA."""

    def __init__(self, max_size: int = MAX_FRAME) -> None:
        self.max_size = max_size
        self._buffer = bytearray()
        self._broken: FrameError | None = None

    @property
    def buffered(self) -> int:
        """Bytes received but not yet returned as frames."""
        return len(self._buffer)

    def feed(self, data: bytes | bytearray | memoryview) -> None:
        """Append received bytes (any split of the stream)."""
        self._buffer += data

    def next_frame(self) -> Any:
        """The next whole frame's value, or :data:`NEED_DATA`.

        Raises:
            FrameTooLargeError: the next frame's header announces more than ``max_size``.
            FrameDecodeError: the next payload is not JSON.
        """
        if self._broken is not None:
            raise self._broken
        buffer = self._buffer
        if len(buffer) < HEADER_SIZE:
            return NEED_DATA
        (size,) = _HEADER.unpack_from(buffer)
        if size > self.max_size:
            self._broken = FrameTooLargeError(size, self.max_size)
            raise self._broken
        end = HEADER_SIZE + size
        if len(buffer) < end:
            return NEED_DATA
        payload = bytes(buffer[HEADER_SIZE:end])
        # Deleting from the front of a bytearray is O(1) in CPython (it moves a start offset).
        del buffer[:end]
        try:
            return orjson.loads(payload)
        except orjson.JSONDecodeError as exc:
            self._broken = FrameDecodeError(f"frame payload is not JSON: {exc}")
            raise self._broken from None


@dataclass(frozen=True, slots=True)
class Call:
    """A request: run ``op`` with ``body`` and answer under ``id``."""

    id: int
    op: str
    body: Any


@dataclass(frozen=True, slots=True)
class Ok:
    """A successful answer to request ``id``."""

    id: int
    body: Any


@dataclass(frozen=True, slots=True)
class Failed:
    """An error answer to request ``id`` (an API error's code, message, HTTP status)."""

    id: int
    code: str
    message: str
    status: int
    details: Any = None


@dataclass(frozen=True, slots=True)
class GoAway:
    """The server is shutting down: requests up to ``last_id`` run, later ones never
    (``-1``: none ran)."""

    last_id: int


Reply = Ok | Failed | GoAway


def call_frame(call_id: int, op: str, body: Any, max_size: int = MAX_FRAME) -> bytes:
    """The frame of a request."""
    return encode_frame({"id": call_id, "op": op, "body": body}, max_size)


def ok_frame(call_id: int, body: Any, max_size: int = MAX_FRAME) -> bytes:
    """The frame of a successful answer."""
    return encode_frame({"id": call_id, "ok": body}, max_size)


def failed_frame(failed: Failed) -> bytes:
    """The frame of an error answer (always small enough: messages are short)."""
    error: dict[str, Any] = {"code": failed.code, "message": failed.message}
    error["status"] = failed.status
    if failed.details is not None:
        error["details"] = failed.details
    return encode_frame({"id": failed.id, "error": error})


def goaway_frame(last_id: int) -> bytes:
    """The frame announcing shutdown after request ``last_id``."""
    return encode_frame({"goaway": last_id})


def _is_id(value: object) -> TypeGuard[int]:
    return type(value) is int and value >= 0


def request_id(value: Any) -> int | None:
    """The id of a request frame, if it has a usable one (to answer a malformed request)."""
    call_id = value.get("id") if isinstance(value, dict) else None
    return call_id if _is_id(call_id) else None


def parse_request(value: Any) -> Call:
    """The request a decoded frame holds.

    Raises:
        FrameDecodeError: not ``{"id": int >= 0, "op": str, "body"?: any}``.
    """
    call_id = request_id(value)
    if call_id is None:
        raise FrameDecodeError("a request needs an integer id >= 0")
    op = value.get("op")
    if not isinstance(op, str):
        raise FrameDecodeError("a request needs a string op")
    return Call(call_id, op, value.get("body"))


def parse_reply(value: Any) -> Reply:
    """The answer a decoded frame holds.

    Raises:
        FrameDecodeError: neither an ok, an error nor a goaway frame.
    """
    if not isinstance(value, dict):
        raise FrameDecodeError("a reply must be a JSON object")
    call_id = value.get("id")
    if _is_id(call_id):
        if "ok" in value:
            return Ok(call_id, value["ok"])
        error = value.get("error")
        if isinstance(error, dict):
            code, message, status = error.get("code"), error.get("message"), error.get("status")
            if isinstance(code, str) and isinstance(message, str) and type(status) is int:
                return Failed(call_id, code, message, status, error.get("details"))
        raise FrameDecodeError("a reply needs 'ok' or an error {code, message, status}")
    last_id = value.get("goaway")
    if type(last_id) is int and last_id >= -1:  # -1: it ran none
        return GoAway(last_id)
    raise FrameDecodeError("a reply needs an integer id >= 0 or 'goaway'")
