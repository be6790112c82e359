"""Key administration (``/admin/keys``) and watch tokens (``POST /tokens/watch``)."""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import Field, StringConstraints, model_validator

from spectral.access import jwts, keys, tokens
from spectral.access.auth import BOOTSTRAP_KEY_ID
from spectral.api import admin_feed, procedures
from spectral.api.call import Call
from spectral.api.context import require_admin
from spectral.api.models import Body, TaskId, TaskRef
from spectral.api.rooms import room_info
from spectral.errors import ApiError
from spectral.wire import iso

Owner = Annotated[
    str,
    StringConstraints(pattern=keys.OWNER_PATTERN),
    Field(description="1-128 characters of A-Z a-z 0-9 . _ : -"),
]
RoomId = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9._:-]{1,128}$")]


class CreateKey(Body):
    """``POST /admin/keys``."""

    owner: Owner
    role: Literal["admin", "service", "reader"]
    name: Annotated[str, StringConstraints(max_length=200)] | None = None


class WatchTokenRequest(Body):
    """``POST /tokens/watch``: exactly one of ``taskId``, ``room`` and ``feed``."""

    task_id: TaskId | None = Field(None, alias="taskId")
    room: RoomId | None = None
    feed: Literal["admin"] | None = Field(
        None, description="`admin`: the admin feed of every owner's task events (admins)"
    )
    ttl_seconds: Annotated[int, Field(ge=1, le=tokens.MAX_TTL_SECONDS)] = Field(
        tokens.DEFAULT_TTL_SECONDS, alias="ttlSeconds"
    )

    @model_validator(mode="after")
    def _one_scope(self) -> WatchTokenRequest:
        if sum(value is not None for value in (self.task_id, self.room, self.feed)) != 1:
            raise ValueError("send exactly one of taskId, room and feed")
        return self


_KEY_ID = re.compile(r"^[0-9a-f]{16}$")


async def create_key(call: Call, body: CreateKey) -> dict[str, Any]:
    """Create an API key; its secret is in this answer only."""
    require_admin(call.who, "manage keys")
    api_key, secret = await call.state.auth.keys.create(body.owner, body.role, body.name)
    return {**api_key.public(), "key": secret}


async def list_keys(call: Call, _: None) -> dict[str, Any]:
    """Every key (never a secret), revoked ones included."""
    require_admin(call.who, "manage keys")
    return {"keys": [key.public() for key in await call.state.auth.keys.list()]}


async def revoke_key(call: Call, _: None) -> dict[str, Any]:
    """Revoke a key at once."""
    require_admin(call.who, "manage keys")
    key_id = call.params["id"]
    if not _KEY_ID.match(key_id) or await call.state.auth.keys.revoke(key_id) is None:
        raise ApiError(404, "KEY_NOT_FOUND", f"no API key with id {key_id!r}")
    return {"success": True}


async def watch_token(call: Call, body: WatchTokenRequest) -> dict[str, Any]:
    """A short-lived token that lets a browser watch one task or room."""
    who = call.who
    if who.scope is not None:
        raise ApiError(403, "FORBIDDEN", "a watch token may not mint tokens")
    if body.task_id is not None:
        await procedures.get_task(call, TaskRef.model_construct(task_id=body.task_id))
        scope = tokens.task_scope(body.task_id)
    elif body.feed is not None:
        require_admin(who, "watch the admin feed")
        scope = admin_feed.SCOPE
    else:
        assert body.room is not None
        await check_room(call, body.room)
        scope = tokens.room_scope(body.room)
    token, expires_at = call.state.auth.mint(who, scope, body.ttl_seconds)
    return {"token": token, "expiresAt": iso(expires_at)}


async def whoami(call: Call, _: None) -> dict[str, Any]:
    """The caller's key: its id, owner, role and name."""
    who = call.who
    stored = who.key_id != BOOTSTRAP_KEY_ID and not who.key_id.startswith(jwts.KEY_ID_PREFIX)
    key = await call.state.auth.keys.get(who.key_id) if stored else None
    name = None if key is None else key.name
    return {"keyId": who.key_id, "owner": who.owner, "role": who.role, "name": name}


async def check_room(call: Call, room: str) -> None:
    """404 unless the caller may use ``room``: admins any, others their own rooms."""
    who = call.who
    if who.is_admin or room == f"user_{who.owner}":
        return
    await room_info(call, room)  # 404 unless the room exists and is the caller's
