"""Key administration (``/admin/keys``) and watch tokens (``POST /tokens/watch``)."""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import Field, StringConstraints, model_validator
from quart import Quart

from spectral import keys, tokens
from spectral.api import procedures
from spectral.api.context import Principal, principal, require_admin
from spectral.api.models import Body, TaskId
from spectral.api.rest import parse_body
from spectral.api.rooms import room_info
from spectral.errors import ApiError
from spectral.state import ServerState
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
    """``POST /tokens/watch``: exactly one of ``taskId`` and ``room``."""

    task_id: TaskId | None = Field(None, alias="taskId")
    room: RoomId | None = None
    ttl_seconds: Annotated[int, Field(ge=1, le=tokens.MAX_TTL_SECONDS)] = Field(
        tokens.DEFAULT_TTL_SECONDS, alias="ttlSeconds"
    )

    @model_validator(mode="after")
    def _one_scope(self) -> WatchTokenRequest:
        if (self.task_id is None) == (self.room is None):
            raise ValueError("send exactly one of taskId and room")
        return self


_KEY_ID = re.compile(r"^[0-9a-f]{16}$")


def register(app: Quart, state: ServerState) -> None:
    """Add the admin and token endpoints to ``app``."""
    store = state.auth.keys

    @app.post("/admin/keys")
    async def create_key() -> tuple[dict[str, Any], int]:
        """Create an API key; its secret is in this answer only."""
        require_admin(principal(), "manage keys")
        body = await parse_body(CreateKey)
        api_key, secret = store.create(body.owner, body.role, body.name)
        return {**api_key.public(), "key": secret}, 201

    @app.get("/admin/keys")
    async def list_keys() -> dict[str, Any]:
        """Every key (never a secret), revoked ones included."""
        require_admin(principal(), "manage keys")
        return {"keys": [key.public() for key in store.list()]}

    @app.delete("/admin/keys/<key_id>")
    async def revoke_key(key_id: str) -> dict[str, Any]:
        """Revoke a key at once."""
        require_admin(principal(), "manage keys")
        if not _KEY_ID.match(key_id) or store.revoke(key_id) is None:
            raise ApiError(404, "KEY_NOT_FOUND", f"no API key with id {key_id!r}")
        return {"success": True}

    @app.post("/tokens/watch")
    async def watch_token() -> dict[str, Any]:
        """A short-lived token that lets a browser watch one task or room."""
        who = principal()
        if who.scope is not None:
            raise ApiError(403, "FORBIDDEN", "a watch token may not mint tokens")
        body = await parse_body(WatchTokenRequest)
        if body.task_id is not None:
            await procedures.get_task(state, who, body.task_id)  # 404 unless visible
            scope = tokens.task_scope(body.task_id)
        else:
            assert body.room is not None
            await check_room(state, who, body.room)
            scope = tokens.room_scope(body.room)
        token, expires_at = state.auth.mint(who, scope, body.ttl_seconds)
        return {"token": token, "expiresAt": iso(expires_at)}


async def check_room(state: ServerState, who: Principal, room: str) -> None:
    """404 unless ``who`` may use ``room``: admins any, others their own rooms."""
    if who.is_admin or room == f"user_{who.owner}":
        return
    await room_info(state, who, room)  # 404 unless the room exists and is the caller's
