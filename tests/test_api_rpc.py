"""/rpc end to end with plain HTTP: oRPC framing, Dates, errors, bad input.

Also the original's REST form of the procedures that have no body endpoint of their own
(``POST /tasks/getById``, ``/tasks/getHistory``, ``/tasks/listAll``, ``/tasks/delete``).
The real JavaScript client is in test_rpc_orpc_client.py.
"""

from __future__ import annotations

import json
from typing import Any

import httpx

from tests.conftest import ADMIN_HEADERS

ERROR_KEYS = {"defined", "code", "status", "message", "data"}
TASK_DATES = ["createdAt", "updatedAt", "startedAt", "completedAt", "failedAt", "canceledAt"]


async def rpc(
    client: httpx.AsyncClient, procedure: str, value: Any = None, **kwargs: Any
) -> httpx.Response:
    """POST ``{"json": value}`` to /rpc/tasks/{procedure}."""
    body = {} if value is None else {"json": value}
    return await client.post(f"/rpc/tasks/{procedure}", json=body, **kwargs)


async def ok(client: httpx.AsyncClient, procedure: str, value: Any = None) -> dict[str, Any]:
    """Call and return the envelope of a 200."""
    response = await rpc(client, procedure, value)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("application/json")
    envelope = response.json()
    assert set(envelope) <= {"json", "meta"}, envelope
    return envelope


def orpc_error(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    """Check an oRPC error answer and return its error JSON."""
    assert response.status_code == status, response.text
    envelope = response.json()
    assert list(envelope) == ["json"], envelope  # an error carries no dates: no meta
    error = envelope["json"]
    assert set(error) <= ERROR_KEYS and set(error) >= ERROR_KEYS - {"data"}, error
    assert (error["defined"], error["code"], error["status"]) == (False, code, status), error
    assert isinstance(error["message"], str) and error["message"]
    return error


def dated(meta: list[list[Any]]) -> list[tuple[Any, ...]]:
    """The paths meta marks as Dates (and nothing but Dates)."""
    assert all(entry[0] == 1 for entry in meta), meta
    return [tuple(entry[1:]) for entry in meta]


async def test_create_and_get_by_id_framing(client: httpx.AsyncClient) -> None:
    created = await ok(client, "create", {"taskId": "r1", "metadata": {"createdAt": "mine"}})
    assert created == {"json": {"success": True, "taskId": "r1"}}  # no dates: no meta

    got = await ok(client, "getById", {"taskId": "r1"})
    task = got["json"]
    assert (task["taskId"], task["status"], task["seq"]) == ("r1", "pending", 1)
    # Only the non-null timestamps are Dates; the metadata's own "createdAt" is not one.
    assert dated(got["meta"]) == [("createdAt",), ("updatedAt",)]
    assert task["createdAt"].endswith("Z") and task["startedAt"] is None
    assert task["metadata"] == {"createdAt": "mine"}

    rest = (await client.get("/tasks/r1")).json()
    assert task == rest


async def test_mutations_answer_task_and_latest_history(client: httpx.AsyncClient) -> None:
    await ok(client, "create", {"taskId": "m1"})
    progress = await ok(client, "updateProgress", {"taskId": "m1", "progress": 30})
    answer = progress["json"]
    assert list(answer) == ["task", "latestHistory"]
    assert [e["seq"] for e in answer["latestHistory"]] == [2, 1]  # newest first
    assert dated(progress["meta"]) == [
        ("task", "createdAt"),
        ("task", "updatedAt"),
        ("task", "startedAt"),
        ("latestHistory", 0, "timestamp"),
        ("latestHistory", 1, "timestamp"),
    ]

    event = await ok(
        client, "addEvent", {"taskId": "m1", "event": {"eventType": "log", "message": "hi"}}
    )
    assert event["json"]["latestHistory"][0]["eventType"] == "log"

    done = await ok(client, "complete", {"taskId": "m1"})
    assert done["json"]["task"]["status"] == "success"
    assert ("task", "completedAt") in dated(done["meta"])

    await ok(client, "create", {"taskId": "m2", "status": "in-progress"})
    failed = await ok(client, "fail", {"taskId": "m2", "error": "boom"})
    assert (failed["json"]["task"]["status"], failed["json"]["task"]["error"]) == ("failed", "boom")
    assert ("task", "failedAt") in dated(failed["meta"])

    await ok(client, "create", {"taskId": "m3"})
    canceled = await ok(client, "cancel", {"taskId": "m3"})
    assert ("task", "canceledAt") in dated(canceled["meta"])


async def test_get_history_is_newest_first_with_a_limit(client: httpx.AsyncClient) -> None:
    await ok(client, "create", {"taskId": "h1"})
    for step in range(1, 61):
        await client.post("/tasks/updateProgress", json={"taskId": "h1", "progress": step})
    default = await ok(client, "getHistory", {"taskId": "h1"})
    assert [e["seq"] for e in default["json"]] == list(range(61, 11, -1))  # 50 by default
    assert dated(default["meta"]) == [(i, "timestamp") for i in range(50)]
    most = await ok(client, "getHistory", {"taskId": "h1", "limit": 100})
    assert [e["seq"] for e in most["json"]] == list(range(61, 0, -1))
    assert most["json"][-1]["eventType"] == "created"
    two = await ok(client, "getHistory", {"taskId": "h1", "limit": 2})
    assert [e["seq"] for e in two["json"]] == [61, 60]


async def test_list_all_and_delete(client: httpx.AsyncClient) -> None:
    for name in ("l1", "l2", "l3"):
        await ok(client, "create", {"taskId": name})
    await ok(client, "complete", {"taskId": "l2"})
    listing = await ok(client, "listAll")
    body = listing["json"]
    assert body["count"] == 3
    assert [t["taskId"] for t in body["tasks"]] == ["l3", "l2", "l1"]
    assert body["tasks"][1] == {
        "taskId": "l2",
        "createdAt": body["tasks"][1]["createdAt"],
        "createdBy": "admin",
        "status": "success",
        "progress": 100,
    }
    assert dated(listing["meta"]) == [("tasks", i, "createdAt") for i in range(3)]
    done = await ok(client, "listAll", {"status": "success"})
    assert [t["taskId"] for t in done["json"]["tasks"]] == ["l2"]
    paged = await ok(client, "listAll", {"limit": 2, "page": 2})
    assert [t["taskId"] for t in paged["json"]["tasks"]] == ["l1"]

    deleted = await ok(client, "delete", {"taskId": "l1"})
    assert deleted == {"json": {"success": True, "taskId": "l1"}}
    error = orpc_error(await rpc(client, "getById", {"taskId": "l1"}), 404, "NOT_FOUND")
    assert error["data"] == {"code": "TASK_NOT_FOUND"}
    assert "l1" in error["message"]
    empty = await ok(client, "listAll", {"q": "nothing-here"})
    assert empty == {"json": {"tasks": [], "count": 0}}


async def test_batch_update_progress_results(client: httpx.AsyncClient) -> None:
    await ok(client, "create", {"taskId": "b1"})
    batch = await ok(
        client,
        "batchUpdateProgress",
        {"updates": [{"taskId": "b1", "progress": 5}, {"taskId": "nobody", "progress": 5}]},
    )
    results = batch["json"]["results"]
    assert [r["ok"] for r in results] == [True, False]
    assert results[1]["error"]["code"] == "TASK_NOT_FOUND"
    assert dated(batch["meta"]) == [
        ("results", 0, "task", "createdAt"),
        ("results", 0, "task", "updatedAt"),
        ("results", 0, "task", "startedAt"),
    ]


async def test_state_conflicts_keep_our_code_in_data(client: httpx.AsyncClient) -> None:
    await ok(client, "create", {"taskId": "c1"})
    exists = orpc_error(await rpc(client, "create", {"taskId": "c1"}), 409, "CONFLICT")
    assert exists["data"] == {"code": "TASK_EXISTS"}
    await ok(client, "cancel", {"taskId": "c1"})
    terminal = await rpc(client, "updateProgress", {"taskId": "c1", "progress": 1})
    assert orpc_error(terminal, 409, "CONFLICT")["data"]["code"] == "TASK_TERMINAL"


UNKNOWN_PATHS = [
    "/rpc/tasks/nope",
    "/rpc/tasks",
    "/rpc",
    "/rpc/",
    "/rpc/other/create",
    "/rpc/tasks/create/more",
    "/rpc/tasks%2Fcreate",  # oRPC matches the path as sent, each segment encoded
    "/rpc/TASKS/create",
]


async def test_unknown_procedure_is_an_orpc_404(client: httpx.AsyncClient) -> None:
    for path in UNKNOWN_PATHS:
        response = await client.post(path, json={"json": {"taskId": "x"}})
        error = orpc_error(response, 404, "NOT_FOUND")
        assert error["data"] == {"code": "NOT_FOUND"}, path
    assert (await client.get("/tasks/x")).status_code == 404


async def test_one_trailing_slash_is_ignored_as_orpc_does(client: httpx.AsyncClient) -> None:
    response = await client.post("/rpc/tasks/create/", json={"json": {"taskId": "slash"}})
    assert response.status_code == 200, response.text


async def test_get_for_reads_405_for_the_rest(client: httpx.AsyncClient) -> None:
    await ok(client, "create", {"taskId": "g1"})
    data = json.dumps({"json": {"taskId": "g1"}})
    got = await client.get("/rpc/tasks/getById", params=[("data", "{}"), ("data", data)])
    assert got.status_code == 200, got.text  # the last data parameter wins
    assert got.json()["json"]["taskId"] == "g1"
    history = await client.get("/rpc/tasks/getHistory", params={"data": data})
    assert [e["seq"] for e in history.json()["json"]] == [1]
    assert (await client.get("/rpc/tasks/listAll")).json()["json"]["count"] == 1
    missing = await client.get("/rpc/tasks/getById")
    assert "taskId" in orpc_error(missing, 400, "BAD_REQUEST")["message"]

    refused = await client.get("/rpc/tasks/complete", params={"data": data})
    error = orpc_error(refused, 405, "METHOD_NOT_SUPPORTED")
    assert error["data"] == {"code": "METHOD_NOT_SUPPORTED"}
    put = await client.put("/rpc/tasks/getById", json={"json": {"taskId": "g1"}})
    orpc_error(put, 405, "METHOD_NOT_SUPPORTED")
    task = (await client.get("/tasks/g1")).json()
    assert task["status"] == "pending"  # the refused GET changed nothing


async def test_input_meta_is_applied(client: httpx.AsyncClient) -> None:
    body = {
        "json": {
            "taskId": "meta1",
            "progress": "7",
            "metadata": {
                "when": "2026-01-02T03:04:05.678Z",
                "tags": ["a", "a"],
                "pairs": [["k", 1]],
                "holes": [None, 2],
                "big": "123456789012345678901234567890",
                "link": "https://example.invalid/x",
            },
        },
        "meta": [
            [0, "progress"],
            [1, "metadata", "when"],
            [6, "metadata", "tags"],
            [7, "metadata", "pairs"],
            [3, "metadata", "holes", 0],
            [0, "metadata", "big"],
            [4, "metadata", "link"],
            [99, "metadata", "tags"],  # an unknown (custom) type is left alone
        ],
    }
    response = await client.post("/rpc/tasks/create", json=body)
    assert response.status_code == 200, response.text
    task = (await client.get("/tasks/meta1")).json()
    assert task["progress"] == 7
    assert task["metadata"] == {
        "when": "2026-01-02T03:04:05.678Z",
        "tags": ["a", "a"],
        "pairs": {"k": 1},
        "holes": [None, 2],
        "big": 123456789012345678901234567890,
        "link": "https://example.invalid/x",
    }
    nan = {"json": {"taskId": "meta1", "progress": None}, "meta": [[2, "progress"]]}
    refused = await client.post("/rpc/tasks/updateProgress", json=nan)
    assert orpc_error(refused, 400, "BAD_REQUEST")["message"].startswith("progress")


MALFORMED: list[tuple[bytes, str]] = [
    (b"{not json", "not JSON"),
    (b"[1, 2]", "JSON object"),
    (b"null", "JSON object"),
    (b'{"json": {"taskId": "x", "progress": NaN}}', "not JSON"),
    (b'{"json": {"taskId": "x"}, "meta": {}}', "meta"),
    (b'{"json": {"taskId": "x"}, "meta": [[1, "nope"]]}', "does not exist"),
    (b'{"json": {"taskId": "x"}, "meta": [["1", "taskId"]]}', "meta entry"),
    (b'{"json": {"taskId": "x"}, "meta": [[]]}', "meta entry"),
    (b'{"json": {"taskId": "x"}, "meta": [[0, "taskId"]]}', "bigint"),
    (b'{"json": {"taskId": "x", "progress": 5}, "meta": [[2, "progress"]]}', "nan"),
    (b'{"json": [1], "meta": [[1, 5]]}', "does not exist"),
    (b"\xff\xfe", "not JSON"),
    (b"[" * 100_000 + b"]" * 100_000, "not JSON"),
]


async def test_malformed_framing_is_400_bad_request(client: httpx.AsyncClient) -> None:
    for body, words in MALFORMED:
        response = await client.post(
            "/rpc/tasks/updateProgress",
            content=body,
            headers={"content-type": "application/json"},
        )
        error = orpc_error(response, 400, "BAD_REQUEST")
        assert error["data"] == {"code": "MALFORMED_REQUEST"}, body[:80]
        assert words in error["message"], (body[:80], error["message"])


async def test_other_content_types_are_415(client: httpx.AsyncClient) -> None:
    for content_type in ("text/plain", "application/x-www-form-urlencoded", "multipart/form-data"):
        response = await client.post(
            "/rpc/tasks/create",
            content=b'{"json": {"taskId": "ct"}}',
            headers={"content-type": content_type},
        )
        orpc_error(response, 415, "UNSUPPORTED_MEDIA_TYPE")
    assert (await client.get("/tasks/ct")).status_code == 404
    charset = await client.post(
        "/rpc/tasks/create",
        content=b'{"json": {"taskId": "ct"}}',
        headers={"content-type": "application/json; charset=utf-8"},
    )
    assert charset.status_code == 200, charset.text


BIG = {"blob": "x" * (64 * 1024)}

# (procedure, input, field the message must name)
BAD_INPUTS: list[tuple[str, Any, str]] = [
    ("create", None, "taskId"),
    ("create", {"taskId": "a/b"}, "taskId"),
    ("create", {"taskId": "..."}, "taskId"),
    ("create", {"taskId": 12}, "taskId"),
    ("create", {"taskId": "ok", "status": "success"}, "status"),
    ("create", {"taskId": "ok", "progress": 101}, "progress"),
    ("create", {"taskId": "ok", "metadata": [1]}, "metadata"),
    ("create", {"taskId": "ok", "metadata": BIG}, "metadata"),
    ("create", {"taskId": "ok", "timeoutSeconds": -1}, "timeoutSeconds"),
    ("create", [1], "body"),
    ("getById", None, "taskId"),
    ("getById", {"taskId": "bad id"}, "taskId"),
    ("updateProgress", {"taskId": "t", "progress": "50"}, "progress"),
    ("updateProgress", {"taskId": "t", "progress": True}, "progress"),
    ("updateProgress", {"taskId": "t"}, "progress"),
    ("updateProgress", {"taskId": "t", "progress": 1, "message": 5}, "message"),
    ("addEvent", {"taskId": "t"}, "event"),
    ("addEvent", {"taskId": "t", "event": {"message": "m"}}, "eventType"),
    ("addEvent", {"taskId": "t", "event": {"eventType": "success", "message": "m"}}, "eventType"),
    ("complete", {"taskId": ""}, "taskId"),
    ("complete", {"taskId": "t", "metadata": "x"}, "metadata"),
    ("fail", {"taskId": "t"}, "error"),
    ("fail", {"taskId": "t", "error": ""}, "error"),
    ("cancel", {"taskId": "t", "metadata": 1}, "metadata"),
    ("getHistory", {"taskId": "t", "limit": 0}, "limit"),
    ("getHistory", {"taskId": "t", "limit": 101}, "limit"),
    ("getHistory", {"taskId": "t", "limit": "5"}, "limit"),
    ("getHistory", {}, "taskId"),
    ("listAll", {"status": "paused"}, "status"),
    ("listAll", {"limit": 101}, "limit"),
    ("listAll", {"page": 0}, "page"),
    ("listAll", {"q": 5}, "q"),
    ("delete", {}, "taskId"),
    ("delete", {"taskId": "x" * 129}, "taskId"),
    ("batchUpdateProgress", {"updates": []}, "updates"),
    ("batchUpdateProgress", {"updates": "x"}, "updates"),
    ("batchUpdateProgress", {"updates": [{"taskId": "t", "progress": 1}] * 1001}, "updates"),
    # NUL (U+0000) in any string, as over REST.
    ("create", {"taskId": "n", "metadata": {"k": ["\x00"]}}, "metadata.k.0"),
    ("updateProgress", {"taskId": "t", "progress": 1, "message": "\x00"}, "message"),
    ("fail", {"taskId": "t", "error": "\x00"}, "error"),
    ("listAll", {"q": "a\x00"}, "q"),
]


async def test_bad_input_is_400_naming_the_field_and_harms_nothing(
    client: httpx.AsyncClient,
) -> None:
    await ok(client, "create", {"taskId": "t"})
    for procedure, value, field in BAD_INPUTS:
        response = await rpc(client, procedure, value)
        error = orpc_error(response, 400, "BAD_REQUEST")
        assert field in error["message"], (procedure, value, error)
        assert error["data"]["code"] == "VALIDATION_ERROR", error
        assert error["data"]["details"], error
    task = (await client.get("/tasks/t")).json()
    assert (task["seq"], task["status"]) == (1, "pending")
    assert (await client.get("/health")).json()["status"] == "healthy"


async def test_a_body_over_one_mebibyte_is_an_orpc_413(client: httpx.AsyncClient) -> None:
    body = json.dumps({"json": {"taskId": "big", "metadata": {"x": "y" * (1024 * 1024)}}})
    response = await client.post(
        "/rpc/tasks/create", content=body, headers={"content-type": "application/json"}
    )
    orpc_error(response, 413, "PAYLOAD_TOO_LARGE")
    assert response.headers["connection"] == "close"


async def test_authentication_and_roles_answer_orpc_errors(client: httpx.AsyncClient) -> None:
    anonymous = await client.post(
        "/rpc/tasks/listAll", json={}, headers={"X-API-Key": "", "Authorization": ""}
    )
    orpc_error(anonymous, 401, "UNAUTHORIZED")
    await ok(client, "create", {"taskId": "admins"})
    keys = {}
    for role in ("service", "reader"):
        made = await client.post("/admin/keys", json={"owner": "acme", "role": role})
        assert made.status_code == 201, made.text
        keys[role] = {"X-API-Key": made.json()["key"]}

    created = await rpc(client, "create", {"taskId": "acme-1"}, headers=keys["service"])
    assert created.status_code == 200, created.text
    hidden = await rpc(client, "getById", {"taskId": "admins"}, headers=keys["service"])
    orpc_error(hidden, 404, "NOT_FOUND")
    mine = await rpc(client, "listAll", {}, headers=keys["reader"])
    assert [t["taskId"] for t in mine.json()["json"]["tasks"]] == ["acme-1"]
    refused = await rpc(client, "create", {"taskId": "acme-2"}, headers=keys["reader"])
    assert orpc_error(refused, 403, "FORBIDDEN")["data"] == {"code": "FORBIDDEN"}
    everything = await rpc(client, "listAll", {}, headers=ADMIN_HEADERS)
    assert everything.json()["json"]["count"] == 2


# -- the original's REST form ------------------------------------------------------------


async def test_rest_form_of_the_rpc_procedures(client: httpx.AsyncClient) -> None:
    await client.post("/tasks/create", json={"id": "p1"})
    await client.post("/tasks/updateProgress", json={"taskId": "p1", "progress": 10})

    got = await client.post("/tasks/getById", json={"taskId": "p1"})
    assert got.status_code == 200
    assert got.json() == (await client.get("/tasks/p1")).json()
    assert got.json()["createdAt"].endswith("Z")  # plain JSON: ISO strings

    history = await client.post("/tasks/getHistory", json={"taskId": "p1", "limit": 1})
    assert history.status_code == 200
    assert [(e["seq"], e["eventType"]) for e in history.json()] == [(2, "progress")]

    listing = await client.post("/tasks/listAll", content=b"")  # no body: every default
    assert listing.status_code == 200
    assert listing.json() == {
        "tasks": [
            {
                "taskId": "p1",
                "createdAt": got.json()["createdAt"],
                "createdBy": "admin",
                "status": "in-progress",
                "progress": 10,
            }
        ],
        "count": 1,
    }

    deleted = await client.post("/tasks/delete", json={"taskId": "p1"})
    assert deleted.status_code == 200
    assert deleted.json() == {"success": True, "taskId": "p1"}
    gone = await client.post("/tasks/getById", json={"taskId": "p1"})
    assert gone.status_code == 404
    assert gone.json()["error"]["code"] == "TASK_NOT_FOUND"


async def test_rest_form_names_do_not_shadow_task_ids(client: httpx.AsyncClient) -> None:
    for name in ("getById", "delete", "listAll"):
        assert (await client.post("/tasks/create", json={"id": name})).status_code == 201
        assert (await client.get(f"/tasks/{name}")).json()["taskId"] == name
    assert (await client.delete("/tasks/delete")).json() == {"success": True}
    assert (await client.get("/tasks/delete")).status_code == 404


REST_FORM_BAD_INPUTS: list[tuple[str, Any, str]] = [
    ("/tasks/getById", {}, "taskId"),
    ("/tasks/getById", {"taskId": "a b"}, "taskId"),
    ("/tasks/getHistory", {"taskId": "t", "limit": 500}, "limit"),
    ("/tasks/listAll", {"status": "nope"}, "status"),
    ("/tasks/delete", {"taskId": 5}, "taskId"),
    ("/tasks/delete", "{oops", "JSON"),
]


async def test_rest_form_bad_input_is_400_with_the_rest_envelope(
    client: httpx.AsyncClient,
) -> None:
    for path, body, field in REST_FORM_BAD_INPUTS:
        content = body if isinstance(body, str) else json.dumps(body)
        response = await client.post(path, content=content)
        assert response.status_code == 400, (path, response.text)
        error = response.json()["error"]
        assert field in error["message"], (path, error)
        assert error["code"] in {"VALIDATION_ERROR", "INVALID_JSON"}
