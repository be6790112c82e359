"""The node-to-node transport: pooled persistent TCP carrying length-prefixed JSON frames.

Theory of operation
-------------------
Forwarding a request to a task's home node must cost little: httpx on trio spent
~1.5-2 ms of CPU per hop, framed TCP ~0.1 ms (measured while planning; docs/cluster.md).
The frames and messages are :mod:`spectral.cluster.frames`; this module moves them over
trio streams.

Server (:func:`serve_transport`): one task per connection reads request frames and
starts ``await handler(op, body)`` for each in the connection's nursery, at most
``max_in_flight`` at once (then it stops reading: TCP pushes back). Each handler's
task writes its answer itself (:class:`_FrameWriter`: answers that are ready together
go out in one write). A handler that raises becomes an error frame (an ``ApiError`` keeps its
code, message and status; anything else is ``500 INTERNAL``), never a dead connection.
:meth:`TransportServer.shutdown` stops accepting, stops reading, tells every client
``goaway`` with the last request it took, finishes those, then closes.

Client (:func:`open_transport_client`): up to ``pool_size`` connections, opened on
demand and used round-robin; calls are multiplexed on each by id. Callers write their
own frames (shielded, so a cancelled caller never leaves half a frame on the wire); one
reader task per connection hands each answer to its caller, and drops the late answer
of a call that was cancelled or timed out. When a connection breaks, every call waiting
on it fails with :class:`TransportError` and the next call opens a new one. The reader
tasks live in the nursery of :func:`open_transport_client`, so they end with the
``async with`` block.

Both sides read and write the socket without blocking first and wait only when they
would block: trio's ``receive_some``/``send_all`` yield to the scheduler once more even
when the bytes are ready, and that pass was a third of a round trip (docs/cluster.md).

Errors: :class:`TransportError` = the hop failed, the call may or may not have run
(``unprocessed`` is true when it certainly did not: no connection, or after the
server's goaway); :class:`RemoteError` = the handler answered an error.
"""

from __future__ import annotations

import logging
import math
import os
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass
from functools import partial
from typing import Any

import trio

from spectral.cluster.frames import (
    MAX_FRAME,
    NEED_DATA,
    Call,
    Failed,
    FrameDecoder,
    FrameError,
    FrameTooLargeError,
    GoAway,
    Ok,
    call_frame,
    failed_frame,
    goaway_frame,
    ok_frame,
    parse_reply,
    parse_request,
    request_id,
)
from spectral.errors import ApiError

log = logging.getLogger("spectral.cluster.transport")

#: What a node serves: ``await handler(op, body)`` returns the answer's body (JSON).
Handler = Callable[[str, Any], Awaitable[Any]]

#: Bytes asked of the socket per read.
READ_SIZE = 65536
#: TCP keep-alive: first probe after 10 s idle, then every 5 s, dead after 3 unanswered
#: (~25 s), below the 30 s call timeout.
KEEPALIVE = {"TCP_KEEPIDLE": 10, "TCP_KEEPINTVL": 5, "TCP_KEEPCNT": 3}
#: Reads that found bytes ready, in a row, before a reader yields to other tasks anyway.
READS_BEFORE_YIELD = 16
#: Requests one connection may have running at once on the server (then reading pauses).
MAX_IN_FLIGHT = 256
#: Seconds one write may block before the connection is dropped (a peer not reading).
WRITE_TIMEOUT = 30.0
#: Seconds to open a connection (loopback or LAN: anything slower is a dead node).
CONNECT_TIMEOUT = 5.0
#: Default seconds a call waits for its answer.
CALL_TIMEOUT = 30.0


class TransportError(Exception):
    """The hop to the other node failed: no connection, connection lost, or no answer
    in time. The call may have run unless ``unprocessed`` is true; the caller decides
    whether to retry (mutations carry an Idempotency-Key)."""

    def __init__(self, message: str, *, unprocessed: bool = False) -> None:
        super().__init__(message)
        self.unprocessed = unprocessed


class TransportTimeoutError(TransportError):
    """No answer within the call's timeout (the call may still run on the server)."""


class RemoteError(Exception):
    """The remote handler answered an error (an API error's code, message, status)."""

    def __init__(self, code: str, message: str, status: int, details: Any = None) -> None:
        super().__init__(f"{status} {code}: {message}")
        self.code = code
        self.message = message
        self.status = status
        self.details = details

    def to_api_error(self) -> ApiError:
        """The same error as this node answers it."""
        return ApiError(self.status, self.code, self.message, self.details)


def _keep_alive(stream: trio.SocketStream) -> None:
    """Have the kernel probe an idle connection, so a peer gone without a FIN (power
    loss, partition) fails the connection instead of the next call's timeout."""
    sock = stream.socket
    with suppress(OSError):  # a connection already reset fails on its first read instead
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
        for name, value in KEEPALIVE.items():
            if hasattr(socket, name):  # Linux names; other systems keep their defaults
                sock.setsockopt(socket.IPPROTO_TCP, getattr(socket, name), value)


def _fileno(stream: trio.abc.Stream) -> int:
    """The socket's file descriptor, -1 once closed or if the stream has none."""
    sock = getattr(stream, "socket", None)
    return sock.fileno() if isinstance(stream, trio.SocketStream) and sock is not None else -1


class _FrameReader:
    """Reads a stream without trio's extra scheduler pass per successful read."""

    def __init__(self, stream: trio.abc.Stream) -> None:
        self.stream = stream
        self._streak = 0

    async def receive(self) -> bytes | bytearray:
        """The next bytes (b"" at end of stream); waits only when none are ready.

        Raises:
            trio.BrokenResourceError: the connection failed.
            trio.ClosedResourceError: the stream was closed.
        """
        fd = _fileno(self.stream)
        if fd < 0:
            return await self.stream.receive_some(READ_SIZE)
        if self._streak >= READS_BEFORE_YIELD:  # a flooding peer must not starve the rest
            self._streak = 0
            await trio.lowlevel.checkpoint()
        while True:
            try:
                data = os.read(fd, READ_SIZE)
            except BlockingIOError:
                self._streak = 0
                await trio.lowlevel.wait_readable(fd)
                fd = _fileno(self.stream)
                if fd < 0:
                    raise trio.ClosedResourceError("stream closed") from None
                continue
            except OSError as exc:
                raise trio.BrokenResourceError(str(exc)) from None
            self._streak += 1
            return data


class _FrameWriter:
    """Writes frames to a stream from many tasks without a writer task of its own.

    The first task to write while nobody is writing becomes the writer: it sends its
    frame and then, in one ``send_all``, whatever other tasks queued meanwhile, until
    nothing is queued; those tasks return at once. (A writer task per connection cost
    more scheduler passes: round trips of 430 µs instead of 350; see docs/cluster.md.)
    A write that fails or takes over ``WRITE_TIMEOUT`` breaks the writer: ``on_broken``
    runs once and later frames are dropped (their callers learn it from the connection).
    ``shield``: a cancelled writer still finishes its write, so a cancelled caller never
    leaves half a frame on the wire (the client). The server writes only from its
    handlers' nursery, which is cancelled only by a hard stop that drops the connection.
    """

    def __init__(
        self, stream: trio.abc.Stream, on_broken: Callable[[], None], *, shield: bool
    ) -> None:
        self.stream = stream
        self.on_broken = on_broken
        self.shield = shield
        self.broken = False
        self._queued: list[bytes] = []
        self._writing = False

    async def write(self, frame: bytes, deadline: float = math.inf) -> None:
        """Send ``frame`` (now, or by the task already writing); never raises I/O errors.

        A write still blocked at ``deadline`` (the caller's) or after ``WRITE_TIMEOUT``
        breaks the writer: half a frame may be on the wire.
        """
        if self.broken:
            return
        self._queued.append(frame)
        if self._writing:
            return
        self._writing = True
        try:
            while self._queued and not self.broken:
                queued = self._queued
                data = queued[0] if len(queued) == 1 else b"".join(queued)
                queued.clear()
                data = self._write_now(data)
                if not data:
                    continue
                limit = min(deadline, trio.current_time() + WRITE_TIMEOUT)
                with trio.CancelScope(deadline=limit, shield=self.shield) as scope:
                    await self.stream.send_all(data)
                if scope.cancelled_caught:
                    self._break()
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            self._break()
        finally:
            self._writing = False

    def _write_now(self, data: bytes) -> bytes:
        # Most writes fit the socket's buffer: one non-blocking write and no scheduler
        # pass (trio's send_all always yields once); what is left goes to send_all.
        fd = _fileno(self.stream)
        if fd < 0:
            return data
        try:
            sent = os.write(fd, data)
        except BlockingIOError:
            return data
        except OSError:
            return data  # send_all raises the error
        return data[sent:] if sent < len(data) else b""

    def _break(self) -> None:
        if not self.broken:
            self.broken = True
            self._queued.clear()
            self.on_broken()


# -- server ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ServerStatistics:
    """What a :class:`TransportServer` holds now (for /health and metrics)."""

    connections: int
    running: int
    answered: int


@dataclass(frozen=True, slots=True)
class ClientStatistics:
    """What a :class:`TransportClient` holds now (for /health and metrics)."""

    #: Live connections (neither broken nor draining).
    connections: int
    #: Calls waiting for their answer.
    waiting: int
    #: Connections opened so far, reconnections included.
    connects: int


class TransportServer:
    """A running transport server: its ``port``, and :meth:`shutdown`."""

    def __init__(self, handler: Handler, *, max_in_flight: int, max_frame: int) -> None:
        self.handler = handler
        self.max_in_flight = max_in_flight
        self.max_frame = max_frame
        self.port = 0
        self.closing = False
        #: Every open connection (their reading is cancelled by :meth:`shutdown`).
        self._connections: set[_Served] = set()
        #: Requests answered so far.
        self.answered = 0
        self._accepting = trio.CancelScope()

    def shutdown(self) -> None:
        """Stop accepting and reading; finish the requests taken, then close (graceful)."""
        self.closing = True
        self._accepting.cancel()
        for connection in list(self._connections):
            connection.reading.cancel()

    def statistics(self) -> ServerStatistics:
        """Open connections, requests running, requests answered."""
        running = sum(connection.running for connection in self._connections)
        return ServerStatistics(len(self._connections), running, self.answered)

    async def serve(self, host: str, port: int, *, task_status: trio.TaskStatus[Any]) -> None:
        """Accept connections until :meth:`shutdown`, then wait for them to finish."""
        listeners = await trio.open_tcp_listeners(port, host=host)
        self.port = listeners[0].socket.getsockname()[1]
        async with trio.open_nursery() as connections:
            with self._accepting:
                async with trio.open_nursery() as acceptor:
                    serve = partial(trio.serve_listeners, handler_nursery=connections)
                    await acceptor.start(serve, self._serve_connection, listeners)
                    task_status.started(self)

    async def _serve_connection(self, stream: trio.SocketStream) -> None:
        if self.closing:  # accepted as the shutdown began: it ran nothing
            with suppress(trio.BrokenResourceError, trio.ClosedResourceError):
                await stream.send_all(goaway_frame(-1))
            return
        _keep_alive(stream)
        connection = _Served(self, stream)
        self._connections.add(connection)
        try:
            await connection.run()
        except Exception:  # one connection's failure never stops the server
            log.exception("transport: connection failed")
        finally:
            self._connections.discard(connection)

    async def answer(self, call: Call) -> bytes:
        """The frame answering one request (an error frame if the handler raised)."""
        try:
            body = await self.handler(call.op, call.body)
            return ok_frame(call.id, body, self.max_frame)
        except ApiError as exc:
            failed = Failed(call.id, exc.code, exc.message, exc.status, exc.details)
        except FrameTooLargeError as exc:
            failed = Failed(call.id, "FRAME_TOO_LARGE", f"answer to {call.op}: {exc}", 500)
        except Exception:
            log.exception("transport: handler of %r failed", call.op)
            failed = Failed(call.id, "INTERNAL", f"internal error in {call.op}", 500)
        try:
            return failed_frame(failed)
        except (TypeError, FrameError):  # details that JSON cannot carry: send the rest
            return failed_frame(Failed(call.id, failed.code, failed.message, failed.status))


class _Served:
    """One accepted connection: a reader starting handlers, a writer sending answers."""

    def __init__(self, server: TransportServer, stream: trio.SocketStream) -> None:
        self.server = server
        self.stream = stream
        #: Cancelled by a shutdown, or when the peer is gone: no more requests are read.
        self.reading = trio.CancelScope()
        # The peer is gone: stop reading; running handlers finish, answers are dropped.
        self.writer = _FrameWriter(stream, self.reading.cancel, shield=False)
        #: The id of the last request whose handler was started.
        self.last_id = -1
        self._limit = trio.Semaphore(server.max_in_flight)

    async def run(self) -> None:
        """Serve until end of stream or shutdown; answer every request taken; return."""
        async with trio.open_nursery() as handlers:
            with self.reading:
                await self._read(handlers)
            if self.server.closing:
                await self.writer.write(goaway_frame(self.last_id))

    async def _read(self, handlers: trio.Nursery) -> None:
        decoder = FrameDecoder(self.server.max_frame)
        reader = _FrameReader(self.stream)
        while True:
            try:
                data = await reader.receive()
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                return
            if not data:
                return
            decoder.feed(data)
            while True:
                try:
                    value = decoder.next_frame()
                except FrameError as exc:  # the stream lost its framing
                    log.warning("transport: closing a connection: %s", exc)
                    return
                if value is NEED_DATA:
                    break
                try:
                    call = parse_request(value)
                except FrameError as exc:
                    call_id = request_id(value)
                    if call_id is None:
                        log.warning("transport: closing a connection: %s", exc)
                        return
                    failed = failed_frame(Failed(call_id, "BAD_FRAME", str(exc), 400))
                    # Written from the handlers' nursery, like every answer: a shutdown
                    # cancels this reader, and must not cut a frame in half.
                    handlers.start_soon(self.writer.write, failed)
                    continue
                try:
                    self._limit.acquire_nowait()  # no scheduler pass when under the limit
                except trio.WouldBlock:
                    await self._limit.acquire()
                self.last_id = call.id
                handlers.start_soon(self._handle, call)

    @property
    def running(self) -> int:
        """Requests whose handler is running."""
        return self.server.max_in_flight - self._limit.value

    async def _handle(self, call: Call) -> None:
        try:
            await self.writer.write(await self.server.answer(call))
            self.server.answered += 1
        finally:
            self._limit.release()


async def serve_transport(
    handler: Handler,
    host: str,
    port: int,
    *,
    max_in_flight: int = MAX_IN_FLIGHT,
    max_frame: int = MAX_FRAME,
    task_status: trio.TaskStatus[TransportServer] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve ``handler`` on ``host:port`` (0: any free port) until shut down.

    ``task_status.started`` gets the :class:`TransportServer` (its ``port``, its
    ``shutdown()``); this returns once a shutdown has finished every request taken.
    Cancelling it stops everything at once.
    """
    server = TransportServer(handler, max_in_flight=max_in_flight, max_frame=max_frame)
    await server.serve(host, port, task_status=task_status)


# -- client ---------------------------------------------------------------------------


class _Pending:
    """One call's reply slot."""

    __slots__ = ("done", "error", "value")

    def __init__(self) -> None:
        self.done = trio.Event()
        self.value: Any = None
        self.error: Exception | None = None

    def resolve(self, value: Any = None, error: Exception | None = None) -> None:
        if not self.done.is_set():
            self.value, self.error = value, error
            self.done.set()


class _Connection:
    """One client connection: its pending calls by id, its writer, its reader task."""

    def __init__(self, stream: trio.SocketStream, max_frame: int) -> None:
        self.stream = stream
        self.max_frame = max_frame
        self.pending: dict[int, _Pending] = {}
        self.next_id = 0
        self._scope = trio.CancelScope()
        self.writer = _FrameWriter(stream, self._write_failed, shield=True)
        #: Why it can take no more calls (broken, closed, or the server's goaway).
        self.close_reason: TransportError | None = None

    async def run(self) -> None:
        """Read answers and write requests until the connection ends; then fail the rest."""
        reason = TransportError("connection to the node lost")
        try:
            with self._scope:
                await self._read()
                reason = TransportError("connection closed by the node")
        except FrameError as exc:
            reason = TransportError(f"bad frame from the node: {exc}")
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass
        finally:
            self.close(reason)
            await trio.aclose_forcefully(self.stream)

    def close(self, reason: TransportError) -> None:
        """Take no more calls, fail every waiting one with ``reason``."""
        if self.close_reason is None:
            self.close_reason = reason
        self._scope.cancel()
        for pending in self.pending.values():
            pending.resolve(error=reason)

    def _write_failed(self) -> None:
        self.close(TransportError("connection to the node lost while writing"))

    async def _read(self) -> None:
        decoder = FrameDecoder(self.max_frame)
        reader = _FrameReader(self.stream)
        while True:
            data = await reader.receive()
            if not data:
                return
            decoder.feed(data)
            while (value := decoder.next_frame()) is not NEED_DATA:
                reply = parse_reply(value)
                if isinstance(reply, GoAway):
                    self._go_away(reply.last_id)
                    continue
                pending = self.pending.get(reply.id)
                if pending is None:
                    continue  # its caller was cancelled or timed out
                if isinstance(reply, Ok):
                    pending.resolve(reply.body)
                else:
                    error = RemoteError(reply.code, reply.message, reply.status, reply.details)
                    pending.resolve(error=error)

    def _go_away(self, last_id: int) -> None:
        self.close_reason = TransportError("the node is shutting down", unprocessed=True)
        for call_id, pending in self.pending.items():
            if call_id > last_id:
                pending.resolve(error=self.close_reason)

    def prepare(self, op: str, body: Any) -> tuple[int, bytes, _Pending]:
        """A new request: its id, its frame, its reply slot (registered)."""
        if self.close_reason is not None:  # nothing was sent
            raise TransportError(str(self.close_reason), unprocessed=True)
        call_id = self.next_id
        frame = call_frame(call_id, op, body, self.max_frame)
        self.next_id += 1
        pending = self.pending[call_id] = _Pending()
        return call_id, frame, pending


class TransportClient:
    """Calls to one node over up to ``pool_size`` persistent connections.

    Use :func:`open_transport_client`, whose nursery runs the connections' tasks.
    """

    def __init__(
        self,
        host: str,
        port: int,
        *,
        pool_size: int = 2,
        max_frame: int = MAX_FRAME,
        connect_timeout: float = CONNECT_TIMEOUT,
        call_timeout: float = CALL_TIMEOUT,
        nursery: trio.Nursery | None = None,
    ) -> None:
        if pool_size < 1:
            raise ValueError("pool_size must be at least 1")
        self.host, self.port = host, port
        self.max_frame = max_frame
        self.connect_timeout = connect_timeout
        self.call_timeout = call_timeout
        self._nursery = nursery
        self._slots: list[_Connection | None] = [None] * pool_size
        self._locks = [trio.Lock() for _ in range(pool_size)]
        self._turn = 0
        self._closed = False
        #: Connections opened so far (reconnections included).
        self.connects = 0

    # A timeout argument, not the caller's own scope: expiry is a TransportTimeoutError.
    async def call(self, op: str, body: Any = None, *, timeout: float | None = None) -> Any:  # noqa: ASYNC109
        """Run ``op`` on the node and return its answer's body.

        Args:
            op: the operation's name.
            body: its JSON argument.
            timeout: seconds to wait for the answer (default ``call_timeout``).

        Raises:
            RemoteError: the node's handler answered an error.
            TransportError: no answer (connection failed or lost, node shutting down,
                timeout: :class:`TransportTimeoutError`).
            FrameTooLargeError: the request is larger than ``max_frame``.
        """
        for attempt in range(2):
            connection = await self._connection()
            try:
                return await self._call_on(connection, op, body, timeout)
            except TransportError as exc:
                # Sent after the server's goaway: it never ran, so one more try is safe.
                if not exc.unprocessed or attempt or self._closed:
                    raise
        raise AssertionError("unreachable")

    async def _call_on(
        self,
        connection: _Connection,
        op: str,
        body: Any,
        timeout: float | None,  # noqa: ASYNC109
    ) -> Any:
        call_id, frame, pending = connection.prepare(op, body)
        try:
            # One deadline for the whole call, the write included (a peer that stops
            # reading must not hold a call for WRITE_TIMEOUT).
            deadline = trio.current_time() + (self.call_timeout if timeout is None else timeout)
            await connection.writer.write(frame, deadline)
            with trio.move_on_at(deadline):
                await pending.done.wait()
        finally:
            connection.pending.pop(call_id, None)
        if not pending.done.is_set():
            raise TransportTimeoutError(f"no answer to {op!r} from {self.host}:{self.port} in time")
        error = pending.error
        if isinstance(error, TransportError):  # shared by every call on the connection
            raise type(error)(str(error), unprocessed=error.unprocessed)
        if error is not None:
            raise error
        return pending.value

    async def _connection(self) -> _Connection:
        if self._closed:
            raise TransportError("transport client closed", unprocessed=True)
        slot = self._turn % len(self._slots)
        self._turn += 1
        connection = self._slots[slot]
        if connection is not None and connection.close_reason is None:
            return connection
        async with self._locks[slot]:
            connection = self._slots[slot]
            if connection is None or connection.close_reason is not None:
                connection = self._slots[slot] = await self._connect()
            return connection

    async def _connect(self) -> _Connection:
        if self._nursery is None:
            raise RuntimeError("use open_transport_client(): the client needs a nursery")
        try:
            with trio.fail_after(self.connect_timeout):
                stream = await trio.open_tcp_stream(self.host, self.port)
        except (OSError, trio.TooSlowError) as exc:
            raise TransportError(
                f"cannot connect to {self.host}:{self.port}: {exc}", unprocessed=True
            ) from None
        _keep_alive(stream)
        connection = _Connection(stream, self.max_frame)
        self._nursery.start_soon(connection.run)
        self.connects += 1
        return connection

    def statistics(self) -> ClientStatistics:
        """Live connections, calls waiting, connections opened so far."""
        live = [c for c in self._slots if c is not None and c.close_reason is None]
        waiting = sum(len(c.pending) for c in self._slots if c is not None)
        return ClientStatistics(len(live), waiting, self.connects)

    async def aclose(self) -> None:
        """Close every connection; waiting calls fail with :class:`TransportError`."""
        self._closed = True
        for connection in self._slots:
            if connection is not None:
                connection.close(TransportError("transport client closed"))
                await trio.aclose_forcefully(connection.stream)
        self._slots = [None] * len(self._slots)


@asynccontextmanager
async def open_transport_client(
    host: str, port: int, **options: Any
) -> AsyncIterator[TransportClient]:
    """A :class:`TransportClient` whose connections live in this block's nursery."""
    async with trio.open_nursery() as nursery:
        client = TransportClient(host, port, nursery=nursery, **options)
        try:
            yield client
        finally:
            await client.aclose()
            nursery.cancel_scope.cancel()
