"""WebSocket helpers shared by the end-to-end tests."""

from __future__ import annotations

import json
from typing import Any

import trio
from trio_websocket import ConnectionClosed, WebSocketConnection


async def receive(ws: WebSocketConnection) -> dict[str, Any]:
    """The next JSON message (a generous 30 s at most: only a hang should hit it)."""
    with trio.fail_after(30):
        return json.loads(await ws.get_message())


async def close_code(ws: WebSocketConnection) -> int:
    """Read until the server closes; the close code (30 s at most)."""
    with trio.fail_after(30):
        try:
            while True:
                await ws.get_message()
        except ConnectionClosed as closed:
            return closed.reason.code
