"""A lean server-side WebSocket on a trio stream, for fan-out to many watchers.

Theory of operation
-------------------
Watchers only receive, so the hot path is sending. Frames from a server are not
masked, so a text frame's bytes are the same for every peer: :func:`text_frame`
builds them once per message and every peer's writer hands those same bytes to
``send_all``. wsproto still parses what peers send (masked frames, pings, close)
and writes control frames; data frames bypass it, which wsproto allows because
it keeps no state about outgoing data messages.

Every awaited write goes through :meth:`Peer.send_bytes`, under a lock (so frames
never interleave) and a deadline: a peer that does not take its bytes in time is
aborted — its socket is closed — so a stalled client can never pin a task or
hold up shutdown. A broadcast may instead write a frame at once with
:meth:`Peer.write_nowait` (one non-blocking ``os.write`` on the socket's
descriptor, bypassing trio's stream): only when no awaited write is in progress
and nothing is left of an earlier frame. What the kernel did not take is kept as
the peer's *tail*, which the next :meth:`Peer.send_bytes` writes before anything
else, so a ping, a pong or a close frame can never land inside a frame.

Keepalive is one task for all peers (:class:`Keepalive`): it pings each idle
peer and aborts those silent for too long.
"""

from __future__ import annotations

import logging
import os
import struct
from collections.abc import AsyncIterator
from typing import Any

import trio
from wsproto import ConnectionType, WSConnection
from wsproto.connection import Connection
from wsproto.events import (
    AcceptConnection,
    BytesMessage,
    CloseConnection,
    Ping,
    Pong,
    RejectConnection,
    Request,
    TextMessage,
)
from wsproto.utilities import LocalProtocolError, RemoteProtocolError

log = logging.getLogger("spectral.front.websocket")

#: Largest message a client may send (docs/api.md, "Limits"); bigger closes with 1009.
MAX_CLIENT_MESSAGE = 64 * 1024
CLOSE_TOO_BIG = 1009
CLOSE_PROTOCOL_ERROR = 1002
RECEIVE_SIZE = 65536


def text_frame(payload: bytes) -> bytes:
    """One unmasked, final text frame carrying ``payload`` (RFC 6455 §5.2)."""
    size = len(payload)
    if size < 126:
        header = bytes((0x81, size))
    elif size < 65536:
        header = struct.pack("!BBH", 0x81, 126, size)
    else:
        header = struct.pack("!BBQ", 0x81, 127, size)
    return header + payload


class PeerGone(Exception):
    """The peer closed, went away, or was aborted."""


class Peer:
    """One accepted WebSocket connection.

    Args:
        stream: the connection (its handshake already answered by :func:`accept`).
        connection: wsproto's frame-level state machine (the handshake's is dropped:
            ~2.5 KB per socket that an idle watcher would otherwise keep).
        send_timeout: seconds a write may take before the peer is aborted.
    """

    def __init__(
        self, stream: trio.abc.Stream, connection: Connection, send_timeout: float
    ) -> None:
        self.stream = stream
        self.connection = connection
        self.send_timeout = send_timeout
        self.closed = False
        self.close_code: int | None = None
        self.last_heard = trio.current_time()
        self._lock = trio.Lock()
        #: The socket's descriptor for :meth:`write_nowait` (-1: not a socket).
        self._fd = _socket_fd(stream)
        #: The part of a frame :meth:`write_nowait` could not write; sent first by
        #: :meth:`send_bytes`.
        self._tail = b""

    def write_nowait(self, data: bytes) -> int | None:
        """Write ``data`` now with one non-blocking write; how many bytes were written.

        None (nothing written) when it cannot be written directly: an awaited write is
        in progress, part of an earlier frame is still waiting, the peer is closed or
        the socket failed; the caller then queues ``data`` for :meth:`send_bytes`. A
        partial write keeps the rest as the peer's tail, which the next
        :meth:`send_bytes` (e.g. ``send_bytes(b"")``) must complete.
        """
        if self._fd < 0 or self.closed or self._tail or self._lock.locked():
            return None
        try:
            written = os.write(self._fd, data)
        except BlockingIOError:
            return 0
        except OSError:
            return None  # the awaited send meets the error and aborts the peer
        if written < len(data):
            self._tail = data[written:]
        return written

    async def send_bytes(self, data: bytes) -> None:
        """Write raw bytes (a frame); abort the peer if it does not take them in time.

        What :meth:`write_nowait` left of a frame goes first.
        """
        if self.closed:
            raise PeerGone("closed")
        async with self._lock:
            if self._tail:
                data, self._tail = self._tail + data, b""
            if not data:
                return
            try:
                with trio.fail_after(self.send_timeout):
                    if self._fd < 0:
                        await self.stream.send_all(data)
                    else:
                        await self._send_all(data)
            except (trio.TooSlowError, trio.BrokenResourceError, trio.ClosedResourceError):
                await self.abort()
                raise PeerGone("send failed") from None

    async def _send_all(self, data: bytes) -> None:
        """Write all of ``data`` on the descriptor, waiting for room as needed.

        If cancelled while waiting, what is unwritten stays as the tail, so a frame is
        never cut short by a later write (e.g. the close frame after a cancelled send).
        """
        fd = self._fd
        view = memoryview(data)
        while True:
            try:
                written = os.write(fd, view)
            except BlockingIOError:
                written = 0
            except OSError as error:
                raise trio.BrokenResourceError(str(error)) from None
            if written == len(view):
                break
            view = view[written:]
            self._tail = bytes(view)
            await trio.lowlevel.wait_writable(fd)
            self._tail = b""
        await trio.lowlevel.checkpoint()

    @property
    def writing(self) -> bool:
        """True while an awaited write is in progress."""
        return self._lock.locked()

    async def ping(self) -> None:
        """Send a protocol ping (the answer refreshes :attr:`last_heard`)."""
        await self._send_control(Ping(b"ka"))

    async def send_text(self, text: str) -> None:
        """Send one text message."""
        await self.send_bytes(text_frame(text.encode()))

    async def messages(self) -> AsyncIterator[str | bytes]:
        """Yield complete client messages; answer pings and the close handshake.

        Ends when the peer closes or goes away; a message over the limit closes 1009.
        """
        parts: list[Any] = []
        size = 0
        while not self.closed:
            try:
                data = await self.stream.receive_some(RECEIVE_SIZE)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                data = b""
            if not data:
                await self.abort()
                return
            self.last_heard = trio.current_time()
            try:
                self.connection.receive_data(data)
                events = list(self.connection.events())
            except RemoteProtocolError:
                await self.close(CLOSE_PROTOCOL_ERROR, "protocol error")
                return
            for event in events:
                if isinstance(event, TextMessage | BytesMessage):
                    size += len(event.data)
                    if size > MAX_CLIENT_MESSAGE:
                        await self.close(CLOSE_TOO_BIG, "message too big")
                        return
                    parts.append(event.data)
                    if event.message_finished:
                        empty: str | bytes = "" if isinstance(event, TextMessage) else b""
                        message = empty.join(parts)
                        parts, size = [], 0
                        yield message
                elif isinstance(event, Ping):
                    await self._send_control(event.response())
                elif isinstance(event, CloseConnection):
                    self.close_code = event.code
                    await self._send_control(event.response())
                    await self.abort()
                    return
                elif isinstance(event, Pong):
                    pass

    async def close(self, code: int, reason: str = "") -> None:
        """Send a close frame, give the peer a moment to answer, then close the socket."""
        if self.closed:
            return
        self.close_code = code
        try:
            await self._send_control(CloseConnection(code=code, reason=reason))
        except PeerGone:
            return
        with trio.move_on_after(1.0):
            try:
                while await self.stream.receive_some(RECEIVE_SIZE):
                    pass
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                pass
        await self.abort()

    async def abort(self) -> None:
        """Close the socket now."""
        if self.closed:
            return
        self.closed = True
        with trio.CancelScope(shield=True):
            await trio.aclose_forcefully(self.stream)

    async def _send_control(self, event: Any) -> None:
        try:
            data = self.connection.send(event)
        except LocalProtocolError:
            return  # e.g. closing a connection wsproto already sees as closed
        await self.send_bytes(data)


def _socket_fd(stream: trio.abc.Stream) -> int:
    """The descriptor of a trio socket stream (or of the one a wrapper exposes), else -1."""
    sock = getattr(stream, "socket", None)
    if not isinstance(sock, trio.socket.SocketType):
        return -1
    return sock.fileno()


async def accept(
    stream: trio.abc.Stream, head: bytes, *, send_timeout: float
) -> tuple[Peer, Request] | None:
    """Complete the handshake of a request whose bytes so far are ``head``.

    Returns the peer and the parsed request, or None (after answering 400) if the
    request is not a valid WebSocket handshake.
    """
    connection = WSConnection(ConnectionType.SERVER)
    request: Request | None = None
    data = head
    with trio.move_on_after(10):
        while request is None:
            try:
                connection.receive_data(data)
                for event in connection.events():
                    if isinstance(event, Request):
                        request = event
            except RemoteProtocolError as exc:
                await _reject(stream, connection, exc)
                return None
            if request is None:
                data = await stream.receive_some(RECEIVE_SIZE)
                if not data:
                    return None
    if request is None:
        return None
    answer = connection.send(AcceptConnection())
    assert connection.connection is not None  # accepting made the frame-level connection
    peer = Peer(stream, connection.connection, send_timeout)
    await peer.send_bytes(answer)
    return peer, request


async def _reject(stream: trio.abc.Stream, connection: WSConnection, exc: Exception) -> None:
    try:
        data = connection.send(RejectConnection(status_code=400))
        await stream.send_all(data)
    except (LocalProtocolError, trio.BrokenResourceError, trio.ClosedResourceError):
        pass
    log.debug("bad websocket handshake: %s", exc)
    await trio.aclose_forcefully(stream)


class Keepalive:
    """Pings every registered peer each ``interval`` and aborts the silent ones.

    One task for all peers: a peer costs a set entry, not a task.
    """

    def __init__(self, interval: float = 30.0) -> None:
        self.interval = interval
        self.peers: set[Peer] = set()

    def add(self, peer: Peer) -> None:
        """Watch ``peer`` until :meth:`discard`."""
        self.peers.add(peer)

    def discard(self, peer: Peer) -> None:
        """Stop watching ``peer``."""
        self.peers.discard(peer)

    async def serve(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Run until cancelled."""
        task_status.started()
        while True:
            await trio.sleep(self.interval)
            now = trio.current_time()
            async with trio.open_nursery() as nursery:
                for peer in list(self.peers):
                    if peer.closed:
                        self.peers.discard(peer)
                    elif now - peer.last_heard > 2 * self.interval + 5:
                        self.peers.discard(peer)
                        nursery.start_soon(peer.abort)
                    elif now - peer.last_heard >= self.interval and not peer.writing:
                        nursery.start_soon(self._ping, peer)

    async def _ping(self, peer: Peer) -> None:
        try:
            await peer.ping()
        except PeerGone:
            self.peers.discard(peer)
