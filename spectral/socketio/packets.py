"""Socket.IO protocol 5 packets, sans-IO (the text carried by Engine.IO MESSAGE packets).

A packet is ``<type>[<attachments>-][<namespace>,][<ack id>][<JSON data>]``, as
socketio/socket.io-parser encodes it; :func:`decode` applies that parser's checks
(``isPayloadValid``) so a malformed packet is a :class:`PacketError`, never another
exception. Binary attachments are parsed only to be refused by the caller. Why our
own codec: see :mod:`spectral.socketio.engineio`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from enum import IntEnum
from typing import Any

import orjson

#: The main namespace, the only one served.
MAIN = "/"
#: Largest ack id accepted (JavaScript's largest safe integer).
MAX_ID = 2**53 - 1


class PacketType(IntEnum):
    """Socket.IO packet types (their digit on the wire)."""

    CONNECT = 0
    DISCONNECT = 1
    EVENT = 2
    ACK = 3
    CONNECT_ERROR = 4
    BINARY_EVENT = 5
    BINARY_ACK = 6


class _NoData:
    """The absence of a data part (distinct from JSON ``null``)."""

    def __repr__(self) -> str:
        return "NO_DATA"


NO_DATA: Any = _NoData()
_TYPES = {str(int(kind)): kind for kind in PacketType}
_DIGITS = frozenset("0123456789")


@dataclass(frozen=True, slots=True)
class Packet:
    """One Socket.IO packet."""

    type: PacketType
    data: Any = NO_DATA
    namespace: str = MAIN
    id: int | None = None
    attachments: int = 0


class PacketError(ValueError):
    """A text that is not a valid Socket.IO packet."""


def encode(packet: Packet) -> str:
    """The text of a packet (compact JSON data)."""
    parts = [str(int(packet.type))]
    if packet.type in (PacketType.BINARY_EVENT, PacketType.BINARY_ACK):
        parts.append(f"{packet.attachments}-")
    if packet.namespace != MAIN:
        parts.append(packet.namespace + ",")
    if packet.id is not None:
        parts.append(str(packet.id))
    if packet.data is not NO_DATA:
        parts.append(dumps(packet.data))
    return "".join(parts)


def event(name: str, *args: Any) -> str:
    """An EVENT packet on the main namespace: ``2["name",...args]``."""
    return "2" + dumps([name, *args])


def ack(ack_id: int, *args: Any) -> str:
    """The ACK answering the event that carried ``ack_id``."""
    return f"3{ack_id}" + dumps(list(args))


def connected(socket_id: str) -> str:
    """The CONNECT answer of the main namespace."""
    return "0" + dumps({"sid": socket_id})


def connect_error(message: str, namespace: str = MAIN) -> str:
    """A CONNECT_ERROR (``socket.io-client`` emits ``connect_error`` with ``message``)."""
    return encode(Packet(PacketType.CONNECT_ERROR, {"message": message}, namespace))


def dumps(value: Any) -> str:
    """Compact JSON text (integers beyond 64 bits through the standard library)."""
    try:
        return orjson.dumps(value).decode()
    except TypeError:
        return json.dumps(value, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def decode(text: str) -> Packet:
    """One packet from its text.

    Raises:
        PacketError: the text is not a valid packet (type, attachments, id, JSON, or a
            data part its type does not allow).
    """
    if not text:
        raise PacketError("empty packet")
    kind = _TYPES.get(text[0])
    if kind is None:
        raise PacketError(f"unknown packet type {text[0]!r}")
    size = len(text)
    at = 1
    attachments = 0
    if kind in (PacketType.BINARY_EVENT, PacketType.BINARY_ACK):
        end = text.find("-", at)
        digits = text[at:end] if end >= 0 else ""
        if not digits or not _DIGITS.issuperset(digits) or len(digits) > 6:
            raise PacketError("illegal attachments")
        attachments = int(digits)
        at = end + 1
    namespace = MAIN
    if at < size and text[at] == "/":
        end = text.find(",", at)
        if end < 0:
            namespace, at = text[at:], size
        else:
            namespace, at = text[at:end], end + 1
    end = at
    while end < size and text[end] in _DIGITS:
        end += 1
    ack_id = None
    if end > at:
        ack_id = int(text[at:end]) if end - at <= 16 else MAX_ID + 1
        if ack_id > MAX_ID:
            raise PacketError("illegal ack id")
        at = end
    data = _loads(text[at:]) if at < size else NO_DATA
    if not _valid(kind, data):
        raise PacketError(f"invalid payload for a {kind.name} packet")
    return Packet(kind, data, namespace, ack_id, attachments)


def _reject_constant(name: str) -> Any:
    raise PacketError(f"{name} is not JSON")


def _loads(text: str) -> Any:
    try:
        return json.loads(text, parse_constant=_reject_constant)
    except (ValueError, RecursionError):
        raise PacketError("invalid JSON") from None


def _valid(kind: PacketType, data: Any) -> bool:
    if kind is PacketType.CONNECT:
        return data is NO_DATA or isinstance(data, dict)
    if kind is PacketType.DISCONNECT:
        return data is NO_DATA
    if kind is PacketType.CONNECT_ERROR:
        return isinstance(data, dict | str)
    if kind in (PacketType.EVENT, PacketType.BINARY_EVENT):
        return isinstance(data, list) and bool(data) and isinstance(data[0], str)
    return isinstance(data, list)  # ACK, BINARY_ACK
