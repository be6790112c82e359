"""Fan-out end to end: many watchers of one task on a real server get every update in
order with no gap or duplicate, and one that stops reading is closed with 4008 while the
others still get everything (docs/api.md, "Watching"; docs/architecture.md, fan-out).

The watchers are raw WebSocket readers on trio sockets (lighter than a client library,
so hundreds of them and megabytes of messages stay quick).
"""

from __future__ import annotations

import json
import socket
from pathlib import Path
from typing import Any

import httpx
import trio

from tests.conftest import ADMIN_HEADERS, ADMIN_KEY, SERVE_ENV, serve_argv
from tests.procs import Server, running

#: Writes to a watcher may block for an hour and no pings: only the queue's overflow
#: can drop a watcher while a test runs.
PATIENT_ENV = {
    **SERVE_ENV, "SPECTRAL_WS_SEND_TIMEOUT": "3600", "SPECTRAL_WS_PING_INTERVAL": "3600",
}  # fmt: skip


class RawWatcher:
    """One WebSocket watch connection, read by hand: text payloads and the close code."""

    def __init__(self, stream: trio.SocketStream, rest: bytes) -> None:
        self.stream = stream
        self.buffer = bytearray(rest)
        self.close_code: int | None = None

    @classmethod
    async def open(cls, server: Server, task_id: str, receive_buffer: int = 0) -> RawWatcher:
        """Connect (with a small receive buffer if given) and complete the handshake."""
        host, port = server.url.removeprefix("http://").rsplit(":", 1)
        sock = trio.socket.socket()
        if receive_buffer:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, receive_buffer)
        await sock.connect((host, int(port)))
        stream = trio.SocketStream(sock)
        await stream.send_all(
            f"GET /ws/task/{task_id} HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n"
            "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
            f"Sec-WebSocket-Version: 13\r\nX-API-Key: {ADMIN_KEY}\r\n\r\n".encode()
        )
        head = b""
        with trio.fail_after(30):
            while b"\r\n\r\n" not in head:
                data = await stream.receive_some(65536)
                assert data, "closed during the handshake"
                head += data
        assert head.startswith(b"HTTP/1.1 101"), head[:100]
        return cls(stream, head.partition(b"\r\n\r\n")[2])

    def parse(self) -> list[bytes]:
        """Complete text payloads at the front of the buffer; notes a close frame's code."""
        out = []
        buffer = self.buffer
        while len(buffer) >= 2 and self.close_code is None:
            opcode, size, offset = buffer[0] & 0x0F, buffer[1] & 0x7F, 2
            if size == 126:
                size, offset = int.from_bytes(buffer[2:4], "big"), 4
            elif size == 127:
                size, offset = int.from_bytes(buffer[2:10], "big"), 10
            if len(buffer) < offset + size:
                break
            payload = bytes(buffer[offset : offset + size])
            del buffer[: offset + size]
            if opcode == 0x1:
                out.append(payload)
            elif opcode == 0x8:
                self.close_code = int.from_bytes(payload[:2], "big")
        return out

    async def seqs(self, count: int | None = None) -> list[int]:
        """The ``seq`` of each message until ``count`` of them (or the close frame)."""
        got: list[int] = []
        with trio.fail_after(60):
            while self.close_code is None and (count is None or len(got) < count):
                got += [json.loads(payload)["seq"] for payload in self.parse()]
                if self.close_code is not None or (count is not None and len(got) >= count):
                    break
                data = await self.stream.receive_some(65536)
                assert data, f"closed without a close frame after {len(got)} messages"
                self.buffer += data
        return got

    async def aclose(self) -> None:
        """Close the socket."""
        await self.stream.aclose()


async def watch(server: Server, task_id: str, receive_buffer: int = 0) -> RawWatcher:
    """A watcher past its snapshot (so attached: live messages follow)."""
    watcher = await RawWatcher.open(server, task_id, receive_buffer)
    assert await watcher.seqs(1) == [1]  # the snapshot of a new task
    return watcher


async def create(client: httpx.AsyncClient, task_id: str) -> None:
    """A new task."""
    response = await client.post("/tasks/create", json={"id": task_id})
    assert response.status_code == 201, response.text


async def test_300_watchers_get_every_update_in_order_without_gap_or_duplicate(
    server: Server, client: httpx.AsyncClient
) -> None:
    await create(client, "many")
    watchers = [await watch(server, "many") for _ in range(300)]
    got: dict[int, list[int]] = {}

    async def read(index: int) -> None:
        got[index] = await watchers[index].seqs(200)

    try:
        async with trio.open_nursery() as nursery:
            for index in range(len(watchers)):
                nursery.start_soon(read, index)
            for value in range(100):  # one at a time, then in batches of 10
                response = await client.post(
                    "/tasks/updateProgress", json={"taskId": "many", "progress": value / 2}
                )
                assert response.status_code == 200
            for start in range(100, 200, 10):
                batch = [
                    {"taskId": "many", "progress": value / 2} for value in range(start, start + 10)
                ]
                response = await client.post("/tasks/batchUpdateProgress", json={"updates": batch})
                assert response.status_code == 200
                assert all(result["ok"] for result in response.json()["results"])
    finally:
        for watcher in watchers:
            await watcher.aclose()
    assert len(got) == 300
    assert all(seqs == list(range(2, 202)) for seqs in got.values())


async def test_a_watcher_that_stops_reading_is_closed_4008_the_others_get_everything(
    tmp_path: Path,
) -> None:
    async with (
        running(serve_argv(tmp_path / "data"), env=PATIENT_ENV) as server,
        httpx.AsyncClient(base_url=server.url, headers=ADMIN_HEADERS, timeout=60) as client,
    ):
        await create(client, "stop")
        stalled = await watch(server, "stop", receive_buffer=4096)  # then never reads
        readers = [await watch(server, "stop") for _ in range(10)]
        # ~2 KB messages, 4,000 of them: more than the stalled socket's kernel buffers
        # (at most ~4 MB) plus its 1,000-message queue.
        batch: list[dict[str, Any]] = [
            {"taskId": "stop", "progress": 1, "metadata": {"blob": "s" * 1800}}
        ] * 400
        total = 10 * len(batch)
        got: list[list[int]] = [[] for _ in readers]

        async def read(index: int) -> None:
            got[index] += await readers[index].seqs(len(batch))

        try:
            for _ in range(10):  # each batch read by every reader before the next
                async with trio.open_nursery() as nursery:
                    for index in range(len(readers)):
                        nursery.start_soon(read, index)
                    response = await client.post(
                        "/tasks/batchUpdateProgress", json={"updates": batch}
                    )
                    assert response.status_code == 200
                    assert all(result["ok"] for result in response.json()["results"])
            assert got == [list(range(2, 2 + total))] * len(readers)
            # Reading again, the stalled watcher gets what it was sent, whole and in order
            # without a gap, then the close frame: 4008.
            prefix = await stalled.seqs()
            assert stalled.close_code == 4008
            assert 0 < len(prefix) < total and prefix == list(range(2, 2 + len(prefix)))
            metrics = (await client.get("/metrics")).text
            assert "spectral_watchers_dropped_total 1.0" in metrics
            await stalled.aclose()
            with trio.fail_after(30):  # the server lets go of it once it sees the socket close
                while (await client.get("/health")).json()["connections"] != len(readers):
                    await trio.sleep(0.05)
        finally:
            for watcher in [stalled, *readers]:
                await watcher.aclose()
