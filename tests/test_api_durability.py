"""Tasks across crashes and restarts: kill -9, alarms, corrupt files, listing at scale.

Real server processes: every wait is on an observable condition under a generous deadline
(a busy machine only makes a test slower). The in-process timing of heartbeats and
retention is tested exactly, in virtual time, in tests/test_task_actor.py.
"""

from __future__ import annotations

import sqlite3
import time
from functools import partial
from pathlib import Path
from typing import Any

import httpx
import trio

from storage import locate
from tests.conftest import ADMIN_HEADERS, SERVE_ENV, serve_argv
from tests.procs import running

TASKS = [f"crash-{n:02d}" for n in range(50)]
CLIENTS = 32
#: Answers a cycle waits for before it kills the server (the clients keep sending).
KILL_AFTER = 200


async def mutate_until_killed(
    url: str, acknowledged: dict[str, dict[int, float]], enough: trio.Event, stop: trio.Event
) -> None:
    """Progress updates on 50 tasks from 32 connections; record every 200 with its seq.

    Sets ``enough`` once :data:`KILL_AFTER` updates have been answered.
    """
    limits = httpx.Limits(max_connections=CLIENTS, max_keepalive_connections=CLIENTS)
    answered = 0

    async def client(http: httpx.AsyncClient, index: int) -> None:
        nonlocal answered
        step = 0
        while not stop.is_set():
            task_id = TASKS[(index * 7 + step) % len(TASKS)]
            value = float((index + step) % 100)
            step += 1
            body = {"taskId": task_id, "progress": value}
            try:
                response = await http.post("/tasks/updateProgress", json=body)
            except httpx.HTTPError:
                return
            if response.status_code == 200:
                event = response.json()["event"]
                acknowledged[task_id][event["seq"]] = event["progress"]
                answered += 1
                if answered >= KILL_AFTER:
                    enough.set()

    async with (
        httpx.AsyncClient(base_url=url, timeout=60, limits=limits, headers=ADMIN_HEADERS) as http,
        trio.open_nursery() as nursery,
    ):
        for index in range(CLIENTS):
            nursery.start_soon(client, http, index)


async def history(http: httpx.AsyncClient, task_id: str) -> dict[int, Any]:
    """Every event of a task by seq."""
    events: dict[int, Any] = {}
    after = 0
    while True:
        page = (
            await http.get(f"/tasks/{task_id}/history", params={"after": after, "limit": 1000})
        ).json()
        events.update({e["seq"]: e for e in page["events"]})
        if page["nextAfter"] is None:
            return events
        after = page["nextAfter"]


async def test_kill_9_during_concurrent_writes_loses_nothing_acknowledged(tmp_path: Path) -> None:
    data = tmp_path / "data"
    acknowledged: dict[str, dict[int, float]] = {task_id: {} for task_id in TASKS}
    async with (
        running(serve_argv(data), env=SERVE_ENV) as server,
        httpx.AsyncClient(base_url=server.url, headers=ADMIN_HEADERS, timeout=60) as http,
    ):
        for task_id in TASKS:
            assert (await http.post("/tasks/create", json={"id": task_id})).status_code == 201
    for cycle in range(3):
        before = sum(map(len, acknowledged.values()))
        async with running(serve_argv(data), env=SERVE_ENV) as server:
            enough, stop = trio.Event(), trio.Event()
            async with trio.open_nursery() as nursery:
                nursery.start_soon(mutate_until_killed, server.url, acknowledged, enough, stop)
                with trio.fail_after(120):
                    await enough.wait()
                server.kill()  # mid-stream: 32 clients are still sending
                await server.wait()
                stop.set()
        after = sum(map(len, acknowledged.values()))
        assert after >= before + KILL_AFTER, f"cycle {cycle}: {after - before} acknowledged"

        async with (
            running(serve_argv(data), env=SERVE_ENV) as server,
            httpx.AsyncClient(base_url=server.url, headers=ADMIN_HEADERS, timeout=60) as http,
        ):
            for task_id, seqs in acknowledged.items():
                events = await history(http, task_id)
                for seq, value in seqs.items():
                    assert seq in events, f"cycle {cycle}: {task_id} lost seq {seq}"
                    assert events[seq]["progress"] == value
                task = (await http.get(f"/tasks/{task_id}")).json()
                assert task["seq"] == max(events)  # history and state agree
                assert sorted(events) == list(range(1, task["seq"] + 1))  # no holes
            listed = (await http.get("/tasks", params={"limit": 100})).json()
            assert listed["pagination"]["total"] == 50
            by_id = {t["taskId"]: t for t in listed["tasks"]}
            for task_id in TASKS:  # the registry was refreshed from the files
                task = (await http.get(f"/tasks/{task_id}")).json()
                assert by_id[task_id]["progress"] == task["progress"]


async def test_alarms_fire_after_a_restart(tmp_path: Path) -> None:
    data = tmp_path / "data"
    async with (
        running(serve_argv(data), env=SERVE_ENV) as server,
        httpx.AsyncClient(base_url=server.url, headers=ADMIN_HEADERS, timeout=60) as http,
    ):
        await http.post("/tasks/create", json={"id": "heartbeat", "timeoutSeconds": 3})
        await http.post("/tasks/create", json={"id": "retained", "ttlSeconds": 3})
        await http.post("/tasks/complete", json={"taskId": "retained"})
        # Both alarms are due 3 s after their answers at the latest.
        due = time.time() + 3
        await http.post("/tasks/create", json={"id": "alive", "timeoutSeconds": 3600})
        server.kill()
        await server.wait()
    # Both alarms come due while no server runs (waiting for the wall clock, not for a task).
    await trio.sleep(max(0.0, due - time.time()) + 0.1)
    async with (
        running(serve_argv(data), env=SERVE_ENV) as server,
        httpx.AsyncClient(base_url=server.url, headers=ADMIN_HEADERS, timeout=60) as http,
    ):
        with trio.fail_after(60):
            while (await http.get("/tasks/heartbeat")).json()["status"] != "failed":
                await trio.sleep(0.05)
            while (await http.get("/tasks/retained")).status_code != 404:
                await trio.sleep(0.05)
        task = (await http.get("/tasks/heartbeat")).json()
        assert task["error"] == "timed out"
        events = (await http.get("/tasks/heartbeat/history")).json()["events"]
        assert [e["eventType"] for e in events] == ["created", "timeout"]
        assert (await http.get("/tasks/alive")).json()["status"] == "pending"
        listed = (await http.get("/tasks")).json()
        assert {t["taskId"] for t in listed["tasks"]} == {"heartbeat", "alive"}


async def test_a_heartbeat_is_kept_alive_by_updates(tmp_path: Path) -> None:
    # The one wall-clock assumption left: an update's round trip stays under this (a
    # loaded 2-core machine answers in milliseconds; the exact timing is tested in
    # virtual time in tests/test_task_actor.py).
    timeout = 5.0
    async with (
        running(serve_argv(tmp_path / "data"), env=SERVE_ENV) as server,
        httpx.AsyncClient(base_url=server.url, headers=ADMIN_HEADERS, timeout=60) as http,
    ):
        await http.post("/tasks/create", json={"id": "beating", "timeoutSeconds": timeout})
        started = trio.current_time()
        value = 0
        # Outlive the first deadline by half a timeout, updating back to back: each update
        # re-arms the heartbeat, so each is accepted (a failed task would refuse it).
        while trio.current_time() - started < 1.5 * timeout:
            value += 1
            body = {"taskId": "beating", "progress": value % 100}
            assert (await http.post("/tasks/updateProgress", json=body)).status_code == 200
            await trio.sleep(0.05)
        assert (await http.get("/tasks/beating")).json()["status"] == "in-progress"
        with trio.fail_after(60):  # silence: the heartbeat fails it
            while (await http.get("/tasks/beating")).json()["status"] != "failed":
                await trio.sleep(0.05)
        assert (await http.get("/tasks/beating")).json()["error"] == "timed out"


async def test_a_corrupt_task_file_answers_503_while_others_serve(tmp_path: Path) -> None:
    data = tmp_path / "data"
    async with (
        running(serve_argv(data), env=SERVE_ENV) as server,
        httpx.AsyncClient(base_url=server.url, headers=ADMIN_HEADERS, timeout=60) as http,
    ):
        for task_id in ("broken", "healthy"):
            await http.post("/tasks/create", json={"id": task_id})
        server.terminate()
        with trio.fail_after(60):
            await server.wait()
    locate(data, "task", "broken").write_bytes(b"\x13garbage" * 4096)
    async with (
        running(serve_argv(data), env=SERVE_ENV) as server,
        httpx.AsyncClient(base_url=server.url, headers=ADMIN_HEADERS, timeout=60) as http,
    ):
        response = await http.get("/tasks/broken")
        assert response.status_code == 503
        assert response.json()["error"]["code"] == "STORAGE_UNAVAILABLE"
        update = {"taskId": "broken", "progress": 5}
        assert (await http.post("/tasks/updateProgress", json=update)).status_code == 503
        healthy = {"taskId": "healthy", "progress": 5}
        assert (await http.post("/tasks/updateProgress", json=healthy)).status_code == 200
        assert (await http.get("/health")).json()["status"] == "healthy"


async def test_a_busy_product_database_answers_503_then_serves_again(tmp_path: Path) -> None:
    """A database error nothing handles (the registry's write lock held past its 5 s busy
    timeout) is 503 STORAGE_UNAVAILABLE, not 500; the server serves again once it is free."""
    data = tmp_path / "data"
    async with (
        running(serve_argv(data), env=SERVE_ENV) as server,
        httpx.AsyncClient(base_url=server.url, headers=ADMIN_HEADERS, timeout=60) as http,
    ):
        key = {"owner": "alice", "role": "service"}
        holder = sqlite3.connect(data / "registry.sqlite", isolation_level=None)
        try:
            holder.execute("BEGIN IMMEDIATE")  # what `spectral keys` holding it would do
            busy = await http.post("/admin/keys", json=key)
        finally:
            holder.execute("ROLLBACK")
            holder.close()
        assert busy.status_code == 503, busy.text
        assert busy.json()["error"]["code"] == "STORAGE_UNAVAILABLE"
        assert "database" in busy.json()["error"]["message"]
        assert busy.headers["retry-after"] == "1"
        assert (await http.post("/admin/keys", json=key)).status_code == 201
        assert (await http.get("/health")).json()["status"] == "healthy"


async def test_listing_totals_and_filters_on_500_tasks(tmp_path: Path) -> None:
    async with (
        running(serve_argv(tmp_path / "data"), env=SERVE_ENV) as server,
        httpx.AsyncClient(base_url=server.url, timeout=60, headers=ADMIN_HEADERS) as http,
    ):
        for start in range(0, 500, 100):
            async with trio.open_nursery() as nursery:
                for n in range(start, start + 100):
                    body = {"id": f"bulk-{n:03d}", "status": "in-progress"}
                    nursery.start_soon(partial(http.post, "/tasks/create", json=body))
        updates = [{"taskId": f"bulk-{n:03d}", "progress": 50} for n in range(0, 500, 2)]
        await http.post("/tasks/batchUpdateProgress", json={"updates": updates})
        for n in range(0, 500, 5):
            await http.post("/tasks/complete", json={"taskId": f"bulk-{n:03d}"})

        everything = (await http.get("/tasks", params={"limit": 100})).json()
        assert everything["pagination"] == {"total": 500, "page": 1, "limit": 100, "pages": 5}
        seen: list[str] = []
        for page in range(1, 6):
            body = (await http.get("/tasks", params={"limit": 100, "page": page})).json()
            seen += [t["taskId"] for t in body["tasks"]]
        assert sorted(seen) == [f"bulk-{n:03d}" for n in range(500)]
        assert len(set(seen)) == 500

        done = (await http.get("/tasks", params={"status": "success", "limit": 100})).json()
        assert done["pagination"]["total"] == 100
        running_now = (await http.get("/tasks", params={"status": "in-progress"})).json()
        assert running_now["pagination"]["total"] == 400
        prefixed = (await http.get("/tasks", params={"q": "bulk-49", "limit": 100})).json()
        assert sorted(t["taskId"] for t in prefixed["tasks"]) == [
            f"bulk-{n}" for n in range(490, 500)
        ]
        with trio.fail_after(60):  # progress reaches the listing (after the flush interval)
            while True:
                body = (await http.get("/tasks", params={"q": "bulk-002"})).json()
                if body["tasks"][0]["progress"] == 50:
                    break
                await trio.sleep(0.05)
