"""Keys, owners and limits end to end: a real server, real HTTP and WebSockets.

The isolation walk sends every task route with six callers — no key, a bad key, a
revoked key, a reader of the task's owner, another owner's service key, an admin
(plus the owner's own service key) — and checks the documented answer for each.
"""

from __future__ import annotations

import itertools
import json
import subprocess
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio
from trio_websocket import ConnectionClosed, open_websocket_url

from tests.conftest import ADMIN_HEADERS, ADMIN_KEY, SERVE_ENV, serve_argv
from tests.procs import Server, running

_ids = itertools.count()


@dataclass
class World:
    """A running server with keys for two owners."""

    server: Server
    http: httpx.AsyncClient
    keys: dict[str, str]
    key_ids: dict[str, str]

    def headers(self, who: str) -> dict[str, str]:
        """Headers that authenticate as ``who`` ("anonymous" sends none)."""
        if who == "anonymous":
            return {}
        if who == "admin":
            return dict(ADMIN_HEADERS)
        return {"X-API-Key": self.keys[who]}

    async def new_task(self, owner_key: str) -> str:
        """A fresh task created with ``owner_key``; its id."""
        task_id = f"t-{next(_ids)}"
        response = await self.http.post(
            "/tasks/create", json={"id": task_id}, headers=self.headers(owner_key)
        )
        assert response.status_code == 201, response.text
        return task_id


async def make_key(http: httpx.AsyncClient, owner: str, role: str) -> dict[str, Any]:
    """POST /admin/keys as the admin."""
    response = await http.post(
        "/admin/keys", json={"owner": owner, "role": role}, headers=ADMIN_HEADERS
    )
    assert response.status_code == 201, response.text
    return response.json()


@pytest.fixture
async def world(tmp_path: Path) -> AsyncIterator[World]:
    """A server with alice's service and reader keys, bob's service key, a revoked key."""
    async with (
        running(serve_argv(tmp_path / "data"), env=SERVE_ENV) as server,
        httpx.AsyncClient(base_url=server.url, timeout=60) as http,
    ):
        keys: dict[str, str] = {}
        ids: dict[str, str] = {}
        for name, owner, role in [
            ("alice", "alice", "service"),
            ("alice-reader", "alice", "reader"),
            ("bob", "bob", "service"),
            ("revoked", "alice", "service"),
        ]:
            made = await make_key(http, owner, role)
            keys[name], ids[name] = made["key"], made["id"]
        keys["bad"] = keys["alice"][:-4] + "AAAA"
        response = await http.delete(f"/admin/keys/{ids['revoked']}", headers=ADMIN_HEADERS)
        assert response.json() == {"success": True}
        yield World(server, http, keys, ids)


#: Task routes: (name, is a write, method, path, body) with {t} for the task id.
ROUTES: list[tuple[str, bool, str, str, Any]] = [
    ("get", False, "GET", "/tasks/{t}", None),
    ("history", False, "GET", "/tasks/{t}/history", None),
    ("progress", True, "POST", "/tasks/updateProgress", {"taskId": "{t}", "progress": 5}),
    (
        "event",
        True,
        "POST",
        "/tasks/addEvent",
        {"taskId": "{t}", "event": {"type": "log", "message": "m"}},
    ),
    ("complete", True, "POST", "/tasks/complete", {"taskId": "{t}"}),
    ("fail", True, "POST", "/tasks/fail", {"taskId": "{t}", "error": "boom"}),
    ("cancel", True, "POST", "/tasks/cancel", {"taskId": "{t}"}),
    ("delete", True, "DELETE", "/tasks/{t}", None),
    ("token", False, "POST", "/tokens/watch", {"taskId": "{t}"}),
    # The seeds' jobs system's view (docs/api.md, "The seeds' jobs system").
    ("job", False, "GET", "/jobs/{t}", None),
    # The original's POST /tasks/{procedure} form.
    ("getById", False, "POST", "/tasks/getById", {"taskId": "{t}"}),
    ("getHistory", False, "POST", "/tasks/getHistory", {"taskId": "{t}"}),
    ("delete-form", True, "POST", "/tasks/delete", {"taskId": "{t}"}),
    # oRPC (docs/api.md, "RPC"): the same operations in the RPC framing.
    ("rpc-get", False, "POST", "/rpc/tasks/getById", {"json": {"taskId": "{t}"}}),
    ("rpc-history", False, "POST", "/rpc/tasks/getHistory", {"json": {"taskId": "{t}"}}),
    (
        "rpc-progress",
        True,
        "POST",
        "/rpc/tasks/updateProgress",
        {"json": {"taskId": "{t}", "progress": 5}},
    ),
    ("rpc-complete", True, "POST", "/rpc/tasks/complete", {"json": {"taskId": "{t}"}}),
    ("rpc-delete", True, "POST", "/rpc/tasks/delete", {"json": {"taskId": "{t}"}}),
]

#: Who asks → expected answer for a read and for a write of one of alice's tasks.
CALLERS = {
    "anonymous": (401, 401),
    "bad": (401, 401),
    "revoked": (401, 401),
    "alice-reader": (200, 403),
    "bob": (404, 404),
    "alice": (200, 200),
    "admin": (200, 200),
}


def fill(value: Any, task_id: str) -> Any:
    """``value`` with every "{t}" replaced by ``task_id``."""
    return json.loads(json.dumps(value).replace("{t}", task_id)) if value is not None else None


@pytest.mark.parametrize("caller", list(CALLERS))
async def test_isolation_walk_over_every_task_route(world: World, caller: str) -> None:
    read_status, write_status = CALLERS[caller]
    for name, is_write, method, path, body in ROUTES:
        task_id = await world.new_task("alice")
        response = await world.http.request(
            method, path.replace("{t}", task_id), json=fill(body, task_id),
            headers=world.headers(caller),
        )  # fmt: skip
        expected = write_status if is_write else read_status
        assert response.status_code == expected, (caller, name, response.text)
        if expected >= 400 and path.startswith("/rpc/"):
            error = response.json()["json"]  # oRPC's error body, our code in its data
            code = {401: "UNAUTHORIZED", 403: "FORBIDDEN", 404: "NOT_FOUND"}[expected]
            assert (error["code"], error["status"]) == (code, expected), (caller, name)
        elif expected >= 400:
            code = {401: "UNAUTHENTICATED", 403: "FORBIDDEN", 404: "TASK_NOT_FOUND"}[expected]
            assert response.json()["error"]["code"] == code, (caller, name)
        if expected == 404:  # the refusal reveals nothing: same answer as a missing task
            missing = await world.http.request(
                method, path.replace("{t}", "no-such-task"), json=fill(body, "no-such-task"),
                headers=world.headers(caller),
            )  # fmt: skip
            assert missing.json() == json.loads(response.text.replace(task_id, "no-such-task")), (
                name
            )
    # Watching: SSE and WebSocket.
    task_id = await world.new_task("alice")
    async with world.http.stream(
        "GET", f"/tasks/{task_id}/events", headers=world.headers(caller)
    ) as stream:
        assert stream.status_code == read_status, caller
    assert (
        await ws_outcome(world, f"/ws/task/{task_id}", world.headers(caller))
        == {
            200: "snapshot",
            401: 4401,
            404: 4404,
        }[read_status]
    )
    # The task itself was never changed by a refused caller.
    task = (await world.http.get(f"/tasks/{task_id}", headers=ADMIN_HEADERS)).json()
    assert task["seq"] == 1


async def ws_outcome(world: World, path: str, headers: dict[str, str]) -> str | int:
    """ "snapshot" if the socket opens with one, else the close code."""
    extra = [(k.encode(), v.encode()) for k, v in headers.items()]
    async with open_websocket_url(world.server.ws_url + path, extra_headers=extra) as ws:
        with trio.fail_after(30):
            try:
                return json.loads(await ws.get_message())["type"]
            except ConnectionClosed as closed:
                return closed.reason.code


async def test_listing_shows_only_the_callers_owner(world: World) -> None:
    # Also through the original's listAll, over REST and oRPC.
    mine = {await world.new_task("alice") for _ in range(3)}
    theirs = {await world.new_task("bob") for _ in range(2)}

    async def listed(who: str, query: str = "") -> set[str]:
        response = await world.http.get(f"/tasks?limit=100{query}", headers=world.headers(who))
        assert response.status_code == 200, response.text
        return {task["taskId"] for task in response.json()["tasks"]}

    assert await listed("alice") == mine
    assert await listed("alice-reader") == mine
    assert await listed("alice", "&owner=bob") == set()  # a filter cannot widen the view
    assert await listed("bob") == theirs
    assert await listed("admin") == mine | theirs
    assert await listed("admin", "&owner=bob") == theirs
    assert (await world.http.get("/tasks", headers=world.headers("bad"))).status_code == 401
    for who, expected in [("alice", mine), ("bob", theirs), ("admin", mine | theirs)]:
        form = await world.http.post("/tasks/listAll", json={}, headers=world.headers(who))
        assert {t["taskId"] for t in form.json()["tasks"]} == expected, who
        rpc = await world.http.post(
            "/rpc/tasks/listAll", json={"json": {}}, headers=world.headers(who)
        )
        assert {t["taskId"] for t in rpc.json()["json"]["tasks"]} == expected, who


async def test_creating_another_owners_id_is_409_and_reveals_nothing(world: World) -> None:
    task_id = await world.new_task("bob")
    response = await world.http.post(
        "/tasks/create", json={"id": task_id}, headers=world.headers("alice")
    )
    assert response.status_code == 409
    assert response.json()["error"]["code"] == "TASK_EXISTS"
    assert "bob" not in response.text
    refused = await world.http.post(
        "/tasks/create", json={"id": "r-1"}, headers=world.headers("alice-reader")
    )
    assert refused.status_code == 403


async def test_batch_items_of_another_owner_fail_alone(world: World) -> None:
    mine, theirs = await world.new_task("alice"), await world.new_task("bob")
    response = await world.http.post(
        "/tasks/batchUpdateProgress",
        json={"updates": [{"taskId": mine, "progress": 10}, {"taskId": theirs, "progress": 10}]},
        headers=world.headers("alice"),
    )
    results = response.json()["results"]
    assert [r["ok"] for r in results] == [True, False]
    assert results[1]["error"]["code"] == "TASK_NOT_FOUND"
    reader = await world.http.post(
        "/tasks/batchUpdateProgress",
        json={"updates": [{"taskId": mine, "progress": 20}]},
        headers=world.headers("alice-reader"),
    )
    assert reader.status_code == 403


@pytest.mark.parametrize("caller", ["anonymous", "bad", "revoked", "alice", "alice-reader"])
async def test_admin_routes_need_an_admin_key(world: World, caller: str) -> None:
    expected = 401 if caller in {"anonymous", "bad", "revoked"} else 403
    headers = world.headers(caller)
    for method, path, body in [
        ("GET", "/admin/keys", None),
        ("POST", "/admin/keys", {"owner": "mallory", "role": "admin"}),
        ("DELETE", f"/admin/keys/{world.key_ids['alice']}", None),
        ("GET", "/metrics", None),
    ]:
        response = await world.http.request(method, path, json=body, headers=headers)
        assert response.status_code == expected, (caller, path, response.text)
    still = await world.http.get(f"/tasks/{await world.new_task('alice')}", headers=headers)
    assert still.status_code in {200, 401}  # alice's key was not revoked by that DELETE


async def test_key_listing_never_shows_secrets_and_bearer_works(world: World) -> None:
    listing = (await world.http.get("/admin/keys", headers=ADMIN_HEADERS)).json()["keys"]
    assert {k["owner"] for k in listing} == {"alice", "bob"}
    assert all(set(k) == {"id", "name", "owner", "role", "createdAt", "lastUsedAt", "revokedAt"}
               for k in listing)  # fmt: skip
    text = json.dumps(listing)
    assert all(secret not in text for secret in world.keys.values())
    revoked = next(k for k in listing if k["id"] == world.key_ids["revoked"])
    assert revoked["revokedAt"] is not None
    bearer = {"Authorization": f"Bearer {world.keys['alice']}"}
    assert (await world.http.get("/tasks", headers=bearer)).status_code == 200
    prometheus = {"Authorization": f"Bearer {ADMIN_KEY}"}
    assert (await world.http.get("/metrics", headers=prometheus)).status_code == 200
    used = (await world.http.get("/admin/keys", headers=ADMIN_HEADERS)).json()["keys"]
    assert next(k for k in used if k["id"] == world.key_ids["alice"])["lastUsedAt"] is not None


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"owner": "a/b", "role": "service"}, "owner"),
        ({"owner": "x" * 129, "role": "service"}, "owner"),
        ({"owner": "alice", "role": "root"}, "role"),
        ({"role": "reader"}, "owner"),
        ({"owner": "alice", "role": "reader", "name": 5}, "name"),
        ({"owner": "alice", "role": "reader", "name": "a\x00b"}, "name"),
    ],
)
async def test_bad_key_requests_name_the_field(world: World, body: Any, field: str) -> None:
    response = await world.http.post("/admin/keys", json=body, headers=ADMIN_HEADERS)
    assert response.status_code == 400
    assert response.json()["error"]["message"].startswith(field)


async def test_revoking_an_unknown_key_is_404(world: World) -> None:
    for key_id in ["0123456789abcdef", "not-an-id"]:
        response = await world.http.delete(f"/admin/keys/{key_id}", headers=ADMIN_HEADERS)
        assert response.status_code == 404


# -- watch tokens ---------------------------------------------------------------------


async def mint(world: World, who: str, **body: Any) -> httpx.Response:
    """POST /tokens/watch."""
    return await world.http.post("/tokens/watch", json=body, headers=world.headers(who))


async def test_watch_tokens_open_exactly_their_task(world: World) -> None:
    task_a, task_b = await world.new_task("alice"), await world.new_task("alice")
    minted = await mint(world, "alice-reader", taskId=task_a, ttlSeconds=60)
    assert minted.status_code == 200, minted.text
    token = minted.json()["token"]
    assert minted.json()["expiresAt"].endswith("Z")
    assert await ws_outcome(world, f"/ws/task/{task_a}?token={token}", {}) == "snapshot"
    assert await ws_outcome(world, f"/ws/task/{task_b}?token={token}", {}) == 4401
    async with world.http.stream("GET", f"/tasks/{task_a}/events?token={token}") as stream:
        assert stream.status_code == 200
    other = await world.http.get(f"/tasks/{task_b}/events?token={token}")
    assert other.status_code == 401
    # Only watch routes take tokens.
    assert (await world.http.get(f"/tasks/{task_a}?token={token}")).status_code == 401
    payload, signature = token.split(".")
    tampered = payload[:-2] + ("A" if payload[-2] != "A" else "B") + payload[-1] + "." + signature
    assert await ws_outcome(world, f"/ws/task/{task_a}?token={tampered}", {}) == 4401
    assert await ws_outcome(world, f"/ws/task/{task_a}?token=forged.token", {}) == 4401


async def test_tokens_expire_and_die_with_their_key(world: World) -> None:
    task_id = await world.new_task("alice")
    short = (await mint(world, "alice", taskId=task_id, ttlSeconds=1)).json()["token"]
    kept = (await mint(world, "alice", taskId=task_id, ttlSeconds=600)).json()["token"]
    await trio.sleep(2.1)  # past the 1 s expiry by the wall clock (a wait for time, not a task)
    assert await ws_outcome(world, f"/ws/task/{task_id}?token={short}", {}) == 4401
    assert await ws_outcome(world, f"/ws/task/{task_id}?token={kept}", {}) == "snapshot"
    await world.http.delete(f"/admin/keys/{world.key_ids['alice']}", headers=ADMIN_HEADERS)
    assert await ws_outcome(world, f"/ws/task/{task_id}?token={kept}", {}) == 4401


async def test_tokens_are_minted_only_for_visible_tasks(world: World) -> None:
    theirs = await world.new_task("bob")
    assert (await mint(world, "alice", taskId=theirs)).status_code == 404
    assert (await mint(world, "alice", taskId="never-made")).status_code == 404
    assert (await mint(world, "admin", taskId=theirs)).status_code == 200
    for body, field in [
        ({}, "body"),
        ({"taskId": theirs, "room": "user_bob"}, "body"),
        ({"taskId": "a/b"}, "taskId"),
        ({"taskId": theirs, "ttlSeconds": 0}, "ttlSeconds"),
        ({"taskId": theirs, "ttlSeconds": 86_401}, "ttlSeconds"),
    ]:
        response = await mint(world, "admin", **body)
        assert response.status_code == 400, body
        assert field in response.json()["error"]["message"], (body, response.text)
    assert (await mint(world, "alice", room="user_alice")).status_code == 200
    assert (await mint(world, "alice", room="user_bob")).status_code == 404


# -- limits ---------------------------------------------------------------------------


async def test_rate_limit_answers_429_with_retry_after(tmp_path: Path) -> None:
    env = {**SERVE_ENV, "SPECTRAL_RATE_LIMIT": "1", "SPECTRAL_RATE_BURST": "3"}
    async with (
        running(serve_argv(tmp_path / "data"), env=env) as server,
        httpx.AsyncClient(base_url=server.url, timeout=60) as http,
    ):
        key = (await make_key(http, "alice", "service"))["key"]
        # However slowly the requests go, the bucket gains at most one token a second: a
        # run of requests meets a 429 after the burst (3) plus one per second it took.
        started = trio.current_time()
        statuses: list[int] = []
        while 429 not in statuses:
            assert len(statuses) < 30, statuses
            limited = await http.get("/tasks", headers={"X-API-Key": key})
            statuses.append(limited.status_code)
        elapsed = trio.current_time() - started
        assert statuses[:3] == [200, 200, 200] and set(statuses[3:-1]) <= {200}
        assert len(statuses) - 1 <= 3 + int(elapsed), (statuses, elapsed)
        assert limited.json()["error"]["code"] == "RATE_LIMITED"
        retry_after = int(limited.headers["Retry-After"])
        assert 1 <= retry_after <= 2
        # Admin keys are never limited.
        for _ in range(20):
            assert (await http.get("/tasks", headers=ADMIN_HEADERS)).status_code == 200
        # Retry-After is enough for a token to come back (a wait for the clock, not a task).
        await trio.sleep(retry_after)
        assert (await http.get("/tasks", headers={"X-API-Key": key})).status_code == 200


async def test_watch_connections_per_key_are_capped(tmp_path: Path) -> None:
    env = {**SERVE_ENV, "SPECTRAL_WS_MAX_PER_KEY": "2"}
    async with (
        running(serve_argv(tmp_path / "data"), env=env) as server,
        httpx.AsyncClient(base_url=server.url, timeout=60) as http,
    ):
        key = (await make_key(http, "alice", "reader"))["key"]
        writer = (await make_key(http, "alice", "service"))["key"]
        await http.post("/tasks/create", json={"id": "w"}, headers={"X-API-Key": writer})
        url = f"{server.ws_url}/ws/task/w"
        extra = [(b"X-API-Key", key.encode())]
        async with open_websocket_url(url, extra_headers=extra) as first:
            await first.get_message()
            async with open_websocket_url(url, extra_headers=extra) as second:
                await second.get_message()
                async with open_websocket_url(url, extra_headers=extra) as third:
                    with pytest.raises(ConnectionClosed) as closed:
                        await third.get_message()
                    assert closed.value.reason.code == 4429
                sse = await http.get("/tasks/w/events", headers={"X-API-Key": key})
                assert sse.status_code == 429
        with trio.fail_after(60):  # the slots are given back when the sockets close
            while True:
                async with open_websocket_url(url, extra_headers=extra) as again:
                    try:
                        if json.loads(await again.get_message())["type"] == "snapshot":
                            break
                    except ConnectionClosed:
                        await trio.sleep(0.05)


async def test_a_5_mib_body_is_refused_before_it_is_read(server: Server) -> None:
    host, port = server.url.removeprefix("http://").rsplit(":", 1)
    stream = await trio.open_tcp_stream(host, int(port))
    head = (
        "POST /tasks/create HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        f"X-API-Key: {ADMIN_KEY}\r\nContent-Length: {5 * 1024 * 1024}\r\n\r\n"
    )
    await stream.send_all(head.encode() + b'{"id": "big", "metadata": {"x": "')
    with trio.fail_after(30):  # answered while 5 MiB are still unsent
        answer = b""
        while b"\r\n\r\n" not in answer:
            answer += await stream.receive_some(65536)
    assert answer.startswith(b"HTTP/1.1 413")
    await stream.aclose()


async def test_cors_preflight_follows_the_allowlist(tmp_path: Path) -> None:
    allowed = "https://app.example.com"
    env = {**SERVE_ENV, "SPECTRAL_CORS_ORIGINS": allowed}
    preflight = {
        "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "x-api-key, content-type",
    }
    async with (
        running(serve_argv(tmp_path / "data"), env=env) as server,
        httpx.AsyncClient(base_url=server.url, timeout=60) as http,
    ):
        ok = await http.options("/tasks/create", headers={"Origin": allowed, **preflight})
        assert ok.status_code in {200, 204}
        assert ok.headers["access-control-allow-origin"] == allowed
        assert "x-api-key" in ok.headers["access-control-allow-headers"].lower()
        other = await http.options(
            "/tasks/create", headers={"Origin": "https://evil.example", **preflight}
        )
        assert "access-control-allow-origin" not in other.headers
        real = await http.get("/tasks", headers={"Origin": allowed, **ADMIN_HEADERS})
        assert real.headers["access-control-allow-origin"] == allowed
    async with (
        running(serve_argv(tmp_path / "data2"), env=SERVE_ENV) as server,
        httpx.AsyncClient(base_url=server.url, timeout=60) as http,
    ):
        default = await http.options("/tasks/create", headers={"Origin": allowed, **preflight})
        assert "access-control-allow-origin" not in default.headers


async def test_keys_made_and_revoked_by_the_cli_apply_at_once(tmp_path: Path) -> None:
    data = tmp_path / "data"

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "spectral", "keys", *args, "--data-dir", str(data)],
            capture_output=True, text=True, check=False, timeout=120,
        )  # fmt: skip

    async with (
        running(serve_argv(data), env=SERVE_ENV) as server,
        httpx.AsyncClient(base_url=server.url, timeout=60) as http,
    ):
        made = await trio.to_thread.run_sync(cli, "create", "--owner", "carol", "--role", "service")
        assert made.returncode == 0, made.stderr
        secret = next(
            line.split(": ", 1)[1] for line in made.stdout.splitlines() if "secret" in line
        )
        key_id = made.stdout.split()[2]
        headers = {"X-API-Key": secret}
        created = await http.post("/tasks/create", json={"id": "c1"}, headers=headers)
        assert created.status_code == 201
        assert created.json()["task"]["owner"] == "carol"
        listing = await trio.to_thread.run_sync(cli, "list", "--json")
        rows = [json.loads(line) for line in listing.stdout.splitlines()]
        assert [r["owner"] for r in rows] == ["carol"] and secret not in listing.stdout
        revoked = await trio.to_thread.run_sync(cli, "revoke", key_id)
        assert revoked.returncode == 0, revoked.stderr
        assert (await http.get("/tasks/c1", headers=headers)).status_code == 401
        unknown = await trio.to_thread.run_sync(cli, "revoke", "0123456789abcdef")
        assert unknown.returncode == 1
        bad = await trio.to_thread.run_sync(cli, "create", "--owner", "a/b", "--role", "reader")
        assert bad.returncode == 2 and "owner" in bad.stderr


async def test_refused_requests_with_bodies_do_not_stall_the_connection(server: Server) -> None:
    # Answers given before the body is read (401, 404) must leave the keep-alive
    # connection usable for the next request.
    async with httpx.AsyncClient(base_url=server.url, timeout=30) as http:
        for size in [10, 100, 20_000] * 10:
            body = {"id": "x", "pad": "p" * size}
            assert (await http.post("/tasks/create", json=body)).status_code == 401
            assert (await http.delete("/admin/keys/0123456789abcdef")).status_code == 401
            assert (
                await http.post("/no/route", json=body, headers=ADMIN_HEADERS)
            ).status_code == 404
            assert (await http.get("/tasks", headers=ADMIN_HEADERS)).status_code == 200
