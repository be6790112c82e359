"""HTTP/1.1 on trio streams, parsed by llhttp (httptools), for one application.

Theory of operation
-------------------
One task per connection runs :meth:`Connection.run`: read bytes, feed the parser,
and answer every request it completed, in order (pipelined requests are answered
one after another, never concurrently). The parser's callbacks only collect a
request's URL, headers and body; limits are judged as they arrive:

- a head larger than ``max_head`` is refused with 431, a body larger than
  ``max_body`` with 413 as soon as its ``Content-Length`` is known (before any of
  it is read) or as soon as its chunks pass the limit; either way the connection
  closes after the answer, since the rest of that request is never read;
- a request's head must arrive within ``head_timeout`` of its first byte (a slow
  client cannot hold a connection by trickling a head), each read of a body within
  ``body_timeout`` (else 408), and an idle keep-alive connection closes after
  ``keep_alive_timeout``; one task (:meth:`Server.watch_deadlines`) checks every
  waiting read once a second, instead of a cancel scope per read;
- ``Expect: 100-continue`` is answered once the earlier requests are answered;
- an upgrade request (``Connection: Upgrade``) that the application takes (a
  WebSocket) gets the connection, with the bytes already read after its head;
  any request of a keep-alive connection may be one.

Answers are :class:`~spectral.front.messages.Response` (whole) or
:class:`~spectral.front.messages.StreamingResponse` (chunked, e.g. server-sent
events; the connection is watched for end of file meanwhile). ``HEAD`` gets the
head of the ``GET`` answer. Shutdown: :meth:`Server.close` stops accepting,
closes idle connections at once and lets busy ones finish their current answer
(which then says ``Connection: close``); the caller bounds how long that may take.
"""

from __future__ import annotations

import logging
import os
from collections import deque
from collections.abc import Awaitable
from dataclasses import dataclass
from functools import partial
from http import HTTPStatus
from typing import Protocol

import httptools
import trio

from spectral.front.messages import Answer, Request, Response, StreamingResponse, header_lines

log = logging.getLogger("spectral.front")

#: Bytes asked of the socket per read.
READ_SIZE = 65536
#: Seconds between two checks of the connections' read deadlines (they fire that late
#: at most).
DEADLINE_TICK = 1.0
_REASONS = {status.value: status.phrase.encode() for status in HTTPStatus}
_CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"


@dataclass(frozen=True, slots=True)
class Limits:
    """What one connection may cost (see the module docstring)."""

    #: Largest request body, in bytes (413 beyond).
    max_body: int = 1024 * 1024
    #: Largest request head (request line and headers), in bytes (431 beyond).
    max_head: int = 16 * 1024
    #: Seconds from a request's first byte to the end of its head.
    head_timeout: float = 10.0
    #: Seconds one read of a request body may wait.
    body_timeout: float = 30.0
    #: Seconds an idle keep-alive connection is kept.
    keep_alive_timeout: float = 75.0
    #: Seconds one write of an answer may take before the connection is dropped.
    write_timeout: float = 30.0


class Application(Protocol):
    """What the front serves."""

    def handle(self, request: Request) -> Awaitable[Answer]:
        """Answer one request (never raises: errors are answers too)."""
        ...

    def takes_upgrade(self, request: Request) -> bool:
        """Whether :meth:`upgrade` serves this upgrade request (else it is answered)."""
        ...

    def upgrade(self, request: Request, stream: trio.abc.Stream) -> Awaitable[None]:
        """Serve an upgraded connection (e.g. a WebSocket) until it ends."""
        ...

    def refuse(self, request: Request | None, status: int, message: str) -> Response:
        """The answer to a request the front refuses (400, 408, 413, 431); logs it."""
        ...


class _Discard:
    """Parser callbacks of a connection handed over to an upgrade: none are used."""


#: The parser and queue of every connection handed over to an upgrade (never used).
_HANDED_OVER = httptools.HttpRequestParser(_Discard())
_NOTHING_READY: deque[Request | _Refusal] = deque()


@dataclass(frozen=True, slots=True)
class _Refusal:
    """A request broken at the protocol level: answer ``status``, then close."""

    status: int
    message: str
    request: Request | None = None


class Server:
    """Serves an :class:`Application` on listeners; :meth:`close` starts shutdown."""

    def __init__(self, app: Application, limits: Limits | None = None) -> None:
        self.app = app
        self.limits = limits or Limits()
        self.closing = False
        #: Connections blocked in a read, whose deadlines :meth:`watch_deadlines` checks.
        self.waiting: set[Connection] = set()
        self.connections = 0

    async def serve(
        self,
        listeners: list[trio.SocketListener],
        handler_nursery: trio.Nursery,
        *,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Accept connections until cancelled; each is served in ``handler_nursery``."""
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self.watch_deadlines)
            serve = partial(trio.serve_listeners, handler_nursery=handler_nursery)
            await nursery.start(serve, self.handle_stream, listeners)
            task_status.started()

    async def watch_deadlines(self, tick: float = DEADLINE_TICK) -> None:
        """Every ``tick`` seconds, end the reads whose deadline has passed (one task for
        every connection: a cancel scope per read cost ~12 µs, 6 % of a GET)."""
        while True:
            await trio.sleep(tick)
            now = trio.current_time()
            for connection in list(self.waiting):
                if connection.read_deadline <= now:
                    connection.expire()

    def close(self) -> None:
        """Shut down: idle connections close now, busy ones after their current answer."""
        self.closing = True
        for connection in list(self.waiting):
            if connection.read_kind == "idle":
                connection.expire()

    async def handle_stream(self, stream: trio.abc.Stream) -> None:
        """Serve one accepted connection to its end; the stream is closed afterwards."""
        self.connections += 1
        try:
            await Connection(self, stream).serve()
        except (trio.BrokenResourceError, trio.ClosedResourceError, trio.TooSlowError):
            pass
        except Exception:
            log.exception("connection failed")
        finally:
            self.connections -= 1
            await trio.aclose_forcefully(stream)


class PrefixedStream(trio.abc.HalfCloseableStream):
    """A stream whose first reads return bytes that were already read from it."""

    def __init__(self, stream: trio.abc.Stream, prefix: bytes) -> None:
        self.stream = stream
        self._prefix = prefix

    @property
    def socket(self) -> trio.socket.SocketType | None:
        """The underlying socket, if the stream has one."""
        return getattr(self.stream, "socket", None)

    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        """The prefix first, then the stream's bytes."""
        if self._prefix:
            data = self._prefix if max_bytes is None else self._prefix[:max_bytes]
            self._prefix = self._prefix[len(data) :]
            await trio.lowlevel.checkpoint()
            return data
        return await self.stream.receive_some(max_bytes)

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        """Write to the stream."""
        await self.stream.send_all(data)

    async def wait_send_all_might_not_block(self) -> None:
        """See trio.abc.SendStream."""
        await self.stream.wait_send_all_might_not_block()

    async def send_eof(self) -> None:
        """Half-close, if the stream can."""
        if isinstance(self.stream, trio.abc.HalfCloseableStream):
            await self.stream.send_eof()

    async def aclose(self) -> None:
        """Close the stream."""
        await self.stream.aclose()


class Connection:
    """One client connection: the parser's callbacks and the request/answer loop."""

    def __init__(self, server: Server, stream: trio.abc.Stream) -> None:
        self.server = server
        self.app = server.app
        self.limits = server.limits
        self.stream = stream
        #: The socket's descriptor for direct non-blocking writes (-1: not a socket).
        self.fd = _socket_fd(stream)
        self.parser = httptools.HttpRequestParser(self)
        self.ready: deque[Request | _Refusal] = deque()
        #: Stop reading: a refusal is queued, or an upgrade took the parser.
        self.stopped = False
        #: Bytes read after an upgrade request's head (they belong to the new protocol).
        self.leftover = b""
        self.upgraded: Request | None = None
        # The request being parsed.
        self.in_head = False
        self.in_message = False
        self.head_size = 0
        self.head_deadline = 0.0
        self.url = b""
        self.headers: dict[str, str] = {}
        self.body: list[bytes] = []
        self.body_size = 0
        self.refused = False
        self.expect_continue = False
        # The read in progress: what it waits for and until when (see Server.watch_deadlines).
        self.read_kind = "idle"
        self.read_deadline = 0.0
        self.expired: str | None = None
        self.scope = trio.CancelScope()

    # -- parser callbacks (synchronous, inside feed_data) ------------------------------

    def on_message_begin(self) -> None:
        """A request starts."""
        self.in_head = self.in_message = True
        self.head_size = 0
        self.head_deadline = trio.current_time() + self.limits.head_timeout
        self.url = b""
        self.headers = {}
        self.body = []
        self.body_size = 0
        self.refused = self.expect_continue = False

    def on_url(self, url: bytes) -> None:
        """A piece of the request target."""
        self.url += url
        self._count_head(len(url))

    def on_header(self, name: bytes, value: bytes) -> None:
        """One header (httptools hands it whole)."""
        self._count_head(len(name) + len(value) + 4)
        key = name.decode("latin-1").lower()
        text = value.decode("latin-1")
        previous = self.headers.get(key)
        self.headers[key] = text if previous is None else f"{previous}, {text}"

    def on_headers_complete(self) -> None:
        """The head is complete: judge the announced body."""
        self.in_head = False
        if self.refused:
            return
        length = self.headers.get("content-length")
        if length is not None and length.isdigit() and int(length) > self.limits.max_body:
            self._refuse(413, "the request body is larger than 1 MiB")
            return
        self.expect_continue = self.headers.get("expect", "").lower() == "100-continue"

    def on_body(self, body: bytes) -> None:
        """A piece of the body (chunked or not)."""
        if self.refused:
            return
        self.body_size += len(body)
        if self.body_size > self.limits.max_body:
            self.body = []
            self._refuse(413, "the request body is larger than 1 MiB")
            return
        self.body.append(body)

    def on_message_complete(self) -> None:
        """The request is complete: queue it."""
        self.in_message = self.expect_continue = False
        if self.refused:
            return
        method = self.parser.get_method().decode("ascii")
        body = self.body[0] if len(self.body) == 1 else b"".join(self.body)
        self.ready.append(
            Request(
                method,
                self.url.decode("latin-1"),
                self.headers,
                body,
                keep_alive=self.parser.should_keep_alive(),
                version=self.parser.get_http_version(),
            )
        )

    def _count_head(self, size: int) -> None:
        self.head_size += size
        if self.head_size > self.limits.max_head and not self.refused:
            self._refuse(431, "the request head is larger than 16 KiB")

    def _refuse(self, status: int, message: str) -> None:
        self.refused = True
        self.stopped = True
        self.ready.append(_Refusal(status, message, self._partial_request()))

    def _partial_request(self) -> Request | None:
        try:
            method = self.parser.get_method().decode("ascii")
        except httptools.HttpParserError:
            return None
        return Request(method, self.url.decode("latin-1"), self.headers, keep_alive=False)

    def _hand_over(self) -> None:
        """The connection now belongs to an upgrade (a WebSocket that may stay open for
        days): drop the HTTP parser and its state, ~2 KB an idle watcher would keep."""
        self.parser = _HANDED_OVER
        self.ready = _NOTHING_READY
        self.headers = {}
        self.url = b""
        self.leftover = b""

    # -- the loop ------------------------------------------------------------------------

    async def serve(self) -> None:
        """:meth:`run`, ended by :meth:`expire`: a slow request is then refused with 408."""
        with self.scope:
            await self.run()
        if self.expired in ("head", "body"):
            refusal = self.app.refuse(None, 408, "the request did not arrive in time")
            refusal.close = True
            with trio.move_on_after(1.0):
                await self._write(None, refusal)

    def expire(self) -> None:
        """The read in progress took too long (or the server shuts down): end the connection."""
        self.expired = self.read_kind
        self.scope.cancel()

    async def run(self) -> None:
        """Read, parse and answer until the connection ends."""
        while True:
            while self.ready:
                item = self.ready.popleft()
                if isinstance(item, _Refusal):
                    refusal = self.app.refuse(item.request, item.status, item.message)
                    refusal.close = True
                    await self._write(item.request, refusal)
                    return
                if item is self.upgraded:
                    if self.app.takes_upgrade(item):
                        stream = PrefixedStream(self.stream, self.leftover)
                        self._hand_over()
                        upgrade = self.app.upgrade(item, stream)
                        item = None  # the upgrade's only: it may last for days
                        await upgrade
                        return
                    # Not an upgrade we serve: answer it, then go on parsing afresh.
                    self._restart_parser()
                if not await self._answer(item):
                    return
            if self.expect_continue and self.in_message and not self.in_head:
                self.expect_continue = False
                await self._send(_CONTINUE)
            if self.stopped and not self.ready:
                return
            data = await self._read()
            if not data:
                return
            self._feed(data)

    async def _read(self) -> bytes:
        """The next bytes (b"" at end of file), under the deadline of where the parser is:
        an idle connection's keep-alive, a head's, or a body's next read."""
        limits = self.limits
        if not self.in_message:
            if self.server.closing:
                return b""
            self.read_kind = "idle"
            self.read_deadline = trio.current_time() + limits.keep_alive_timeout
        elif self.in_head:
            self.read_kind = "head"
            self.read_deadline = self.head_deadline
        else:
            self.read_kind = "body"
            self.read_deadline = trio.current_time() + limits.body_timeout
        waiting = self.server.waiting
        waiting.add(self)
        try:
            return await self.stream.receive_some(READ_SIZE)
        finally:
            waiting.discard(self)

    def _feed(self, data: bytes) -> None:
        if self.stopped:
            return
        spanned_head = self.in_head
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade as upgrade:
            offset = upgrade.args[0] if upgrade.args else len(data)
            self.leftover = data[offset:]
            last = self.ready[-1] if self.ready else None
            self.upgraded = last if isinstance(last, Request) else None
            self.stopped = True
        except httptools.HttpParserError as error:
            if not self.refused:
                self.ready.append(_Refusal(400, f"malformed HTTP request: {error}"))
            self.stopped = True
            return
        if spanned_head and self.in_head:
            # A head that spans whole reads (e.g. one endless header) is counted by reads.
            self._count_head(len(data))

    def _restart_parser(self) -> None:
        self.parser = httptools.HttpRequestParser(self)
        self.stopped = False
        self.upgraded = None
        leftover, self.leftover = self.leftover, b""
        if leftover:
            self._feed(leftover)

    async def _answer(self, request: Request) -> bool:
        """Answer one request; False when the connection must close afterwards."""
        answer = await self.app.handle(request)
        close = not request.keep_alive or self.server.closing
        if isinstance(answer, StreamingResponse):
            try:
                return await self._stream(request, answer, close)
            finally:
                await _close_iterator(answer.chunks)
                if answer.on_close is not None:
                    answer.on_close()
        if close:
            answer.close = True
        await self._write(request, answer)
        return not answer.close

    async def _write(self, request: Request | None, answer: Response) -> None:
        headers = answer.headers
        head = [b"HTTP/1.1 %d %s\r\n" % (answer.status, _REASONS.get(answer.status, b""))]
        head.append(header_lines(headers))
        if answer.status >= 200 and answer.status not in (204, 304):
            head.append(b"content-length: %d\r\n" % len(answer.body))
        if answer.close:
            head.append(b"connection: close\r\n")
        elif request is not None and request.version == "1.0":
            head.append(b"connection: keep-alive\r\n")
        head.append(b"\r\n")
        if request is None or request.method != "HEAD":
            head.append(answer.body)
        await self._send(b"".join(head))

    async def _stream(self, request: Request, answer: StreamingResponse, close: bool) -> bool:
        head = [b"HTTP/1.1 %d %s\r\n" % (answer.status, _REASONS.get(answer.status, b""))]
        head.append(header_lines(answer.headers))
        if request.method == "HEAD":
            head.append(b"connection: close\r\n\r\n" if close else b"\r\n")
            await self._send(b"".join(head))
            return not close
        head.append(b"transfer-encoding: chunked\r\n")
        if close:
            head.append(b"connection: close\r\n")
        head.append(b"\r\n")
        await self._send(b"".join(head))
        gone = False
        async with trio.open_nursery() as nursery:

            async def watch_for_eof() -> None:
                # Whatever the client sends now is kept for after the stream.
                nonlocal gone
                while True:
                    try:
                        data = await self.stream.receive_some(READ_SIZE)
                    except (trio.BrokenResourceError, trio.ClosedResourceError):
                        data = b""
                    if not data:
                        gone = True
                        nursery.cancel_scope.cancel()
                        return
                    self._feed(data)

            nursery.start_soon(watch_for_eof)
            async for chunk in answer.chunks:
                if chunk:
                    await self._send(b"%x\r\n%s\r\n" % (len(chunk), chunk))
            await self._send(b"0\r\n\r\n")
            nursery.cancel_scope.cancel()
        return not (gone or close)

    async def _send(self, data: bytes) -> None:
        # Most answers fit the socket's buffer: one non-blocking write, no cancel scope
        # (the timed send_all below cost ~8 % of a mutation's CPU); the rest waits.
        fd = self.fd
        if fd >= 0:
            try:
                sent = os.write(fd, data)
            except BlockingIOError:
                sent = 0
            except OSError as error:
                raise trio.BrokenResourceError(str(error)) from None
            if sent == len(data):
                await trio.lowlevel.checkpoint()
                return
            data = data[sent:]
        with trio.fail_after(self.limits.write_timeout):
            await self.stream.send_all(data)


def _socket_fd(stream: trio.abc.Stream) -> int:
    sock = getattr(stream, "socket", None)
    if not isinstance(stream, trio.SocketStream) or sock is None:
        return -1
    return sock.fileno()


async def _close_iterator(chunks: object) -> None:
    aclose = getattr(chunks, "aclose", None)
    if aclose is not None:
        with trio.CancelScope(shield=True):
            await aclose()
