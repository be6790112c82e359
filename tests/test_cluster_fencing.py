"""Fencing: a node paused past its lease, whose identity another incarnation took, never
commits again; engines stopped and started under running nodes (docs/cluster.md).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import psycopg
import trio
from trio_websocket import ConnectionClosed, open_websocket_url

from tests.cluster import cluster
from tests.conftest import ADMIN_HEADERS, WS_HEADERS
from tests.engines import Postgres, Redis
from tests.redis_fixture import running_redis
from tests.wsutil import receive


async def _pg(url: str, sql: str, *params: Any) -> list[tuple[Any, ...]]:
    def run() -> list[tuple[Any, ...]]:
        with psycopg.connect(url, autocommit=True) as conn:
            cursor = conn.execute(sql, params)  # type: ignore[arg-type]
            return cursor.fetchall() if cursor.description else []

    return await trio.to_thread.run_sync(run)


async def _update(http: httpx.AsyncClient, task_id: str, value: float) -> httpx.Response:
    return await http.post("/tasks/updateProgress", json={"taskId": task_id, "progress": value})


async def test_a_paused_node_whose_identity_was_taken_never_commits_again(
    tmp_path: Path, pg_url: str, redis: Redis
) -> None:
    async with cluster(tmp_path, pg_url, redis.url) as nodes:
        async with nodes.client("a") as a:
            created = await a.post("/tasks/create", json={"id": "z"})
            assert created.status_code == 201, created.text
            for value in (1, 2, 3):
                assert (await _update(a, "z", value)).status_code == 200
        nodes.pause("a")
        # PostgreSQL sees the lease lapse (the paused node cannot renew it).
        with trio.fail_after(30):
            while not await _pg(
                pg_url, "SELECT 1 FROM nodes WHERE node_id = 'a' AND lease_until < now()"
            ):
                await trio.sleep(0.1)
        answers: list[int | str] = []

        async def direct() -> None:
            # Sent to the paused process: the kernel queues it; it runs after SIGCONT.
            try:
                async with httpx.AsyncClient(base_url=nodes.url("a"), timeout=30) as http:
                    response = await http.post(
                        "/tasks/updateProgress",
                        json={"taskId": "z", "progress": 50},
                        headers=ADMIN_HEADERS,
                    )
                answers.append(response.status_code)
            except httpx.HTTPError as exc:
                answers.append(type(exc).__name__)

        async with nodes.client("b") as b:
            forwarded = await _update(b, "z", 60)  # A is down per PostgreSQL: 503 at once
            assert forwarded.status_code == 503, forwarded.text
            assert forwarded.json()["error"]["code"] == "TASK_UNAVAILABLE"
            async with trio.open_nursery() as nursery:
                nursery.start_soon(direct)
                await trio.sleep(0.3)  # let the request reach A's socket queue
                # Another incarnation of node "a" takes over its identity and its tasks
                # (what a restart on the re-attached volume does: epoch + 1, tokens + 1).
                await _pg(pg_url, "UPDATE nodes SET epoch = epoch + 1 WHERE node_id = 'a'")
                await _pg(pg_url, "UPDATE placements SET token = token + 1 WHERE node_id = 'a'")
                nodes.resume("a")
            assert answers and answers[0] != 200, answers
            async with nodes.client("a") as zombie:
                for value in range(70, 80):  # the zombie refuses every turn, for good
                    response = await _update(zombie, "z", value)
                    assert response.status_code == 503, response.text
                    await trio.sleep(0.1)
        await nodes.kill("a")
        await nodes.start("a")  # the new incarnation on the same data directory
        async with nodes.client("c") as c:
            with trio.fail_after(30):
                while (got := await c.get("/tasks/z")).status_code == 503:
                    await trio.sleep(0.1)
            assert got.status_code == 200, got.text
            assert (got.json()["seq"], got.json()["progress"]) == (4, 3)  # nothing after 3
            assert (await _update(c, "z", 90)).status_code == 200


async def test_nodes_fence_themselves_while_postgresql_is_down_then_recover(
    tmp_path: Path, postgres: Postgres, pg_url: str, redis: Redis
) -> None:
    async with cluster(tmp_path, pg_url, redis.url, names=("a", "b")) as nodes:
        async with nodes.client("a") as a:
            assert (await a.post("/tasks/create", json={"id": "p"})).status_code == 201
        async with postgres.stopped(), nodes.client("a") as a:
            with trio.fail_after(30):  # fenced at 80 % of the lease (tests/cluster.py)
                while (await _update(a, "p", 10)).status_code == 200:
                    await trio.sleep(0.1)
            refused = await _update(a, "p", 20)
            assert refused.status_code == 503, refused.text
        async with nodes.client("a") as a, nodes.client("b") as b:
            with trio.fail_after(30):
                while (await _update(b, "p", 30)).status_code != 200:
                    await trio.sleep(0.2)
            got = await a.get("/tasks/p")
            assert got.json()["progress"] == 30


async def test_watchers_resume_without_gap_across_a_redis_restart(
    tmp_path: Path, pg_url: str
) -> None:
    with running_redis(tmp_path / "redis") as own_redis:
        async with (
            cluster(tmp_path, pg_url, own_redis.url, names=("a", "b")) as nodes,
            nodes.client("a") as a,
        ):
            assert (await a.post("/tasks/create", json={"id": "r"})).status_code == 201
            seen: list[dict[str, Any]] = []
            closes: list[int] = []
            total = 40
            opened = trio.Event()

            async def watch() -> None:
                since, epoch = None, None
                while len(seen) < total:
                    query = "" if since is None else f"?since={since}&epoch={epoch}"
                    url = f"{nodes.ws_url('b')}/ws/task/r{query}"
                    try:
                        async with open_websocket_url(url, extra_headers=WS_HEADERS) as ws:
                            while len(seen) < total:
                                message = await receive(ws)
                                if message["type"] == "snapshot":
                                    opened.set()
                                    epoch = message["epoch"]
                                    if since is None:
                                        since = message["seq"]
                                    continue
                                seen.append(message)
                                since = message["seq"]
                    except ConnectionClosed as closed:
                        closes.append(closed.reason.code)

            with trio.fail_after(60):
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(watch)
                    await opened.wait()
                    for value in range(1, total + 1):
                        if value == total // 2:
                            await trio.to_thread.run_sync(own_redis.restart)
                        response = await _update(a, "r", value)
                        assert response.status_code == 200, response.text  # Redis is not needed
            seqs = [m["seq"] for m in seen]
            assert seqs == list(range(2, total + 2)), seqs  # every update once, in order
            assert 1013 in closes, closes  # the bus lost messages: watchers were asked back
