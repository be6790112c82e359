"""Watching tasks end to end over WebSocket and SSE (docs/api.md, "Watching")."""

from __future__ import annotations

import json
import socket
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio
from trio_websocket import open_websocket_url

from tests.conftest import ADMIN_HEADERS, ADMIN_KEY, SERVE_ENV, WS_HEADERS, serve_argv
from tests.procs import Server, running
from tests.wsutil import close_code, receive


async def create(client: httpx.AsyncClient, task_id: str, **fields: Any) -> dict[str, Any]:
    """Create a task; its JSON."""
    response = await client.post("/tasks/create", json={"id": task_id, **fields})
    assert response.status_code == 201, response.text
    return response.json()["task"]


async def progress(client: httpx.AsyncClient, task_id: str, value: float) -> dict[str, Any]:
    """updateProgress; the answer."""
    response = await client.post(
        "/tasks/updateProgress", json={"taskId": task_id, "progress": value}
    )
    assert response.status_code == 200, response.text
    return response.json()


async def test_snapshot_then_live_updates_in_order(
    server: Server, client: httpx.AsyncClient
) -> None:
    task = await create(client, "live")
    async with open_websocket_url(f"{server.ws_url}/ws/task/live", extra_headers=WS_HEADERS) as ws:
        snapshot = await receive(ws)
        assert snapshot == {
            "type": "snapshot",
            "taskId": "live",
            "task": task,
            "seq": 1,
            "epoch": task["epoch"],
            "recovered": False,
        }
        answer = await progress(client, "live", 30)
        message = await receive(ws)
        assert message["type"] == "progress"
        assert (message["seq"], message["task"], message["event"]) == (
            2,
            answer["task"],
            answer["event"],
        )
        await client.post(
            "/tasks/addEvent", json={"taskId": "live", "event": {"type": "log", "message": "hi"}}
        )
        assert (await receive(ws))["type"] == "event"
        await client.post("/tasks/complete", json={"taskId": "live"})
        done = await receive(ws)
        assert (done["type"], done["seq"], done["task"]["status"]) == ("complete", 4, "success")


async def test_ping_forms(server: Server, client: httpx.AsyncClient) -> None:
    await create(client, "pinged")
    async with open_websocket_url(
        f"{server.ws_url}/ws/task/pinged", extra_headers=WS_HEADERS
    ) as ws:
        await receive(ws)
        await ws.send_message("ping")
        assert await ws.get_message() == "pong"
        await ws.send_message('{"type": "ping"}')
        pong = await receive(ws)
        assert pong["type"] == "pong" and pong["timestamp"].endswith("Z")
        await ws.send_message("hello?")
        assert (await receive(ws))["type"] == "error"
        await ws.send_message("x" * (65 * 1024))
        assert await close_code(ws) == 1009


async def test_since_replays_without_gap_or_duplicate(
    server: Server, client: httpx.AsyncClient
) -> None:
    task = await create(client, "resume")
    for value in range(1, 11):
        await progress(client, "resume", value)
    url = f"{server.ws_url}/ws/task/resume?since=4&epoch={task['epoch']}"
    async with open_websocket_url(url, extra_headers=WS_HEADERS) as ws:
        replayed = [await receive(ws) for _ in range(7)]
        assert [m["seq"] for m in replayed] == list(range(5, 12))
        assert all(m["replayed"] and "task" not in m for m in replayed)
        assert [m["event"]["progress"] for m in replayed] == list(range(4, 11))
        snapshot = await receive(ws)
        assert (snapshot["type"], snapshot["seq"], snapshot["recovered"]) == ("snapshot", 11, True)
        await progress(client, "resume", 50)
        assert (await receive(ws))["seq"] == 12

    for query, recovered in [
        (f"since=12&epoch={task['epoch']}", True),  # up to date: nothing to replay
        ("since=3&epoch=another-epoch", False),
        (f"since=99&epoch={task['epoch']}", False),
    ]:
        async with open_websocket_url(
            f"{server.ws_url}/ws/task/resume?{query}", extra_headers=WS_HEADERS
        ) as ws:
            first = await receive(ws)
            assert (first["type"], first["recovered"]) == ("snapshot", recovered), query


async def test_close_codes(server: Server, client: httpx.AsyncClient) -> None:
    await create(client, "closing")
    for path, code in [
        ("/ws/task/never-created", 4404),
        ("/ws/task/bad%2Fid", 4404),
        ("/ws/nothing-here", 4404),
        ("/ws/task/closing?since=abc", 1008),
        ("/ws/task/closing?since=9223372036854775808", 1008),
    ]:
        async with open_websocket_url(server.ws_url + path, extra_headers=WS_HEADERS) as ws:
            assert await close_code(ws) == code, path
    async with open_websocket_url(
        f"{server.ws_url}/ws/task/closing", extra_headers=WS_HEADERS
    ) as ws:
        await receive(ws)
        await client.delete("/tasks/closing")
        deleted = await receive(ws)
        assert (deleted["type"], deleted["taskId"], deleted["seq"]) == ("deleted", "closing", 2)
        assert await close_code(ws) == 1000


async def test_200_watchers_get_every_update_in_seq_order(
    server: Server, client: httpx.AsyncClient
) -> None:
    await create(client, "crowd")
    received: dict[int, list[int]] = {}

    async def watcher(index: int, ready: trio.Event, *, task_status: Any) -> None:
        async with open_websocket_url(
            f"{server.ws_url}/ws/task/crowd", extra_headers=WS_HEADERS
        ) as ws:
            await receive(ws)
            task_status.started()
            seqs = received.setdefault(index, [])
            while len(seqs) < 100:
                seqs.append((await receive(ws))["seq"])

    async with trio.open_nursery() as nursery:
        for index in range(200):
            await nursery.start(watcher, index, trio.Event())
        for value in range(100):
            await progress(client, "crowd", value)
    assert len(received) == 200
    assert all(seqs == list(range(2, 102)) for seqs in received.values())


#: A server whose writes to a watcher may block for an hour: a stalled peer is then
#: never dropped while a test runs.
PATIENT_ENV = {
    **SERVE_ENV, "SPECTRAL_WS_SEND_TIMEOUT": "3600", "SPECTRAL_WS_PING_INTERVAL": "3600",
}  # fmt: skip


async def watchers(client: httpx.AsyncClient) -> int:
    """Open watch connections, as /health counts them."""
    return (await client.get("/health")).json()["connections"]


def stalled_watcher(server: Server, task_id: str) -> socket.socket:
    """A raw client that completes the handshake and then never reads again."""
    host, port = server.url.removeprefix("http://").rsplit(":", 1)
    stalled = socket.create_connection((host, int(port)))
    stalled.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    stalled.sendall(
        f"GET /ws/task/{task_id} HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n"
        "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
        f"Sec-WebSocket-Version: 13\r\nX-API-Key: {ADMIN_KEY}\r\n\r\n".encode()
    )
    return stalled


async def test_a_stalled_watcher_does_not_delay_the_others(tmp_path: Path) -> None:
    # The server may wait an hour for a write to the stalled peer: if that write could
    # hold up the other watcher, its messages would not come while this test runs (each
    # receive() gives up after 30 s), however fast or slow the machine is.
    async with (
        running(serve_argv(tmp_path / "data"), env=PATIENT_ENV) as server,
        httpx.AsyncClient(base_url=server.url, headers=ADMIN_HEADERS, timeout=60) as client,
    ):
        await create(client, "stall")
        stalled = stalled_watcher(server, "stall")
        try:
            big = {"blob": "y" * 30_000}
            async with open_websocket_url(
                f"{server.ws_url}/ws/task/stall", extra_headers=WS_HEADERS
            ) as ws:
                await receive(ws)
                with trio.fail_after(60):  # both attached before the first update
                    while await watchers(client) < 2:
                        await trio.sleep(0.05)
                for value in range(60):
                    response = await client.post(
                        "/tasks/updateProgress",
                        json={"taskId": "stall", "progress": value, "metadata": big},
                    )
                    assert response.status_code == 200
                    assert (await receive(ws))["seq"] == value + 2
                # 60 messages of ~30 KB overflow the stalled peer's buffers long before the
                # end, yet it is still attached: nobody was dropped to let the other through.
                assert await watchers(client) == 2
        finally:
            stalled.close()


async def test_a_watcher_that_falls_1000_behind_is_closed_4008(
    server: Server, client: httpx.AsyncClient
) -> None:
    await create(client, "flood")
    stalled = stalled_watcher(server, "flood")
    try:
        # ~700 KB a batch (under the 1 MiB body limit); 6,000 messages of ~1 KB queued.
        big = {"blob": "z" * 600}
        batch = [{"taskId": "flood", "progress": 1, "metadata": big}] * 1000
        for _ in range(6):
            response = await client.post("/tasks/batchUpdateProgress", json={"updates": batch})
            assert response.status_code == 200
        with trio.fail_after(60):
            while True:
                metrics = (await client.get("/metrics")).text
                if "spectral_watchers_dropped_total 1.0" in metrics:
                    break
                await trio.sleep(0.1)
        assert (await client.get("/health")).json()["connections"] == 0
    finally:
        stalled.close()


async def test_sse_stream_with_last_event_id(server: Server, client: httpx.AsyncClient) -> None:
    await create(client, "sse")
    for value in (10, 20, 30):
        await progress(client, "sse", value)
    records: list[tuple[str, dict[str, Any]]] = []

    async def read_stream() -> None:
        headers = {"Last-Event-ID": "2"}
        async with client.stream("GET", "/tasks/sse/events", headers=headers) as response:
            assert response.status_code == 200
            assert response.headers["content-type"].startswith("text/event-stream")
            event_id = ""
            async for line in response.aiter_lines():
                if line.startswith("id: "):
                    event_id = line[4:]
                elif line.startswith("data: "):
                    records.append((event_id, json.loads(line[6:])))

    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(read_stream)
            while len(records) < 3:
                await trio.sleep(0.01)
            await client.post("/tasks/complete", json={"taskId": "sse"})
            await client.delete("/tasks/sse")
    assert [(i, m["type"], m.get("replayed", False)) for i, m in records] == [
        ("3", "progress", True),
        ("4", "progress", True),
        ("4", "snapshot", False),
        ("5", "complete", False),
        ("6", "deleted", False),
    ]
    assert records[2][1]["recovered"] is True


async def test_watchers_survive_hibernation_and_resume_across_a_restart(tmp_path) -> None:
    data = tmp_path / "data"
    async with (
        running(serve_argv(data), env=SERVE_ENV) as server,
        httpx.AsyncClient(base_url=server.url, headers=ADMIN_HEADERS, timeout=60) as http,
    ):
        task = await create(http, "persist")
        for value in range(1, 6):
            await progress(http, "persist", value)
        server.terminate()
        with trio.fail_after(60):
            assert await server.wait() == 0
    async with (
        running(serve_argv(data), env=SERVE_ENV) as server,
        httpx.AsyncClient(base_url=server.url, headers=ADMIN_HEADERS, timeout=60) as http,
    ):
        url = f"{server.ws_url}/ws/task/persist?since=3&epoch={task['epoch']}"
        async with open_websocket_url(url, extra_headers=WS_HEADERS) as ws:
            assert [(await receive(ws))["seq"] for _ in range(3)] == [4, 5, 6]
            snapshot = await receive(ws)
            assert (snapshot["seq"], snapshot["recovered"]) == (6, True)
            await progress(http, "persist", 50)
            assert (await receive(ws))["seq"] == 7


async def test_shutdown_closes_watchers_with_1001(tmp_path) -> None:
    async with running(serve_argv(tmp_path / "data"), env=SERVE_ENV) as server:
        async with httpx.AsyncClient(
            base_url=server.url, headers=ADMIN_HEADERS, timeout=60
        ) as http:
            await create(http, "bye")
        async with open_websocket_url(
            f"{server.ws_url}/ws/task/bye", extra_headers=WS_HEADERS
        ) as ws:
            await receive(ws)
            server.terminate()
            assert await close_code(ws) == 1001
        with trio.fail_after(60):
            assert await server.wait() == 0


@pytest.mark.parametrize("path", ["/ws/task/x", "/ws/task/x?since=1"])
async def test_plain_get_on_a_watch_route_is_not_an_upgrade(
    client: httpx.AsyncClient, path: str
) -> None:
    response = await client.get(path)
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "NOT_FOUND"
