"""Idempotent mutations end to end: replays, conflicts, races, restarts, kill -9."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio

from spectral.api.idempotency import MIGRATIONS, STREAM, IdempotencyStore, Record
from spectral.sql import SqliteSql
from storage import Registry
from tests.conftest import ADMIN_HEADERS, SERVE_ENV, serve_argv
from tests.procs import Server, running


def keyed(key: str, **headers: str) -> dict[str, str]:
    """Admin headers plus an Idempotency-Key."""
    return {**ADMIN_HEADERS, "Idempotency-Key": key, **headers}


async def events(http: httpx.AsyncClient, task_id: str) -> list[int]:
    """The seqs in the task's history."""
    answer = await http.get(f"/tasks/{task_id}/history?limit=1000", headers=ADMIN_HEADERS)
    return [e["seq"] for e in answer.json()["events"]]


async def test_a_repeat_gets_the_same_answer_and_appends_nothing(
    client: httpx.AsyncClient,
) -> None:
    first = await client.post("/tasks/create", json={"id": "i1"}, headers=keyed("create-i1"))
    again = await client.post("/tasks/create", json={"id": "i1"}, headers=keyed("create-i1"))
    assert (first.status_code, again.status_code) == (201, 201)
    assert again.json() == first.json()
    assert again.headers["Idempotent-Replayed"] == "true"
    assert "Idempotent-Replayed" not in first.headers
    body = {"taskId": "i1", "progress": 40, "message": "m"}
    one = await client.post("/tasks/updateProgress", json=body, headers=keyed("p-1"))
    # The same body serialised differently is the same request.
    text = '{"message": "m",  "progress": 40, "taskId": "i1"}'
    two = await client.post(
        "/tasks/updateProgress", content=text, headers=keyed("p-1", **{"content-type": "a/j"})
    )
    assert two.status_code == 200 and two.json() == one.json()
    assert two.headers["Idempotent-Replayed"] == "true"
    assert await events(client, "i1") == [1, 2]
    other = await client.post("/tasks/updateProgress", json=body, headers=keyed("p-2"))
    assert other.json()["event"]["seq"] == 3  # another key is another request


async def test_another_body_under_a_used_key_is_422(client: httpx.AsyncClient) -> None:
    await client.post("/tasks/create", json={"id": "i2"})
    await client.post("/tasks/create", json={"id": "i3"})
    body = {"taskId": "i2", "progress": 10}
    assert (
        await client.post("/tasks/updateProgress", json=body, headers=keyed("k"))
    ).status_code == 200
    for path, changed in [
        ("/tasks/updateProgress", {"taskId": "i2", "progress": 11}),
        ("/tasks/updateProgress", {"taskId": "i3", "progress": 10}),  # another task
        ("/tasks/complete", {"taskId": "i2"}),  # another operation
    ]:
        refused = await client.post(path, json=changed, headers=keyed("k"))
        assert refused.status_code == 422, path
        assert refused.json()["error"]["code"] == "IDEMPOTENCY_KEY_REUSED"
    assert await events(client, "i2") == [1, 2]
    assert await events(client, "i3") == [1]


async def test_keys_belong_to_their_owner(client: httpx.AsyncClient) -> None:
    alice = (await client.post("/admin/keys", json={"owner": "alice", "role": "service"})).json()[
        "key"
    ]
    await client.post("/tasks/create", json={"id": "i4"})
    mine = {"X-API-Key": alice, "Idempotency-Key": "shared"}
    created = await client.post("/tasks/create", json={"id": "a4"}, headers=mine)
    assert created.status_code == 201
    # The admin's "shared" is another key: not a repeat, not a conflict.
    other = await client.post(
        "/tasks/updateProgress", json={"taskId": "i4", "progress": 5}, headers=keyed("shared")
    )
    assert other.status_code == 200 and "Idempotent-Replayed" not in other.headers


@pytest.mark.parametrize("key", ["", "x" * 256, "tab\there"])
async def test_a_bad_key_is_400_naming_the_header(client: httpx.AsyncClient, key: str) -> None:
    await client.post("/tasks/create", json={"id": "i5"})
    response = await client.post(
        "/tasks/updateProgress", json={"taskId": "i5", "progress": 5}, headers=keyed(key)
    )
    assert response.status_code == 400
    assert response.json()["error"]["message"].startswith("Idempotency-Key")
    assert await events(client, "i5") == [1]


async def test_concurrent_duplicates_apply_exactly_once(client: httpx.AsyncClient) -> None:
    await client.post("/tasks/create", json={"id": "race"})
    answers: list[httpx.Response] = []

    async def send() -> None:
        answers.append(
            await client.post(
                "/tasks/updateProgress",
                json={"taskId": "race", "progress": 50},
                headers=keyed("race-1"),
            )
        )

    async with trio.open_nursery() as nursery:
        for _ in range(20):
            nursery.start_soon(send)
    assert {a.status_code for a in answers} == {200}
    assert len({a.text for a in answers}) == 1
    assert sum(a.headers.get("Idempotent-Replayed") == "true" for a in answers) == 19
    assert await events(client, "race") == [1, 2]


async def test_batch_and_delete_are_idempotent_too(client: httpx.AsyncClient) -> None:
    for task_id in ("b1", "b2"):
        await client.post("/tasks/create", json={"id": task_id})
    batch = {"updates": [{"taskId": "b1", "progress": 1}, {"taskId": "b2", "progress": 2}]}
    first = await client.post("/tasks/batchUpdateProgress", json=batch, headers=keyed("batch"))
    again = await client.post("/tasks/batchUpdateProgress", json=batch, headers=keyed("batch"))
    assert again.json() == first.json() and again.headers["Idempotent-Replayed"] == "true"
    assert await events(client, "b1") == [1, 2]
    gone = await client.delete("/tasks/b2", headers=keyed("del"))
    repeat = await client.delete("/tasks/b2", headers=keyed("del"))
    assert (gone.status_code, repeat.status_code) == (200, 200)
    assert repeat.headers["Idempotent-Replayed"] == "true"
    assert (await client.delete("/tasks/b2")).status_code == 404  # without the key: gone


async def test_rpc_outputs_carry_idempotency(server: Server, client: httpx.AsyncClient) -> None:
    await client.post("/tasks/create", json={"id": "r1"})
    body = {"json": {"taskId": "r1", "progress": 30}}
    first = await client.post("/rpc/tasks/updateProgress", json=body, headers=keyed("rpc-key-1"))
    again = await client.post("/rpc/tasks/updateProgress", json=body, headers=keyed("rpc-key-1"))
    assert first.json()["json"]["__idempotency"] == {"cached": False, "key": "rpc-key-"}
    cached = again.json()["json"]["__idempotency"]
    assert (cached["cached"], cached["key"]) == (True, "rpc-key-")
    assert cached["cachedAt"].endswith("Z")
    assert ["cachedAt"] in [m[2:] for m in again.json()["meta"] if m[1] == "__idempotency"]
    assert again.json()["json"]["task"] == first.json()["json"]["task"]
    assert again.headers["Idempotent-Replayed"] == "true"
    plain = await client.post("/rpc/tasks/updateProgress", json=body, headers=ADMIN_HEADERS)
    assert "__idempotency" not in plain.json()["json"]
    assert await events(client, "r1") == [1, 2, 3]


async def test_records_survive_kill_9_and_race_a_cold_activation(tmp_path: Path) -> None:
    data = tmp_path / "data"
    async with (
        running(serve_argv(data), env=SERVE_ENV) as server,
        httpx.AsyncClient(base_url=server.url, timeout=60) as http,
    ):
        await http.post("/tasks/create", json={"id": "k9"}, headers=ADMIN_HEADERS)
        body = {"taskId": "k9", "progress": 70}
        first = await http.post("/tasks/updateProgress", json=body, headers=keyed("before"))
        assert first.status_code == 200
        server.kill()
        await server.wait()
    async with (
        running(serve_argv(data), env=SERVE_ENV) as server,
        httpx.AsyncClient(base_url=server.url, timeout=60) as http,
    ):
        again = await http.post("/tasks/updateProgress", json=body, headers=keyed("before"))
        assert again.json() == first.json()
        assert again.headers["Idempotent-Replayed"] == "true"
        # 20 duplicates of a new key, all arriving while the task's actor is cold.
        await http.post("/tasks/create", json={"id": "cold"}, headers=ADMIN_HEADERS)
        server.terminate()
        await server.wait()
    async with (
        running(serve_argv(data), env=SERVE_ENV) as server,
        httpx.AsyncClient(base_url=server.url, timeout=60) as http,
    ):
        statuses: list[int] = []

        async def send() -> None:
            response = await http.post(
                "/tasks/updateProgress",
                json={"taskId": "cold", "progress": 9},
                headers=keyed("cold-key"),
            )
            statuses.append(response.status_code)

        async with trio.open_nursery() as nursery:
            for _ in range(20):
                nursery.start_soon(send)
        assert statuses == [200] * 20
        assert await events(http, "cold") == [1, 2]
        assert await events(http, "k9") == [1, 2]


async def test_the_tasks_own_record_answers_when_the_registry_lost_it(tmp_path: Path) -> None:
    # The change and its record share the task's transaction: even if the registry's
    # copy is lost (a crash between the commit and the registry write), a repeat is
    # recognised by the task itself.
    data = tmp_path / "data"
    body: dict[str, Any] = {"taskId": "w", "progress": 12}
    async with (
        running(serve_argv(data), env=SERVE_ENV) as server,
        httpx.AsyncClient(base_url=server.url, timeout=60) as http,
    ):
        await http.post("/tasks/create", json={"id": "w"}, headers=ADMIN_HEADERS)
        first = await http.post("/tasks/updateProgress", json=body, headers=keyed("window"))
        server.terminate()
        await server.wait()
    registry = sqlite3.connect(data / "registry.sqlite")
    with registry:
        assert registry.execute("DELETE FROM idempotency").rowcount == 1
    registry.close()
    async with (
        running(serve_argv(data), env=SERVE_ENV) as server,
        httpx.AsyncClient(base_url=server.url, timeout=60) as http,
    ):
        again = await http.post("/tasks/updateProgress", json=body, headers=keyed("window"))
        assert again.json() == first.json()
        assert again.headers["Idempotent-Replayed"] == "true"
        changed = {"taskId": "w", "progress": 13}
        refused = await http.post("/tasks/updateProgress", json=changed, headers=keyed("window"))
        assert refused.status_code == 422
        assert await events(http, "w") == [1, 2]


async def test_registry_records_expire_after_24_hours(tmp_path: Path) -> None:
    now = [1_000_000.0]
    registry = Registry(tmp_path / "registry.sqlite", migrations={STREAM: MIGRATIONS})
    store = IdempotencyStore(SqliteSql(registry.conn), clock=lambda: now[0])
    await store.put("o", "k", Record("fp", 200, {"a": 1}, now[0]))
    now[0] += 24 * 3600 - 1
    assert await store.get("o", "k") == Record("fp", 200, {"a": 1}, 1_000_000.0)
    now[0] += 2
    assert await store.get("o", "k") is None
    await store.put("o", "k2", Record("fp", 200, {}, now[0]))  # purges the expired one
    rows = registry.conn.execute("SELECT key FROM idempotency").fetchall()
    assert rows == [("k2",)]
