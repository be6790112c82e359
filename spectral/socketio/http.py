"""The Socket.IO endpoint at ``/socket.io/`` on the HTTP front: Engine.IO's long-polling
requests and WebSocket connections, handed to the sessions (docs/api.md, "Socket.IO
(the seeds' jobs system)").

- ``GET /socket.io/?EIO=4&transport=polling`` opens a session (the OPEN packet);
  with ``&sid=`` a GET is a long-poll and a POST carries the client's packets.
- A WebSocket upgrade with ``&sid=`` is a probe of an open session (the upgrade);
  without one it opens a session on the WebSocket from the start.
- Refusals are engine.io's JSON bodies (``{"code": 1, "message": "Session ID
  unknown"}``, 400). Allowed cross-origin callers (``SPECTRAL_CORS_ORIGINS``) get
  their origin back with ``Access-Control-Allow-Credentials``, as engine.io's CORS
  option gives, since a browser's polling may carry cookies.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator
from contextlib import aclosing
from dataclasses import dataclass
from typing import cast

import trio

from actors import CLOSE_GOING_AWAY, CloseReason
from spectral.access.auth import Authenticator, credential
from spectral.api.context import Principal
from spectral.api.cors import Cors
from spectral.api.watch import start_writer
from spectral.errors import envelope
from spectral.front import Request, Response
from spectral.front.websocket import Peer, PeerGone, accept
from spectral.socketio import engineio
from spectral.socketio.engineio import ErrorCode, PayloadError
from spectral.socketio.feed import JobsFeed
from spectral.socketio.namespace import JobsNamespace
from spectral.socketio.sessions import (
    PARSE_ERROR,
    TRANSPORT_CLOSED,
    EngineConfig,
    Session,
    Sessions,
    SessionsClosedError,
    SessionsFullError,
    Transport,
)
from spectral.wire import encode

#: WebSocket close code: the server is overloaded, try again later (RFC 6455 registry).
CLOSE_TRY_AGAIN = 1013
#: The paths served (socket.io-client asks for ``/socket.io/``).
PATHS = frozenset({"/socket.io/", "/socket.io"})
ROUTE = "/socket.io/"
#: What a WebSocket peer's client sends, message by message (``Peer.messages()``, an
#: async generator, closed when the connection is done with it).
Messages = AsyncGenerator[str | bytes, None]
_TEXT = ("content-type", "text/plain; charset=UTF-8")
_OK = ("content-type", "text/html")
_JSON = ("content-type", "application/json")


@dataclass(frozen=True, slots=True)
class Ended:
    """How a Socket.IO WebSocket ended, for the request log."""

    close_code: int | None
    who: Principal | None


class SocketIO:
    """The Socket.IO server: its sessions, its namespace and its jobs feed.

    Args:
        auth: authenticates CONNECT packets and counts watch connections.
        config: Engine.IO timing and limits.
        cors_origins: the origins allowed cross-origin (``*`` = any).
    """

    def __init__(
        self, auth: Authenticator, config: EngineConfig, cors_origins: tuple[str, ...] = ()
    ) -> None:
        self.config = config
        self.feed = JobsFeed()
        self.namespace = JobsNamespace(self.feed, auth)
        self.sessions = Sessions(config, self.namespace)
        self.cors = (
            Cors(cors_origins, methods="GET, POST, OPTIONS", expose=None, credentials=True)
            if cors_origins
            else None
        )

    async def serve(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Run until cancelled (the sessions' heartbeats live here)."""
        await self.sessions.serve(task_status=task_status)

    def close(self, reason: CloseReason) -> int:
        """Close every session, after what is queued (shutdown); returns how many."""
        return self.sessions.close_all(reason)

    # -- HTTP long-polling -------------------------------------------------------------------

    async def handle(self, request: Request) -> Response:
        """Answer one request to ``/socket.io/`` (never raises)."""
        if request.method == "OPTIONS":
            if self.cors is None:
                return Response(204, b"", [("vary", "Origin")])
            return self.cors.preflight(request)
        answer = await self._answer(request)
        if self.cors is not None:
            self.cors.decorate(request, answer)
        return answer

    async def _answer(self, request: Request) -> Response:
        query = request.query()
        refused = engineio.check_query(query)
        if refused is not None:
            return _error(refused)
        sid = query.get("sid")
        polling = query["transport"] == "polling"
        if sid is None:
            if not polling:  # a WebSocket handshake without its Upgrade header
                return _error(ErrorCode.BAD_REQUEST)
            if request.method != "GET":
                return _error(ErrorCode.BAD_HANDSHAKE_METHOD)
            try:
                opened = self.sessions.open(Transport.POLLING, _credential(request))
            except SessionsClosedError:
                message = envelope("SHUTTING_DOWN", "the server is shutting down")
                return Response(503, encode(message), [_JSON])
            except SessionsFullError as full:
                busy = {"code": int(ErrorCode.FORBIDDEN), "message": f"{full}; retry"}
                return Response(503, encode(busy), [_JSON, ("retry-after", "1")])
            return Response(200, opened.open_packet().encode(), [_TEXT])
        session = self.sessions.get(sid)
        if session is None:
            return _error(ErrorCode.UNKNOWN_SID)
        if not polling or session.transport is not Transport.POLLING:
            return _error(ErrorCode.BAD_REQUEST)
        if request.method == "GET":
            body = await session.poll()
            return _error(ErrorCode.BAD_REQUEST) if body is None else _text(body)
        if request.method == "POST":
            return await self._post(session, request.body)
        return _error(ErrorCode.BAD_REQUEST)

    @staticmethod
    async def _post(session: Session, body: bytes) -> Response:
        try:
            received = engineio.decode_payload(body.decode())
        except (UnicodeDecodeError, PayloadError):
            session.close(PARSE_ERROR)
            return _error(ErrorCode.BAD_REQUEST)
        for packet in received:
            if session.closed:
                break
            await session.receive(packet)
        return Response(200, b"ok", [_OK])

    # -- WebSocket ---------------------------------------------------------------------------

    def takes_upgrade(self, request: Request) -> bool:
        """Whether this WebSocket upgrade is served (else :meth:`handle` refuses it)."""
        query = request.query()
        if request.method != "GET" or engineio.check_query(query) is not None:
            return False
        if query["transport"] != "websocket":
            return False
        sid = query.get("sid")
        if sid is None:
            return True
        session = self.sessions.get(sid)
        return session is not None and session.can_upgrade

    async def upgrade(self, request: Request, stream: trio.abc.Stream, head: bytes) -> Ended:
        """Serve one WebSocket (``head``: its request's bytes) until it ends."""
        accepted = await accept(stream, head, send_timeout=self.config.send_timeout)
        if accepted is None:
            return Ended(None, None)
        peer = accepted[0]
        del accepted, head
        sid = request.query().get("sid")
        session: Session | None = None
        who: Principal | None = None
        try:
            async with aclosing(cast(Messages, peer.messages())) as messages:
                if sid is None:
                    try:
                        session = self.sessions.open(Transport.WEBSOCKET, _credential(request))
                    except SessionsClosedError:
                        await peer.close(CLOSE_GOING_AWAY, "server shutting down")
                        return Ended(peer.close_code, None)
                    except SessionsFullError:
                        await peer.close(CLOSE_TRY_AGAIN, "too many sessions waiting; retry")
                        return Ended(peer.close_code, None)
                    del request
                    await peer.send_text(session.open_packet())
                else:
                    del request
                    probed = self.sessions.get(sid)
                    if probed is None or not await self._probe(peer, probed, messages):
                        await peer.close(CLOSE_GOING_AWAY, "upgrade failed")
                        return Ended(peer.close_code, None)
                    session = probed
                await self._converse(peer, session, messages)
        except PeerGone:
            pass
        finally:
            if session is not None:
                session.close(TRANSPORT_CLOSED)
                who = session.joined
            await peer.abort()
        return Ended(peer.close_code, who)

    async def _probe(self, peer: Peer, session: Session, messages: Messages) -> bool:
        """The upgrade: ``2probe`` → ``3probe``, then ``5``; False if it did not happen
        (the session then stays on long-polling)."""
        began = False
        with trio.move_on_after(self.config.upgrade_timeout):
            async for message in messages:
                if message == "2probe" and not began and session.begin_upgrade():
                    began = True
                    await peer.send_text("3probe")
                elif message == "5" and began and not session.closed:
                    session.finish_upgrade()
                    return True
                else:
                    break
        if began:
            session.cancel_upgrade()
        return False

    async def _converse(self, peer: Peer, session: Session, messages: Messages) -> None:
        """Carry the session on the WebSocket until either side ends it."""
        watcher = session.watcher
        async with trio.open_nursery() as nursery:
            start_writer(nursery, peer, watcher, self.config.send_timeout)  # its end ends the read
            async for message in messages:
                if isinstance(message, bytes):
                    continue  # binary attachments are not supported: ignored
                try:
                    packet = engineio.decode(message)
                except PayloadError:
                    session.close(PARSE_ERROR)
                    break
                await session.receive(packet)
            session.close(TRANSPORT_CLOSED)  # the client is gone (or closed)
        reason = watcher.close_reason or TRANSPORT_CLOSED
        await peer.close(reason.code, reason.reason)


def is_socketio(path: str) -> bool:
    """Whether a request path is the Socket.IO endpoint's."""
    return path in PATHS


def _credential(request: Request) -> str | None:
    """The handshake's credential: ``Authorization: Bearer`` / ``X-API-Key``, else ``?token=``."""
    return credential(request.headers.get) or request.query().get("token") or None


def _text(body: str) -> Response:
    return Response(200, body.encode(), [_TEXT])


def _error(code: ErrorCode) -> Response:
    status, body = engineio.error_answer(code)
    return Response(status, body, [_JSON])
