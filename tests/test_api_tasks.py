"""The REST task API end to end: lifecycle, answers, listing and bad input."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest
from trio_websocket import open_websocket_url

from tests.conftest import WS_HEADERS
from tests.procs import Server
from tests.wsutil import receive

TASK_FIELDS = [
    "taskId",
    "status",
    "progress",
    "metadata",
    "error",
    "owner",
    "seq",
    "epoch",
    "createdAt",
    "updatedAt",
    "startedAt",
    "completedAt",
    "failedAt",
    "canceledAt",
    "timeoutSeconds",
    "ttlSeconds",
    "tags",
    "externalId",
    "parentId",
    "childCount",
    "weight",
    "onChildFailure",
    "completeWithChildren",
    "depth",
]


async def create(client: httpx.AsyncClient, task_id: str, **fields: Any) -> dict[str, Any]:
    """Create a task and return its JSON."""
    response = await client.post("/tasks/create", json={"id": task_id, **fields})
    assert response.status_code == 201, response.text
    return response.json()["task"]


async def test_lifecycle_through_http(client: httpx.AsyncClient) -> None:
    created = await client.post(
        "/tasks/create", json={"taskId": "job-1", "metadata": {"kind": "export"}}
    )
    assert created.status_code == 201
    body = created.json()
    assert (body["success"], body["taskId"]) == (True, "job-1")
    task = body["task"]
    assert list(task) == TASK_FIELDS
    assert (task["status"], task["progress"], task["seq"]) == ("pending", 0, 1)
    assert task["metadata"] == {"kind": "export"}
    assert task["owner"] == "admin"
    assert task["createdAt"].endswith("Z") and task["startedAt"] is None

    progress = await client.post(
        "/tasks/updateProgress", json={"taskId": "job-1", "progress": 42.5, "message": "half"}
    )
    assert progress.status_code == 200
    answer = progress.json()
    assert answer["success"] is True
    assert (answer["task"]["status"], answer["task"]["progress"]) == ("in-progress", 42.5)
    assert answer["event"] == {
        "seq": 2,
        "eventType": "progress",
        "message": "half",
        "progress": 42.5,
        "metadata": None,
        "timestamp": answer["task"]["updatedAt"],
    }
    assert [e["seq"] for e in answer["latestHistory"]] == [2, 1]  # newest first

    event = await client.post(
        "/tasks/addEvent",
        json={
            "taskId": "job-1",
            "event": {"type": "log", "message": "step 2", "metadata": {"n": 2}},
        },
    )
    assert event.status_code == 200
    assert event.json()["event"]["eventType"] == "log"
    assert event.json()["task"]["metadata"] == {"kind": "export", "n": 2}

    done = await client.post("/tasks/complete", json={"taskId": "job-1"})
    assert done.status_code == 200
    finished = done.json()["task"]
    assert (finished["status"], finished["progress"], finished["seq"]) == ("success", 100, 4)
    assert finished["completedAt"] is not None

    again = await client.post("/tasks/updateProgress", json={"taskId": "job-1", "progress": 5})
    assert again.status_code == 409
    assert again.json()["error"]["code"] == "TASK_TERMINAL"

    got = await client.get("/tasks/job-1")
    assert got.status_code == 200
    assert got.json() == finished

    history = (await client.get("/tasks/job-1/history")).json()
    assert [e["eventType"] for e in history["events"]] == ["created", "progress", "log", "success"]
    assert history["nextAfter"] is None


async def test_fail_and_cancel(client: httpx.AsyncClient) -> None:
    await create(client, "f1", status="in-progress")
    failed = await client.post("/tasks/fail", json={"taskId": "f1", "error": "disk full"})
    assert failed.status_code == 200
    task = failed.json()["task"]
    assert (task["status"], task["error"]) == ("failed", "disk full")
    assert failed.json()["event"]["eventType"] == "error"

    await create(client, "c1")
    canceled = await client.post("/tasks/cancel", json={"taskId": "c1", "metadata": {"by": "me"}})
    assert canceled.status_code == 200
    assert canceled.json()["task"]["status"] == "canceled"
    assert canceled.json()["task"]["canceledAt"] is not None
    refused = await client.post("/tasks/fail", json={"taskId": "c1", "error": "late"})
    assert refused.status_code == 409


async def test_create_twice_is_409_and_keeps_the_first(client: httpx.AsyncClient) -> None:
    first = await create(client, "dup", metadata={"v": 1})
    again = await client.post("/tasks/create", json={"id": "dup", "metadata": {"v": 2}})
    assert again.status_code == 409
    assert again.json()["error"]["code"] == "TASK_EXISTS"
    assert (await client.get("/tasks/dup")).json()["epoch"] == first["epoch"]


async def test_history_pages_oldest_first(client: httpx.AsyncClient) -> None:
    await create(client, "h1")
    for step in range(1, 26):
        await client.post("/tasks/updateProgress", json={"taskId": "h1", "progress": step})
    seen: list[int] = []
    after = 0
    while True:
        page = (await client.get("/tasks/h1/history", params={"limit": 10, "after": after})).json()
        seen += [event["seq"] for event in page["events"]]
        if page["nextAfter"] is None:
            break
        after = page["nextAfter"]
    assert seen == list(range(1, 27))


async def test_batch_update_progress_item_by_item(client: httpx.AsyncClient) -> None:
    for name in ("b1", "b2"):
        await create(client, name)
    await client.post("/tasks/complete", json={"taskId": "b2"})
    response = await client.post(
        "/tasks/batchUpdateProgress",
        json={
            "updates": [
                {"taskId": "b1", "progress": 10},
                {"taskId": "b2", "progress": 20},
                {"taskId": "missing", "progress": 30},
                {"taskId": "b1", "progress": "lots"},
                {"progress": 5},
            ]
        },
    )
    assert response.status_code == 200
    results = response.json()["results"]
    assert [r["ok"] for r in results] == [True, False, False, False, False]
    assert results[0]["task"]["progress"] == 10
    assert [r["error"]["code"] for r in results[1:]] == [
        "TASK_TERMINAL",
        "TASK_NOT_FOUND",
        "VALIDATION_ERROR",
        "VALIDATION_ERROR",
    ]
    assert results[3]["error"]["message"].startswith("updates.3.progress")
    assert results[4]["taskId"] is None


async def test_batch_applies_one_tasks_items_in_order(
    client: httpx.AsyncClient, server: Server
) -> None:
    # 100 items per task, interleaved across 5 tasks, plus refused items in between.
    names = [f"order-{n}" for n in range(5)]
    for name in names:
        await create(client, name)
    updates: list[dict[str, Any]] = []
    for step in range(100):
        for name in names:
            updates.append({"taskId": name, "progress": step, "message": f"step {step}"})
        if step == 50:
            updates.append({"taskId": names[0], "progress": 101})  # refused, the rest go on
    async with open_websocket_url(
        f"{server.ws_url}/ws/task/{names[0]}", extra_headers=WS_HEADERS
    ) as ws:
        assert (await receive(ws))["type"] == "snapshot"
        response = await client.post("/tasks/batchUpdateProgress", json={"updates": updates})
        assert response.status_code == 200
        results = response.json()["results"]
        assert len(results) == len(updates)
        seen = [(await receive(ws))["task"]["progress"] for _ in range(100)]
    assert seen == list(range(100))
    assert [r["ok"] for r in results].count(False) == 1
    # Each answer is the task as it was right after its own item.
    ok = [(u, r) for u, r in zip(updates, results, strict=True) if r["ok"]]
    assert all(r["task"]["progress"] == u["progress"] for u, r in ok)
    for name in names:
        task = (await client.get(f"/tasks/{name}")).json()
        assert (task["progress"], task["seq"]) == (99, 101)
        history = (await client.get(f"/tasks/{name}/history", params={"limit": 200})).json()
        assert [e["progress"] for e in history["events"][1:]] == list(range(100))


async def test_delete_removes_the_task_and_its_file(client: httpx.AsyncClient, server) -> None:
    await create(client, "gone")
    data_dir = server_data_dir(server)
    files = list((data_dir / "objects" / "task").rglob("*.sqlite"))
    assert len(files) == 1
    deleted = await client.delete("/tasks/gone")
    assert deleted.status_code == 200
    assert deleted.json() == {"success": True}
    assert (await client.get("/tasks/gone")).status_code == 404
    assert (await client.delete("/tasks/gone")).status_code == 404
    assert not any(f.exists() for f in files)  # removed before the answer
    listed = (await client.get("/tasks")).json()
    assert listed["pagination"]["total"] == 0
    # The id can be used again, with a new epoch.
    await create(client, "gone")


def server_data_dir(server):
    """The data directory the server fixture was started with."""
    from pathlib import Path

    argv = server.process.args
    return Path(argv[argv.index("--data-dir") + 1])


async def test_listing_newest_first_with_filters(client: httpx.AsyncClient) -> None:
    for index in range(30):
        await create(client, f"list-{index:02d}")
    for index in range(0, 30, 3):
        await client.post("/tasks/complete", json={"taskId": f"list-{index:02d}"})
    await create(client, "other-1")

    page = (await client.get("/tasks", params={"limit": 10})).json()
    assert page["count"] == 10
    assert page["pagination"] == {"total": 31, "page": 1, "limit": 10, "pages": 4}
    assert [t["taskId"] for t in page["tasks"][:3]] == ["other-1", "list-29", "list-28"]

    done = (await client.get("/tasks", params={"status": "success", "limit": 100})).json()
    assert done["pagination"]["total"] == 10
    assert all(t["status"] == "success" for t in done["tasks"])

    prefixed = (await client.get("/tasks", params={"q": "other"})).json()
    assert [t["taskId"] for t in prefixed["tasks"]] == ["other-1"]

    last = (await client.get("/tasks", params={"page": 4, "limit": 10})).json()
    assert last["count"] == 1
    beyond = (await client.get("/tasks", params={"page": 9, "limit": 10})).json()
    assert beyond["tasks"] == [] and beyond["pagination"]["total"] == 31


BIG_METADATA = {"blob": "x" * (64 * 1024)}
Z = "\x00"

# (method, path, body or None, expected status, field the message must name)
BAD_REQUESTS: list[tuple[str, str, Any, int, str]] = [
    ("POST", "/tasks/create", "{not json", 400, "JSON"),
    ("POST", "/tasks/create", "[1, 2]", 400, "body"),
    ("POST", "/tasks/create", "", 400, "JSON"),
    ("POST", "/tasks/create", {}, 400, "taskId"),
    ("POST", "/tasks/create", {"id": "a/b"}, 400, "id"),
    ("POST", "/tasks/create", {"id": "..."}, 400, "id"),
    ("POST", "/tasks/create", {"id": "x" * 129}, 400, "id"),
    ("POST", "/tasks/create", {"id": "tâche"}, 400, "id"),
    ("POST", "/tasks/create", {"id": 12}, 400, "id"),
    ("POST", "/tasks/create", {"id": "ok", "status": "success"}, 400, "status"),
    ("POST", "/tasks/create", {"id": "ok", "status": "paused"}, 400, "status"),
    ("POST", "/tasks/create", {"id": "ok", "progress": 101}, 400, "progress"),
    ("POST", "/tasks/create", '{"id": "ok", "progress": NaN}', 400, "progress"),
    ("POST", "/tasks/create", '{"id": "ok", "progress": Infinity}', 400, "progress"),
    ("POST", "/tasks/create", {"id": "ok", "metadata": [1]}, 400, "metadata"),
    ("POST", "/tasks/create", {"id": "ok", "metadata": BIG_METADATA}, 400, "metadata"),
    ("POST", "/tasks/create", '{"id": "ok", "metadata": {"a": NaN}}', 400, "metadata"),
    ("POST", "/tasks/create", {"id": "ok", "timeoutSeconds": -1}, 400, "timeoutSeconds"),
    ("POST", "/tasks/create", {"id": "ok", "ttlSeconds": "1"}, 400, "ttlSeconds"),
    ("POST", "/tasks/updateProgress", {"taskId": "t", "progress": "50"}, 400, "progress"),
    ("POST", "/tasks/updateProgress", {"taskId": "t", "progress": True}, 400, "progress"),
    ("POST", "/tasks/updateProgress", {"taskId": "t", "progress": -0.5}, 400, "progress"),
    ("POST", "/tasks/updateProgress", {"taskId": "t"}, 400, "progress"),
    ("POST", "/tasks/updateProgress", {"taskId": "t", "progress": 1, "message": 5}, 400, "message"),
    ("POST", "/tasks/addEvent", {"taskId": "t"}, 400, "event"),
    ("POST", "/tasks/addEvent", {"taskId": "t", "event": {"message": "m"}}, 400, "eventType"),
    (
        "POST",
        "/tasks/addEvent",
        {"taskId": "t", "event": {"eventType": "success", "message": "m"}},
        400,
        "eventType",
    ),
    ("POST", "/tasks/complete", {"taskId": ""}, 400, "taskId"),
    ("POST", "/tasks/fail", {"taskId": "t"}, 400, "error"),
    ("POST", "/tasks/fail", {"taskId": "t", "error": ""}, 400, "error"),
    ("POST", "/tasks/cancel", {"taskId": "t", "metadata": "x"}, 400, "metadata"),
    ("POST", "/tasks/batchUpdateProgress", {"updates": []}, 400, "updates"),
    ("POST", "/tasks/batchUpdateProgress", {"updates": "x"}, 400, "updates"),
    (
        "POST",
        "/tasks/batchUpdateProgress",
        {"updates": [{"taskId": "t", "progress": 1}] * 1001},
        400,
        "updates",
    ),
    ("GET", "/tasks/bad%20id", None, 400, "taskId"),
    ("GET", "/tasks/t/history?limit=0", None, 400, "limit"),
    ("GET", "/tasks/t/history?after=-1", None, 400, "after"),
    # Beyond SQLite's 64-bit integers (found by schemathesis: it was a 500).
    ("GET", "/tasks/t/history?after=265434239136218714692790022832128", None, 400, "after"),
    ("GET", "/tasks/t/events?since=9223372036854775808", None, 400, "since"),
    ("GET", "/tasks/t/history?limit=abc", None, 400, "limit"),
    ("GET", "/tasks?status=paused", None, 400, "status"),
    ("GET", "/tasks?page=0", None, 400, "page"),
    ("GET", "/tasks?limit=1000", None, 400, "limit"),
    ("DELETE", "/tasks/%2E%2E", None, 400, "taskId"),
    ("GET", "/tasks/t/events?since=x", None, 400, "since"),
    # NUL (U+0000): PostgreSQL text cannot hold it, so no request string may (both modes).
    ("POST", "/tasks/create", {"id": "n", "metadata": {"k": "a" + Z}}, 400, "metadata.k"),
    ("POST", "/tasks/create", {"id": "n", "metadata": {"k" + Z: 1}}, 400, "metadata.k"),
    ("POST", "/tasks/create", {"id": "n", "metadata": {"k": [Z]}}, 400, "metadata.k.0"),
    ("POST", "/tasks/create", {"id": "n" + Z}, 400, "id"),
    ("POST", "/tasks/create", {"id": "n", "tags": ["a" + Z]}, 400, "tags.0"),
    ("POST", "/tasks/create", {"id": "n", "externalId": "e" + Z}, 400, "externalId"),
    ("POST", "/tasks/create", {"id": "n", "phases": [{"id": "p", "name": Z}]}, 400, "phases.0"),
    ("POST", "/tasks/updateProgress", {"taskId": "t", "progress": 1, "message": Z}, 400, "message"),
    (
        "POST",
        "/tasks/updateProgress",
        {"taskId": "t", "progress": 1, "metadata": {Z: 1}},
        400,
        "metadata",
    ),
    (
        "POST",
        "/tasks/addEvent",
        {"taskId": "t", "event": {"type": "log", "message": Z}},
        400,
        "event.message",
    ),
    ("POST", "/tasks/fail", {"taskId": "t", "error": "e" + Z}, 400, "error"),
    ("POST", "/tasks/complete", {"taskId": "t", "metadata": {"r": {"x": Z}}}, 400, "metadata.r.x"),
    (
        "POST",
        "/tasks/batchUpdateProgress",
        {"updates": [{"taskId": "t", "progress": 1, "message": Z}]},
        400,
        "updates.0.message",
    ),
    ("GET", "/tasks?owner=a%00", None, 400, "owner"),
    ("GET", "/tasks?q=a%00", None, 400, "q"),
    ("GET", "/tasks?tag=a%00", None, 400, "tag.0"),
    ("GET", "/tasks/by-external-id/a%00b", None, 400, "externalId"),
    ("GET", "/tasks/t/events?epoch=%00", None, 400, "epoch"),
]


async def test_bad_input_gets_400_naming_the_field_and_the_server_is_unharmed(
    client: httpx.AsyncClient,
) -> None:
    await create(client, "t")
    for method, path, body, status, field in BAD_REQUESTS:
        content = body if isinstance(body, str) else None if body is None else json.dumps(body)
        response = await client.request(method, path, content=content)
        assert response.status_code == status, (method, path, body, response.text)
        error = response.json()["error"]
        assert field in error["message"], (path, body, error)
        assert error["code"] in {"VALIDATION_ERROR", "INVALID_JSON"}, error
    task = (await client.get("/tasks/t")).json()
    assert (task["seq"], task["status"]) == (1, "pending")  # nothing was half-applied
    assert (await client.get("/health")).json()["status"] == "healthy"


async def test_body_over_one_mebibyte_is_413(client: httpx.AsyncClient) -> None:
    body = json.dumps({"id": "big", "metadata": {"x": "y" * (1024 * 1024 + 10)}})
    response = await client.post("/tasks/create", content=body)
    assert response.status_code == 413
    assert response.json()["error"]["code"] == "PAYLOAD_TOO_LARGE"
    assert (await client.get("/tasks/big")).status_code == 404


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("GET", "/tasks/nobody", None),
        ("GET", "/tasks/nobody/history", None),
        ("DELETE", "/tasks/nobody", None),
        ("POST", "/tasks/updateProgress", {"taskId": "nobody", "progress": 1}),
        ("POST", "/tasks/addEvent", {"taskId": "nobody", "event": {"type": "log", "message": "m"}}),
        ("POST", "/tasks/complete", {"taskId": "nobody"}),
        ("POST", "/tasks/fail", {"taskId": "nobody", "error": "e"}),
        ("POST", "/tasks/cancel", {"taskId": "nobody"}),
        ("GET", "/tasks/nobody/events", None),
    ],
)
async def test_unknown_task_is_404_everywhere(
    client: httpx.AsyncClient, method: str, path: str, body: Any
) -> None:
    response = await client.request(method, path, json=body)
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "TASK_NOT_FOUND"
