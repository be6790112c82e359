"""The node-to-node transport on loopback (spectral/cluster/transport.py).

In-process servers on 127.0.0.1, port 0; every test runs under ``fail_after``; the
tests wait on events (never on sleeps) to reach the state they check.
"""

from __future__ import annotations

import socket
import struct
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import partial
from typing import Any

import pytest
import trio
import trio.testing
from hypothesis import given, settings
from hypothesis import strategies as st

from spectral.cluster.frames import (
    NEED_DATA,
    FrameDecoder,
    FrameTooLargeError,
    GoAway,
    Ok,
    encode_frame,
    parse_reply,
)
from spectral.cluster.transport import (
    ClientStatistics,
    RemoteError,
    ServerStatistics,
    TransportClient,
    TransportError,
    TransportServer,
    TransportTimeoutError,
    open_transport_client,
    serve_transport,
)
from spectral.errors import ApiError

HOST = "127.0.0.1"
DEADLINE = 10


class Node:
    """A handler whose ops the tests steer: echo, fail, crash, hold (until released)."""

    def __init__(self, expected: int = 0) -> None:
        self.expected = expected
        self.arrived = 0
        self.all_arrived = trio.Event()
        self.held = trio.Event()
        self.release = trio.Event()
        self.finished: list[Any] = []
        self.any_finished = trio.Event()

    async def __call__(self, op: str, body: Any) -> Any:
        if op == "echo":
            return body
        if op == "gather":  # answer only once every expected call is running
            self.arrived += 1
            if self.arrived == self.expected:
                self.all_arrived.set()
            await self.all_arrived.wait()
            return body
        if op == "fail":
            raise ApiError(404, "TASK_NOT_FOUND", f"no task {body}", {"taskId": body})
        if op == "crash":
            raise RuntimeError("boom")
        if op == "big":
            return "x" * body
        if op == "hold":
            self.held.set()
            await self.release.wait()
            self.finished.append(body)
            self.any_finished.set()
            return body
        raise ApiError(400, "UNKNOWN_OP", op)


@asynccontextmanager
async def serving(node: Node, port: int = 0, **options: Any) -> AsyncIterator[TransportServer]:
    async with trio.open_nursery() as nursery:
        start = partial(serve_transport, node, HOST, port, **options)
        server: TransportServer = await nursery.start(start)
        yield server
        nursery.cancel_scope.cancel()


@asynccontextmanager
async def client_of(server: TransportServer, **options: Any) -> AsyncIterator[TransportClient]:
    async with open_transport_client(HOST, server.port, **options) as client:
        yield client


async def test_concurrent_calls_on_one_connection_reach_their_callers() -> None:
    count = 200
    node = Node(expected=count)
    results: dict[int, Any] = {}

    async def one(client: TransportClient, index: int) -> None:
        results[index] = await client.call("gather", {"n": index, "pad": "y" * (index % 7)})

    with trio.fail_after(DEADLINE):
        async with serving(node) as server, client_of(server, pool_size=1) as client:
            async with trio.open_nursery() as nursery:
                for index in range(count):
                    nursery.start_soon(one, client, index)
            assert client.connects == 1
            stream = client._slots[0].stream  # type: ignore[union-attr]
            assert stream.socket.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE)
    assert results == {i: {"n": i, "pad": "y" * (i % 7)} for i in range(count)}


async def test_pool_spreads_calls_over_its_connections() -> None:
    node = Node(expected=8)
    with trio.fail_after(DEADLINE):
        async with serving(node) as server, client_of(server, pool_size=4) as client:
            async with trio.open_nursery() as nursery:
                for index in range(8):
                    nursery.start_soon(client.call, "gather", index)
            assert client.connects == 4
            assert await client.call("echo", [1, "two"]) == [1, "two"]
            assert client.connects == 4


async def test_error_frame_becomes_remote_error() -> None:
    with trio.fail_after(DEADLINE):
        async with serving(Node()) as server, client_of(server, pool_size=1) as client:
            with pytest.raises(RemoteError) as caught:
                await client.call("fail", "t-1")
            error = caught.value
            assert (error.status, error.code, error.message) == (
                404,
                "TASK_NOT_FOUND",
                "no task t-1",
            )
            assert error.details == {"taskId": "t-1"}
            api = error.to_api_error()
            assert (api.status, api.code, api.details) == (404, "TASK_NOT_FOUND", {"taskId": "t-1"})
            assert not isinstance(error, TransportError)  # not a hop failure: never retried


async def test_handler_that_raises_keeps_the_connection() -> None:
    with trio.fail_after(DEADLINE):
        async with serving(Node()) as server, client_of(server, pool_size=1) as client:
            for _ in range(3):
                with pytest.raises(RemoteError) as caught:
                    await client.call("crash")
                assert (caught.value.status, caught.value.code) == (500, "INTERNAL")
                assert "boom" not in caught.value.message  # internals stay on the node
                assert await client.call("echo", 1) == 1
            assert client.connects == 1


async def test_cancelled_call_leaves_the_connection_working() -> None:
    node = Node()
    with trio.fail_after(DEADLINE):
        async with serving(node) as server, client_of(server, pool_size=1) as client:
            with trio.CancelScope() as scope:
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(client.call, "hold", "cancelled")
                    await node.held.wait()
                    scope.cancel()
            assert await client.call("echo", "during") == "during"
            node.release.set()
            # The late answer to the cancelled call is sent, arrives and is dropped.
            await node.any_finished.wait()
            await trio.testing.wait_all_tasks_blocked()
            assert node.finished == ["cancelled"]
            assert await client.call("echo", "after") == "after"
            assert client.connects == 1


async def test_call_timeout() -> None:
    node = Node()
    with trio.fail_after(DEADLINE):
        async with serving(node) as server, client_of(server, pool_size=1) as client:
            with pytest.raises(TransportTimeoutError):
                await client.call("hold", 1, timeout=0.05)
            node.release.set()
            assert await client.call("echo", 2) == 2
            assert client.connects == 1


async def test_server_restarted_under_a_client() -> None:
    node = Node()
    with trio.fail_after(DEADLINE):
        async with open_transport_client(HOST, 1, pool_size=1) as client:
            failure: list[BaseException] = []

            async def in_flight() -> None:
                with pytest.raises(TransportError) as caught:
                    await client.call("hold", "lost")
                failure.append(caught.value)

            async with trio.open_nursery() as outer, trio.open_nursery() as first:
                server = await first.start(partial(serve_transport, node, HOST, 0))
                client.port = port = server.port
                assert await client.call("echo", 1) == 1
                outer.start_soon(in_flight)
                await node.held.wait()
                first.cancel_scope.cancel()  # the node dies with a call in flight
            assert len(failure) == 1 and not failure[0].unprocessed
            with pytest.raises(TransportError) as refused:
                await client.call("echo", 2)  # nobody listens: nothing ran
            assert refused.value.unprocessed
            async with serving(Node(), port=port):
                assert await client.call("echo", 3) == 3
                assert await client.call("echo", 4) == 4
            assert client.connects == 2


async def test_oversized_request_is_refused_before_sending() -> None:
    with trio.fail_after(DEADLINE):
        async with (
            serving(Node()) as server,
            client_of(server, max_frame=1000, pool_size=1) as client,
        ):
            with pytest.raises(FrameTooLargeError):
                await client.call("echo", "x" * 1000)
            assert await client.call("echo", "x" * 900) == "x" * 900
            assert client.connects == 1


async def test_oversized_answer_becomes_an_error() -> None:
    with trio.fail_after(DEADLINE):
        async with serving(Node(), max_frame=1000) as server, client_of(server) as client:
            with pytest.raises(RemoteError) as caught:
                await client.call("big", 2000)
            assert caught.value.code == "FRAME_TOO_LARGE"
            assert await client.call("big", 10) == "x" * 10


async def read_replies(stream: trio.SocketStream) -> list[Any]:
    """Every reply the server sends until it closes the stream."""
    decoder, replies = FrameDecoder(), []
    while data := await stream.receive_some(65536):
        decoder.feed(data)
        while (value := decoder.next_frame()) is not NEED_DATA:
            replies.append(parse_reply(value))
    return replies


async def test_oversized_or_garbage_frames_close_only_their_connection() -> None:
    with trio.fail_after(DEADLINE):
        async with serving(Node(), max_frame=1000) as server, client_of(server) as client:
            for junk in [struct.pack(">I", 1001) + b"x" * 10, b"GET / HTTP/1.1\r\n\r\n",
                         struct.pack(">I", 3) + b"{{{"]:  # fmt: skip
                stream = await trio.open_tcp_stream(HOST, server.port)
                await stream.send_all(encode_frame({"id": 0, "op": "echo", "body": 1}) + junk)
                assert await read_replies(stream) == [Ok(0, 1)]  # then closed by the server
                await stream.aclose()
            assert await client.call("echo", "fine") == "fine"


async def test_malformed_request_with_an_id_gets_an_error_frame() -> None:
    with trio.fail_after(DEADLINE):
        async with serving(Node()) as server:
            stream = await trio.open_tcp_stream(HOST, server.port)
            await stream.send_all(
                encode_frame({"id": 5, "op": 7}) + encode_frame({"id": 6, "op": "echo"})
            )
            await stream.send_eof()
            replies = await read_replies(stream)
            # Answers come in any order (each request is its own task).
            assert sorted((r.id, getattr(r, "code", None)) for r in replies) == [
                (5, "BAD_FRAME"),
                (6, None),
            ]


async def test_graceful_shutdown_finishes_in_flight_calls() -> None:
    node = Node()
    with trio.fail_after(DEADLINE):
        async with open_transport_client(HOST, 1, pool_size=1) as client:
            answers: list[Any] = []
            stopped = trio.Event()

            async def serve(task_status: trio.TaskStatus[TransportServer]) -> None:
                await serve_transport(node, HOST, 0, task_status=task_status)
                stopped.set()

            async with trio.open_nursery() as nursery:
                server = await nursery.start(serve)
                client.port = server.port

                async def in_flight() -> None:
                    answers.append(await client.call("hold", "kept"))

                nursery.start_soon(in_flight)
                await node.held.wait()
                server.shutdown()
                with pytest.raises(TransportError) as refused:
                    await client.call("echo", "late")  # after goaway: never ran
                assert refused.value.unprocessed
                assert not stopped.is_set()
                node.release.set()
                await stopped.wait()  # serve_transport returns once the call is answered
            assert answers == ["kept"]
            assert node.finished == ["kept"]


async def test_goaway_names_the_last_request_taken() -> None:
    node = Node()
    with trio.fail_after(DEADLINE):
        async with serving(node) as server:
            stream = await trio.open_tcp_stream(HOST, server.port)
            await stream.send_all(encode_frame({"id": 3, "op": "hold", "body": "a"}))
            await node.held.wait()
            server.shutdown()
            await trio.testing.wait_all_tasks_blocked()
            node.release.set()
            assert await read_replies(stream) == [GoAway(3), Ok(3, "a")]


async def test_shutdown_with_no_connection_returns() -> None:
    with trio.fail_after(DEADLINE):
        async with trio.open_nursery() as nursery:
            server = await nursery.start(partial(serve_transport, Node(), HOST, 0))
            server.shutdown()
        with pytest.raises(OSError):
            await trio.open_tcp_stream(HOST, server.port)


async def test_client_closed_fails_waiting_calls() -> None:
    node = Node()
    with trio.fail_after(DEADLINE):
        async with serving(node) as server:
            failure: list[TransportError] = []
            async with client_of(server) as client:

                async def waiting() -> None:
                    try:
                        await client.call("hold")
                    except TransportError as exc:
                        failure.append(exc)

                async with trio.open_nursery() as nursery:
                    nursery.start_soon(waiting)
                    await node.held.wait()
                    await client.aclose()
            assert len(failure) == 1
            with pytest.raises(TransportError):
                await client.call("echo")


async def test_large_frames_from_many_callers_stay_framed() -> None:
    """Frames larger than the socket buffers, written by concurrent callers."""
    bodies = [chr(ord("a") + index) * (1024 * 1024 + index) for index in range(12)]
    results: dict[int, Any] = {}

    async def one(client: TransportClient, index: int) -> None:
        results[index] = await client.call("echo", bodies[index])

    with trio.fail_after(DEADLINE):
        async with serving(Node()) as server, client_of(server, pool_size=1) as client:
            async with trio.open_nursery() as nursery:
                for index in range(len(bodies)):
                    nursery.start_soon(one, client, index)
            assert client.connects == 1
    assert results == dict(enumerate(bodies))


async def test_call_cancelled_while_writing_a_large_frame() -> None:
    """The cancelled caller's frame is still written whole, so the stream stays framed."""
    with trio.fail_after(DEADLINE):
        async with serving(Node()) as server, client_of(server, pool_size=1) as client:
            assert await client.call("echo", 0) == 0
            with trio.CancelScope() as scope:
                scope.cancel()
                await client.call("echo", "z" * (8 * 1024 * 1024))
            assert scope.cancelled_caught
            assert await client.call("echo", 1) == 1
            assert client.connects == 1


async def test_answers_json_cannot_carry_are_errors() -> None:
    async def odd(op: str, body: Any) -> Any:
        if op == "set":
            return {1, 2}
        raise ApiError(409, "CONFLICT", "no", details=object())

    with trio.fail_after(DEADLINE):
        async with trio.open_nursery() as nursery:
            server = await nursery.start(partial(serve_transport, odd, HOST, 0))
            async with client_of(server, pool_size=1) as client:
                with pytest.raises(RemoteError) as caught:
                    await client.call("set")
                assert (caught.value.status, caught.value.code) == (500, "INTERNAL")
                with pytest.raises(RemoteError) as caught:
                    await client.call("details")
                assert (caught.value.status, caught.value.code) == (409, "CONFLICT")
                assert caught.value.details is None
                assert client.connects == 1
            nursery.cancel_scope.cancel()


async def test_rolling_restart_calls_reach_the_new_server() -> None:
    """Calls made while the old server drains are never lost: refused before they ran
    (goaway), they go to the new server on the same port."""
    old = Node()
    with trio.fail_after(DEADLINE):
        async with open_transport_client(HOST, 1, pool_size=1) as client:
            answers: list[Any] = []
            async with trio.open_nursery() as nursery:
                server = await nursery.start(partial(serve_transport, old, HOST, 0))
                client.port = server.port

                async def in_flight() -> None:
                    answers.append(await client.call("hold", "old"))

                nursery.start_soon(in_flight)
                await old.held.wait()
                server.shutdown()
                await trio.testing.wait_all_tasks_blocked()  # its listener is closed
                async with serving(Node(), port=server.port):
                    assert await client.call("echo", "new") == "new"
                    old.release.set()
            # The nursery waited for the old server's drain, which answered the held call.
            assert answers == ["old"]
            assert client.connects == 2


async def test_in_flight_requests_are_bounded_per_connection() -> None:
    running, peak, release = 0, 0, trio.Event()

    async def gated(op: str, body: Any) -> Any:
        nonlocal running, peak
        running += 1
        peak = max(peak, running)
        await release.wait()
        running -= 1
        return body

    with trio.fail_after(DEADLINE):
        async with trio.open_nursery() as nursery:
            start = partial(serve_transport, gated, HOST, 0, max_in_flight=2)
            server = await nursery.start(start)
            async with client_of(server, pool_size=1) as client:
                async with trio.open_nursery() as calls:
                    for index in range(5):
                        calls.start_soon(client.call, "gated", index)
                    await trio.testing.wait_all_tasks_blocked()
                    assert running == 2  # the other three wait, unread
                    assert server.statistics() == ServerStatistics(1, 2, 0)
                    assert client.statistics() == ClientStatistics(1, 5, 1)
                    release.set()
                assert peak == 2
                assert server.statistics() == ServerStatistics(1, 0, 5)
                assert client.statistics() == ClientStatistics(1, 0, 1)
            nursery.cancel_scope.cancel()


async def test_timeout_covers_a_write_the_peer_never_reads() -> None:
    """A node that accepts but never reads: the call's timeout bounds the blocked write
    (the connection breaks: half a frame may be on the wire)."""
    accepted: list[trio.SocketStream] = []
    listeners = await trio.open_tcp_listeners(0, host=HOST)
    port = listeners[0].socket.getsockname()[1]

    async def never_read(stream: trio.SocketStream) -> None:
        accepted.append(stream)
        await trio.sleep_forever()

    with trio.fail_after(DEADLINE):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(trio.serve_listeners, never_read, listeners)
            async with open_transport_client(HOST, port, pool_size=1) as client:
                with pytest.raises(TransportError, match="lost while writing"):
                    await client.call("echo", "x" * (15 * 1024 * 1024), timeout=0.2)
                assert client.connects == 1
            nursery.cancel_scope.cancel()
    assert len(accepted) == 1


@settings(max_examples=30, deadline=None)
@given(
    st.lists(
        st.tuples(st.sampled_from(["echo", "hold", "fail", "crash"]), st.booleans()),
        min_size=1,
        max_size=25,
    ),
    st.integers(1, 3),
)
async def test_random_calls_and_cancellations(plan: list[tuple[str, bool]], pool: int) -> None:
    """Any mix of calls, some cancelled while in flight: every other call gets exactly
    its own answer, and the connections keep working."""
    node = Node()
    outcomes: dict[int, Any] = {}
    scopes: dict[int, trio.CancelScope] = {}

    async def one(client: TransportClient, index: int, op: str) -> None:
        with trio.CancelScope() as scope:
            scopes[index] = scope
            try:
                outcomes[index] = ("ok", await client.call(op, index))
            except RemoteError as exc:
                outcomes[index] = ("error", exc.code)
        if scope.cancelled_caught:
            outcomes[index] = ("cancelled", None)

    expected = {"echo": ("ok", None), "hold": ("ok", None), "fail": ("error", "TASK_NOT_FOUND"),
                "crash": ("error", "INTERNAL")}  # fmt: skip
    with trio.fail_after(DEADLINE):
        async with serving(node) as server, client_of(server, pool_size=pool) as client:
            async with trio.open_nursery() as nursery:
                for index, (op, _) in enumerate(plan):
                    nursery.start_soon(one, client, index, op)
                await trio.testing.wait_all_tasks_blocked()
                for index, (_, cancel) in enumerate(plan):
                    if cancel:
                        scopes[index].cancel()
                await trio.testing.wait_all_tasks_blocked()
                node.release.set()
            for index, (op, cancel) in enumerate(plan):
                kind, value = outcomes[index]
                if kind == "cancelled":
                    assert cancel
                    continue
                want_kind, want_value = expected[op]
                assert kind == want_kind
                assert value == (index if kind == "ok" else want_value)
            assert await client.call("echo", "after") == "after"
            assert client.connects <= pool
