"""Engine.IO protocol 4, sans-IO: packets, long-polling payloads, the open packet and
the server's error answers (docs/api.md, "Socket.IO (the seeds' jobs system)").

Why our own codec: python-engineio and python-socketio are servers bound to asyncio
(or threads), and neither runs on trio or behind our HTTP front; the text protocol a
server needs is small. This module and :mod:`spectral.socketio.packets` are pure
functions on strings (no I/O, no trio), checked against the real ``socket.io-client``
4.x under Node (tests/test_socketio_client.py).

Matches socketio/engine.io-protocol (v4) and engine.io-parser's text encoding: a
packet is its type digit followed by its data; a polling payload joins packets with
the record separator ``\\x1e``. A binary message (``b`` + base64) is decoded as such
and left to the caller, which ignores it: nothing here sends or expects binary data.
The error codes and messages are engine.io's ``Server.errors`` / ``errorMessages``.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from enum import IntEnum

#: Joins the packets of one long-polling payload.
SEPARATOR = "\x1e"
#: The protocol revision served (``?EIO=4``); 3 and older are refused.
PROTOCOL = "4"
TRANSPORTS = ("polling", "websocket")


class PacketType(IntEnum):
    """Engine.IO packet types (their digit on the wire)."""

    OPEN = 0
    CLOSE = 1
    PING = 2
    PONG = 3
    MESSAGE = 4
    UPGRADE = 5
    NOOP = 6


@dataclass(frozen=True, slots=True)
class Packet:
    """One Engine.IO packet: its type and its (text) data."""

    type: PacketType
    data: str = ""
    #: A binary MESSAGE (``b`` + base64 on long-polling): ``data`` is the base64 text.
    binary: bool = False


class PayloadError(ValueError):
    """A text that is not a valid Engine.IO packet or payload (the session closes)."""


class ErrorCode(IntEnum):
    """Engine.IO's error codes for refused requests (engine.io ``Server.errors``)."""

    UNKNOWN_TRANSPORT = 0
    UNKNOWN_SID = 1
    BAD_HANDSHAKE_METHOD = 2
    BAD_REQUEST = 3
    FORBIDDEN = 4
    UNSUPPORTED_PROTOCOL_VERSION = 5


MESSAGES = {
    ErrorCode.UNKNOWN_TRANSPORT: "Transport unknown",
    ErrorCode.UNKNOWN_SID: "Session ID unknown",
    ErrorCode.BAD_HANDSHAKE_METHOD: "Bad handshake method",
    ErrorCode.BAD_REQUEST: "Bad request",
    ErrorCode.FORBIDDEN: "Forbidden",
    ErrorCode.UNSUPPORTED_PROTOCOL_VERSION: "Unsupported protocol version",
}
_TYPES = {str(int(kind)): kind for kind in PacketType}


def encode(kind: PacketType, data: str = "") -> str:
    """The text of one packet."""
    return f"{int(kind)}{data}"


def message(data: str) -> str:
    """A MESSAGE packet (what carries a Socket.IO packet)."""
    return "4" + data


def decode(text: str) -> Packet:
    """One packet from its text.

    Raises:
        PayloadError: empty, or an unknown type.
    """
    if not text:
        raise PayloadError("empty packet")
    kind = _TYPES.get(text[0])
    if kind is None:
        if text[0] == "b":
            return Packet(PacketType.MESSAGE, text[1:], binary=True)
        raise PayloadError(f"unknown packet type {text[0]!r}")
    return Packet(kind, text[1:])


def encode_payload(texts: Iterable[str]) -> str:
    """A long-polling payload: encoded packets joined by :data:`SEPARATOR`."""
    return SEPARATOR.join(texts)


def decode_payload(body: str) -> list[Packet]:
    """The packets of a long-polling payload (a POST's body).

    Raises:
        PayloadError: any packet in it is malformed (all or nothing, as engine.io does).
    """
    return [decode(text) for text in body.split(SEPARATOR)]


def open_packet(
    sid: str, *, ping_interval: float, ping_timeout: float, max_payload: int, upgrade: bool
) -> str:
    """The OPEN packet of a new session (times in seconds, sent as milliseconds)."""
    handshake = {
        "sid": sid,
        "upgrades": ["websocket"] if upgrade else [],
        "pingInterval": round(ping_interval * 1000),
        "pingTimeout": round(ping_timeout * 1000),
        "maxPayload": max_payload,
    }
    return encode(PacketType.OPEN, json.dumps(handshake, separators=(",", ":")))


def check_query(query: Mapping[str, str]) -> ErrorCode | None:
    """Engine.IO's checks of a request's query (protocol, transport), or None if fine."""
    if query.get("EIO") != PROTOCOL:
        return ErrorCode.UNSUPPORTED_PROTOCOL_VERSION
    if query.get("transport") not in TRANSPORTS:
        return ErrorCode.UNKNOWN_TRANSPORT
    return None


def error_answer(code: ErrorCode) -> tuple[int, bytes]:
    """The HTTP status and JSON body engine.io answers a refused request with."""
    status = 403 if code is ErrorCode.FORBIDDEN else 400
    body = json.dumps({"code": int(code), "message": MESSAGES[code]}, separators=(",", ":"))
    return status, body.encode()
