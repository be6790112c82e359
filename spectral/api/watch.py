"""Watching a task live: the WebSocket endpoint ``/ws/task/{taskId}`` and the shared
replay logic that the SSE endpoint uses too (docs/api.md, "Watching").

Order of what a watcher receives: the replay of history after ``since`` (paged
from the actor by the watcher's own writer), the snapshot, then every live
message, in seq order. The watcher is attached inside the actor's turn (see
:mod:`spectral.tasks.actor`), so the live queue starts exactly after the snapshot.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

import trio
from pydantic import ValidationError

from actors import (
    CLOSE_GOING_AWAY,
    CLOSE_TOO_SLOW,
    ActorBrokenError,
    ActorError,
    CloseReason,
    RouterClosedError,
    TrySend,
    Watcher,
)
from spectral import wire
from spectral.access import tokens
from spectral.api import admin_feed, models
from spectral.api.context import Principal
from spectral.api.failures import TASK_ERRORS, storage_error, task_error
from spectral.errors import ApiError
from spectral.front.websocket import Peer, PeerGone, accept
from spectral.ops import metrics
from spectral.rooms import actor as rooms
from spectral.sql import SqlError
from spectral.state import ServerState
from spectral.tasks.actor import KIND, ReadHistory, Watch, WatchStart

log = logging.getLogger("spectral.http")

CLOSE_UNAUTHENTICATED = 4401
#: Authenticated, but not allowed (a non-admin on the admin feed).
CLOSE_FORBIDDEN = 4403
CLOSE_NOT_FOUND = 4404
CLOSE_TRY_AGAIN = 1013
CLOSE_POLICY = 1008
CLOSE_INTERNAL = 1011
#: Rate limited, or too many watch connections for one key.
CLOSE_RATE_LIMITED = 4429
#: Events per replay page read from the actor.
REPLAY_PAGE = 500
TASK_ROUTE = "/ws/task/"
ROOM_PREFIX = "/rooms/"
ROOM_SUFFIX = "/subscribe"


def close_for(error: ApiError) -> CloseReason:
    """The WebSocket close code for an error answer."""
    if error.status == 404:
        return CloseReason(CLOSE_NOT_FOUND, "task not found")
    if error.status == 401:
        return CloseReason(CLOSE_UNAUTHENTICATED, error.message[:120])
    if error.status == 429:
        return CloseReason(CLOSE_RATE_LIMITED, "rate limited")
    if error.code == "SHUTTING_DOWN":
        return CloseReason(CLOSE_GOING_AWAY, "server shutting down")
    if error.status == 503:
        return CloseReason(CLOSE_TRY_AGAIN, "task unavailable")
    if error.status == 400:
        return CloseReason(CLOSE_POLICY, error.message[:120])
    return CloseReason(CLOSE_INTERNAL, "internal error")


async def start_watch(
    state: ServerState, who: Principal, task_id: str, query: models.WatchQuery, watcher: Watcher
) -> WatchStart:
    """Register ``watcher`` with the task's actor; raises :class:`ApiError`."""
    message = Watch(watcher, query.since, query.epoch, owner=who.owner_filter)
    try:
        start: WatchStart = await state.router.call(KIND, task_id, message)
    except TASK_ERRORS as error:
        raise task_error(error, task_id) from None
    return start


async def opening(
    state: ServerState, who: Principal, task_id: str, start: WatchStart
) -> AsyncIterator[wire.Outgoing]:
    """The replayed events (if any) and then the snapshot."""
    snapshot = start.snapshot
    after = start.replay_after
    while after is not None and after < snapshot.seq:
        request = ReadHistory(after, REPLAY_PAGE, upto=snapshot.seq, owner=who.owner_filter)
        try:
            page = await state.router.call(KIND, task_id, request)
        except TASK_ERRORS:
            break  # deleted meanwhile: the queue holds the "deleted" message
        for event in page.events:
            yield wire.replayed_message(task_id, event)
        after = page.next_after
    yield wire.snapshot_message(snapshot, recovered=start.recovered)


def release(state: ServerState, task_id: str, watcher: Watcher) -> None:
    """Detach a finished watcher and drop the task's socket set if it is empty."""
    state.router.sockets(KIND, task_id).detach(watcher)
    state.router.release_sockets(KIND, task_id)


def parse_target(target: str) -> tuple[str, dict[str, str]]:
    """Path and query parameters of a request target."""
    parts = urlsplit(target)
    return unquote(parts.path), dict(parse_qsl(parts.query))


async def serve_websocket(state: ServerState, stream: trio.SocketStream, head: bytes) -> None:
    """Serve one WebSocket connection whose request head is ``head``."""
    started = time.perf_counter()
    accepted = await accept(stream, head, send_timeout=state.settings.ws_send_timeout)
    if accepted is None:
        return
    peer, request = accepted
    path, params = parse_target(request.target)
    headers = {
        name.decode("latin-1").lower(): value.decode("latin-1")
        for name, value in request.extra_headers
    }
    # An idle watcher keeps nothing of its handshake: ~1.5 KB per socket otherwise.
    del accepted, request, head
    state.keepalive.add(peer)
    metrics.WS_CONNECTIONS.inc()
    who: Principal | None = None
    counted = False
    try:
        room_id = _room_route(path)
        if path.startswith(TASK_ROUTE):
            scope: str | None = tokens.task_scope(path[len(TASK_ROUTE) :])
        elif room_id is not None:
            scope = tokens.room_scope(room_id)
        elif path == admin_feed.ROUTE:
            scope = admin_feed.SCOPE
        else:
            scope = None
        try:
            who = await state.auth.authenticate(headers.get, token=params.get("token"), scope=scope)
            del headers
        except (ApiError, SqlError) as error:
            reason = close_for(error if isinstance(error, ApiError) else storage_error(error))
            await peer.close(reason.code, reason.reason)
            return
        counted = state.auth.open_watch(who)
        if not counted:
            await peer.close(CLOSE_RATE_LIMITED, "too many watch connections for this key")
        elif path.startswith(TASK_ROUTE):
            await watch_task(state, peer, who, path[len(TASK_ROUTE) :], params)
        elif room_id is not None:
            await watch_room(state, peer, who, room_id, params)
        elif path == admin_feed.ROUTE:
            await watch_feed(state, peer, who)
        else:
            await peer.close(CLOSE_NOT_FOUND, "no such route")
    finally:
        if counted and who is not None:
            state.auth.close_watch(who)
        metrics.WS_CONNECTIONS.dec()
        state.keepalive.discard(peer)
        await peer.abort()
        if path.startswith(TASK_ROUTE):
            route = TASK_ROUTE + "{taskId}"
        elif _room_route(path) is not None:
            route = "/rooms/{roomId}/subscribe"
        elif path == admin_feed.ROUTE:
            route = path
        else:
            route = "(unmatched)"
        fields = {} if who is None else {"keyId": who.key_id, "owner": who.owner}
        state.requests.request(
            "GET", path, route, 101, started, closeCode=peer.close_code, **fields
        )


async def watch_task(
    state: ServerState, peer: Peer, who: Principal, raw_id: str, params: dict[str, str]
) -> None:
    """The watch protocol on one accepted WebSocket, for an authenticated ``who``."""
    try:
        task_id = models.TaskRef.model_validate({"taskId": raw_id}).task_id
    except ValidationError:
        await peer.close(CLOSE_NOT_FOUND, "task not found")
        return
    try:
        query = models.WatchQuery.model_validate(params)
    except ValidationError as error:
        field = ".".join(str(p) for p in error.errors()[0]["loc"])
        await peer.close(CLOSE_POLICY, f"invalid {field}")
        return
    watcher = Watcher(state.settings.watcher_queue)
    try:
        start = await start_watch(state, who, task_id, query, watcher)
    except ApiError as error:
        reason = close_for(error)
        await peer.close(reason.code, reason.reason)
        return
    try:
        await _converse(state, peer, watcher, opening(state, who, task_id, start))
    finally:
        release(state, task_id, watcher)


async def _converse(
    state: ServerState,
    peer: Peer,
    watcher: Watcher,
    first: AsyncIterator[wire.Outgoing] | None = None,
) -> None:
    """Send ``first``, then the live messages, while answering the client's pings; close
    with the watcher's reason once it ends.

    The connection's task reads the client; a writer task runs only while something
    waits to be sent (the opening, or what a direct write could not take).
    """
    try:
        async with trio.open_nursery() as nursery:
            start_writer(nursery, peer, watcher, state.settings.ws_send_timeout, first)
            del first  # the writer's now; an idle watcher need not keep it
            await _read_client(peer, watcher)
        reason = watcher.close_reason or CloseReason(CLOSE_GOING_AWAY, "writer stopped")
        if reason.code == CLOSE_TOO_SLOW:
            metrics.WATCHERS_DROPPED.inc()
        await peer.close(reason.code, reason.reason)
    finally:
        watcher.close(CloseReason(CLOSE_GOING_AWAY, "connection ended"))


async def watch_feed(state: ServerState, peer: Peer, who: Principal) -> None:
    """The admin feed on one accepted WebSocket: every task event from now on (admins)."""
    if not who.is_admin:
        await peer.close(CLOSE_FORBIDDEN, "the admin feed is for admin keys")
        return
    watcher = Watcher(state.settings.watcher_queue)
    watchers = state.admin_feed.watchers
    watchers.attach(watcher)
    try:
        await _converse(state, peer, watcher)
    finally:
        watchers.detach(watcher)


def _room_route(path: str) -> str | None:
    """The room id of ``/rooms/{roomId}/subscribe``, or None."""
    if path.startswith(ROOM_PREFIX) and path.endswith(ROOM_SUFFIX):
        room_id = path[len(ROOM_PREFIX) : -len(ROOM_SUFFIX)]
        return room_id if room_id and "/" not in room_id else None
    return None


async def watch_room(
    state: ServerState, peer: Peer, who: Principal, raw_id: str, params: dict[str, str]
) -> None:
    """The room protocol on one accepted WebSocket: replay after ``since``, then live."""
    try:
        room_id = models.RoomRef.model_validate({"roomId": raw_id}).room_id
        query = models.WatchQuery.model_validate(params)
    except ValidationError as error:
        field = ".".join(str(p) for p in error.errors()[0]["loc"])
        code = CLOSE_NOT_FOUND if field == "roomId" else CLOSE_POLICY
        await peer.close(code, f"invalid {field}")
        return
    watcher = Watcher(state.settings.watcher_queue)
    message = rooms.Subscribe(watcher, query.since, who.owner_filter)
    try:
        start: rooms.SubscribeStart = await state.router.call(
            rooms.KIND, room_id, message, create=True
        )
    except rooms.RoomNotFoundError:
        await peer.close(CLOSE_NOT_FOUND, "room not found")
        return
    except (ActorBrokenError, RouterClosedError):
        await peer.close(CLOSE_TRY_AGAIN, "room unavailable")
        return
    sockets = state.router.sockets(rooms.KIND, room_id)
    try:
        await _converse(state, peer, watcher, _room_opening(state, who, room_id, start))
    finally:
        sockets.detach(watcher)
        state.router.release_sockets(rooms.KIND, room_id)


async def _room_opening(
    state: ServerState, who: Principal, room_id: str, start: rooms.SubscribeStart
) -> AsyncIterator[wire.Outgoing]:
    """The kept messages after ``since`` (if any), oldest first; nothing of the server's own."""
    after = start.replay_after
    while after is not None and after < start.last_seq:
        read = rooms.ReadMessages(after, start.last_seq, REPLAY_PAGE, who.owner_filter)
        try:
            page: list[wire.Outgoing] = await state.router.call(rooms.KIND, room_id, read)
        except ActorError:
            break
        if not page:
            break
        for outgoing in page:
            yield outgoing
        after = page[-1].seq


#: Queued for the writer when a direct write took part of a frame: the peer keeps the
#: rest (its tail) and ``send_bytes`` completes it before anything else.
TAIL = object()


def start_writer(
    nursery: trio.Nursery,
    peer: Peer,
    watcher: Watcher,
    send_timeout: float,
    first: AsyncIterator[wire.Outgoing] | None = None,
) -> None:
    """Deliver ``watcher``'s messages (``first``, then what is broadcast) on ``peer``
    through on-demand writers in ``nursery``, written directly while idle; the watcher's
    end cancels ``nursery`` (and with it the connection's read of its client)."""
    send, try_send = frame_senders(peer, watcher, metrics.WS_MESSAGES_SENT.inc)
    watcher.start(
        nursery,
        send,
        on_end=nursery.cancel_scope.cancel,
        send_timeout=send_timeout,
        try_send=try_send,
        first=first,
    )


def frame_senders(
    peer: Peer, watcher: Watcher, counted: Callable[[], object]
) -> tuple[Callable[[Any], Awaitable[None]], TrySend]:
    """A watcher's writer ``send`` and direct ``try_send`` for messages with a ``.frame``
    (:class:`wire.Outgoing`) on ``peer``; ``counted()`` is called per message written.
    A peer that fails closes the watcher (going away)."""

    async def send(item: Any) -> None:
        try:
            await peer.send_bytes(b"" if item is TAIL else item.frame)
        except PeerGone:
            watcher.close(CloseReason(CLOSE_GOING_AWAY, "peer gone"))
            return
        if item is not TAIL:
            counted()

    def try_send(item: Any) -> Any:
        frame = item.frame
        written = peer.write_nowait(frame)
        if not written:  # None or 0: nothing written, the writer sends it all
            return item
        counted()
        return None if written == len(frame) else TAIL

    return send, try_send


async def _read_client(peer: Peer, watcher: Watcher) -> None:
    try:
        async for message in peer.messages():
            reply = _reply(message)
            if reply is not None:
                await peer.send_text(reply)
    except PeerGone:
        pass
    # The client is gone (or closed): stop the writer.
    watcher.close(CloseReason(CLOSE_GOING_AWAY, "client closed"))


def _reply(message: str | bytes) -> str | None:
    """Answers to what a watcher may send: ``ping`` and ``{"type": "ping"}``."""
    if message == "ping":
        return "pong"
    try:
        body = json.loads(message)
    except (ValueError, UnicodeDecodeError):
        body = None
    if isinstance(body, dict) and body.get("type") == "ping":
        return wire.dumps({"type": "pong", "timestamp": wire.iso(time.time())})
    return wire.dumps({"type": "error", "message": "unknown message; send 'ping'"})
