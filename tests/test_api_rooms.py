"""Rooms end to end (docs/api.md, Rooms): broadcast, subscribe with resume, task events,
ownership. A room's stream carries room messages only: a test knows a subscriber is
attached when the room's health counts it.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
import trio
from trio_websocket import open_websocket_url

from tests.conftest import ADMIN_HEADERS, SERVE_ENV, serve_argv
from tests.procs import Server, running
from tests.wsutil import close_code, receive


def ws_headers(key: str) -> list[tuple[bytes, bytes]]:
    """The API key as WebSocket handshake headers."""
    return [(b"X-API-Key", key.encode())]


async def attached(
    http: httpx.AsyncClient, room_id: str, count: int, headers: dict[str, str] = ADMIN_HEADERS
) -> None:
    """Wait until the room counts ``count`` subscribers."""
    with trio.fail_after(10):
        while True:
            health = await http.get(f"/rooms/{room_id}/health", headers=headers)
            if health.status_code == 200 and health.json()["connections"] >= count:
                return
            await trio.sleep(0.01)


@pytest.fixture
async def keyed(tmp_path: Path) -> AsyncIterator[tuple[Server, httpx.AsyncClient, dict[str, str]]]:
    """A server with a small room history and keys for alice, her reader and bob."""
    env = {**SERVE_ENV, "SPECTRAL_ROOM_HISTORY": "5"}
    async with (
        running(serve_argv(tmp_path / "data"), env=env) as server,
        httpx.AsyncClient(base_url=server.url, timeout=20) as http,
    ):
        keys = {"admin": ADMIN_HEADERS["X-API-Key"]}
        for name, owner, role in [
            ("alice", "alice", "service"),
            ("reader", "alice", "reader"),
            ("bob", "bob", "service"),
        ]:
            made = await http.post(
                "/admin/keys", json={"owner": owner, "role": role}, headers=ADMIN_HEADERS
            )
            keys[name] = made.json()["key"]
        yield server, http, keys


async def test_broadcast_reaches_subscribers_with_room_seq(server: Server, client) -> None:
    url = f"{server.ws_url}/rooms/lobby/subscribe"
    async with (
        open_websocket_url(url, extra_headers=ws_headers(ADMIN_HEADERS["X-API-Key"])) as one,
        open_websocket_url(url, extra_headers=ws_headers(ADMIN_HEADERS["X-API-Key"])) as two,
    ):
        await attached(client, "lobby", 2)
        answer = await client.post("/rooms/lobby/broadcast", json={"hello": "world", "n": 1})
        assert answer.json() == {"delivered": 2, "roomSeq": 1}
        for ws in (one, two):
            message = await receive(ws)
            assert (message["hello"], message["n"], message["roomSeq"]) == ("world", 1, 1)
            assert message["timestamp"].endswith("Z")
        health = await client.get("/rooms/lobby/health")
        assert health.json() == {"roomId": "lobby", "connections": 2, "lastSeq": 1}


async def test_since_replays_what_was_missed(keyed) -> None:
    server, http, keys = keyed
    headers = {"X-API-Key": keys["alice"]}
    for n in range(1, 5):
        await http.post("/rooms/request_7/broadcast", json={"n": n}, headers=headers)
    url = f"{server.ws_url}/rooms/request_7/subscribe?since=1"
    async with open_websocket_url(url, extra_headers=ws_headers(keys["alice"])) as ws:
        replayed = [await receive(ws) for _ in range(3)]
        assert [(m["n"], m["roomSeq"], m["replayed"]) for m in replayed] == [
            (2, 2, True), (3, 3, True), (4, 4, True),
        ]  # fmt: skip
        await http.post("/rooms/request_7/broadcast", json={"n": 5}, headers=headers)
        live = await receive(ws)
        assert (live["n"], live["roomSeq"]) == (5, 5) and "replayed" not in live
    for n in range(6, 12):  # the room keeps 5 messages: 3 to 6 are gone
        await http.post("/rooms/request_7/broadcast", json={"n": n}, headers=headers)
    url = f"{server.ws_url}/rooms/request_7/subscribe?since=2"
    async with open_websocket_url(url, extra_headers=ws_headers(keys["alice"])) as ws:
        # Every kept message, oldest first: the first roomSeq (7, not 3) shows the gap.
        replayed = [await receive(ws) for _ in range(5)]
        assert [(m["n"], m["roomSeq"], m["replayed"]) for m in replayed] == [
            (n, n, True) for n in range(7, 12)
        ]
        await attached(http, "request_7", 1, headers)
        await http.post("/rooms/request_7/broadcast", json={"n": 12}, headers=headers)
        live = await receive(ws)
        assert (live["n"], live["roomSeq"]) == (12, 12) and "replayed" not in live
    url = f"{server.ws_url}/rooms/request_7/subscribe?since=12"  # up to date: live only
    async with open_websocket_url(url, extra_headers=ws_headers(keys["alice"])) as ws:
        await attached(http, "request_7", 1, headers)
        await http.post("/rooms/request_7/broadcast", json={"n": 13}, headers=headers)
        assert (await receive(ws))["roomSeq"] == 13


async def test_a_broadcasters_own_type_field_is_just_a_message(server: Server, client) -> None:
    url = f"{server.ws_url}/rooms/echo/subscribe"
    async with open_websocket_url(url, extra_headers=ws_headers(ADMIN_HEADERS["X-API-Key"])) as ws:
        await attached(client, "echo", 1)
        await client.post("/rooms/echo/broadcast", json={"type": "subscribed", "roomSeq": 99})
        await client.post("/rooms/echo/broadcast", json={"type": "notification", "n": 2})
        first, second = await receive(ws), await receive(ws)
    # Exactly the two messages sent, in order; the server's roomSeq wins over the body's.
    assert (first["type"], first["roomSeq"]) == ("subscribed", 1)
    assert (second["type"], second["n"], second["roomSeq"]) == ("notification", 2, 2)


async def test_task_events_reach_the_owners_room_only(keyed) -> None:
    server, http, keys = keyed
    url = f"{server.ws_url}/rooms/user_alice/subscribe"
    async with open_websocket_url(url, extra_headers=ws_headers(keys["reader"])) as ws:
        await attached(http, "user_alice", 1)
        alice, bob = {"X-API-Key": keys["alice"]}, {"X-API-Key": keys["bob"]}
        await http.post("/tasks/create", json={"id": "bob-task"}, headers=bob)
        await http.post("/tasks/create", json={"id": "a-task"}, headers=alice)
        await http.post(
            "/tasks/updateProgress", json={"taskId": "a-task", "progress": 50}, headers=alice
        )
        await http.post("/tasks/complete", json={"taskId": "a-task"}, headers=alice)
        await http.delete("/tasks/a-task", headers=alice)
        seen = [await receive(ws) for _ in range(4)]
        assert [(m["type"], m["taskId"], m["seq"]) for m in seen] == [
            ("created", "a-task", 1),
            ("progress", "a-task", 2),
            ("completed", "a-task", 3),
            ("deleted", "a-task", 4),
        ]
        assert seen[1]["task"]["progress"] == 50 and seen[1]["event"]["seq"] == 2
        assert [m["roomSeq"] for m in seen] == [1, 2, 3, 4]
    async with open_websocket_url(url, extra_headers=ws_headers(keys["bob"])) as ws:
        assert await close_code(ws) == 4404


async def test_rooms_belong_to_their_first_user(keyed) -> None:
    server, http, keys = keyed
    alice, bob = {"X-API-Key": keys["alice"]}, {"X-API-Key": keys["bob"]}
    assert (
        await http.post("/rooms/request_1/broadcast", json={}, headers=alice)
    ).status_code == 200
    refused = await http.post("/rooms/request_1/broadcast", json={}, headers=bob)
    assert refused.status_code == 404 and refused.json()["error"]["code"] == "ROOM_NOT_FOUND"
    assert (await http.get("/rooms/request_1/health", headers=bob)).status_code == 404
    assert (await http.get("/rooms/request_1/health", headers=alice)).status_code == 200
    assert (await http.get("/rooms/request_1/health", headers=ADMIN_HEADERS)).status_code == 200
    url = f"{server.ws_url}/rooms/request_1/subscribe"
    async with open_websocket_url(url, extra_headers=ws_headers(keys["bob"])) as ws:
        assert await close_code(ws) == 4404
    async with open_websocket_url(url, extra_headers=ws_headers(keys["reader"])) as ws:
        await attached(http, "request_1", 1)  # alice's reader may watch
        await http.post("/rooms/request_1/broadcast", json={"n": 2}, headers=alice)
        assert (await receive(ws))["n"] == 2
    reader = {"X-API-Key": keys["reader"]}
    assert (
        await http.post("/rooms/request_1/broadcast", json={}, headers=reader)
    ).status_code == 403
    # Bob's own room, and a room bob uses first, are bob's.
    assert (await http.post("/rooms/user_bob/broadcast", json={}, headers=bob)).status_code == 200
    assert (await http.post("/rooms/user_bob/broadcast", json={}, headers=alice)).status_code == 404
    assert (await http.get("/rooms/never-used/health", headers=alice)).status_code == 404
    async with open_websocket_url(
        f"{server.ws_url}/rooms/user_alice/subscribe", extra_headers=[]
    ) as ws:
        assert await close_code(ws) == 4401


async def test_an_owners_room_exists_before_its_first_use(keyed) -> None:
    server, http, keys = keyed
    for name in ("alice", "reader"):
        health = await http.get("/rooms/user_alice/health", headers={"X-API-Key": keys[name]})
        assert health.status_code == 200, health.text
        assert health.json() == {"roomId": "user_alice", "connections": 0, "lastSeq": 0}
    admin = await http.get("/rooms/user_carol/health", headers=ADMIN_HEADERS)
    assert admin.json() == {"roomId": "user_carol", "connections": 0, "lastSeq": 0}
    other = await http.get("/rooms/user_alice/health", headers={"X-API-Key": keys["bob"]})
    assert other.status_code == 404 and other.json()["error"]["code"] == "ROOM_NOT_FOUND"
    unused = await http.get("/rooms/request_5/health", headers={"X-API-Key": keys["alice"]})
    assert unused.status_code == 404
    # Asking wrote nothing: the room's first message is still roomSeq 1.
    await http.post("/tasks/create", json={"id": "t1"}, headers={"X-API-Key": keys["alice"]})
    url = f"{server.ws_url}/rooms/user_alice/subscribe?since=0"
    async with open_websocket_url(url, extra_headers=ws_headers(keys["alice"])) as ws:
        first = await receive(ws)
    assert (first["type"], first["taskId"], first["roomSeq"]) == ("created", "t1", 1)


async def test_room_watch_tokens(keyed) -> None:
    server, http, keys = keyed
    alice, bob = {"X-API-Key": keys["alice"]}, {"X-API-Key": keys["bob"]}
    await http.post("/rooms/request_9/broadcast", json={"n": 1}, headers=alice)
    minted = await http.post("/tokens/watch", json={"room": "request_9"}, headers=alice)
    assert minted.status_code == 200
    token = minted.json()["token"]
    url = f"{server.ws_url}/rooms/request_9/subscribe?token={token}&since=0"
    async with open_websocket_url(url) as ws:
        assert (await receive(ws))["n"] == 1
        await attached(http, "request_9", 1)
        await http.post("/rooms/request_9/broadcast", json={"n": 2}, headers=alice)
        assert (await receive(ws))["n"] == 2  # then live, right after the replay
    async with open_websocket_url(
        f"{server.ws_url}/rooms/user_alice/subscribe?token={token}"
    ) as ws:
        assert await close_code(ws) == 4401  # the token is for another room
    assert (
        await http.post("/tokens/watch", json={"room": "request_9"}, headers=bob)
    ).status_code == 404


@pytest.mark.parametrize(
    ("path", "content", "message"),
    [
        ("/rooms/r/broadcast", b"[1, 2]", "body"),
        ("/rooms/r/broadcast", b"{not json", "JSON"),
        ("/rooms/r/broadcast", b'{"x": NaN}', "NaN"),
        ("/rooms/r/broadcast", b"", "JSON"),
        ("/rooms/" + "x" * 129 + "/broadcast", b"{}", "roomId"),
    ],
)
async def test_bad_broadcasts_are_400(client, path: str, content: bytes, message: str) -> None:
    response = await client.post(path, content=content)
    assert response.status_code == 400, response.text
    assert message in response.json()["error"]["message"]
    assert (await client.get("/health")).json()["status"] == "healthy"


async def test_a_room_id_with_a_slash_is_no_route(client) -> None:
    assert (await client.post("/rooms/a%2Fb/broadcast", content=b"{}")).status_code == 404
