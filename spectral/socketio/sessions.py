"""Engine.IO sessions: the two transports, the heartbeat, long-polls and the upgrade
(docs/api.md, "Socket.IO (the seeds' jobs system)").

Theory of operation
-------------------
Everything the server sends a session goes through the session's one
:class:`~actors.Watcher` (a bounded queue): Socket.IO answers, pings, and the jobs
feed's broadcasts (the same watcher sits in the feed's socket sets). Its items are
:class:`~spectral.wire.Outgoing` objects: text for long-polling, a WebSocket frame
shared by every upgraded socket. One queue for both transports, so the order holds
across the upgrade, and a session that falls the queue behind is closed like any
watcher.

- Long-polling: each ``GET`` takes what is queued and answers it as one payload; with
  nothing queued it waits (cancel-safely) for the next item. The heartbeat puts a
  PING in the queue every ``ping_interval``, so a poll is never held longer than
  that: less than the front's idle and body timeouts, which do not apply while an
  answer is being made anyway. Two polls at once are refused and end the session,
  as in engine.io.
- WebSocket: after the upgrade (or from the start), an on-demand writer drains the
  queue onto the socket and, while idle, broadcasts write to it directly
  (:meth:`Watcher.start`, as task watchers do).
- Upgrade: the client probes a WebSocket with ``2probe``; :meth:`Session.begin_upgrade`
  answers the pending poll (and any new one) with a NOOP so the client can pause
  polling; its ``5`` (:meth:`Session.finish_upgrade`) moves the queue to the socket.
  A probe socket that fails before ``5`` leaves the session on long-polling.
- Heartbeat: one task per session in the :class:`Sessions` nursery sends a PING every
  ``ping_interval`` and closes the session when no PONG comes within ``ping_timeout``,
  or when the session has not joined the namespace by then.
- Shutdown: :meth:`Sessions.close_all` finishes every watcher (what is queued still
  goes out, then a poll answers CLOSE and a WebSocket closes with 1001); cancelling
  :meth:`Sessions.serve` ends every heartbeat.
"""

from __future__ import annotations

import secrets
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from enum import Enum
from typing import Any, Protocol

import trio

from actors import CLOSE_GOING_AWAY, CLOSE_NORMAL, CloseReason, Watcher
from actors.sockets import DEFAULT_QUEUE_SIZE
from spectral.socketio import engineio
from spectral.socketio.engineio import PacketType
from spectral.wire import Outgoing

#: Close reasons of a session (their code is the WebSocket's close code).
PING_TIMEOUT = CloseReason(CLOSE_GOING_AWAY, "ping timeout")
CONNECT_TIMEOUT = CloseReason(CLOSE_GOING_AWAY, "no CONNECT")
CLIENT_CLOSED = CloseReason(CLOSE_NORMAL, "client closed")
TRANSPORT_CLOSED = CloseReason(CLOSE_GOING_AWAY, "transport closed")
PARSE_ERROR = CloseReason(1008, "parse error")
POLL_OVERLAP = CloseReason(1008, "overlapping polls")
_PING = Outgoing(0, engineio.encode(PacketType.PING))
_NOOP = engineio.encode(PacketType.NOOP)
_CLOSE = engineio.encode(PacketType.CLOSE)


class Transport(Enum):
    """Where a session's packets travel."""

    POLLING = "polling"
    WEBSOCKET = "websocket"


@dataclass(frozen=True, slots=True)
class EngineConfig:
    """The Engine.IO server's timing and limits (sent to clients in the OPEN packet)."""

    #: Seconds between server pings (socket.io's default, 25 s).
    ping_interval: float = 25.0
    #: Seconds a client has to answer a ping (socket.io's default, 20 s).
    ping_timeout: float = 20.0
    #: Largest polling payload a client should send (the HTTP front refuses > 1 MiB).
    max_payload: int = 1_000_000
    #: Messages a session may lag behind before it is closed (as a watcher's queue).
    queue_size: int = DEFAULT_QUEUE_SIZE
    #: Seconds one WebSocket write may take before the socket is dropped.
    send_timeout: float = 10.0
    #: Seconds a probe WebSocket has to complete the upgrade (engine.io's default).
    upgrade_timeout: float = 10.0
    #: Sessions that have not joined the namespace yet, at most: opening one needs no
    #: credential, so a flood of handshakes is refused instead of held for a ping cycle.
    max_pending: int = 2000


class Handler(Protocol):
    """The Socket.IO layer above the sessions (:mod:`spectral.socketio.namespace`)."""

    def receive(self, session: Session, data: str) -> Awaitable[None]:
        """Handle the data of one MESSAGE packet from the client."""
        ...

    def closed(self, session: Session) -> None:
        """The session ended: forget what it held."""
        ...


class Session:
    """One Engine.IO session (its id is ``sid``), on either transport."""

    def __init__(
        self,
        sid: str,
        transport: Transport,
        credential: str | None,
        config: EngineConfig,
        handler: Handler,
        on_close: Callable[[Session], None],
    ) -> None:
        self.sid = sid
        self.transport = transport
        #: The credential of the handshake request (Authorization or ``?token=``).
        self.credential = credential
        self.config = config
        self.handler = handler
        self.watcher = Watcher(config.queue_size)
        #: The Socket.IO layer's state while the client is joined to the namespace.
        self.socket: Any = None
        #: Who last joined the namespace on this session (kept for the request log).
        self.joined: Any = None
        self.upgrading = False
        self.closed = False
        self._on_close = on_close
        self._poll: trio.CancelScope | None = None
        self._pong: trio.Event | None = None
        self._scope = trio.CancelScope()

    @property
    def can_upgrade(self) -> bool:
        """Whether a probe WebSocket may start the upgrade now."""
        return self.transport is Transport.POLLING and not self.upgrading and not self.closed

    def open_packet(self) -> str:
        """The OPEN packet announcing this session."""
        config = self.config
        return engineio.open_packet(
            self.sid,
            ping_interval=config.ping_interval,
            ping_timeout=config.ping_timeout,
            max_payload=config.max_payload,
            upgrade=self.transport is Transport.POLLING,
        )

    def send(self, message: Outgoing) -> None:
        """Queue one Engine.IO packet for the client; never blocks."""
        if not self.watcher.send_nowait(message):
            self.close(self.watcher.close_reason or TRANSPORT_CLOSED)

    def send_message(self, data: str) -> None:
        """Queue a MESSAGE packet (a Socket.IO packet's text)."""
        self.send(Outgoing(0, engineio.message(data)))

    async def receive(self, packet: engineio.Packet) -> None:
        """Handle one packet from the client (on either transport)."""
        kind = packet.type
        if kind is PacketType.PONG:
            if self._pong is not None:
                self._pong.set()
        elif kind is PacketType.MESSAGE:
            if not packet.binary:  # binary attachments are not supported: ignored
                await self.handler.receive(self, packet.data)
        elif kind is PacketType.CLOSE:
            self.close(CLIENT_CLOSED)
        elif kind is PacketType.PING:  # a protocol 3 habit; answered all the same
            self.send(Outgoing(0, engineio.encode(PacketType.PONG, packet.data)))
        # OPEN, UPGRADE (outside a probe) and NOOP mean nothing from a client.

    async def poll(self) -> str | None:
        """Answer one long-polling GET: what is queued (waiting for the first item if
        none), NOOP during an upgrade; None when the poll is refused (one is already
        waiting, or the session moved to WebSocket)."""
        if self.transport is not Transport.POLLING or self._poll is not None:
            if self._poll is not None:
                self.close(POLL_OVERLAP)
            return None
        if self.upgrading:
            return _NOOP
        texts: list[str] = []
        watcher = self.watcher
        with trio.CancelScope() as scope:
            self._poll = scope
            # The heartbeat queues a ping well before this; it is only a backstop.
            scope.deadline = trio.current_time() + 2 * self.config.ping_interval
            try:
                texts.append((await watcher.next()).text)
                while watcher.queued:
                    texts.append((await watcher.next()).text)
            except trio.EndOfChannel:
                texts.append(_CLOSE)
                self.close(watcher.close_reason or TRANSPORT_CLOSED)
            finally:
                self._poll = None
        return engineio.encode_payload(texts) if texts else _NOOP

    def begin_upgrade(self) -> bool:
        """A probe WebSocket answered ``3probe``: end the pending poll with a NOOP (and
        answer later ones so) until :meth:`finish_upgrade` or :meth:`cancel_upgrade`."""
        if not self.can_upgrade:
            return False
        self.upgrading = True
        if self._poll is not None:
            self._poll.cancel()
        return True

    def cancel_upgrade(self) -> None:
        """The probe failed: stay on long-polling."""
        self.upgrading = False

    def finish_upgrade(self) -> None:
        """The client sent ``5``: from now on the WebSocket carries the session."""
        self.upgrading = False
        self.transport = Transport.WEBSOCKET

    async def heartbeat(self) -> None:
        """Ping every ``ping_interval``; close on a missing pong, or when the client has
        not joined the namespace by the first ping's answer. Ends with the session."""
        config = self.config
        with self._scope:
            while not self.closed:
                await trio.sleep(config.ping_interval)
                pong = self._pong = trio.Event()
                self.send(_PING)
                with trio.move_on_after(config.ping_timeout):
                    await pong.wait()
                if not pong.is_set():
                    self.close(PING_TIMEOUT)
                elif self.socket is None:
                    self.close(CONNECT_TIMEOUT)

    def close(self, reason: CloseReason, *, drain: bool = False) -> None:
        """End the session (idempotent): what is queued goes out first if ``drain``."""
        if self.closed:
            return
        self.closed = True
        self._on_close(self)
        self.handler.closed(self)
        if drain:
            self.watcher.finish(reason)
        else:
            self.watcher.close(reason)
        self._scope.cancel()


class SessionsClosedError(Exception):
    """No new session is opened: the server is not serving (or shutting down)."""


class SessionsFullError(Exception):
    """No new session is opened: :attr:`EngineConfig.max_pending` sessions have not
    joined the namespace yet (retry in a moment)."""


class Sessions:
    """The live Engine.IO sessions by id, and the nursery their heartbeats run in."""

    def __init__(self, config: EngineConfig, handler: Handler) -> None:
        self.config = config
        self.handler = handler
        self._sessions: dict[str, Session] = {}
        self._nursery: trio.Nursery | None = None

    def __len__(self) -> int:
        return len(self._sessions)

    def pending(self) -> int:
        """Sessions that have not joined the namespace (counted only near the cap)."""
        if len(self._sessions) < self.config.max_pending:
            return len(self._sessions)
        return sum(1 for session in self._sessions.values() if session.socket is None)

    def get(self, sid: str) -> Session | None:
        """The live session ``sid``, or None."""
        return self._sessions.get(sid)

    def open(self, transport: Transport, credential: str | None) -> Session:
        """A new session, its heartbeat started.

        Raises:
            SessionsClosedError: :meth:`serve` is not running.
            SessionsFullError: too many sessions have not joined the namespace yet.
        """
        if self._nursery is None:
            raise SessionsClosedError("the Socket.IO server is not serving")
        if self.pending() >= self.config.max_pending:
            raise SessionsFullError("too many Socket.IO sessions waiting to connect")
        sid = secrets.token_urlsafe(15)
        session = Session(sid, transport, credential, self.config, self.handler, self._forget)
        self._sessions[sid] = session
        self._nursery.start_soon(session.heartbeat)
        return session

    async def serve(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Run the sessions' heartbeats until cancelled; then every session is closed."""
        try:
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                task_status.started()
                await trio.sleep_forever()
        finally:
            self._nursery = None
            self.close_all(CloseReason(CLOSE_GOING_AWAY, "server stopped"), drain=False)

    def close_all(self, reason: CloseReason, *, drain: bool = True) -> int:
        """Close every session (server shutting down); returns how many there were."""
        sessions = list(self._sessions.values())
        for session in sessions:
            session.close(reason, drain=drain)
        return len(sessions)

    def _forget(self, session: Session) -> None:
        self._sessions.pop(session.sid, None)
