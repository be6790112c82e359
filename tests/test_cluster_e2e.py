"""Three cluster nodes as real processes: any node answers for any task (docs/cluster.md).

Each test gets a fresh PostgreSQL database and the session's Redis, and three nodes
with their own data directories.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import trio
from trio_websocket import open_websocket_url

from tests.cluster import Nodes, cluster
from tests.conftest import ADMIN_HEADERS, WS_HEADERS
from tests.engines import Redis, free_port
from tests.test_socketio_e2e import Socket, nursery_websocket
from tests.wsutil import receive


async def _create(http: httpx.AsyncClient, task_id: str, **fields: Any) -> dict[str, Any]:
    response = await http.post("/tasks/create", json={"id": task_id, **fields})
    assert response.status_code == 201, response.text
    return response.json()["task"]


async def _get(http: httpx.AsyncClient, task_id: str) -> httpx.Response:
    return await http.get(f"/tasks/{task_id}")


async def test_any_node_answers_for_a_task_made_on_another(
    tmp_path: Path, pg_url: str, redis: Redis
) -> None:
    async with (
        cluster(tmp_path, pg_url, redis.url) as nodes,
        nodes.client("a") as a,
        nodes.client("b") as b,
        nodes.client("c") as c,
    ):
        made = await _create(a, "t1", metadata={"k": "v"}, tags=["x"])
        for http in (a, b, c):
            got = await _get(http, "t1")
            assert got.status_code == 200, got.text
            assert got.json() == made
        moved = await b.post("/tasks/updateProgress", json={"taskId": "t1", "progress": 40})
        assert moved.status_code == 200, moved.text
        assert moved.json()["task"]["progress"] == 40
        logged = await c.post(
            "/tasks/addEvent", json={"taskId": "t1", "event": {"type": "log", "message": "hi"}}
        )
        assert logged.status_code == 200, logged.text
        history = await a.get("/tasks/t1/history")
        assert [e["seq"] for e in history.json()["events"]] == [1, 2, 3]
        # Refusals keep their answers across nodes.
        bad = await b.post("/tasks/updateProgress", json={"taskId": "t1", "progress": 400})
        assert bad.status_code == 400 and bad.json()["error"]["code"] == "VALIDATION_ERROR"
        missing = await _get(c, "nope")
        assert missing.status_code == 404
        assert missing.json()["error"]["code"] == "TASK_NOT_FOUND"
        done = await c.post("/tasks/complete", json={"taskId": "t1"})
        assert done.status_code == 200, done.text
        again = await a.post("/tasks/fail", json={"taskId": "t1", "error": "late"})
        assert again.status_code == 409, again.text
        # Listing on every node sees every node's tasks.
        await _create(b, "t2", tags=["x"])
        await _create(c, "t3")
        for http in (a, b, c):
            listed = await http.get("/tasks", params={"limit": 10})
            assert listed.status_code == 200, listed.text
            body = listed.json()
            assert sorted(t["taskId"] for t in body["tasks"]) == ["t1", "t2", "t3"]
            assert body["pagination"]["total"] == 3
            tagged = await http.get("/tasks", params={"tag": "x"})
            assert sorted(t["taskId"] for t in tagged.json()["tasks"]) == ["t1", "t2"]
        deleted = await b.delete("/tasks/t1")
        assert deleted.status_code == 200, deleted.text
        for http in (a, b, c):
            assert (await _get(http, "t1")).status_code == 404


async def test_a_create_race_has_one_winner(tmp_path: Path, pg_url: str, redis: Redis) -> None:
    async with (
        cluster(tmp_path, pg_url, redis.url) as nodes,
        nodes.client("a") as a,
        nodes.client("b") as b,
        nodes.client("c") as c,
    ):
        for round_ in range(10):
            statuses: list[int] = []

            async def create(http: httpx.AsyncClient, task_id: str, out: list[int]) -> None:
                response = await http.post("/tasks/create", json={"id": task_id})
                out.append(response.status_code)

            async with trio.open_nursery() as nursery:
                for http in (a, b, c):
                    nursery.start_soon(create, http, f"race-{round_}", statuses)
            assert sorted(statuses) == [201, 409, 409], statuses
        # The same create with one Idempotency-Key on every node: one task, three 201s.
        answers: list[httpx.Response] = []

        async def keyed(http: httpx.AsyncClient) -> None:
            answers.append(
                await http.post(
                    "/tasks/create", json={"id": "keyed"}, headers={"Idempotency-Key": "k-1"}
                )
            )

        async with trio.open_nursery() as nursery:
            for http in (a, b, c):
                nursery.start_soon(keyed, http)
        assert [r.status_code for r in answers] == [201, 201, 201], [r.text for r in answers]
        assert len({r.json()["task"]["epoch"] for r in answers}) == 1


async def test_one_external_id_created_on_three_nodes_at_once_has_one_winner(
    tmp_path: Path, pg_url: str, redis: Redis
) -> None:
    """Three creates with one externalId (other task ids), one per node, at once: one is
    201, the others 409 EXTERNAL_ID_EXISTS, and every node finds the winner by it."""
    async with (
        cluster(tmp_path, pg_url, redis.url) as nodes,
        nodes.client("a") as a,
        nodes.client("b") as b,
        nodes.client("c") as c,
    ):
        clients = {"a": a, "b": b, "c": c}
        for round_ in range(10):
            external_id = f"ext-{round_}"
            answers: dict[str, httpx.Response] = {}

            async def create(
                name: str, task_id: str, external_id: str, answers: dict[str, httpx.Response]
            ) -> None:
                answers[name] = await clients[name].post(
                    "/tasks/create", json={"id": task_id, "externalId": external_id}
                )

            async with trio.open_nursery() as nursery:
                for name in clients:
                    nursery.start_soon(create, name, f"x{round_}-{name}", external_id, answers)
            won = [name for name, r in answers.items() if r.status_code == 201]
            assert len(won) == 1, {name: r.text for name, r in answers.items()}
            for name, response in answers.items():
                if name not in won:
                    assert response.status_code == 409, response.text
                    assert response.json()["error"]["code"] == "EXTERNAL_ID_EXISTS"
            winner = answers[won[0]].json()["task"]
            for http in clients.values():
                found = await http.get(f"/tasks/by-external-id/{external_id}")
                assert found.status_code == 200, found.text
                assert found.json()["taskId"] == winner["taskId"] == f"x{round_}-{won[0]}"
                assert found.json()["externalId"] == external_id
        # The same create (one task id, one Idempotency-Key) on every node: its own
        # reservation does not refuse it; one task, three 201s.
        keyed: list[httpx.Response] = []

        async def again(http: httpx.AsyncClient) -> None:
            keyed.append(
                await http.post(
                    "/tasks/create",
                    json={"id": "keyed-ext", "externalId": "ext-keyed"},
                    headers={"Idempotency-Key": "k-ext"},
                )
            )

        async with trio.open_nursery() as nursery:
            for http in clients.values():
                nursery.start_soon(again, http)
        assert [r.status_code for r in keyed] == [201] * 3, [r.text for r in keyed]
        assert len({r.json()["task"]["epoch"] for r in keyed}) == 1
        found = await c.get("/tasks/by-external-id/ext-keyed")
        assert found.status_code == 200 and found.json()["taskId"] == "keyed-ext", found.text


async def _watch(nodes: Nodes, name: str, task_id: str, seen: list[dict[str, Any]], n: int) -> None:
    url = f"{nodes.ws_url(name)}/ws/task/{task_id}"
    async with open_websocket_url(url, extra_headers=WS_HEADERS) as ws:
        while len(seen) < n:
            seen.append(await receive(ws))


async def test_watchers_on_every_node_get_every_message_in_order(
    tmp_path: Path, pg_url: str, redis: Redis
) -> None:
    async with (
        cluster(tmp_path, pg_url, redis.url) as nodes,
        nodes.client("a") as a,
        nodes.client("b") as b,
    ):
        await _create(a, "w1")
        updates = 60
        seen: dict[str, list[dict[str, Any]]] = {name: [] for name in ("a", "b", "c")}
        with trio.fail_after(60):
            async with trio.open_nursery() as nursery:
                for name in seen:
                    nursery.start_soon(_watch, nodes, name, "w1", seen[name], updates + 2)
                # Every watcher has its snapshot before the updates start.
                while not all(seen.values()):
                    await trio.sleep(0.01)
                for value in range(1, updates + 1):
                    http = a if value % 2 else b  # mutate via the home and a non-home node
                    response = await http.post(
                        "/tasks/updateProgress", json={"taskId": "w1", "progress": value}
                    )
                    assert response.status_code == 200, response.text
                done = await b.post("/tasks/complete", json={"taskId": "w1"})
                assert done.status_code == 200, done.text
        for name, messages in seen.items():
            assert messages[0]["type"] == "snapshot", (name, messages[0])
            seqs = [m["seq"] for m in messages]
            assert seqs == list(range(1, updates + 3)), (name, seqs)
            assert [m["task"]["progress"] for m in messages[1:-1]] == list(range(1, updates + 1))
            assert messages[-1]["type"] == "complete"


async def test_a_watcher_joining_mid_stream_on_another_node_resumes_without_gap(
    tmp_path: Path, pg_url: str, redis: Redis
) -> None:
    async with (
        cluster(tmp_path, pg_url, redis.url, names=("a", "b")) as nodes,
        nodes.client("a") as a,
    ):
        await _create(a, "w2")
        for value in range(1, 11):
            await a.post("/tasks/updateProgress", json={"taskId": "w2", "progress": value})
        url = f"{nodes.ws_url('b')}/ws/task/w2?since=4"
        async with open_websocket_url(url, extra_headers=WS_HEADERS) as ws:
            first = [await receive(ws) for _ in range(8)]  # replay 5..11, then the snapshot
            assert [m["seq"] for m in first] == [5, 6, 7, 8, 9, 10, 11, 11]
            assert first[-1]["type"] == "snapshot"
            await a.post("/tasks/updateProgress", json={"taskId": "w2", "progress": 99})
            live = await receive(ws)
            assert (live["type"], live["seq"]) == ("progress", 12)


async def test_a_killed_home_makes_only_its_tasks_unavailable_until_it_returns(
    tmp_path: Path, pg_url: str, redis: Redis
) -> None:
    async with cluster(tmp_path, pg_url, redis.url) as nodes:
        async with nodes.client("a") as a, nodes.client("b") as b:
            await _create(a, "on-a")
            await _create(b, "on-b")
            for value in range(1, 6):
                answer = await b.post(
                    "/tasks/updateProgress", json={"taskId": "on-a", "progress": value}
                )
                assert answer.status_code == 200
        url = f"{nodes.ws_url('b')}/ws/task/on-a"
        async with open_websocket_url(url, extra_headers=WS_HEADERS) as watcher:
            snapshot = await receive(watcher)
            assert (snapshot["type"], snapshot["seq"]) == ("snapshot", 6)
            await _killed_home_then_back(nodes)
            async with nodes.client("b") as b:
                moved = await b.post(
                    "/tasks/updateProgress", json={"taskId": "on-a", "progress": 6}
                )
                assert moved.status_code == 200, moved.text
            # The watcher on b stayed connected through its task's home's death and return.
            with trio.fail_after(10):
                live = await receive(watcher)
            assert (live["type"], live["seq"], live["task"]["progress"]) == ("progress", 7, 6)


async def _killed_home_then_back(nodes: Nodes) -> None:
    """Kill node a (home of on-a; on-b lives on b), check the others, start a again."""
    await nodes.kill("a")
    async with nodes.client("b") as b, nodes.client("c") as c:
        down = await _get(b, "on-a")
        assert down.status_code == 503, down.text
        assert down.json()["error"]["code"] == "TASK_UNAVAILABLE"
        assert down.headers.get("retry-after")
        up = await _get(c, "on-b")
        assert up.status_code == 200, up.text
    await nodes.start("a")
    async with nodes.client("b") as b, nodes.client("c") as c:
        back = await _get(c, "on-a")
        assert back.status_code == 200, back.text
        assert back.json()["progress"] == 5  # every acknowledged update kept
        # The restarted node made PostgreSQL's listing agree with its files again.
        listed = await c.get("/tasks", params={"q": "on-a"})
        assert [t["progress"] for t in listed.json()["tasks"]] == [5], listed.text


async def test_keys_work_on_every_node_and_a_revocation_reaches_all(
    tmp_path: Path, pg_url: str, redis: Redis
) -> None:
    async with (
        cluster(tmp_path, pg_url, redis.url) as nodes,
        nodes.client("a") as a,
        nodes.client("c") as c,
    ):
        made = await a.post("/admin/keys", json={"owner": "alice", "role": "service"})
        assert made.status_code == 201, made.text
        key = {"X-API-Key": made.json()["key"]}
        async with (
            nodes.client("b", headers=key) as alice_b,
            nodes.client("c", headers=key) as alice_c,
        ):
            created = await alice_b.post("/tasks/create", json={"id": "mine"})
            assert created.status_code == 201, created.text
            assert (await _get(alice_c, "mine")).status_code == 200
            theirs = await _create(a, "theirs")  # the admin's own task
            assert theirs["owner"] != "alice"
            assert (await _get(alice_c, "theirs")).status_code == 404  # isolation holds remotely
            revoked = await c.delete(f"/admin/keys/{made.json()['id']}")
            assert revoked.status_code in (200, 204), revoked.text
            with trio.fail_after(5):
                while (await _get(alice_b, "mine")).status_code != 401:
                    await trio.sleep(0.05)
            assert (await _get(alice_c, "mine")).status_code == 401


async def test_the_admin_feed_on_one_node_carries_every_nodes_events(
    tmp_path: Path, pg_url: str, redis: Redis
) -> None:
    async with (
        cluster(tmp_path, pg_url, redis.url, names=("a", "b")) as nodes,
        nodes.client("a") as a,
        nodes.client("b") as b,
        open_websocket_url(f"{nodes.ws_url('b')}/admin/feed", extra_headers=WS_HEADERS) as ws,
    ):
        # Node b follows node a's channel once it has an admin watcher: send events from
        # a until one shows up on b's feed (later warm-up messages are ignored below).
        with trio.fail_after(30):
            for n in range(1000):
                await _create(a, f"warm-{n}")
                with trio.move_on_after(0.2):
                    if (await receive(ws))["taskId"].startswith("warm-"):
                        break
        await _create(a, "x")  # homed on a
        moved = await b.post("/tasks/updateProgress", json={"taskId": "x", "progress": 50})
        assert moved.status_code == 200
        await _create(b, "y")  # homed on b
        got: list[dict[str, Any]] = []
        with trio.fail_after(10):
            while len(got) < 3:
                message = await receive(ws)
                if not message["taskId"].startswith("warm-"):
                    got.append(message)
        per_task = {(m["taskId"], m["seq"], m["type"]) for m in got}
        assert per_task == {("x", 1, "created"), ("x", 2, "progress"), ("y", 1, "created")}
        assert [m["seq"] for m in got if m["taskId"] == "x"] == [1, 2]


async def test_socketio_sockets_get_the_job_events_of_tasks_homed_on_another_node(
    tmp_path: Path, pg_url: str, redis: Redis
) -> None:
    async with (
        cluster(tmp_path, pg_url, redis.url, names=("a", "b")) as nodes,
        nodes.client("a") as a,
        nodes.client("b") as b,
        trio.open_nursery() as nursery,
    ):
        created = await a.post("/admin/keys", json={"owner": "u1", "role": "service"})
        assert created.status_code == 201, created.text
        url = f"{nodes.ws_url('b')}/socket.io/?EIO=4&transport=websocket"
        ws = await nursery_websocket(nursery, url)
        assert (await ws.get_message()).startswith("0{")
        socket = Socket(ws)
        await socket.connect({"token": created.json()["key"]})
        assert await socket.ack(1, "subscribe:job", "x") == {"ok": True}

        async def progress(http: httpx.AsyncClient, task_id: str, value: float) -> None:
            moved = await http.post(
                "/tasks/updateProgress", json={"taskId": task_id, "progress": value}
            )
            assert moved.status_code == 200, moved.text

        # Node b follows node a's channel once it has a socket: send u1's events from a
        # until one shows up on b (later warm-up events are ignored below).
        with trio.fail_after(30):
            for n in range(1000):
                await _create(a, f"warm-{n}", owner="u1")
                await progress(a, f"warm-{n}", 1)
                with trio.move_on_after(0.2):
                    if (await socket.next_event())[1]["jobId"].startswith("warm-"):
                        break
        await _create(a, "x", owner="u1")  # homed on a
        await _create(a, "other", owner="u2")
        await progress(a, "other", 10)  # another owner's: never seen on u1's socket
        await progress(b, "x", 50)  # forwarded to its home, a
        done = await a.post("/tasks/complete", json={"taskId": "x", "metadata": {"result": 7}})
        assert done.status_code == 200, done.text
        got: list[tuple[str, dict[str, Any]]] = []
        with trio.fail_after(30):
            while len(got) < 4:
                name, payload = await socket.next_event()
                if not payload["jobId"].startswith("warm-"):
                    got.append((name, payload))
        assert [name for name, _ in got] == [
            "job:progress", "job:x:progress", "job:completed", "job:x:completed"
        ]  # fmt: skip
        assert {payload["jobId"] for _, payload in got} == {"x"}
        assert (got[0][1]["state"], got[0][1]["progress"]) == ("active", 50)
        assert (got[2][1]["state"], got[2][1]["result"]) == ("completed", 7)
        nursery.cancel_scope.cancel()


async def test_nodes_on_one_machine_share_one_public_port(
    tmp_path: Path, pg_url: str, redis: Redis
) -> None:
    port = free_port()
    async with cluster(
        tmp_path, pg_url, redis.url, names=("a", "b"), extra=("--port", str(port))
    ) as nodes:
        assert nodes.url("a") == nodes.url("b") == f"http://127.0.0.1:{port}"
        shared = f"http://127.0.0.1:{port}"
        answered: set[str] = set()
        made: list[str] = []
        with trio.fail_after(60):
            # Each new connection lands on one of the two (the kernel's choice): keep
            # opening connections until both have answered, creating a task through each.
            while len(answered) < 2:
                async with httpx.AsyncClient(base_url=shared, headers=ADMIN_HEADERS) as http:
                    node = (await http.get("/health")).json()["cluster"]["node"]
                    if node not in answered:
                        task_id = f"via-{node}"
                        assert (
                            await http.post("/tasks/create", json={"id": task_id})
                        ).status_code == 201
                        made.append(task_id)
                    answered.add(node)
        assert answered == {"a", "b"}
        for _ in range(20):  # whichever node a connection reaches, every task answers
            async with httpx.AsyncClient(base_url=shared, headers=ADMIN_HEADERS) as http:
                for task_id in made:
                    assert (await http.get(f"/tasks/{task_id}")).status_code == 200


async def test_room_subscribers_on_another_node_get_every_message_in_order(
    tmp_path: Path, pg_url: str, redis: Redis
) -> None:
    async with (
        cluster(tmp_path, pg_url, redis.url) as nodes,
        nodes.client("a") as a,
        nodes.client("c") as c,
    ):
        first = await a.post("/rooms/lobby/broadcast", json={"n": 1})  # the room lives on a
        assert first.status_code == 200, first.text
        url = f"{nodes.ws_url('b')}/rooms/lobby/subscribe?since=0"
        async with open_websocket_url(url, extra_headers=WS_HEADERS) as ws:
            replayed = await receive(ws)
            assert (replayed["n"], replayed["roomSeq"]) == (1, 1)
            for n in range(2, 12):  # through a third node: forwarded to a, heard on b
                sent = await c.post("/rooms/lobby/broadcast", json={"n": n})
                assert sent.status_code == 200, sent.text
            with trio.fail_after(10):
                got = [await receive(ws) for _ in range(10)]
            assert [(m["n"], m["roomSeq"]) for m in got] == [(n, n) for n in range(2, 12)]
