"""``GET /me`` and the admin feed (``/admin/feed``: every owner's task events, live, for
admins) end to end (docs/api.md, "Who am I" and "The admin feed")."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
import trio
from trio_websocket import WebSocketConnection, open_websocket_url

from tests.conftest import ADMIN_HEADERS, ADMIN_KEY, SERVE_ENV, serve_argv
from tests.procs import Server, running
from tests.test_api_rooms import ws_headers
from tests.wsutil import close_code, receive


@pytest.fixture
async def keyed(tmp_path: Path) -> AsyncIterator[tuple[Server, httpx.AsyncClient, dict[str, str]]]:
    """A server with keys for alice (service, named), her reader and bob (service)."""
    async with (
        running(serve_argv(tmp_path / "data"), env=SERVE_ENV) as server,
        httpx.AsyncClient(base_url=server.url, timeout=20) as http,
    ):
        keys = {"admin": ADMIN_KEY}
        for name, owner, role in [
            ("alice", "alice", "service"),
            ("reader", "alice", "reader"),
            ("bob", "bob", "service"),
            ("other-admin", "ops", "admin"),
        ]:
            made = await http.post(
                "/admin/keys",
                json={"owner": owner, "role": role, "name": f"{name}'s key"},
                headers=ADMIN_HEADERS,
            )
            keys[name] = made.json()["key"]
            keys[name + ".id"] = made.json()["id"]
        yield server, http, keys


async def attached(ws: WebSocketConnection) -> None:
    """Wait until the server answers a ping: the feed's watcher is attached by then."""
    await ws.send_message("ping")
    with trio.fail_after(30):
        assert await ws.get_message() == "pong"


async def test_me_names_the_key(keyed: tuple[Server, httpx.AsyncClient, dict[str, str]]) -> None:
    _, http, keys = keyed
    me = await http.get("/me", headers={"X-API-Key": keys["alice"]})
    assert me.status_code == 200
    assert me.json() == {
        "keyId": keys["alice.id"],
        "owner": "alice",
        "role": "service",
        "name": "alice's key",
    }
    reader = (await http.get("/me", headers={"X-API-Key": keys["reader"]})).json()
    assert (reader["owner"], reader["role"]) == ("alice", "reader")
    admin = (await http.get("/me", headers=ADMIN_HEADERS)).json()
    assert admin == {"keyId": "bootstrap", "owner": "admin", "role": "admin", "name": None}
    anonymous = await http.get("/me")
    assert anonymous.status_code == 401
    assert anonymous.json()["error"]["code"] == "UNAUTHENTICATED"
    revoked = await http.delete(f"/admin/keys/{keys['bob.id']}", headers=ADMIN_HEADERS)
    assert revoked.status_code == 200
    assert (await http.get("/me", headers={"X-API-Key": keys["bob"]})).status_code == 401


async def test_the_feed_carries_every_owners_events_in_order(
    keyed: tuple[Server, httpx.AsyncClient, dict[str, str]],
) -> None:
    server, http, keys = keyed
    url = f"{server.ws_url}/admin/feed"
    token = await http.post("/tokens/watch", json={"feed": "admin"}, headers=ADMIN_HEADERS)
    assert token.status_code == 200
    async with (
        open_websocket_url(url, extra_headers=ws_headers(keys["other-admin"])) as by_key,
        open_websocket_url(f"{url}?token={token.json()['token']}") as by_token,
    ):
        await attached(by_key)
        await attached(by_token)
        for owner in ("alice", "bob"):
            headers = {"X-API-Key": keys[owner]}
            created = await http.post("/tasks/create", json={"id": f"{owner}-1"}, headers=headers)
            assert created.status_code == 201
            for value in (10, 20):
                body = {"taskId": f"{owner}-1", "progress": value}
                assert (
                    await http.post("/tasks/updateProgress", json=body, headers=headers)
                ).status_code == 200
        await http.delete("/tasks/bob-1", headers={"X-API-Key": keys["bob"]})
        for ws in (by_key, by_token):
            got = [await receive(ws) for _ in range(7)]
            assert [(m["owner"], m["taskId"], m["seq"], m["type"]) for m in got] == [
                ("alice", "alice-1", 1, "created"),
                ("alice", "alice-1", 2, "progress"),
                ("alice", "alice-1", 3, "progress"),
                ("bob", "bob-1", 1, "created"),
                ("bob", "bob-1", 2, "progress"),
                ("bob", "bob-1", 3, "progress"),
                ("bob", "bob-1", 4, "deleted"),
            ]
            assert got[2]["task"]["progress"] == 20 and got[2]["event"]["progress"] == 20
            assert got[0]["timestamp"].endswith("Z")
            assert "task" not in got[6]


async def test_only_admins_open_the_feed(
    keyed: tuple[Server, httpx.AsyncClient, dict[str, str]],
) -> None:
    server, http, keys = keyed
    url = f"{server.ws_url}/admin/feed"
    for name in ("alice", "reader"):
        async with open_websocket_url(url, extra_headers=ws_headers(keys[name])) as ws:
            assert await close_code(ws) == 4403
        refused = await http.post(
            "/tokens/watch", json={"feed": "admin"}, headers={"X-API-Key": keys[name]}
        )
        assert refused.status_code == 403 and refused.json()["error"]["code"] == "FORBIDDEN"
    async with open_websocket_url(url) as ws:
        assert await close_code(ws) == 4401
    room_token = await http.post(
        "/tokens/watch", json={"room": "user_admin"}, headers=ADMIN_HEADERS
    )
    async with open_websocket_url(f"{url}?token={room_token.json()['token']}") as ws:
        assert await close_code(ws) == 4401  # a token for a room opens no feed
    feed_token = (
        await http.post("/tokens/watch", json={"feed": "admin"}, headers=ADMIN_HEADERS)
    ).json()["token"]
    async with open_websocket_url(
        f"{server.ws_url}/rooms/user_admin/subscribe?token={feed_token}"
    ) as ws:
        assert await close_code(ws) == 4401  # and the feed's token opens no room


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"feed": "everyone"}, "feed"),
        ({"feed": "admin", "taskId": "t"}, "body"),
        ({}, "body"),
    ],
)
async def test_feed_tokens_refuse_bad_requests(
    server: Server, client: httpx.AsyncClient, body: dict[str, str], field: str
) -> None:
    answer = await client.post("/tokens/watch", json=body)
    assert answer.status_code == 400
    error = answer.json()["error"]
    assert error["code"] == "VALIDATION_ERROR" and field in error["message"]


async def test_shutdown_closes_the_feed_with_1001(tmp_path: Path) -> None:
    async with running(serve_argv(tmp_path / "data"), env=SERVE_ENV) as server:
        async with open_websocket_url(
            f"{server.ws_url}/admin/feed", extra_headers=ws_headers(ADMIN_KEY)
        ) as ws:
            await attached(ws)
            server.terminate()
            assert await close_code(ws) == 1001
        with trio.fail_after(60):
            assert await server.wait() == 0
