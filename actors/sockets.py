"""Socket sets: the watchers of one object, kept by the router so they outlive eviction.

Each watcher owns a bounded queue drained by a writer task: one for the
watcher's whole life (:meth:`Watcher.serve_writer`), or one started only while
something waits to be sent (:meth:`Watcher.start`). A broadcast
hands the same message object to every watcher with ``send_nowait`` and never
awaits a peer: a watcher whose queue is full is closed with 4008 ("too slow")
and dropped, so it never slows the object or the other watchers, and the order
of what it did receive is never broken.

Direct send: a transport may give the writer a non-blocking write (``try_send``,
see :meth:`Watcher.serve_writer`). While the watcher's writer is idle and its
queue empty, ``send_nowait`` calls it from the broadcasting loop instead of
queueing, which saves a task switch and an awaited send per delivery. Whatever
it could not write whole (the kernel's buffer is full, or the transport is busy
writing something else) is queued, and every later message queues behind it
until the writer has drained the queue: the order per watcher is the broadcast
order either way.
"""

from __future__ import annotations

from collections.abc import AsyncIterable, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import trio

#: A transport's non-blocking write of one message, called from the broadcasting loop:
#: None when the message was written whole, else what the writer must still send (the
#: message itself when nothing could be written now), which is queued for it.
TrySend = Callable[[Any], Any]

#: Close codes (WebSocket) used by the runtime.
CLOSE_NORMAL = 1000
CLOSE_GOING_AWAY = 1001
CLOSE_TOO_SLOW = 4008

#: Default per-watcher queue: a watcher this far behind is dropped (docs/api.md, "Watching").
DEFAULT_QUEUE_SIZE = 1_000


@dataclass(slots=True)
class _OnDemand:
    """What a watcher's on-demand writer tasks use (see :meth:`Watcher.start`)."""

    send: Callable[[Any], Awaitable[None]]
    send_timeout: float
    try_send: TrySend | None
    on_end: Callable[[], None] | None


@dataclass(frozen=True, slots=True)
class CloseReason:
    """Why a watcher ended: a WebSocket close code and a short reason."""

    code: int
    reason: str = ""


class Watcher:
    """One subscriber: a bounded queue plus the single "closed or closing" flag.

    Args:
        queue_size: messages that may wait before the watcher counts as too slow.
    """

    def __init__(self, queue_size: int = DEFAULT_QUEUE_SIZE) -> None:
        self._send, self._receive = trio.open_memory_channel[Any](queue_size)
        self.close_reason: CloseReason | None = None
        self._scope: trio.CancelScope | None = None
        self._abort = False
        #: The transport's direct write while it may be used (writer idle, queue empty).
        self._direct: TrySend | None = None
        # On-demand writing (see :meth:`start`): where writer tasks run, what they use.
        self._nursery: trio.Nursery | None = None
        self._writer: _OnDemand | None = None
        self._running = False

    @property
    def queued(self) -> int:
        """Messages waiting for the writer."""
        return self._send.statistics().current_buffer_used

    def send_nowait(self, message: Any) -> bool:
        """Queue a message; False (and the watcher closed) if it is closed or too slow."""
        if self.close_reason is not None:
            return False
        direct = self._direct
        if direct is not None:
            message = direct(message)
            if message is None:
                return True
            self._direct = None  # the rest and everything after it go through the queue
        try:
            self._send.send_nowait(message)
        except trio.WouldBlock:
            self.close(CloseReason(CLOSE_TOO_SLOW, "too slow"))
            return False
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            self.close(CloseReason(CLOSE_GOING_AWAY, "writer gone"))
            return False
        if self._nursery is not None and not self._running:
            self._running = True
            self._nursery.start_soon(self._write_on_demand, None)
        return True

    def close(self, reason: CloseReason) -> None:
        """Close now: queued messages are discarded and the writer stops at once."""
        if self.close_reason is None:
            self.close_reason = reason
        self._abort = True
        self._direct = None
        self._send.close()
        if self._scope is not None:
            self._scope.cancel()
        if not self._running:
            self._ended()

    def finish(self, reason: CloseReason) -> None:
        """Close after the writer has delivered what is already queued."""
        if self.close_reason is None:
            self.close_reason = reason
        self._direct = None
        self._send.close()
        if not self._running:
            self._ended()

    async def next(self) -> Any:
        """The next queued message, for pull-based writers (e.g. SSE); cancel-safe.

        Raises:
            trio.EndOfChannel: the watcher is closed (see :attr:`close_reason`).
        """
        if self._abort:
            raise trio.EndOfChannel
        try:
            return await self._receive.receive()
        except (trio.EndOfChannel, trio.ClosedResourceError):
            if self.close_reason is None:
                self.close_reason = CloseReason(CLOSE_GOING_AWAY, "writer stopped")
            raise trio.EndOfChannel from None

    def start(
        self,
        nursery: trio.Nursery,
        send: Callable[[Any], Awaitable[None]],
        *,
        on_end: Callable[[], None],
        send_timeout: float = 10.0,
        try_send: TrySend | None = None,
        first: AsyncIterable[Any] | None = None,
    ) -> None:
        """Deliver through writer tasks started in ``nursery`` only when needed.

        A writer task sends the ``first`` messages (e.g. a replay), then what is
        queued, and ends when the queue is empty: an idle watcher has no task of its
        own, and with ``try_send`` its messages are written by the broadcast itself
        (see the module docstring). ``send`` and ``send_timeout`` are as for
        :meth:`serve_writer`; ``send`` must not raise (it closes the watcher instead).
        ``on_end()`` is called once the watcher is closed, or finished and drained:
        the caller then closes its socket with :attr:`close_reason`.
        """
        self._writer = _OnDemand(send, send_timeout, try_send, on_end)
        self._nursery = nursery
        self._running = True
        nursery.start_soon(self._write_on_demand, first)

    async def _write_on_demand(self, first: AsyncIterable[Any] | None) -> None:
        writer = self._writer
        assert writer is not None
        with trio.CancelScope() as scope:
            self._scope = scope
            if self._abort:
                scope.cancel()
            if first is not None:
                async for message in first:
                    if not await self._send_one(writer, message):
                        break
            while self.close_reason is None or not self._abort:
                try:
                    message = self._receive.receive_nowait()
                except trio.WouldBlock:
                    break
                except (trio.EndOfChannel, trio.ClosedResourceError):
                    break
                if not await self._send_one(writer, message):
                    break
        self._scope = None
        self._running = False
        if self.close_reason is not None:
            self._ended()
        elif writer.try_send is not None:
            self._direct = writer.try_send  # idle: broadcasts write directly until one queues

    async def _send_one(self, writer: _OnDemand, message: Any) -> bool:
        try:
            with trio.fail_after(writer.send_timeout):
                await writer.send(message)
        except trio.TooSlowError:
            self.close(CloseReason(CLOSE_TOO_SLOW, "too slow"))
            return False
        return not self._abort

    def _ended(self) -> None:
        writer = self._writer
        if writer is not None and writer.on_end is not None:
            on_end, writer.on_end = writer.on_end, None
            on_end()

    async def serve_writer(
        self,
        send: Callable[[Any], Awaitable[None]],
        *,
        send_timeout: float = 10.0,
        try_send: TrySend | None = None,
    ) -> CloseReason:
        """Deliver queued messages through ``send`` until closed; return why it ended.

        A send that takes longer than ``send_timeout`` closes the watcher as too slow.
        With ``try_send``, messages broadcast while the queue is empty and no ``send``
        is in progress are written by ``try_send`` at once (see the module docstring);
        ``send`` then also gets what ``try_send`` left over. The caller closes its
        socket with the returned reason (in a ``finally``).
        """
        with trio.CancelScope() as scope:
            self._scope = scope
            if self._abort:
                scope.cancel()
            async with self._receive:
                try:
                    await self._deliver(send, send_timeout, try_send)
                finally:
                    self._direct = None
        if self.close_reason is None:
            self.close_reason = CloseReason(CLOSE_GOING_AWAY, "writer stopped")
        return self.close_reason

    async def _deliver(
        self, send: Callable[[Any], Awaitable[None]], send_timeout: float, try_send: TrySend | None
    ) -> None:
        receive = self._receive
        while True:
            if try_send is not None and self.close_reason is None and not self.queued:
                self._direct = try_send  # idle: broadcasts write directly until one queues
            try:
                message = await receive.receive()
            except (trio.EndOfChannel, trio.ClosedResourceError):
                return
            try:
                with trio.fail_after(send_timeout):
                    await send(message)
            except trio.TooSlowError:
                self.close(CloseReason(CLOSE_TOO_SLOW, "too slow"))
                return


class SocketSet:
    """The watchers of one object, in attach order."""

    def __init__(self) -> None:
        self._watchers: dict[Watcher, None] = {}
        self.sent = 0
        self.dropped = 0

    def __len__(self) -> int:
        return len(self._watchers)

    def __iter__(self):
        return iter(list(self._watchers))

    def attach(self, watcher: Watcher) -> None:
        """Add a watcher; it receives every later broadcast."""
        self._watchers[watcher] = None

    def detach(self, watcher: Watcher) -> None:
        """Remove a watcher (idempotent)."""
        self._watchers.pop(watcher, None)

    def broadcast(self, message: Any) -> int:
        """Queue ``message`` for every watcher without waiting; returns how many took it."""
        delivered = 0
        gone: list[Watcher] = []
        for watcher in self._watchers:
            if watcher.send_nowait(message):
                delivered += 1
            else:
                gone.append(watcher)
        for watcher in gone:
            del self._watchers[watcher]
        self.sent += delivered
        self.dropped += len(gone)
        return delivered

    def close_all(self, reason: CloseReason, *, drain: bool = True) -> None:
        """Close every watcher (after its queue drains, if ``drain``) and empty the set."""
        for watcher in self._watchers:
            if drain:
                watcher.finish(reason)
            else:
                watcher.close(reason)
        self._watchers.clear()
