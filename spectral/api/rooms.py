"""Room endpoints: ``POST /rooms/{roomId}/broadcast``, ``GET /rooms/{roomId}/health``.

The WebSocket ``/rooms/{roomId}/subscribe`` is served by :mod:`spectral.api.watch`.
"""

from __future__ import annotations

import json
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError

from actors import ActorBrokenError, ObjectNotFoundError, RouterClosedError
from spectral.api import models
from spectral.api.call import Call
from spectral.api.context import require_write
from spectral.api.failures import validation_error
from spectral.errors import ApiError
from spectral.rooms.actor import (
    KIND,
    Describe,
    Publish,
    Published,
    RoomInfo,
    RoomNotFoundError,
    natural_owner,
)


class BroadcastBody(BaseModel):
    """``POST /rooms/{roomId}/broadcast``: any JSON object (it is the message)."""

    model_config = ConfigDict(extra="allow")


def parse_room_id(room_id: str) -> str:
    """Validate a room id from the path (400 naming ``roomId``)."""
    try:
        return models.RoomRef.model_validate({"roomId": room_id}).room_id
    except ValidationError as error:
        raise validation_error(error) from None


def not_found(room_id: str) -> ApiError:
    """The answer for a room that does not exist or is another owner's."""
    return ApiError(404, "ROOM_NOT_FOUND", f"room {room_id!r} not found")


async def call_room(call: Call, room_id: str, message: Any, *, create: bool = False) -> Any:
    """Send ``message`` to the room's actor; translate failures into API errors."""
    try:
        return await call.state.router.call(KIND, room_id, message, create=create)
    except (RoomNotFoundError, ObjectNotFoundError):
        raise not_found(room_id) from None
    except RouterClosedError:
        raise ApiError(503, "SHUTTING_DOWN", "the server is shutting down") from None
    except ActorBrokenError:
        raise ApiError(
            503, "STORAGE_UNAVAILABLE", f"room {room_id!r} is unavailable; try again later"
        ) from None


async def room_info(call: Call, room_id: str) -> RoomInfo:
    """The room's health, if the caller may see it (404 otherwise).

    An owner's own room ``user_{owner}`` always exists for that owner and admins:
    before its first use it has no file yet, and no subscriber nor message.
    """
    who = call.who
    try:
        info: RoomInfo = await call_room(call, room_id, Describe(who.owner_filter))
    except ApiError as error:
        owner = natural_owner(room_id)
        if error.status != 404 or owner is None or who.owner_filter not in (None, owner):
            raise
        return RoomInfo(owner, connections=0, last_seq=0)
    return info


def _refuse_constant(name: str) -> None:
    raise ValueError(f"{name} is not a JSON number")


def parse_message(raw: bytes) -> dict[str, Any]:
    """A broadcast body: any JSON object (NaN and Infinity refused)."""
    try:
        body = json.loads(raw, parse_constant=_refuse_constant)
    except ValueError as error:
        raise ApiError(400, "INVALID_JSON", f"the body is not valid JSON: {error}") from None
    if not isinstance(body, dict):
        raise ApiError(400, "VALIDATION_ERROR", "body: must be a JSON object")
    return body


async def broadcast(call: Call, _: None) -> dict[str, Any]:
    """Send a JSON object to every subscriber of the room."""
    who = call.who
    require_write(who, "broadcast to rooms")
    room_id = parse_room_id(call.params["roomId"])
    body = parse_message(call.request.body)
    message = Publish((body,), who.owner_filter)
    done: Published = await call_room(call, room_id, message, create=True)
    return {"delivered": done.delivered, "roomSeq": done.room_seq}


async def health(call: Call, _: None) -> dict[str, Any]:
    """Subscribers and the last roomSeq of a room."""
    room_id = parse_room_id(call.params["roomId"])
    info = await room_info(call, room_id)
    return {"roomId": room_id, "connections": info.connections, "lastSeq": info.last_seq}
