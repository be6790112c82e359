"""The Socket.IO main namespace: connect with a credential, follow the owner's jobs,
subscribe to one job (docs/api.md, "Socket.IO (the seeds' jobs system)").

A CONNECT (``40``, optionally ``{"token": ...}``) authenticates ``auth.token``, else
the handshake request's ``Authorization: Bearer`` (or ``X-API-Key``), else its
``?token=``, through :class:`~spectral.access.auth.Authenticator` (API keys, and JWTs
where configured); a refusal is a CONNECT_ERROR whose message ``socket.io-client``
hands to ``connect_error``. A connected socket counts as one watch connection of its
key, follows every task of its owner (every owner's for an admin key) in the jobs
feed, and gets a ``connected`` event first. Client events: ``subscribe:job`` and
``unsubscribe:job`` with a job id (a string, ``{"jobId"}`` or ``{"job_id"}``),
acknowledged ``{"ok": true}`` or ``{"ok": false, "error"}`` when the client asks.
A malformed packet closes the session, as socket.io's parser error does.
"""

from __future__ import annotations

import re
import secrets
import time
from dataclasses import dataclass, field
from typing import Any

from spectral.access.auth import Authenticator, unauthenticated
from spectral.api.context import Principal
from spectral.api.models import ID_PATTERN
from spectral.errors import ApiError
from spectral.socketio import packets
from spectral.socketio.feed import JobsFeed
from spectral.socketio.packets import MAIN, Packet, PacketError, PacketType
from spectral.socketio.sessions import PARSE_ERROR, Session
from spectral.sql import SqlError

#: Subscriptions one socket may hold (each costs a set entry in the feed).
MAX_SUBSCRIPTIONS = 1000
SUBSCRIBE = "subscribe:job"
UNSUBSCRIBE = "unsubscribe:job"
#: The ``message`` of the ``connected`` event (the seed's server sends one; its
#: clients may wait for it).
CONNECTED_MESSAGE = "connected to job notifications"
_JOB_ID = re.compile(ID_PATTERN)
_BAD_JOB_ID = "send a job id: 1-128 characters of A-Z a-z 0-9 . _ : -"


@dataclass(slots=True)
class Socket:
    """A session joined to the main namespace: who it is and what it subscribed to."""

    who: Principal
    socket_id: str
    jobs: set[str] = field(default_factory=set)


async def authenticate(auth: Authenticator, secret: str | None) -> Principal:
    """The principal of a bare credential (an API key, or a JWT where configured).

    Raises:
        ApiError: 401 (none, or refused), 429 (rate limited).
    """
    if not secret or not secret.strip():
        raise unauthenticated("send a credential: auth.token, Authorization: Bearer or ?token=")
    return await auth.authenticate_secret(secret)


def job_id_of(args: list[Any]) -> str | None:
    """The job id an event names: a string, ``{"jobId": id}`` or ``{"job_id": id}``."""
    value = args[0] if args else None
    if isinstance(value, dict):
        value = value.get("jobId", value.get("job_id"))
    if isinstance(value, str) and _JOB_ID.match(value):
        return value
    return None


class JobsNamespace:
    """The :class:`~spectral.socketio.sessions.Handler` serving the main namespace."""

    def __init__(self, feed: JobsFeed, auth: Authenticator) -> None:
        self.feed = feed
        self.auth = auth

    async def receive(self, session: Session, data: str) -> None:
        """Handle one Socket.IO packet from the client."""
        try:
            packet = packets.decode(data)
        except PacketError:
            session.close(PARSE_ERROR)
            return
        if packet.namespace != MAIN:
            if packet.type is PacketType.CONNECT:
                session.send_message(packets.connect_error("Invalid namespace", packet.namespace))
            return
        if packet.type is PacketType.CONNECT:
            await self._connect(session, packet)
        elif packet.type is PacketType.DISCONNECT:
            self._leave(session)
        elif packet.type is PacketType.EVENT:
            self._event(session, packet)
        elif packet.type is PacketType.BINARY_EVENT and packet.id is not None:
            error = "binary attachments are not supported"
            session.send_message(packets.ack(packet.id, {"ok": False, "error": error}))
        # ACKs answer nothing the server asked; a client's CONNECT_ERROR means nothing.

    def closed(self, session: Session) -> None:
        """The session ended: leave the namespace."""
        self._leave(session)

    async def _connect(self, session: Session, packet: Packet) -> None:
        if session.socket is not None:
            session.send_message(packets.connected(session.socket.socket_id))
            return
        auth = packet.data if isinstance(packet.data, dict) else {}
        token = auth.get("token")
        secret = token if isinstance(token, str) and token.strip() else session.credential
        try:
            who = await authenticate(self.auth, secret)
        except ApiError as error:
            session.send_message(packets.connect_error(error.message))
            return
        except SqlError:
            session.send_message(packets.connect_error("storage unavailable; try again"))
            return
        if session.closed or session.socket is not None:
            return  # closed (or connected by another CONNECT) while authenticating
        if not self.auth.open_watch(who):
            session.send_message(packets.connect_error("too many watch connections for this key"))
            return
        socket = session.socket = Socket(who, secrets.token_urlsafe(15))
        session.joined = who
        session.send_message(packets.connected(socket.socket_id))
        greeting = {
            "message": CONNECTED_MESSAGE,
            "userId": who.owner,
            "timestamp": round(time.time() * 1000),
        }
        session.send_message(packets.event("connected", greeting))
        self.feed.follow(who, session.watcher)

    def _leave(self, session: Session) -> None:
        socket: Socket | None = session.socket
        if socket is None:
            return
        session.socket = None
        self.feed.unfollow(socket.who, session.watcher)
        for job_id in socket.jobs:
            self.feed.unsubscribe(socket.who, job_id, session.watcher)
        self.auth.close_watch(socket.who)

    def _event(self, session: Session, packet: Packet) -> None:
        socket: Socket | None = session.socket
        if socket is None:
            return  # not connected to the namespace: nothing to answer to
        name, args = packet.data[0], packet.data[1:]
        if name == SUBSCRIBE:
            answer = self._subscribe(session, socket, job_id_of(args))
        elif name == UNSUBSCRIBE:
            answer = self._unsubscribe(session, socket, job_id_of(args))
        else:
            answer = {"ok": False, "error": f"unknown event {name[:64]!r}"}
        if packet.id is not None:
            session.send_message(packets.ack(packet.id, answer))

    def _subscribe(self, session: Session, socket: Socket, job_id: str | None) -> dict[str, Any]:
        if job_id is None:
            return {"ok": False, "error": _BAD_JOB_ID}
        if job_id not in socket.jobs:
            if len(socket.jobs) >= MAX_SUBSCRIPTIONS:
                error = f"too many subscriptions (at most {MAX_SUBSCRIPTIONS} per socket)"
                return {"ok": False, "error": error}
            socket.jobs.add(job_id)
            self.feed.subscribe(socket.who, job_id, session.watcher)
        return {"ok": True}

    def _unsubscribe(self, session: Session, socket: Socket, job_id: str | None) -> dict[str, Any]:
        if job_id is None:
            return {"ok": False, "error": _BAD_JOB_ID}
        if job_id in socket.jobs:
            socket.jobs.discard(job_id)
            self.feed.unsubscribe(socket.who, job_id, session.watcher)
        return {"ok": True}
