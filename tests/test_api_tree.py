"""Task trees end to end against a real server: weighted roll-up over three levels,
failure policies, completeWithChildren, phases, a 1,000-update burst, a watcher of the
parent, subtree deletion, listing by parent, isolation and bad input."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
import trio
from trio_websocket import open_websocket_url

from tests.procs import Server
from tests.wsutil import receive


@pytest.fixture
def world(owners: tuple[Server, httpx.AsyncClient, dict[str, Any]]) -> Any:
    """The admin, alice (service), alice's reader and bob on one server (tests/conftest.py)."""
    return owners


async def create(http: httpx.AsyncClient, headers: dict[str, str], **body: Any) -> dict[str, Any]:
    response = await http.post("/tasks/create", json=body, headers=headers)
    assert response.status_code == 201, response.text
    return response.json()["task"]


async def post(http: httpx.AsyncClient, headers: dict[str, str], path: str, **body: Any) -> Any:
    response = await http.post(f"/tasks/{path}", json=body, headers=headers)
    assert response.status_code == 200, response.text
    return response.json()


async def get(http: httpx.AsyncClient, headers: dict[str, str], task_id: str) -> dict[str, Any]:
    response = await http.get(f"/tasks/{task_id}", headers=headers)
    assert response.status_code == 200, response.text
    return response.json()


async def settled(
    http: httpx.AsyncClient, headers: dict[str, str], task_id: str, **expected: Any
) -> dict[str, Any]:
    """The task once it shows ``expected`` (roll-up is asynchronous; bounded wait)."""
    with trio.fail_after(20):
        while True:
            task = await get(http, headers, task_id)
            if all(task[k] == v for k, v in expected.items()):
                return task
            await trio.sleep(0.02)


async def test_three_levels_roll_up_by_weight(world) -> None:
    _, http, h = world
    root = await create(http, h["alice"], id="root")
    assert (root["parentId"], root["childCount"], root["depth"]) == (None, 0, 1)
    a = await create(http, h["alice"], id="a", parentId="root", weight=3)
    assert (a["parentId"], a["weight"], a["depth"]) == ("root", 3, 2)
    await create(http, h["alice"], id="b", parentId="root", weight=1)
    await create(http, h["alice"], id="a1", parentId="a")
    await create(http, h["alice"], id="a2", parentId="a")
    # Creates answer once the parent counted the child.
    assert (await get(http, h["alice"], "root"))["childCount"] == 2
    assert (await get(http, h["alice"], "a"))["childCount"] == 2
    await post(http, h["alice"], "updateProgress", taskId="a1", progress=50)
    # a = (50 + 0) / 2 = 25; root = (3 * 25 + 1 * 0) / 4 = 18.75
    await settled(http, h["alice"], "a", progress=25, status="in-progress")
    await settled(http, h["alice"], "root", progress=18.75, status="in-progress")
    await post(http, h["alice"], "complete", taskId="a2")  # a succeeded child counts 100
    await post(http, h["alice"], "updateProgress", taskId="b", progress=40)
    # a = (50 + 100) / 2 = 75; root = (3 * 75 + 40) / 4 = 66.25
    await settled(http, h["alice"], "root", progress=66.25)
    # A parent's progress is computed: reporting it is refused.
    refused = await http.post(
        "/tasks/updateProgress", json={"taskId": "a", "progress": 10}, headers=h["alice"]
    )
    assert refused.status_code == 409
    assert refused.json()["error"]["code"] == "PROGRESS_COMPUTED"
    history = await http.get("/tasks/root/history", headers=h["alice"])
    assert [e["progress"] for e in history.json()["events"] if e["eventType"] == "progress"][
        -1
    ] == 66.25


async def test_a_failed_child_fails_its_parent_unless_ignored(world) -> None:
    _, http, h = world
    await create(http, h["alice"], id="p")
    await create(http, h["alice"], id="p-c", parentId="p")
    await post(http, h["alice"], "fail", taskId="p-c", error="disk full")
    parent = await settled(http, h["alice"], "p", status="failed")
    assert parent["error"] == "child 'p-c' failed: disk full"

    await create(http, h["alice"], id="q", onChildFailure="ignore")
    await create(http, h["alice"], id="q-1", parentId="q")
    await create(http, h["alice"], id="q-2", parentId="q")
    await post(http, h["alice"], "fail", taskId="q-1", error="lost")
    # Ignored: the failed child counts as done (100), the parent goes on.
    parent = await settled(http, h["alice"], "q", progress=50)
    assert parent["status"] == "in-progress"
    await post(http, h["alice"], "cancel", taskId="q-2")
    assert (await settled(http, h["alice"], "q", progress=100))["status"] == "in-progress"


async def test_complete_with_children(world) -> None:
    _, http, h = world
    await create(http, h["alice"], id="w", completeWithChildren=True)
    for n in range(3):
        await create(http, h["alice"], id=f"w{n}", parentId="w", weight=n + 1)
    await post(http, h["alice"], "complete", taskId="w0")
    await post(http, h["alice"], "complete", taskId="w1")
    parent = await settled(http, h["alice"], "w", progress=50)  # (1 + 2) * 100 / 6
    assert parent["status"] == "in-progress"
    await post(http, h["alice"], "complete", taskId="w2")
    parent = await settled(http, h["alice"], "w", status="success")
    assert parent["progress"] == 100
    # A finished parent takes no new child.
    response = await http.post(
        "/tasks/create", json={"id": "late", "parentId": "w"}, headers=h["alice"]
    )
    assert response.status_code == 409
    assert response.json()["error"]["code"] == "PARENT_TERMINAL"


async def test_phases_make_weighted_children(world) -> None:
    _, http, h = world
    task = await create(
        http,
        h["alice"],
        id="wf",
        completeWithChildren=True,
        phases=[{"id": "fetch", "weight": 1, "name": "Fetch"}, {"id": "build", "weight": 3}],
    )
    assert task["childCount"] == 2
    fetch = await get(http, h["alice"], "wf:fetch")
    assert (fetch["parentId"], fetch["weight"], fetch["metadata"]) == ("wf", 1, {"name": "Fetch"})
    await post(http, h["alice"], "complete", taskId="wf:fetch")
    await settled(http, h["alice"], "wf", progress=25)
    await post(http, h["alice"], "updateProgress", taskId="wf:build", progress=50)
    await settled(http, h["alice"], "wf", progress=62.5)
    await post(http, h["alice"], "complete", taskId="wf:build")
    await settled(http, h["alice"], "wf", status="success")
    children = await http.get("/tasks/wf/children", headers=h["alice"])
    assert sorted(t["taskId"] for t in children.json()["tasks"]) == ["wf:build", "wf:fetch"]


async def test_a_burst_of_1000_updates_coalesces_and_ends_exact(world) -> None:
    _, http, h = world
    await create(http, h["alice"], id="burst")
    await create(http, h["alice"], id="burst-c", parentId="burst")
    items = [{"taskId": "burst-c", "progress": (n + 1) / 10} for n in range(1000)]
    response = await http.post(
        "/tasks/batchUpdateProgress", json={"updates": items}, headers=h["alice"]
    )
    assert response.status_code == 200, response.text
    async with trio.open_nursery() as nursery:
        for _ in range(200):
            nursery.start_soon(_progress, http, h["alice"], "burst-c", 100)
    parent = await settled(http, h["alice"], "burst", progress=100)
    events = (await http.get("/tasks/burst/history?limit=1000", headers=h["alice"])).json()
    steps = [e["progress"] for e in events["events"] if e["eventType"] == "progress"]
    assert steps == sorted(steps)  # never back to an older value
    assert len(steps) < 1000  # coalesced
    assert parent["status"] == "in-progress"


async def _progress(http: httpx.AsyncClient, headers: dict[str, str], task_id: str, p: float):
    await post(http, headers, "updateProgress", taskId=task_id, progress=p)


async def test_a_watcher_of_the_parent_sees_its_progress_move(world) -> None:
    server, http, h = world
    await create(http, h["alice"], id="seen")
    await create(http, h["alice"], id="seen-c", parentId="seen", weight=2)
    await create(http, h["alice"], id="seen-d", parentId="seen", weight=2)
    url = server.url.replace("http", "ws") + "/ws/task/seen"
    async with open_websocket_url(
        url, extra_headers=[(b"X-API-Key", h["alice"]["X-API-Key"].encode())]
    ) as ws:
        snapshot = await receive(ws)
        assert snapshot["type"] == "snapshot"
        await post(http, h["alice"], "updateProgress", taskId="seen-c", progress=80)
        with trio.fail_after(20):
            while True:
                message = await receive(ws)
                if message["type"] == "progress":
                    assert message["task"]["progress"] == 40
                    break


async def test_deleting_a_parent_deletes_its_subtree(world) -> None:
    _, http, h = world
    await create(http, h["alice"], id="top")
    await create(http, h["alice"], id="mid", parentId="top")
    await create(http, h["alice"], id="keep", parentId="top")
    await create(http, h["alice"], id="leaf1", parentId="mid")
    await create(http, h["alice"], id="leaf2", parentId="mid")
    await create(http, h["alice"], id="leaf11", parentId="leaf1")
    await post(http, h["alice"], "updateProgress", taskId="keep", progress=60)
    await settled(http, h["alice"], "top", progress=30)
    response = await http.delete("/tasks/mid", headers=h["alice"])
    assert response.status_code == 200, response.text
    for gone in ("mid", "leaf1", "leaf2", "leaf11"):
        assert (await http.get(f"/tasks/{gone}", headers=h["alice"])).status_code == 404
    # The parent dropped the deleted child: its mean is over the one left.
    top = await settled(http, h["alice"], "top", progress=60)
    assert top["childCount"] == 1
    listed = await http.get("/tasks", params={"parentId": "top"}, headers=h["alice"])
    assert [t["taskId"] for t in listed.json()["tasks"]] == ["keep"]
    assert (await http.delete("/tasks/top", headers=h["alice"])).status_code == 200
    assert (await http.get("/tasks/keep", headers=h["alice"])).status_code == 404


async def test_listing_by_parent_combines_with_other_filters(world) -> None:
    _, http, h = world
    await create(http, h["alice"], id="lp")
    await create(http, h["alice"], id="lp-1", parentId="lp", tags=["x"])
    await create(http, h["alice"], id="lp-2", parentId="lp")
    await create(http, h["alice"], id="other", tags=["x"])
    await post(http, h["alice"], "complete", taskId="lp-2")

    async def ids(**params: Any) -> list[str]:
        response = await http.get("/tasks", params=params, headers=h["alice"])
        assert response.status_code == 200, response.text
        body = response.json()
        assert body["pagination"]["total"] == len(body["tasks"])
        return sorted(t["taskId"] for t in body["tasks"])

    assert await ids(parentId="lp") == ["lp-1", "lp-2"]
    assert await ids(parentId="lp", tag="x") == ["lp-1"]
    assert await ids(parentId="lp", status="success") == ["lp-2"]
    assert await ids(parentId="nobody") == []
    page = await http.get("/tasks/lp/children", params={"status": "pending"}, headers=h["alice"])
    assert [t["taskId"] for t in page.json()["tasks"]] == ["lp-1"]


async def test_another_owners_task_is_never_a_parent(world) -> None:
    _, http, h = world
    await create(http, h["alice"], id="alice-root")
    response = await http.post(
        "/tasks/create", json={"id": "bobs", "parentId": "alice-root"}, headers=h["bob"]
    )
    assert response.status_code == 400
    assert response.json()["error"]["details"][0]["field"] == "parentId"
    assert (await http.get("/tasks/bobs", headers=h["bob"])).status_code == 404
    # Nor does an admin's task in its own name join alice's tree.
    admin = await http.post(
        "/tasks/create", json={"id": "admins", "parentId": "alice-root"}, headers=h["admin"]
    )
    assert admin.status_code == 400
    assert (await get(http, h["alice"], "alice-root"))["childCount"] == 0
    assert (await http.get("/tasks/alice-root/children", headers=h["bob"])).status_code == 404
    listed = await http.get("/tasks", params={"parentId": "alice-root"}, headers=h["bob"])
    assert listed.json()["tasks"] == []
    # A reader sees the tree, and cannot add to it.
    assert (await http.get("/tasks/alice-root/children", headers=h["reader"])).status_code == 200
    reader = await http.post(
        "/tasks/create", json={"id": "r", "parentId": "alice-root"}, headers=h["reader"]
    )
    assert reader.status_code == 403


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"id": "x", "parentId": "missing"}, "parentId"),
        ({"id": "x", "parentId": "bad id!"}, "parentId"),
        ({"id": "x", "weight": 0}, "weight"),
        ({"id": "x", "weight": -1}, "weight"),
        ({"id": "x", "weight": "2"}, "weight"),
        ({"id": "x", "onChildFailure": "explode"}, "onChildFailure"),
        ({"id": "x", "completeWithChildren": "yes"}, "completeWithChildren"),
        ({"id": "x", "phases": []}, "phases"),
        ({"id": "x", "phases": [{"id": "a b"}]}, "phases.0.id"),
        ({"id": "x", "phases": [{"id": "a"}, {"id": "a"}]}, "phases.1.id"),
        ({"id": "x", "phases": [{"id": "a", "weight": 0}]}, "phases.0.weight"),
        ({"id": "x" * 120, "phases": [{"id": "abcdefghij"}]}, "phases.0.id"),
    ],
)
async def test_bad_tree_input_is_400_naming_the_field(world, body, field) -> None:
    _, http, h = world
    response = await http.post("/tasks/create", json=body, headers=h["alice"])
    assert response.status_code == 400, response.text
    assert response.json()["error"]["details"][0]["field"] == field
    assert (await http.get(f"/tasks/{body['id']}", headers=h["alice"])).status_code == 404


async def test_a_tree_is_at_most_8_levels_deep(world) -> None:
    _, http, h = world
    await create(http, h["alice"], id="d1")
    for depth in range(2, 9):
        task = await create(http, h["alice"], id=f"d{depth}", parentId=f"d{depth - 1}")
        assert task["depth"] == depth
    response = await http.post(
        "/tasks/create", json={"id": "d9", "parentId": "d8"}, headers=h["alice"]
    )
    assert response.status_code == 400
    assert "8 levels" in response.json()["error"]["message"]
    # A change at the bottom reaches the top through seven parents.
    await post(http, h["alice"], "complete", taskId="d8")
    await settled(http, h["alice"], "d1", progress=100)


async def test_the_rpc_create_takes_the_tree_fields(world) -> None:
    _, http, h = world
    await create(http, h["alice"], id="rpc-root")
    response = await http.post(
        "/rpc/tasks/create",
        json={"json": {"id": "rpc-kid", "parentId": "rpc-root", "weight": 2, "tags": ["r"]}},
        headers=h["alice"],
    )
    assert response.status_code == 200, response.text
    assert response.json()["json"] == {"success": True, "taskId": "rpc-kid"}
    kid = await get(http, h["alice"], "rpc-kid")
    assert (kid["parentId"], kid["weight"], kid["tags"]) == ("rpc-root", 2, ["r"])
    got = await http.post(
        "/rpc/tasks/getById", json={"json": {"taskId": "rpc-root"}}, headers=h["alice"]
    )
    assert got.json()["json"]["childCount"] == 1


async def test_a_child_deleted_by_its_retention_leaves_its_parent(world) -> None:
    _, http, h = world
    await create(http, h["alice"], id="keeper")
    await create(http, h["alice"], id="short", parentId="keeper", ttlSeconds=0.2)
    await create(http, h["alice"], id="long", parentId="keeper")
    await post(http, h["alice"], "updateProgress", taskId="long", progress=30)
    await post(http, h["alice"], "complete", taskId="short")  # retention starts: 0.2 s
    parent = await settled(http, h["alice"], "keeper", childCount=1)
    assert parent["progress"] == 30  # the mean over the one child left
    assert (await http.get("/tasks/short", headers=h["alice"])).status_code == 404


async def test_a_child_made_again_under_its_id_counts_again(world) -> None:
    _, http, h = world
    await create(http, h["alice"], id="again")
    await create(http, h["alice"], id="again-c", parentId="again")
    await post(http, h["alice"], "complete", taskId="again-c")
    await settled(http, h["alice"], "again", progress=100)
    assert (await http.delete("/tasks/again-c", headers=h["alice"])).status_code == 200
    await create(http, h["alice"], id="again-c", parentId="again")  # a new epoch, seq 1
    parent = await get(http, h["alice"], "again")
    assert parent["childCount"] == 1
    await post(http, h["alice"], "updateProgress", taskId="again-c", progress=10)
    await settled(http, h["alice"], "again", progress=10)


async def test_a_phase_id_another_task_holds_is_refused_up_front(world) -> None:
    _, http, h = world
    # A phase id another task already holds is refused before anything is made.
    await create(http, h["alice"], id="taken:x")
    clash = await http.post(
        "/tasks/create", json={"id": "taken", "phases": [{"id": "x"}]}, headers=h["alice"]
    )
    assert clash.status_code == 409
    assert clash.json()["error"]["details"][0]["field"] == "phases.0.id"
    assert (await http.get("/tasks/taken", headers=h["alice"])).status_code == 404
