"""Tags, external ids and creation-time filters of tasks, end to end against a real server."""

from __future__ import annotations

import re
import sqlite3
import tarfile
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import pytest
import trio
from trio_websocket import open_websocket_url

from tests.conftest import ADMIN_HEADERS, SERVE_ENV, WS_HEADERS, serve_argv
from tests.procs import Server, running
from tests.wsutil import receive

OLD_LAYOUT = Path(__file__).resolve().parent / "data" / "old-layout.tar.gz"


@pytest.fixture
def world(owners: tuple[Server, httpx.AsyncClient, dict[str, Any]]) -> Any:
    """The admin, alice (service), alice's reader and bob on one server (tests/conftest.py)."""
    return owners


async def create(http: httpx.AsyncClient, headers: dict[str, str], **body: Any) -> httpx.Response:
    return await http.post("/tasks/create", json=body, headers=headers)


async def listed(http: httpx.AsyncClient, headers: dict[str, str], **params: Any) -> list[str]:
    response = await http.get("/tasks", params={"limit": 100, **params}, headers=headers)
    assert response.status_code == 200, response.text
    return [task["taskId"] for task in response.json()["tasks"]]


async def test_create_with_tags_and_external_id(world) -> None:
    _, http, h = world
    made = await create(
        http, h["alice"], id="t1", tags=["b", "a", "b", "x:1"], externalId="order 42/é"
    )
    assert made.status_code == 201, made.text
    task = made.json()["task"]
    assert task["tags"] == ["b", "a", "x:1"]  # duplicates removed, first order kept
    assert task["externalId"] == "order 42/é"
    plain = (await create(http, h["alice"], id="t2")).json()["task"]
    assert plain["tags"] == [] and plain["externalId"] is None
    got = (await http.get("/tasks/t1", headers=h["alice"])).json()
    assert got["tags"] == ["b", "a", "x:1"] and got["externalId"] == "order 42/é"
    # The tags stay: mutations carry them, and nothing changes them.
    body = {"taskId": "t1", "progress": 5, "metadata": {"tags": ["no"]}}
    after = await http.post("/tasks/updateProgress", json=body, headers=h["alice"])
    assert after.json()["task"]["tags"] == ["b", "a", "x:1"]
    listing = (await http.get("/tasks", headers=h["alice"])).json()["tasks"]
    assert {t["taskId"]: t["tags"] for t in listing} == {"t1": ["b", "a", "x:1"], "t2": []}
    # RPC: create takes them too; getById answers the server's task shape.
    rpc = await http.post(
        "/rpc/tasks/create",
        json={"json": {"taskId": "t3", "tags": ["r"], "externalId": "e3"}},
        headers=h["alice"],
    )
    assert rpc.status_code == 200, rpc.text
    assert rpc.json()["json"] == {"success": True, "taskId": "t3"}
    got = await http.post("/rpc/tasks/getById", json={"json": {"taskId": "t3"}}, headers=h["alice"])
    assert got.json()["json"]["tags"] == ["r"] and got.json()["json"]["externalId"] == "e3"


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"tags": [f"t{i}" for i in range(17)]}, "tags"),
        ({"tags": ["ok", "no space"]}, "tags.1"),
        ({"tags": [""]}, "tags.0"),
        ({"tags": ["x" * 65]}, "tags.0"),
        ({"tags": "a"}, "tags"),
        ({"externalId": "x" * 256}, "externalId"),
        ({"externalId": ""}, "externalId"),
        ({"externalId": "a\nb"}, "externalId"),
    ],
)
async def test_bad_tags_and_external_ids_are_400_naming_the_field(
    world, body: dict[str, Any], field: str
) -> None:
    _, http, h = world
    response = await create(http, h["alice"], id="bad", **body)
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["code"] == "VALIDATION_ERROR"
    assert error["message"].startswith(f"{field}:"), error
    assert (await http.get("/tasks/bad", headers=h["alice"])).status_code == 404
    assert await listed(http, h["alice"]) == []


@pytest.mark.parametrize("name", ["createdAfter", "createdBefore"])
@pytest.mark.parametrize("value", ["yesterday", "2026-13-01T00:00:00Z", "1700000000", "2026-01-01"])
async def test_bad_timestamps_are_400_naming_the_field(world, name: str, value: str) -> None:
    _, http, h = world
    response = await http.get("/tasks", params={name: value}, headers=h["alice"])
    assert response.status_code == 400, response.text
    assert response.json()["error"]["message"].startswith(f"{name}:")


async def test_a_bad_tag_filter_is_400(world) -> None:
    _, http, h = world
    response = await http.get("/tasks", params={"tag": "a b"}, headers=h["alice"])
    assert response.status_code == 400
    assert response.json()["error"]["message"].startswith("tag.0:")


async def test_a_duplicate_external_id_is_409_and_creates_nothing(world) -> None:
    _, http, h = world
    assert (await create(http, h["alice"], id="first", externalId="E")).status_code == 201
    again = await create(http, h["alice"], id="second", externalId="E")
    assert again.status_code == 409
    assert again.json()["error"]["code"] == "EXTERNAL_ID_EXISTS"
    assert (await http.get("/tasks/second", headers=h["alice"])).status_code == 404
    # Another owner may use the same external id.
    assert (await create(http, h["bob"], id="bobs", externalId="E")).status_code == 201
    # A failed create (its id is taken) does not keep the external id it asked for.
    taken = await create(http, h["alice"], id="first", externalId="F")
    assert taken.status_code == 409 and taken.json()["error"]["code"] == "TASK_EXISTS"
    assert (await create(http, h["alice"], id="third", externalId="F")).status_code == 201
    # Once its task is deleted, the external id is free again.
    assert (await http.delete("/tasks/first", headers=h["alice"])).status_code == 200
    assert (await create(http, h["alice"], id="fourth", externalId="E")).status_code == 201
    found = await http.get("/tasks/by-external-id/E", headers=h["alice"])
    assert found.json()["taskId"] == "fourth"


async def test_concurrent_creates_with_one_external_id_make_one_task(world) -> None:
    _, http, h = world
    statuses: list[int] = []

    async def one(index: int) -> None:
        response = await create(http, h["alice"], id=f"race-{index}", externalId="same")
        statuses.append(response.status_code)

    async with trio.open_nursery() as nursery:
        for index in range(20):
            nursery.start_soon(one, index)
    assert sorted(statuses) == [201] + [409] * 19
    assert len(await listed(http, h["alice"])) == 1


async def test_lookup_by_external_id(world) -> None:
    _, http, h = world
    assert (await create(http, h["alice"], id="a1", externalId="ext/1 é")).status_code == 201
    assert (await create(http, h["bob"], id="b1", externalId="shared")).status_code == 201
    assert (await create(http, h["alice"], id="a2", externalId="shared")).status_code == 201

    async def lookup(external_id: str, headers: dict[str, str], **params: Any) -> httpx.Response:
        segment = quote(external_id, safe="").replace(".", "%2E")
        return await http.get(f"/tasks/by-external-id/{segment}", params=params, headers=headers)

    for headers in (h["alice"], h["reader"]):
        assert (await lookup("shared", headers)).json()["taskId"] == "a2"
    assert (await lookup("shared", h["bob"])).json()["taskId"] == "b1"
    # Another owner's external id is not found, even when asked for by owner.
    for headers, params in ((h["bob"], {}), (h["bob"], {"owner": "alice"})):
        missing = await lookup("ext/1 é", headers, **params)
        assert missing.status_code == 404
        assert missing.json()["error"]["code"] == "TASK_NOT_FOUND"
    assert (await lookup("nope", h["alice"])).status_code == 404
    # Admins: any owner's; several owners: 400 naming owner unless one is named.
    assert (await lookup("ext/1 é", h["admin"])).json()["taskId"] == "a1"
    several = await lookup("shared", h["admin"])
    assert several.status_code == 400
    assert several.json()["error"]["message"].startswith("owner:")
    assert (await lookup("shared", h["admin"], owner="bob")).json()["taskId"] == "b1"
    assert (await lookup("shared", h["admin"], owner="carol")).status_code == 404
    # An encoded slash stays in its segment; dots encoded are no dot segment; a task
    # whose id is "by-external-id" is still itself.
    assert (await lookup("ext/1 é", h["alice"])).json()["taskId"] == "a1"
    assert (await create(http, h["alice"], id="dots", externalId="..")).status_code == 201
    assert (await lookup("..", h["alice"])).json()["taskId"] == "dots"
    assert (await create(http, h["alice"], id="by-external-id")).status_code == 201
    itself = await http.get("/tasks/by-external-id", headers=h["alice"])
    assert itself.json()["taskId"] == "by-external-id"
    history = await http.get("/tasks/by-external-id/history", headers=h["alice"])
    assert history.status_code == 404  # the external id "history", not the task's history


async def test_list_filters(world) -> None:
    _, http, h = world
    alice = h["alice"]
    for index, tags in enumerate([["red"], ["red", "big"], ["big"], [], ["red", "big", "x"]]):
        assert (await create(http, alice, id=f"f{index}", tags=tags)).status_code == 201
        await trio.sleep(0.01)
    await create(http, h["bob"], id="bob-red", tags=["red"])
    created = {
        t["taskId"]: t["createdAt"]
        for t in (await http.get("/tasks", params={"limit": 100}, headers=alice)).json()["tasks"]
    }
    assert await listed(http, alice, tag="red") == ["f4", "f1", "f0"]
    assert await listed(http, alice, tag=["red", "big"]) == ["f4", "f1"]
    assert await listed(http, alice, tag=["red", "red"]) == ["f4", "f1", "f0"]
    assert await listed(http, alice, tag=["red", "none"]) == []
    assert await listed(http, h["admin"], tag="red") == ["bob-red", "f4", "f1", "f0"]
    assert await listed(http, h["admin"], tag="red", owner="bob") == ["bob-red"]
    # A bound is compared with createdAt as shown (milliseconds): a task is neither
    # after nor before its own createdAt.
    for task_id, stamp in created.items():
        assert task_id not in await listed(http, alice, createdAfter=stamp)
        assert task_id not in await listed(http, alice, createdBefore=stamp)
    # Creation time: both bounds excluded; with tags, status, q and paging.
    after, before = created["f1"], created["f4"]
    assert await listed(http, alice, createdAfter=after) == ["f4", "f3", "f2"]
    assert await listed(http, alice, createdBefore=before) == ["f3", "f2", "f1", "f0"]
    assert await listed(http, alice, createdAfter=after, createdBefore=before) == ["f3", "f2"]
    assert await listed(http, alice, createdAfter=after, tag="big") == ["f4", "f2"]
    assert await listed(http, alice, createdAfter="2000-01-01T00:00:00+02:00") == [
        "f4", "f3", "f2", "f1", "f0",
    ]  # fmt: skip
    assert await listed(http, alice, createdBefore="2000-01-01T00:00:00") == []
    await http.post("/tasks/complete", json={"taskId": "f1"}, headers=alice)
    assert await listed(http, alice, tag="red", status="success") == ["f1"]
    assert await listed(http, alice, tag="red", status="pending") == ["f4", "f0"]
    assert await listed(http, alice, tag="big", q="f4") == ["f4"]
    page = await http.get("/tasks", params={"tag": "red", "limit": 2, "page": 2}, headers=alice)
    body = page.json()
    assert [t["taskId"] for t in body["tasks"]] == ["f0"]
    assert body["pagination"] == {"total": 3, "page": 2, "limit": 2, "pages": 2}
    ranged = await http.get("/tasks", params={"createdAfter": after, "limit": 1}, headers=alice)
    assert ranged.json()["pagination"]["total"] == 3
    # A deleted task leaves the tag listing.
    await http.delete("/tasks/f4", headers=alice)
    assert await listed(http, alice, tag="red") == ["f1", "f0"]


async def test_tags_reach_watchers_and_rooms(world) -> None:
    server, http, h = world
    assert (
        await create(http, h["admin"], id="w", tags=["seen"], externalId="W")
    ).status_code == 201
    url = f"{server.ws_url}/ws/task/w"
    async with open_websocket_url(url, extra_headers=WS_HEADERS) as ws:
        snapshot = await receive(ws)
        assert snapshot["type"] == "snapshot"
        assert snapshot["task"]["tags"] == ["seen"] and snapshot["task"]["externalId"] == "W"
        await http.post(
            "/tasks/updateProgress", json={"taskId": "w", "progress": 1}, headers=h["admin"]
        )
        change = await receive(ws)
        assert change["task"]["tags"] == ["seen"]
    room = f"{server.ws_url}/rooms/user_alice/subscribe"
    async with open_websocket_url(
        room, extra_headers=[(b"X-API-Key", h["reader"]["X-API-Key"].encode())]
    ) as ws:
        with trio.fail_after(10):
            while (await http.get("/rooms/user_alice/health", headers=h["alice"])).json()[
                "connections"
            ] < 1:
                await trio.sleep(0.01)
        await create(http, h["alice"], id="r", tags=["room"], externalId="R")
        created = await receive(ws)
        assert created["type"] == "created"
        assert created["task"]["tags"] == ["room"] and created["task"]["externalId"] == "R"
    async with http.stream("GET", "/tasks/w/events", headers=h["admin"]) as stream:
        async for line in stream.aiter_lines():
            if line.startswith("data:"):
                assert '"tags":["seen"]' in line
                break


async def test_old_task_files_load_without_tags(tmp_path: Path) -> None:
    """A data directory written before tags (task file schema 2, no registry task index)."""
    with tarfile.open(OLD_LAYOUT) as tar:
        tar.extractall(tmp_path, filter="data")
    data = tmp_path / "data"
    registry = sqlite3.connect(data / "registry.sqlite")
    try:
        streams = {r[0] for r in registry.execute("SELECT stream FROM _schema_versions")}
    finally:
        registry.close()
    assert "spectral.tasks" not in streams
    async with (
        running(serve_argv(data), env=SERVE_ENV) as server,
        httpx.AsyncClient(base_url=server.url, headers=ADMIN_HEADERS, timeout=60) as http,
    ):
        old = (await http.get("/tasks/old-running")).json()
        assert old["tags"] == [] and old["externalId"] is None
        listing = (await http.get("/tasks", params={"limit": 100})).json()["tasks"]
        assert listing and all(t["tags"] == [] and "externalId" in t for t in listing)
        assert (await http.get("/tasks", params={"tag": "x"})).json()["tasks"] == []
        progress = await http.post(
            "/tasks/updateProgress", json={"taskId": "old-running", "progress": 9}
        )
        assert progress.status_code == 200 and progress.json()["task"]["tags"] == []
        made = await http.post(
            "/tasks/create", json={"id": "new", "tags": ["x"], "externalId": "N"}
        )
        assert made.status_code == 201
        assert [
            t["taskId"] for t in (await http.get("/tasks", params={"tag": "x"})).json()["tasks"]
        ] == ["new"]
        assert (await http.get("/tasks/by-external-id/N")).json()["taskId"] == "new"


async def test_listing_queries_use_indexes(tmp_path: Path) -> None:
    """EXPLAIN QUERY PLAN of each filtered listing: index searches, no scan, no sort."""
    from spectral.sql import SqliteSql
    from spectral.tasks import index
    from storage.registry import ObjectRow, Registry

    registry = Registry(tmp_path / "registry.sqlite", migrations={index.STREAM: index.MIGRATIONS})
    for n in range(50):
        summary = {"taskId": f"t{n}", "owner": "o", "tags": ["a", f"s{n % 5}"]}
        registry.stage(
            ObjectRow("task", f"t{n}", 1000.0 + n, 1000.0 + n, "o", "pending", summary=summary)
        )
    registry.flush_now()
    registry.conn.execute("ANALYZE")
    plans: list[str] = []
    real_execute = registry.conn.execute

    class Recorder:
        def execute(self, sql: str, params: Any = ()) -> Any:
            detail = real_execute(f"EXPLAIN QUERY PLAN {sql}", params).fetchall()
            plans.append(" | ".join(row[3] for row in detail))
            return real_execute(sql, params)

    class Explained(SqliteSql):
        async def run(self, fn: Any, *, write: bool = False) -> Any:
            assert not write
            return fn(Recorder())

    cases = [
        {"owner": "o", "tags": ["a"]},
        {"owner": None, "tags": ["a", "s1"]},
        {"owner": "o", "tags": ["s1"], "status": "pending", "created_after": 1001.0},
        {"owner": "o", "tags": [], "created_after": 1001.0, "created_before": 1040.0},
        {"owner": None, "tags": [], "created_before": 1040.0},
        {"owner": None, "tags": [], "status": "pending", "created_after": 1001.0},
    ]
    for case in cases:
        args: dict[str, Any] = {
            "status": None, "id_prefix": None, "created_after": None, "created_before": None,
            "limit": 20, "offset": 0, **case,
        }  # fmt: skip
        page = await index.list_tasks(Explained(registry.conn), **args)
        assert page.total >= len(page.summaries) > 0, case
    assert len(plans) >= 2 * len(cases)
    for plan in plans:
        assert ("USING" in plan and "INDEX" in plan) or "PRIMARY KEY" in plan, plan
        # A scan of the capped count's subquery (named, as PostgreSQL wants) is no table scan.
        scans = re.sub(
            r"SCAN (CONSTANT ROW|\(subquery-\d+\)|capped|[a-z0-9_]+ VIRTUAL TABLE)", "", plan
        )
        assert "SCAN" not in scans, plan
        assert "TEMP B-TREE" not in plan, plan
    registry.close()


@pytest.mark.parametrize("cap", [3, 5_000])
async def test_listing_totals_past_the_count_cap(
    tmp_path: Path, cap: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Past the cap a range's total is the kept count minus the outside: still exact."""
    from spectral.sql import SqliteSql
    from spectral.tasks import index
    from storage.registry import ObjectRow, Registry

    monkeypatch.setattr(index, "COUNT_CAP", cap)
    registry = Registry(tmp_path / "registry.sqlite", migrations={index.STREAM: index.MIGRATIONS})
    rows = []
    for n in range(40):
        tags = ["a", f"s{n % 3}"] + (["rare"] if n % 10 == 0 else [])
        status = "success" if n % 4 == 0 else "pending"
        owner = "o" if n % 5 else "p"
        summary = {"taskId": f"t{n}", "owner": owner, "tags": tags}
        rows.append((n, tags, status, owner))
        registry.stage(
            ObjectRow("task", f"t{n}", 1000.0 + n, 1000.0, owner, status, summary=summary)
        )
    registry.flush_now()
    sql = SqliteSql(registry.conn)
    for owner in (None, "o"):
        for status in (None, "pending"):
            for tags in ([], ["a"], ["rare", "a"], ["s1", "rare"]):
                for after, before in (
                    (None, None),
                    (1005.0, None),
                    (None, 1030.0),
                    (1005.0, 1030.0),
                ):
                    expected = [
                        f"t{n}"
                        for n, have, st, own in reversed(rows)
                        if (owner is None or own == owner)
                        and (status is None or st == status)
                        and set(tags) <= set(have)
                        and (after is None or 1000.0 + n >= after)
                        and (before is None or 1000.0 + n < before)
                    ]
                    page = await index.list_tasks(
                        sql, owner=owner, status=status, id_prefix=None, tags=tags,
                        created_after=after, created_before=before, limit=100, offset=0,
                    )  # fmt: skip
                    assert [s["taskId"] for s in page.summaries] == expected
                    assert page.total == len(expected), (owner, status, tags, after, before)
    registry.close()
