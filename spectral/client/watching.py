"""Watching a task (``/ws/task/{taskId}``) and subscribing to a room
(``/rooms/{roomId}/subscribe``) over WebSocket, resuming by themselves (docs/sdk.md).

Each function is an iterator of the server's messages (dicts, as sent). After any
disconnect it reconnects with ``since=<last seq seen>`` (and the task's ``epoch``),
with exponential backoff and full jitter under one overall ``reconnect_deadline``,
and drops what it has already yielded (by ``seq``, or ``roomSeq`` for rooms). A task
watch ends after the task's terminal message (``complete``, ``fail``, ``cancel``,
``timeout``), its ``deleted`` message, or a snapshot of a task already finished.

Runs under asyncio and trio (httpx-ws is anyio-based); imports nothing of the server.
"""

from __future__ import annotations

import json
import random
import re
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from typing import Any, NoReturn
from urllib.parse import quote, urlencode

import anyio
import httpx

from spectral.client.errors import (
    AuthError,
    NotFoundError,
    RateLimitedError,
    SpectralError,
    UnavailableError,
    ValidationError,
    error_for,
)

__all__ = [
    "TERMINAL_TYPES",
    "WatchGaveUp",
    "asubscribe_room",
    "awatch_task",
    "subscribe_room",
    "watch_task",
]

#: Message types after which a task watch ends.
TERMINAL_TYPES = frozenset({"complete", "fail", "cancel", "timeout", "deleted"})
#: Task statuses that are final (a snapshot of such a task ends the watch).
TERMINAL_STATUSES = frozenset({"success", "failed", "canceled"})
#: Messages of the server's own that are not part of the stream.
_CONTROL_TYPES = frozenset({"pong", "error"})

#: Close codes that are never retried, and the exception each raises.
_CLOSE_AUTH = 4401
_CLOSE_NOT_FOUND = 4404
_CLOSE_RATE_LIMITED = 4429
_CLOSE_FATAL = {1008: "INVALID_QUERY", 1009: "MESSAGE_TOO_BIG"}


# A JWT is three base64url segments (a watch token has two; docs/api.md, "JWT").
_JWT_SHAPE = re.compile(r"^[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*$")


def credentials(api_key: str | None, token: str | None) -> tuple[dict[str, str], str | None]:
    """The headers and the ``?token=`` value to send: a key as ``X-API-Key``, a JWT as
    ``Authorization: Bearer`` (out of URLs and their logs), a watch token as ``?token=``."""
    if api_key:
        return {"X-API-Key": api_key}, None
    if token and _JWT_SHAPE.match(token):
        return {"Authorization": f"Bearer {token}"}, None
    return {}, token


class WatchGaveUp(UnavailableError):
    """Reconnecting failed until ``reconnect_deadline`` passed (``UNREACHABLE``)."""


class _Retry(Exception):
    """This connection ended in a way that is retried (internal)."""

    def __init__(self, why: str, rate_limited: bool = False) -> None:
        super().__init__(why)
        self.rate_limited = rate_limited


class _Ended(Exception):
    """The stream is over (internal)."""


@dataclass
class _Stream:
    """What to connect to and where the stream stands: shared by sync and async."""

    url: str
    headers: dict[str, str]
    token: str | None
    since: int | None
    epoch: str | None
    room: bool
    #: Backoff: first delay cap, largest delay cap, overall deadline per outage (None: none).
    backoff: float = 0.1
    max_backoff: float = 5.0
    reconnect_deadline: float | None = 120.0
    done: bool = False
    attempt: int = 0
    outage_started: float | None = None
    last_failure: str = ""
    rate_limited: bool = False

    def connect_url(self) -> str:
        """The URL of the next connection, with ``since``/``epoch``/``token``."""
        query: dict[str, str] = {}
        if self.since is not None:
            query["since"] = str(self.since)
        if self.epoch is not None and not self.room:
            query["epoch"] = self.epoch
        if self.token is not None:
            query["token"] = self.token
        return self.url + ("?" + urlencode(query) if query else "")

    def accept(self, text: str) -> dict[str, Any] | None:
        """The message to yield for ``text``, or None (duplicate or control)."""
        try:
            message = json.loads(text)
        except ValueError:
            return None  # "pong" to a text ping
        if not isinstance(message, dict):
            return None
        self.connected()
        if self.room:
            return self._accept_room(message)
        return self._accept_task(message)

    def _accept_room(self, message: dict[str, Any]) -> dict[str, Any] | None:
        seq = message.get("roomSeq")
        if not isinstance(seq, int):
            return None
        if self.since is not None and seq <= self.since:
            return None
        self.since = seq
        return message

    def _accept_task(self, message: dict[str, Any]) -> dict[str, Any] | None:
        kind = message.get("type")
        if kind in _CONTROL_TYPES:
            return None
        seq = message.get("seq")
        if not isinstance(seq, int):
            return None
        if kind == "snapshot":
            epoch = message.get("epoch")
            if self.epoch is not None and epoch != self.epoch:
                # Deleted and created again under the same id while we were away: the
                # server sends only the new task's snapshot ("recovered": false).
                self.since = None
            self.epoch = epoch if isinstance(epoch, str) else self.epoch
            task = message.get("task")
            if isinstance(task, dict) and task.get("status") in TERMINAL_STATUSES:
                self.done = True
        elif kind in TERMINAL_TYPES:
            self.done = True
        if self.since is not None and seq <= self.since:
            return None
        self.since = seq
        return message

    def connected(self) -> None:
        """A message arrived: the outage (if any) is over."""
        self.attempt = 0
        self.outage_started = None
        self.rate_limited = False

    def closed(self, code: int, reason: str | None) -> NoReturn:
        """Raise for a close code: _Ended, _Retry or the SDK's exception."""
        reason = reason or ""
        if code == _CLOSE_AUTH:
            raise AuthError(401, "UNAUTHENTICATED", reason or "unauthenticated")
        if code == _CLOSE_NOT_FOUND:
            what = "room" if self.room else "task"
            code_name = f"{what.upper()}_NOT_FOUND"  # the code REST answers with
            raise NotFoundError(404, code_name, reason or f"{what} not found")
        if code in _CLOSE_FATAL:
            raise ValidationError(400, _CLOSE_FATAL[code], reason or f"closed with {code}")
        if code == 1000 and not self.room:
            raise _Ended()  # the task was deleted
        raise _Retry(f"closed with {code} {reason}".strip(), code == _CLOSE_RATE_LIMITED)

    def upgrade_refused(self, response: httpx.Response) -> NoReturn:
        """Raise for an HTTP answer instead of an upgrade."""
        if response.status_code in (429, 502, 503, 504):
            raise _Retry(f"HTTP {response.status_code}", response.status_code == 429)
        try:
            body = json.loads(response.read() or b"null")
        except Exception:  # closed or undecodable: the status alone says enough
            body = None
        raise error_for(response.status_code, body)

    def next_delay(self, why: str, rate_limited: bool) -> float:
        """The delay before the next attempt; raises once the deadline has passed."""
        now = time.monotonic()
        if self.outage_started is None:
            self.outage_started = now
        self.last_failure = why
        self.rate_limited = self.rate_limited or rate_limited
        cap = min(self.max_backoff, self.backoff * (2**self.attempt))
        self.attempt += 1
        delay = random.uniform(0, cap)
        if self.reconnect_deadline is not None:
            left = self.outage_started + self.reconnect_deadline - now
            if left <= 0:
                if self.rate_limited:
                    raise RateLimitedError(429, "RATE_LIMITED", f"gave up reconnecting: {why}")
                raise WatchGaveUp(0, "UNREACHABLE", f"gave up reconnecting: {why}")
            delay = min(delay, left)
        return delay


def _stream(
    base_url: str,
    path: str,
    *,
    api_key: str | None,
    token: str | None,
    since: int | None,
    epoch: str | None,
    room: bool,
    reconnect_deadline: float | None,
    backoff: float,
    max_backoff: float,
) -> _Stream:
    base = base_url.rstrip("/")
    if base.startswith("ws://"):
        base = "http://" + base.removeprefix("ws://")
    elif base.startswith("wss://"):
        base = "https://" + base.removeprefix("wss://")
    headers, token = credentials(api_key, token)
    return _Stream(
        url=base + path,
        headers=headers,
        token=token,
        since=since,
        epoch=epoch,
        room=room,
        backoff=backoff,
        max_backoff=max_backoff,
        reconnect_deadline=reconnect_deadline,
    )


def _network_errors() -> tuple[type[BaseException], ...]:
    from httpx_ws import WebSocketNetworkError

    return (httpx.TransportError, WebSocketNetworkError, OSError)


# httpx-ws is imported when a stream starts, not with this module: it imports httpcore,
# which imports trio whenever trio is installed (spec: no trio at ``import spectral.client``).


def _run_sync(stream: _Stream, timeout: float) -> Iterator[dict[str, Any]]:
    from httpx_ws import WebSocketDisconnect, WebSocketSession, WebSocketUpgradeError, connect_ws

    network_errors = _network_errors()
    with httpx.Client(headers=stream.headers, timeout=timeout) as http:
        while not stream.done:
            try:
                # session_class: the default, named so type checkers know ``ws``'s type.
                with connect_ws(stream.connect_url(), http, session_class=WebSocketSession) as ws:
                    while True:
                        try:
                            text = ws.receive_text()
                        except WebSocketDisconnect as closed:
                            stream.closed(closed.code, closed.reason)
                        message = stream.accept(text)
                        if message is not None:
                            yield message
                        if stream.done:
                            return
            except _Ended:
                return
            except WebSocketUpgradeError as refused:
                try:
                    stream.upgrade_refused(refused.response)
                except _Retry as retry:
                    time.sleep(stream.next_delay(str(retry), retry.rate_limited))
            except _Retry as retry:
                time.sleep(stream.next_delay(str(retry), retry.rate_limited))
            except network_errors as error:
                time.sleep(stream.next_delay(repr(error), False))


async def _run_async(stream: _Stream, http_timeout: float) -> AsyncIterator[dict[str, Any]]:
    from httpx_ws import (
        AsyncWebSocketSession,
        WebSocketDisconnect,
        WebSocketUpgradeError,
        aconnect_ws,
    )

    network_errors = _network_errors()
    async with httpx.AsyncClient(headers=stream.headers, timeout=http_timeout) as http:
        while not stream.done:
            delay: float | None = None
            try:
                # session_class: the default, named so type checkers know ``ws``'s type.
                async with aconnect_ws(
                    stream.connect_url(), http, session_class=AsyncWebSocketSession
                ) as ws:
                    while True:
                        try:
                            text = await ws.receive_text()
                        except WebSocketDisconnect as closed:
                            stream.closed(closed.code, closed.reason)
                        except network_errors as error:
                            raise _Retry(repr(error)) from None
                        message = stream.accept(text)
                        if message is not None:
                            yield message
                        if stream.done:
                            return
            except _Ended:
                return
            except WebSocketUpgradeError as refused:
                try:
                    stream.upgrade_refused(refused.response)
                except _Retry as retry:
                    delay = stream.next_delay(str(retry), retry.rate_limited)
            except _Retry as retry:
                delay = stream.next_delay(str(retry), retry.rate_limited)
            except network_errors as error:
                delay = stream.next_delay(repr(error), False)
            except BaseExceptionGroup as group:  # raised through httpx-ws's task group
                delay = _from_group(stream, group)
            if delay is not None:
                await anyio.sleep(delay)


def _from_group(stream: _Stream, group: BaseExceptionGroup[BaseException]) -> float | None:
    """Handle an exception group from the session's task group like a single error."""
    leaves = _leaves(group)
    if any(isinstance(leaf, GeneratorExit) for leaf in leaves):
        raise GeneratorExit from None  # the caller closed the iterator mid-stream
    if not all(isinstance(leaf, Exception) for leaf in leaves):
        raise group  # cancellation and the like: not ours to handle
    for leaf in leaves:
        if isinstance(leaf, SpectralError):
            raise leaf
    for leaf in leaves:
        if isinstance(leaf, _Ended):
            stream.done = True
            return None
    for leaf in leaves:
        if isinstance(leaf, _Retry):
            return stream.next_delay(str(leaf), leaf.rate_limited)
    if all(isinstance(leaf, _network_errors()) for leaf in leaves):
        return stream.next_delay(repr(leaves[0]), False)
    raise group


def _leaves(group: BaseExceptionGroup[BaseException]) -> list[BaseException]:
    out: list[BaseException] = []
    for exc in group.exceptions:
        if isinstance(exc, BaseExceptionGroup):
            out.extend(_leaves(exc))
        else:
            out.append(exc)
    return out


def watch_task(
    base_url: str,
    *,
    task_id: str,
    api_key: str | None = None,
    token: str | None = None,
    since: int | None = None,
    epoch: str | None = None,
    reconnect_deadline: float | None = 120.0,
    backoff: float = 0.1,
    max_backoff: float = 5.0,
    timeout: float = 10.0,
) -> Iterator[dict[str, Any]]:
    """Yield a task's messages (snapshot, then every change), resuming after disconnects."""
    stream = _stream(
        base_url,
        f"/ws/task/{quote(task_id, safe='')}",
        api_key=api_key,
        token=token,
        since=since,
        epoch=epoch,
        room=False,
        reconnect_deadline=reconnect_deadline,
        backoff=backoff,
        max_backoff=max_backoff,
    )
    return _run_sync(stream, timeout)


def awatch_task(
    base_url: str,
    *,
    task_id: str,
    api_key: str | None = None,
    token: str | None = None,
    since: int | None = None,
    epoch: str | None = None,
    reconnect_deadline: float | None = 120.0,
    backoff: float = 0.1,
    max_backoff: float = 5.0,
    timeout: float = 10.0,
) -> AsyncIterator[dict[str, Any]]:
    """Async form of :func:`watch_task` (asyncio or trio)."""
    stream = _stream(
        base_url,
        f"/ws/task/{quote(task_id, safe='')}",
        api_key=api_key,
        token=token,
        since=since,
        epoch=epoch,
        room=False,
        reconnect_deadline=reconnect_deadline,
        backoff=backoff,
        max_backoff=max_backoff,
    )
    return _run_async(stream, timeout)


def subscribe_room(
    base_url: str,
    *,
    room_id: str,
    api_key: str | None = None,
    token: str | None = None,
    since: int | None = None,
    reconnect_deadline: float | None = 120.0,
    backoff: float = 0.1,
    max_backoff: float = 5.0,
    timeout: float = 10.0,
) -> Iterator[dict[str, Any]]:
    """Yield a room's messages (each with ``roomSeq``) forever, resuming after disconnects."""
    stream = _stream(
        base_url,
        f"/rooms/{quote(room_id, safe='')}/subscribe",
        api_key=api_key,
        token=token,
        since=since,
        epoch=None,
        room=True,
        reconnect_deadline=reconnect_deadline,
        backoff=backoff,
        max_backoff=max_backoff,
    )
    return _run_sync(stream, timeout)


def asubscribe_room(
    base_url: str,
    *,
    room_id: str,
    api_key: str | None = None,
    token: str | None = None,
    since: int | None = None,
    reconnect_deadline: float | None = 120.0,
    backoff: float = 0.1,
    max_backoff: float = 5.0,
    timeout: float = 10.0,
) -> AsyncIterator[dict[str, Any]]:
    """Async form of :func:`subscribe_room` (asyncio or trio)."""
    stream = _stream(
        base_url,
        f"/rooms/{quote(room_id, safe='')}/subscribe",
        api_key=api_key,
        token=token,
        since=since,
        epoch=None,
        room=True,
        reconnect_deadline=reconnect_deadline,
        backoff=backoff,
        max_backoff=max_backoff,
    )
    return _run_async(stream, timeout)
