"""Direct fan-out: a broadcast writes each watcher's frame with one non-blocking write,
and falls back to the watcher's queue and writer when the kernel's buffer is full or the
peer is busy; order per watcher, 4008 on overflow and whole frames are kept.

Real sockets (a loopback TCP pair with small buffers), a real :class:`Peer`, the real
``frame_senders`` of the watch endpoint; the reader side reads only when told to.
"""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import trio
import trio.testing
from wsproto import ConnectionType, WSConnection
from wsproto.events import AcceptConnection, Request

from actors import CLOSE_NORMAL, CLOSE_TOO_SLOW, CloseReason, SocketSet, Watcher
from spectral import wire
from spectral.api.watch import TAIL, frame_senders
from spectral.front.websocket import Peer, text_frame

DELETED = CloseReason(CLOSE_NORMAL, "deleted")
TOO_SLOW = CloseReason(CLOSE_TOO_SLOW, "too slow")
#: Bigger than what the small kernel buffers below can hold: its first write is partial.
BIG = 300_000


def established() -> WSConnection:
    """A server-side wsproto connection past its handshake (for pings and close frames)."""
    client = WSConnection(ConnectionType.CLIENT)
    server = WSConnection(ConnectionType.SERVER)
    server.receive_data(client.send(Request(host="x", target="/ws")))
    assert any(isinstance(event, Request) for event in server.events())
    server.send(AcceptConnection())
    return server


@asynccontextmanager
async def tcp_pair(buffer: int = 4096) -> AsyncIterator[tuple[Peer, trio.SocketStream]]:
    """A :class:`Peer` on one end of a loopback TCP connection and the raw other end,
    both with small kernel buffers."""
    listener = socket.create_server(("127.0.0.1", 0))
    client = socket.socket()
    client.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, buffer)
    client.connect(listener.getsockname())
    accepted, _ = listener.accept()
    listener.close()
    accepted.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, buffer)
    server_stream = trio.SocketStream(trio.socket.from_stdlib_socket(accepted))
    reader = trio.SocketStream(trio.socket.from_stdlib_socket(client))
    peer = Peer(server_stream, established(), send_timeout=3600)
    try:
        yield peer, reader
    finally:
        await peer.abort()
        await reader.aclose()


def message(seq: int, size: int = 100) -> wire.Outgoing:
    """A watcher message whose text is ``size`` bytes or a little more."""
    return wire.Outgoing(seq, wire.dumps({"seq": seq, "pad": "x" * size}))


class FrameReader:
    """Reads the server's (unmasked) frames from the raw end: (opcode, payload)."""

    def __init__(self, stream: trio.SocketStream) -> None:
        self.stream = stream
        self.buffer = bytearray()

    def parse(self) -> list[tuple[int, bytes]]:
        """The complete frames at the front of the buffer."""
        out = []
        buffer = self.buffer
        while len(buffer) >= 2:
            assert buffer[0] & 0x80, "every frame is final"
            size, offset = buffer[1] & 0x7F, 2
            if size == 126:
                size, offset = int.from_bytes(buffer[2:4], "big"), 4
            elif size == 127:
                size, offset = int.from_bytes(buffer[2:10], "big"), 10
            if len(buffer) < offset + size:
                break
            out.append((buffer[0] & 0x0F, bytes(buffer[offset : offset + size])))
            del buffer[: offset + size]
        return out

    async def until(self, done: Callable[[list[tuple[int, bytes]]], bool]) -> list[Any]:
        """Read until ``done(frames so far)``; the frames."""
        frames: list[tuple[int, bytes]] = []
        with trio.fail_after(30):
            while not done(frames):
                data = await self.stream.receive_some(65536)
                assert data, "the server closed the connection"
                self.buffer += data
                frames += self.parse()
        return frames


def texts(frames: list[tuple[int, bytes]]) -> list[bytes]:
    """The text frames' payloads."""
    return [payload for opcode, payload in frames if opcode == 0x1]


class Counting:
    """Wraps ``peer.write_nowait`` to count what the direct path did."""

    def __init__(self, peer: Peer) -> None:
        self.results: list[tuple[int | None, int]] = []
        original = peer.write_nowait

        def write_nowait(data: bytes) -> int | None:
            written = original(data)
            self.results.append((written, len(data)))
            return written

        peer.write_nowait = write_nowait  # type: ignore[method-assign]

    @property
    def whole(self) -> int:
        """Direct writes that wrote the whole frame."""
        return sum(1 for written, size in self.results if written == size)

    @property
    def partial(self) -> int:
        """Direct writes that wrote part of the frame."""
        return sum(1 for written, size in self.results if written and written < size)


async def serve(watcher: Watcher, peer: Peer, results: list[CloseReason]) -> None:
    """The watch endpoint's writing for ``watcher`` on ``peer`` (writer tasks on demand);
    records the close reason once the watcher ends."""
    ended = trio.Event()
    async with trio.open_nursery() as nursery:
        send, try_send = frame_senders(peer, watcher, lambda: None)
        watcher.start(nursery, send, on_end=ended.set, send_timeout=3600, try_send=try_send)
        await ended.wait()
    assert watcher.close_reason is not None
    results.append(watcher.close_reason)


def task_count() -> int:
    """Every task of this run."""
    count, nurseries = 0, list(trio.lowlevel.current_root_task().child_nurseries)
    while nurseries:
        for task in nurseries.pop().child_tasks:
            count += 1
            nurseries += task.child_nurseries
    return count


async def test_a_writer_task_runs_only_while_something_waits_to_be_sent() -> None:
    watcher = Watcher(queue_size=10)
    results: list[CloseReason] = []
    async with tcp_pair() as (peer, reader), trio.open_nursery() as nursery:
        nursery.start_soon(serve, watcher, peer, results)
        await trio.testing.wait_all_tasks_blocked()
        idle = task_count()  # the opening's writer has ended: no task of the watcher's own
        watcher.send_nowait(message(1, BIG))  # written in part: a writer starts for the rest
        await trio.testing.wait_all_tasks_blocked()
        assert task_count() == idle + 1
        frames = FrameReader(reader)
        assert texts(await frames.until(lambda f: len(f) == 1)) == [message(1, BIG).text.encode()]
        await trio.testing.wait_all_tasks_blocked()
        assert task_count() == idle  # done: the writer ended
        watcher.finish(DELETED)
    assert results == [DELETED]


async def test_an_idle_watcher_gets_its_frame_written_by_the_broadcast_itself() -> None:
    sockets = SocketSet()
    watcher = Watcher(queue_size=10)
    sockets.attach(watcher)
    results: list[CloseReason] = []
    async with tcp_pair(65536) as (peer, reader), trio.open_nursery() as nursery:
        counting = Counting(peer)
        early = message(1)
        sockets.broadcast(early)  # no writer yet (e.g. during the replay): queued
        assert watcher.queued == 1 and counting.results == []
        nursery.start_soon(serve, watcher, peer, results)
        await trio.testing.wait_all_tasks_blocked()  # the writer sent it and is idle
        for seq in range(2, 6):
            assert sockets.broadcast(message(seq)) == 1
            assert watcher.queued == 0  # written at once, nothing left for the writer
        assert counting.whole == 4
        frames = FrameReader(reader)
        got = texts(await frames.until(lambda f: len(f) == 5))
        assert got == [message(seq).text.encode() for seq in range(1, 6)]
        watcher.finish(DELETED)
    assert results == [DELETED]


async def test_order_is_kept_when_the_kernel_buffer_fills_and_partial_writes_complete() -> None:
    sockets = SocketSet()
    watcher = Watcher(queue_size=100)
    sockets.attach(watcher)
    results: list[CloseReason] = []
    async with tcp_pair() as (peer, reader), trio.open_nursery() as nursery:
        counting = Counting(peer)
        nursery.start_soon(serve, watcher, peer, results)
        await trio.testing.wait_all_tasks_blocked()
        sent = [message(1), message(2, BIG)] + [message(seq, 3000) for seq in range(3, 21)]
        for outgoing in sent:
            assert sockets.broadcast(outgoing) == 1
        # The small one went whole, the big one in part; the rest waits behind it, in order.
        assert (counting.whole, counting.partial, len(counting.results)) == (1, 1, 2)
        assert watcher.queued == 19  # the tail marker first; a writer task is to start
        # A ping (Keepalive's) while the reader still reads nothing: it waits its turn.
        nursery.start_soon(peer.ping)
        await trio.testing.wait_all_tasks_blocked()
        frames = FrameReader(reader)
        got = await frames.until(lambda f: len(texts(f)) == 20 and len(f) == 21)
        assert texts(got) == [outgoing.text.encode() for outgoing in sent]
        assert [opcode for opcode, _ in got].count(0x9) == 1  # whole, between two frames
        # Drained: the next broadcasts are direct again.
        await trio.testing.wait_all_tasks_blocked()
        assert watcher.queued == 0
        more = [message(seq) for seq in range(21, 25)]
        for outgoing in more:
            sockets.broadcast(outgoing)
            assert watcher.queued == 0
        assert texts(await frames.until(lambda f: len(f) == 4)) == [m.text.encode() for m in more]
        watcher.finish(DELETED)
    assert results == [DELETED]


async def test_a_busy_peer_makes_the_broadcast_queue() -> None:
    watcher = Watcher(queue_size=10)
    results: list[CloseReason] = []
    async with tcp_pair() as (peer, reader), trio.open_nursery() as nursery:
        nursery.start_soon(serve, watcher, peer, results)
        await trio.testing.wait_all_tasks_blocked()
        # An awaited write bigger than the buffers (e.g. a replayed message) holds the
        # peer's lock until the reader reads.
        nursery.start_soon(peer.send_bytes, text_frame(b"r" * BIG))
        await trio.testing.wait_all_tasks_blocked()
        assert peer.writing
        counting = Counting(peer)
        assert watcher.send_nowait(message(1))
        # Not written into the other write: handed to the writer, which waits its turn.
        assert counting.results == [(None, len(message(1).frame))]
        frames = FrameReader(reader)
        got = texts(await frames.until(lambda f: len(f) == 2))
        assert got == [b"r" * BIG, message(1).text.encode()]
        watcher.finish(DELETED)
    assert results == [DELETED]


async def test_a_watcher_whose_fallback_queue_overflows_is_closed_4008_the_others_go_on() -> None:
    sockets = SocketSet()
    stalled, healthy = Watcher(queue_size=5), Watcher(queue_size=5)
    sockets.attach(stalled)
    sockets.attach(healthy)
    results: list[CloseReason] = []
    async with (
        tcp_pair() as (stalled_peer, stalled_reader),
        tcp_pair() as (peer, reader),
        trio.open_nursery() as nursery,
    ):
        nursery.start_soon(serve, stalled, stalled_peer, results)
        nursery.start_soon(serve, healthy, peer, results)
        await trio.testing.wait_all_tasks_blocked()
        frames = FrameReader(reader)
        sent = [message(seq, BIG if seq == 1 else 2000) for seq in range(1, 11)]
        got: list[bytes] = []
        for outgoing in sent:
            sockets.broadcast(outgoing)
            # The healthy reader keeps up; the stalled one never reads.
            got += texts(await frames.until(lambda f: len(f) == 1))
            await trio.testing.wait_all_tasks_blocked()
        # The stalled watcher: its first frame written in part (the writer waits to
        # complete it), messages 2-6 filled its queue, the 7th found it full.
        assert stalled.close_reason == TOO_SLOW
        assert list(sockets) == [healthy]
        assert sockets.dropped == 1
        assert got == [outgoing.text.encode() for outgoing in sent]
        # The stalled peer's close frame comes after a whole frame, once it reads again.
        nursery.start_soon(stalled_peer.close, CLOSE_TOO_SLOW, "too slow")
        stalled_frames = FrameReader(stalled_reader)
        ending = await stalled_frames.until(lambda f: bool(f) and f[-1][0] == 0x8)
        assert texts(ending) == [sent[0].text.encode()]
        assert int.from_bytes(ending[-1][1][:2], "big") == CLOSE_TOO_SLOW
        healthy.finish(DELETED)
    assert sorted(r.code for r in results) == [CLOSE_NORMAL, CLOSE_TOO_SLOW]


async def test_tail_marker_is_what_a_partial_direct_write_queues() -> None:
    async with tcp_pair() as (peer, _reader):
        _send, try_send = frame_senders(peer, Watcher(), lambda: None)
        small = message(1)
        assert try_send(small) is None
        assert try_send(message(2, BIG)) is TAIL
        assert try_send(small) is small  # a tail is pending: nothing more goes direct
