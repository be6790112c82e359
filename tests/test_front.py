"""The HTTP front on its own: an echo application over in-memory streams, in virtual time.

Each test drives one connection's bytes through :class:`spectral.front.Server` with
``trio.testing.memory_stream_pair`` (no socket, no real clock): pipelining, chunked
bodies, ``Expect: 100-continue``, ``HEAD``, the limits and deadlines, upgrades on any
request of a keep-alive connection, streaming, shutdown, and a fuzzer that sends it
random and mutated requests (a 4xx or a closed connection, never a crash or a hang).
"""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import TypeVar

import trio
import trio.testing
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from trio.testing import MockClock

from spectral.front import Limits, Request, Response, Server, StreamingResponse
from spectral.front.server import DEADLINE_TICK

LIMITS = Limits(max_body=1024, max_head=2048, head_timeout=10, body_timeout=30,
                keep_alive_timeout=75, write_timeout=30)  # fmt: skip

#: Virtual seconds a limit may fire late before a test says it did not fire (the
#: watchdog checks deadlines every DEADLINE_TICK), and how close to a limit "before" is.
GENEROUS = max(1.0, 10 * DEADLINE_TICK)
JUST = 0.001
T = TypeVar("T")


class Echo:
    """Answers every request with its method, path, query, body and a few headers."""

    def __init__(self) -> None:
        self.seen: list[Request] = []
        self.upgraded: list[tuple[Request, bytes]] = []
        self.refused: list[int] = []
        self.refused_at: list[float] = []
        self.closed_streams = 0

    async def handle(self, request: Request) -> Response | StreamingResponse:
        self.seen.append(request)
        if request.path == "/stream":
            return self._stream(int(request.query().get("n", "3")))
        if request.path == "/slow":
            await trio.sleep(5)
        body = {
            "method": request.method,
            "path": request.path,
            "query": request.query(),
            "body": request.body.decode("latin-1"),
            "expect": request.header("expect"),
        }
        return Response(200, json.dumps(body).encode(), [("content-type", "application/json")])

    def _stream(self, n: int) -> StreamingResponse:
        async def chunks() -> AsyncIterator[bytes]:
            for i in range(n):
                yield f"data: {i}\n\n".encode()
                await trio.sleep(1)

        def closed() -> None:
            self.closed_streams += 1

        return StreamingResponse(200, chunks(), [("content-type", "text/event-stream")],
                                 on_close=closed)  # fmt: skip

    def takes_upgrade(self, request: Request) -> bool:
        return request.headers.get("upgrade") == "echo"

    async def upgrade(self, request: Request, stream: trio.abc.Stream) -> None:
        await stream.send_all(b"HTTP/1.1 101 Switching Protocols\r\nupgrade: echo\r\n\r\n")
        data = await stream.receive_some(1024)
        self.upgraded.append((request, data))
        await stream.send_all(data.upper())

    def refuse(self, request: Request | None, status: int, message: str) -> Response:
        self.refused.append(status)
        self.refused_at.append(trio.current_time())
        return Response(status, json.dumps({"error": message}).encode())


class Client:
    """One connection to a server task, read as parsed answers."""

    def __init__(self, stream: trio.abc.Stream) -> None:
        self.stream = stream
        self.buffer = b""
        self.eof = False

    async def send(self, data: bytes) -> None:
        """Send bytes; the server may already have closed (having refused the request)."""
        with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
            await self.stream.send_all(data)

    async def _fill(self) -> bool:
        data = await self.stream.receive_some(65536)
        if not data:
            self.eof = True
        self.buffer += data
        return bool(data)

    async def answer(self, *, head_only: bool = False) -> tuple[int, dict[str, str], bytes]:
        """The next answer: status, headers and body (chunked bodies joined)."""
        while b"\r\n\r\n" not in self.buffer:
            if not await self._fill():
                raise EOFError(self.buffer)
        head, self.buffer = self.buffer.split(b"\r\n\r\n", 1)
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split()[1])
        headers = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        if head_only or status in (100, 101, 204):
            return status, headers, b""
        if headers.get("transfer-encoding") == "chunked":
            body = b""
            while True:
                while b"\r\n" not in self.buffer:
                    await self._fill()
                size_line, rest = self.buffer.split(b"\r\n", 1)
                size = int(size_line, 16)
                while len(rest) < size + 2:
                    await self._fill()
                    rest = self.buffer.split(b"\r\n", 1)[1]
                body += rest[:size]
                self.buffer = rest[size + 2 :]
                if size == 0:
                    return status, headers, body
        length = int(headers.get("content-length", "0"))
        while len(self.buffer) < length:
            if not await self._fill():
                raise EOFError(self.buffer)
        body, self.buffer = self.buffer[:length], self.buffer[length:]
        return status, headers, body

    async def closed(self) -> bool:
        """True once the server has closed the connection (after reading what is left)."""
        while not self.eof:
            await self._fill()
        return True


@asynccontextmanager
async def serving(app: Echo) -> AsyncIterator[tuple[trio.Nursery, Server]]:
    """A server for ``app`` with its deadline watchdog, stopped when the block ends."""
    async with trio.open_nursery() as nursery:
        server = Server(app, LIMITS)
        nursery.start_soon(server.watch_deadlines)
        yield nursery, server
        nursery.cancel_scope.cancel()


async def connect(nursery: trio.Nursery, server: Server) -> Client:
    client_end, server_end = trio.testing.memory_stream_pair()
    nursery.start_soon(server.handle_stream, server_end)
    return Client(client_end)


def get(path: str, extra: str = "") -> bytes:
    return f"GET {path} HTTP/1.1\r\nhost: x\r\n{extra}\r\n".encode()


def post(path: str, body: bytes, extra: str = "") -> bytes:
    return (
        f"POST {path} HTTP/1.1\r\nhost: x\r\ncontent-length: {len(body)}\r\n{extra}\r\n".encode()
        + body
    )


async def test_pipelined_requests_are_answered_in_order(autojump_clock: trio.abc.Clock) -> None:
    app = Echo()
    async with serving(app) as (nursery, server):
        client = await connect(nursery, server)
        await client.send(get("/a?x=1") + post("/b", b"hello") + get("/c"))
        answers = [await client.answer() for _ in range(3)]
        assert [json.loads(body)["path"] for _, _, body in answers] == ["/a", "/b", "/c"]
        assert json.loads(answers[0][2])["query"] == {"x": "1"}
        assert json.loads(answers[1][2])["body"] == "hello"
        nursery.cancel_scope.cancel()


async def test_a_chunked_body_is_joined(autojump_clock: trio.abc.Clock) -> None:
    app = Echo()
    async with serving(app) as (nursery, server):
        client = await connect(nursery, server)
        await client.send(
            b"POST /c HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhello\r\n"
        )
        await trio.sleep(1)
        await client.send(b"6\r\n world\r\n0\r\n\r\n")
        status, _, body = await client.answer()
        assert (status, json.loads(body)["body"]) == (200, "hello world")
        nursery.cancel_scope.cancel()


async def test_expect_100_continue_is_answered_before_the_body(
    autojump_clock: trio.abc.Clock,
) -> None:
    app = Echo()
    async with serving(app) as (nursery, server):
        client = await connect(nursery, server)
        await client.send(
            b"POST /e HTTP/1.1\r\nhost: x\r\ncontent-length: 4\r\nexpect: 100-continue\r\n\r\n"
        )
        assert (await client.answer())[0] == 100
        await client.send(b"body")
        status, _, body = await client.answer()
        assert (status, json.loads(body)["body"]) == (200, "body")
        nursery.cancel_scope.cancel()


async def test_head_gets_the_head_of_get(autojump_clock: trio.abc.Clock) -> None:
    app = Echo()
    async with serving(app) as (nursery, server):
        client = await connect(nursery, server)
        await client.send(b"HEAD /h HTTP/1.1\r\nhost: x\r\n\r\n" + get("/after"))
        status, headers, _ = await client.answer(head_only=True)
        assert status == 200 and int(headers["content-length"]) > 0
        # No body came: the next bytes are the next answer.
        status, _, body = await client.answer()
        assert json.loads(body)["path"] == "/after"
        nursery.cancel_scope.cancel()


async def test_a_body_over_the_limit_is_413_before_it_is_read(
    autojump_clock: trio.abc.Clock,
) -> None:
    app = Echo()
    async with serving(app) as (nursery, server):
        client = await connect(nursery, server)
        await client.send(
            get("/first") + b"POST /big HTTP/1.1\r\nhost: x\r\ncontent-length: 5000\r\n\r\n"
        )
        assert (await client.answer())[0] == 200  # what came before is answered first
        status, headers, _ = await client.answer()
        assert (status, headers["connection"]) == (413, "close")
        assert await client.closed()
        assert [r.path for r in app.seen] == ["/first"]


async def test_a_chunked_body_over_the_limit_is_413(autojump_clock: trio.abc.Clock) -> None:
    app = Echo()
    async with serving(app) as (nursery, server):
        client = await connect(nursery, server)
        chunk = b"400\r\n" + b"x" * 1024 + b"\r\n"
        await client.send(
            b"POST /big HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\n\r\n" + chunk * 2
        )
        assert (await client.answer())[0] == 413
        assert await client.closed()
        assert app.seen == []


async def test_a_head_over_the_limit_is_431(autojump_clock: trio.abc.Clock) -> None:
    app = Echo()
    async with serving(app) as (nursery, server):
        client = await connect(nursery, server)
        await client.send(get("/h", "x-big: " + "y" * 3000 + "\r\n"))
        assert (await client.answer())[0] == 431
        assert await client.closed()


async def test_an_endless_header_is_431_without_waiting_for_its_end(
    autojump_clock: trio.abc.Clock,
) -> None:
    app = Echo()
    async with serving(app) as (nursery, server):
        client = await connect(nursery, server)
        await client.send(b"GET / HTTP/1.1\r\nx-endless: ")
        for _ in range(10):
            await client.send(b"z" * 512)
        assert (await client.answer())[0] == 431
        assert await client.closed()


# The deadlines below are checked on a clock the test moves by hand (pytest-trio's
# ``mock_clock``: virtual time that stands still until jumped), so no load can move
# them and nothing is measured: just before its limit a connection is still waiting;
# a watchdog tick or so after it (GENEROUS), it has been cut off.


def in_background(nursery: trio.Nursery, wait: Callable[[], Awaitable[T]]) -> list[T]:
    """Start ``wait()``; the list holds its result once it returns."""
    done: list[T] = []

    async def run() -> None:
        done.append(await wait())

    nursery.start_soon(run)
    return done


async def at(clock: MockClock, moment: float) -> None:
    """Let every task react to what happened so far, then move virtual time to
    ``moment`` and let every task react to that."""
    await trio.testing.wait_all_tasks_blocked()
    clock.jump(moment - trio.current_time())
    await trio.testing.wait_all_tasks_blocked()


async def test_a_slow_head_is_cut_off_at_the_head_deadline(mock_clock: MockClock) -> None:
    app = Echo()
    async with serving(app) as (nursery, server):
        client = await connect(nursery, server)
        started = trio.current_time()
        await client.send(b"GET /slowloris HTTP/1.1\r\nhost: x\r\n")
        answer = in_background(nursery, client.answer)
        for n in (1, 2, 3):  # a header every 3 s: each read is quick, the head is not
            await at(mock_clock, started + 3 * n)
            await client.send(b"x-more: 1\r\n")
        await at(mock_clock, started + LIMITS.head_timeout - JUST)
        assert (answer, app.refused) == ([], [])  # never early
        await at(mock_clock, started + LIMITS.head_timeout + GENEROUS)
        assert answer[0][0] == 408
        assert await client.closed()


async def test_a_stalled_body_is_cut_off(mock_clock: MockClock) -> None:
    app = Echo()
    async with serving(app) as (nursery, server):
        client = await connect(nursery, server)
        started = trio.current_time()
        await client.send(b"POST /b HTTP/1.1\r\nhost: x\r\ncontent-length: 10\r\n\r\nabc")
        answer = in_background(nursery, client.answer)
        await at(mock_clock, started + LIMITS.body_timeout - JUST)
        assert answer == []  # never early
        await at(mock_clock, started + LIMITS.body_timeout + GENEROUS)
        assert answer[0][0] == 408


async def test_an_idle_keep_alive_connection_is_closed(mock_clock: MockClock) -> None:
    app = Echo()
    async with serving(app) as (nursery, server):
        client = await connect(nursery, server)
        await client.send(get("/once"))
        assert (await client.answer())[0] == 200
        answered = trio.current_time()
        closed = in_background(nursery, client.closed)
        await at(mock_clock, answered + LIMITS.keep_alive_timeout - JUST)
        assert closed == []  # never early
        await at(mock_clock, answered + LIMITS.keep_alive_timeout + GENEROUS)
        assert closed == [True]


async def test_connection_close_and_http_1_0(autojump_clock: trio.abc.Clock) -> None:
    app = Echo()
    async with serving(app) as (nursery, server):
        client = await connect(nursery, server)
        await client.send(get("/bye", "connection: close\r\n"))
        _, headers, _ = await client.answer()
        assert headers["connection"] == "close"
        assert await client.closed()
        old = await connect(nursery, server)
        await old.send(b"GET /a HTTP/1.0\r\nconnection: keep-alive\r\n\r\nGET /b HTTP/1.0\r\n\r\n")
        assert (await old.answer())[1]["connection"] == "keep-alive"
        assert (await old.answer())[1]["connection"] == "close"
        assert await old.closed()


async def test_an_upgrade_on_a_later_request_gets_the_connection(
    autojump_clock: trio.abc.Clock,
) -> None:
    app = Echo()
    async with serving(app) as (nursery, server):
        client = await connect(nursery, server)
        await client.send(get("/plain"))
        assert (await client.answer())[0] == 200
        await client.send(
            get("/up", "connection: Upgrade\r\nupgrade: echo\r\n") + b"after the head"
        )
        assert (await client.answer())[0] == 101
        assert await client.stream.receive_some(1024) == b"AFTER THE HEAD"
        assert [(r.path, data) for r, data in app.upgraded] == [("/up", b"after the head")]


async def test_an_upgrade_the_app_does_not_take_is_answered_and_parsing_goes_on(
    autojump_clock: trio.abc.Clock,
) -> None:
    app = Echo()
    async with serving(app) as (nursery, server):
        client = await connect(nursery, server)
        await client.send(get("/h2", "connection: Upgrade\r\nupgrade: h2c\r\n") + get("/next"))
        assert json.loads((await client.answer())[2])["path"] == "/h2"
        assert json.loads((await client.answer())[2])["path"] == "/next"
        nursery.cancel_scope.cancel()


async def test_a_stream_is_chunked_and_closed_when_the_client_leaves(
    autojump_clock: trio.abc.Clock,
) -> None:
    app = Echo()
    async with serving(app) as (nursery, server):
        client = await connect(nursery, server)
        await client.send(get("/stream?n=2"))
        status, headers, body = await client.answer()
        assert (status, headers["transfer-encoding"], body) == (
            200, "chunked", b"data: 0\n\ndata: 1\n\n",
        )  # fmt: skip
        await trio.testing.wait_all_tasks_blocked()
        assert app.closed_streams == 1
        await client.send(get("/stream?n=1000"))
        while b"data: 0" not in client.buffer:
            await client._fill()
        await client.stream.aclose()  # the client goes away mid-stream
        with trio.fail_after(5):
            while app.closed_streams < 2:
                await trio.sleep(0.1)
        nursery.cancel_scope.cancel()


async def test_shutdown_closes_idle_connections_and_finishes_busy_ones(
    autojump_clock: trio.abc.Clock,
) -> None:
    app = Echo()
    async with serving(app) as (nursery, server):
        idle = await connect(nursery, server)
        await idle.send(get("/a"))
        await idle.answer()
        busy = await connect(nursery, server)
        await busy.send(get("/slow"))
        await trio.sleep(1)
        server.close()
        assert await idle.closed()
        _, headers, _ = await busy.answer()  # answered, then closed
        assert headers["connection"] == "close"
        assert await busy.closed()


async def test_malformed_requests_are_400_and_closed(autojump_clock: trio.abc.Clock) -> None:
    for raw in (
        b"\x00\x01garbage\r\n\r\n",
        b"GET / HTTP/1.1\r\ncontent-length: 1\r\ntransfer-encoding: chunked\r\n\r\n",
        b"GET / HTTP/9.9\r\n\r\n",
    ):
        app = Echo()
        async with serving(app) as (nursery, server):
            client = await connect(nursery, server)
            await client.send(raw)
            assert (await client.answer())[0] == 400, raw
            assert await client.closed()
        assert app.refused == [400]


VALID = [get("/a?x=1"), post("/b", b"{}"), get("/c", "connection: close\r\n")]


class _Errors(logging.Handler):
    """Collects the front's error records (a crash is logged, then the connection closed)."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


async def _outcome(data: list[bytes]) -> list[int]:
    """Feed ``data`` to a fresh connection and keep it open: the statuses answered
    before the server closed it (it must, by a refusal or a deadline)."""
    app = Echo()
    statuses: list[int] = []
    errors = _Errors()
    front_log = logging.getLogger("spectral.front")
    front_log.addHandler(errors)
    try:
        with trio.fail_after(LIMITS.keep_alive_timeout + LIMITS.body_timeout + 60):
            async with serving(app) as (nursery, server):
                client = await connect(nursery, server)
                for piece in data:
                    await client.send(piece)
                while True:
                    try:
                        status, _, _ = await client.answer()
                    except (EOFError, ValueError, IndexError):
                        break
                    statuses.append(status)
                assert await client.closed()
    finally:
        front_log.removeHandler(errors)
    assert errors.records == [], [r.getMessage() for r in errors.records]
    return statuses


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.binary(min_size=1, max_size=300), min_size=1, max_size=4))
def test_random_bytes_get_an_answer_or_a_closed_connection(data: list[bytes]) -> None:
    statuses = trio.run(_outcome, data, clock=trio.testing.MockClock(autojump_threshold=0))
    assert all(status in (100, 200) or 400 <= status < 500 for status in statuses), statuses


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.sampled_from(VALID),
    st.integers(min_value=0, max_value=60),
    st.binary(min_size=1, max_size=8),
    st.integers(min_value=1, max_value=20),
)
def test_mutated_requests_get_an_answer_or_a_closed_connection(
    valid: bytes, at: int, junk: bytes, cut: int
) -> None:
    at = min(at, len(valid))
    mutated = valid[:at] + junk + valid[at:]
    pieces = [mutated[i : i + cut] for i in range(0, len(mutated), cut)]
    statuses = trio.run(_outcome, pieces, clock=trio.testing.MockClock(autojump_threshold=0))
    assert all(status in (100, 200) or 400 <= status < 500 for status in statuses), statuses
