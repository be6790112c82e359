"""Room endpoints: ``POST /rooms/{roomId}/broadcast``, ``GET /rooms/{roomId}/health``.

The WebSocket ``/rooms/{roomId}/subscribe`` is served by :mod:`spectral.api.watch`.
"""

from __future__ import annotations

import json
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError
from quart import Quart, request

from actors import ActorBrokenError, ObjectNotFoundError, RouterClosedError
from spectral.api import models
from spectral.api.context import Principal, principal, require_write
from spectral.api.failures import validation_error
from spectral.api.once import replay_headers, run_once
from spectral.errors import ApiError
from spectral.rooms import (
    KIND,
    Describe,
    Publish,
    Published,
    RoomInfo,
    RoomNotFoundError,
    natural_owner,
)
from spectral.state import ServerState


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


async def call_room(state: ServerState, room_id: str, message: Any, *, create: bool = False) -> Any:
    """Send ``message`` to the room's actor; translate failures into API errors."""
    try:
        return await state.router.call(KIND, room_id, message, create=create)
    except (RoomNotFoundError, ObjectNotFoundError):
        raise not_found(room_id) from None
    except RouterClosedError:
        raise ApiError(503, "SHUTTING_DOWN", "the server is shutting down") from None
    except ActorBrokenError:
        raise ApiError(
            503, "STORAGE_UNAVAILABLE", f"room {room_id!r} is unavailable; try again later"
        ) from None


async def room_info(state: ServerState, who: Principal, room_id: str) -> RoomInfo:
    """The room's health, if ``who`` may see it (404 otherwise).

    An owner's own room ``user_{owner}`` always exists for that owner and admins:
    before its first use it has no file yet, and no subscriber nor message.
    """
    try:
        info: RoomInfo = await call_room(state, room_id, Describe(who.owner_filter))
    except ApiError as error:
        owner = natural_owner(room_id)
        if error.status != 404 or owner is None or who.owner_filter not in (None, owner):
            raise
        return RoomInfo(owner, connections=0, last_seq=0)
    return info


def _refuse_constant(name: str) -> None:
    raise ValueError(f"{name} is not a JSON number")


def register(app: Quart, state: ServerState) -> None:
    """Add the room endpoints to ``app``."""

    @app.post("/rooms/<room_id>/broadcast")
    async def broadcast(room_id: str) -> tuple[Any, int, dict[str, str]]:
        """Send a JSON object to every subscriber of the room."""
        who = principal()
        require_write(who, "broadcast to rooms")
        room_id = parse_room_id(room_id)
        raw = await request.get_data(cache=False)
        try:
            body = json.loads(raw, parse_constant=_refuse_constant)
        except ValueError as error:
            raise ApiError(400, "INVALID_JSON", f"the body is not valid JSON: {error}") from None
        if not isinstance(body, dict):
            raise ApiError(400, "VALIDATION_ERROR", "body: must be a JSON object")

        async def work() -> tuple[int, Any]:
            message = Publish((body,), who.owner_filter)
            done: Published = await call_room(state, room_id, message, create=True)
            return 200, {"delivered": done.delivered, "roomSeq": done.room_seq}

        outcome = await run_once(state, who, f"rest broadcast {room_id}", raw, work)
        return outcome.payload, outcome.status, replay_headers(outcome)

    @app.get("/rooms/<room_id>/health")
    async def room_health(room_id: str) -> dict[str, Any]:
        """Subscribers and the last roomSeq of a room."""
        room_id = parse_room_id(room_id)
        info = await room_info(state, principal(), room_id)
        return {"roomId": room_id, "connections": info.connections, "lastSeq": info.last_seq}
