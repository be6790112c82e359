"""Jobs for users and the seeds' REST view of them, end to end (docs/api.md, "Tasks" and
"The seeds' jobs system"): an admin creates a task for another owner (``owner``), which
is then that owner's in every respect; ``GET /jobs/{jobId}`` and ``GET /jobs``."""

from __future__ import annotations

from typing import Any

import httpx

from tests.procs import Server

Owners = tuple[Server, httpx.AsyncClient, dict[str, Any]]


async def create(
    http: httpx.AsyncClient, headers: dict[str, str], body: dict[str, Any], status: int = 201
) -> httpx.Response:
    """POST /tasks/create, expecting ``status``."""
    response = await http.post("/tasks/create", json=body, headers=headers)
    assert response.status_code == status, response.text
    return response


def field_of(response: httpx.Response) -> str:
    """The field a 400 names."""
    assert response.status_code == 400, response.text
    return str(response.json()["error"]["details"][0]["field"])


async def test_an_admin_creates_a_task_that_is_the_owners_in_every_respect(
    owners: Owners,
) -> None:
    _, http, keys = owners
    admin, alice, bob, reader = keys["admin"], keys["alice"], keys["bob"], keys["reader"]
    made = await create(http, admin, {"taskId": "for-alice", "owner": "alice"})
    assert made.json()["task"]["owner"] == "alice"
    # The owner sees it, changes it, lists it; another owner finds nothing.
    assert (await http.get("/tasks/for-alice", headers=reader)).status_code == 200
    moved = await http.post(
        "/tasks/updateProgress", json={"taskId": "for-alice", "progress": 30}, headers=alice
    )
    assert moved.status_code == 200, moved.text
    listed = (await http.get("/tasks", headers=alice)).json()["tasks"]
    assert [t["taskId"] for t in listed] == ["for-alice"]
    assert (await http.get("/tasks/for-alice", headers=bob)).status_code == 404
    assert (await http.get("/tasks", headers=bob)).json()["tasks"] == []
    gone = await http.post("/tasks/complete", json={"taskId": "for-alice"}, headers=bob)
    assert gone.status_code == 404
    # The RPC form takes it too.
    rpc = await http.post(
        "/rpc/tasks/create", json={"json": {"taskId": "rpc-alice", "owner": "alice"}}, headers=admin
    )
    assert rpc.status_code == 200, rpc.text
    assert (await http.get("/tasks/rpc-alice", headers=alice)).json()["owner"] == "alice"


async def test_only_an_admin_names_another_owner(owners: Owners) -> None:
    _, http, keys = owners
    refused = await create(http, keys["alice"], {"taskId": "x", "owner": "bob"}, 403)
    assert refused.json()["error"]["code"] == "FORBIDDEN"
    await create(http, keys["reader"], {"taskId": "x", "owner": "alice"}, 403)
    rpc = await http.post(
        "/rpc/tasks/create", json={"json": {"taskId": "x", "owner": "bob"}}, headers=keys["alice"]
    )
    assert rpc.status_code == 403
    assert (await http.get("/tasks/x", headers=keys["admin"])).status_code == 404
    # Naming oneself is allowed (it changes nothing).
    own = await create(http, keys["alice"], {"taskId": "mine", "owner": "alice"})
    assert own.json()["task"]["owner"] == "alice"
    for owner in ("", "a b", "x" * 129, 7):
        bad = await http.post(
            "/tasks/create", json={"taskId": "y", "owner": owner}, headers=keys["admin"]
        )
        assert field_of(bad) == "owner"


async def test_external_ids_and_parents_are_the_new_owners(owners: Owners) -> None:
    _, http, keys = owners
    admin, alice = keys["admin"], keys["alice"]
    await create(http, admin, {"taskId": "e1", "owner": "alice", "externalId": "ext"})
    taken = await create(http, alice, {"taskId": "e2", "externalId": "ext"}, 409)
    assert taken.json()["error"]["code"] == "EXTERNAL_ID_EXISTS"
    await create(http, admin, {"taskId": "e3", "owner": "bob", "externalId": "ext"})
    await create(http, admin, {"taskId": "e4", "externalId": "ext"})  # the admin's own
    found = await http.get("/tasks/by-external-id/ext", headers=alice)
    assert found.json()["taskId"] == "e1"
    # A child's owner is its parent's.
    await create(http, admin, {"taskId": "root-admin"})
    await create(http, alice, {"taskId": "root-alice"})
    other = await create(
        http, admin, {"taskId": "c1", "owner": "alice", "parentId": "root-admin"}, 400
    )
    assert field_of(other) == "parentId"
    await create(http, admin, {"taskId": "c2", "parentId": "root-alice"}, 400)
    child = await create(
        http,
        admin,
        {"taskId": "c3", "owner": "alice", "parentId": "root-alice", "phases": [{"id": "a"}]},
    )
    assert child.json()["task"]["parentId"] == "root-alice"
    phase = await http.get("/tasks/c3:a", headers=alice)
    assert phase.status_code == 200 and phase.json()["owner"] == "alice"
    kids = (await http.get("/tasks/root-alice/children", headers=alice)).json()["tasks"]
    assert [t["taskId"] for t in kids] == ["c3"]


async def test_an_admins_idempotent_create_for_an_owner_replays(owners: Owners) -> None:
    _, http, keys = owners
    admin = {**keys["admin"], "Idempotency-Key": "k-1"}
    body = {"taskId": "once", "owner": "alice"}
    first = await create(http, admin, body)
    again = await create(http, admin, body)
    assert again.headers.get("idempotent-replayed") == "true"
    assert again.json() == first.json()
    other = await http.post("/tasks/create", json={**body, "owner": "bob"}, headers=admin)
    assert other.status_code == 422
    # The key is the caller's: alice's own key "k-1" is another request altogether.
    alice = {**keys["alice"], "Idempotency-Key": "k-1"}
    await create(http, alice, {"taskId": "alice-once"})


async def test_get_job_in_the_seeds_shape(owners: Owners) -> None:
    _, http, keys = owners
    admin, alice = keys["admin"], keys["alice"]
    meta = {"name": "export"}
    await create(http, admin, {"taskId": "j1", "owner": "alice", "metadata": meta})
    job = (await http.get("/jobs/j1", headers=keys["reader"])).json()
    assert job["timestamp"]["created"] > 0
    assert job == {
        "id": "j1",
        "name": "export",
        "state": "waiting",
        "progress": 0,
        "timestamp": {"created": job["timestamp"]["created"], "started": None, "finished": None},
    }
    await http.post("/tasks/updateProgress", json={"taskId": "j1", "progress": 50}, headers=alice)
    done = {"taskId": "j1", "metadata": {"result": {"rows": 3}}}
    await http.post("/tasks/complete", json=done, headers=alice)
    task = (await http.get("/tasks/j1", headers=alice)).json()
    job = (await http.get("/jobs/j1", headers=alice)).json()
    assert (job["state"], job["progress"], job["result"]) == ("completed", 100, {"rows": 3})
    assert "failedReason" not in job
    times = job["timestamp"]
    assert times["created"] <= times["started"] <= times["finished"]
    assert task["completedAt"] is not None
    await create(http, alice, {"taskId": "j2"})
    await http.post("/tasks/cancel", json={"taskId": "j2"}, headers=alice)
    job = (await http.get("/jobs/j2", headers=alice)).json()
    assert (job["name"], job["state"], job["failedReason"]) == ("j2", "failed", "canceled")
    # Another owner's job is missing, as its task is; so is an unknown one.
    for who, job_id in (("bob", "j1"), ("alice", "nope")):
        missing = await http.get(f"/jobs/{job_id}", headers=keys[who])
        assert missing.status_code == 404 and missing.json()["error"]["code"] == "TASK_NOT_FOUND"
    assert (await http.get("/jobs/j1", headers=admin)).json()["state"] == "completed"
    assert field_of(await http.get("/jobs/a%20b", headers=alice)) == "jobId"
    assert (await http.get("/jobs/j1")).status_code == 401


async def test_list_jobs_pages_and_states(owners: Owners) -> None:
    _, http, keys = owners
    admin, alice, bob = keys["admin"], keys["alice"], keys["bob"]
    for n in range(12):
        await create(http, admin, {"taskId": f"a{n:02}", "owner": "alice"})
    await http.post("/tasks/updateProgress", json={"taskId": "a01", "progress": 5}, headers=alice)
    await http.post("/tasks/complete", json={"taskId": "a02"}, headers=alice)
    await http.post("/tasks/fail", json={"taskId": "a03", "error": "x"}, headers=alice)
    await http.post("/tasks/cancel", json={"taskId": "a04"}, headers=alice)
    await create(http, bob, {"taskId": "b00"})

    async def jobs(query: str, who: dict[str, str] = alice) -> dict[str, Any]:
        response = await http.get(f"/jobs{query}", headers=who)
        assert response.status_code == 200, response.text
        return dict(response.json())

    first = await jobs("")
    # Newest first, as GET /tasks; 10 a page by default.
    assert [j["id"] for j in first["jobs"]] == [f"a{n:02}" for n in range(11, 1, -1)]
    assert first["pagination"] == {"total": 12, "page": 1, "limit": 10, "pages": 2}
    second = await jobs("?page=2&limit=10&status=")
    assert [j["id"] for j in second["jobs"]] == ["a01", "a00"]
    assert second["pagination"] == {"total": 12, "page": 2, "limit": 10, "pages": 2}
    by_state = {
        state: [j["id"] for j in (await jobs(f"?status={state}&limit=100"))["jobs"]]
        for state in ("waiting", "active", "completed", "failed", "delayed")
    }
    assert by_state == {
        "waiting": [f"a{n:02}" for n in range(11, 4, -1)] + ["a00"],
        "active": ["a01"],
        "completed": ["a02"],
        "failed": ["a04", "a03"],
        "delayed": [],
    }
    failed = await jobs("?status=failed")
    assert failed["pagination"] == {"total": 2, "page": 1, "limit": 10, "pages": 1}
    assert [j["failedReason"] for j in failed["jobs"]] == ["canceled", "x"]
    assert (await jobs("?status=delayed"))["pagination"]["total"] == 0
    # Readers read; another owner sees only its own; admins every owner's, or one.
    assert (await jobs("", keys["reader"]))["pagination"]["total"] == 12
    assert [j["id"] for j in (await jobs("", bob))["jobs"]] == ["b00"]
    assert (await jobs("?owner=alice", bob))["jobs"] == []
    assert (await jobs("?limit=100", admin))["pagination"]["total"] == 13
    assert (await jobs("?owner=bob", admin))["pagination"]["total"] == 1


async def test_list_jobs_refuses_bad_queries_naming_the_field(owners: Owners) -> None:
    _, http, keys = owners
    for query, field in (
        ("status=pending", "status"),
        ("status=all", "status"),
        ("page=0", "page"),
        ("page=x", "page"),
        ("limit=0", "limit"),
        ("limit=101", "limit"),
        ("owner=", "owner"),
    ):
        assert field_of(await http.get(f"/jobs?{query}", headers=keys["alice"])) == field, query
    assert (await http.get("/jobs")).status_code == 401
    assert (await http.post("/jobs", json={}, headers=keys["alice"])).status_code == 405
