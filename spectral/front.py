"""The front door: one listener, WebSocket watchers on a lean path, the rest to hypercorn.

Theory of operation
-------------------
Each accepted connection's first bytes are read (at most one request head). A
WebSocket upgrade to a watch route (``GET /ws/...`` or ``GET /rooms/.../subscribe``)
is served by :mod:`spectral.websocket` directly; anything else goes to hypercorn's
HTTP/1.1 server for the quart application, with the bytes already read handed
back through :class:`PrefixedStream`. This replaces ``hypercorn.trio.serve``'s
worker loop (same lifespan, same graceful shutdown) so that the two share one
port. Watch routes must be a connection's first request, as every WebSocket
client does; a later upgrade on a kept-alive connection reaches the quart app.
"""

from __future__ import annotations

import logging
import socket
from collections.abc import Awaitable, Callable
from functools import partial
from typing import Any

import trio
from hypercorn.config import Config
from hypercorn.trio.lifespan import Lifespan
from hypercorn.trio.tcp_server import TCPServer
from hypercorn.trio.worker_context import WorkerContext
from hypercorn.typing import ConnectionState
from hypercorn.utils import repr_socket_addr, wrap_app

log = logging.getLogger("spectral.front")

#: Request-line prefixes that may be a watch upgrade.
WATCH_PREFIXES = (b"GET /ws/", b"GET /rooms/")
#: Longest request head read before deciding.
MAX_HEAD = 16 * 1024
#: Seconds a client may take to send its request line.
HEAD_TIMEOUT = 10.0

WatchHandler = Callable[[trio.SocketStream, bytes], Awaitable[None]]


class PrefixedStream(trio.abc.HalfCloseableStream):
    """A socket stream whose first reads return bytes that were already read."""

    def __init__(self, stream: trio.SocketStream, prefix: bytes) -> None:
        self.stream = stream
        self.socket = stream.socket
        self._prefix = prefix

    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        """The prefix first, then the socket's bytes."""
        if self._prefix:
            data = self._prefix if max_bytes is None else self._prefix[:max_bytes]
            self._prefix = self._prefix[len(data) :]
            await trio.lowlevel.checkpoint()
            return data
        return await self.stream.receive_some(max_bytes)

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        """Write to the socket."""
        await self.stream.send_all(data)

    async def wait_send_all_might_not_block(self) -> None:
        """See trio.abc.SendStream."""
        await self.stream.wait_send_all_might_not_block()

    async def send_eof(self) -> None:
        """Half-close the socket."""
        await self.stream.send_eof()

    async def aclose(self) -> None:
        """Close the socket."""
        await self.stream.aclose()


def is_watch_head(head: bytes) -> bool:
    """True if the request line may be a WebSocket upgrade to a watch route."""
    return head.startswith(WATCH_PREFIXES) and b"upgrade: websocket" in head.lower()


async def read_request_line(stream: trio.SocketStream) -> bytes:
    """Read until the head is complete (or clearly not a watch request); b"" if gone."""
    head = b""
    with trio.move_on_after(HEAD_TIMEOUT):
        while len(head) < MAX_HEAD:
            try:
                data = await stream.receive_some(MAX_HEAD)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                return b""
            if not data:
                return head
            head += data
            if b"\r\n\r\n" in head:
                return head
            line_end = head.find(b"\r\n")
            if line_end >= 0 and not head.startswith(WATCH_PREFIXES):
                return head  # an ordinary request: hypercorn reads the rest
        return head
    return head


async def serve(
    app: Any,
    config: Config,
    sock: socket.socket,
    on_watch: WatchHandler,
    *,
    shutdown_trigger: Callable[[], Awaitable[None]],
    task_status: trio.TaskStatus[str] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve ``app`` and watch routes on ``sock`` until ``shutdown_trigger`` returns.

    Mirrors ``hypercorn.trio.run.worker_serve``: lifespan startup, serving, then on
    shutdown stop accepting and give open connections ``config.graceful_timeout``.
    """
    wrapped = wrap_app(app, config.wsgi_max_body_size, None)
    lifespan_state: dict[str, Any] = {}
    lifespan = Lifespan(wrapped, config, lifespan_state)
    context = WorkerContext(None)
    sock.listen(config.backlog)
    listener = trio.SocketListener(trio.socket.from_stdlib_socket(sock))
    url = f"http://{repr_socket_addr(sock.family, sock.getsockname())}"

    async def handle(stream: trio.SocketStream) -> None:
        try:
            head = await read_request_line(stream)
            if not head:
                await trio.aclose_forcefully(stream)
            elif is_watch_head(head):
                await on_watch(stream, head)
            else:
                state = ConnectionState(lifespan_state.copy())
                await TCPServer(wrapped, config, context, state, PrefixedStream(stream, head))
        except Exception:
            log.exception("connection handler failed")
            await trio.aclose_forcefully(stream)

    async with trio.open_nursery() as lifespan_nursery:
        await lifespan_nursery.start(lifespan.handle_lifespan)
        await lifespan.wait_for_startup()
        async with trio.open_nursery() as connections:
            task_status.started(url)
            try:
                async with trio.open_nursery() as accepting:
                    serve_all = partial(trio.serve_listeners, handler_nursery=connections)
                    accepting.start_soon(serve_all, handle, [listener])
                    await shutdown_trigger()
                    accepting.cancel_scope.cancel()
            finally:
                await listener.aclose()
                await context.terminated.set()
                connections.cancel_scope.deadline = trio.current_time() + config.graceful_timeout
        await lifespan.wait_for_shutdown()
        lifespan_nursery.cancel_scope.cancel()
