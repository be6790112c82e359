"""The id -> file map end to end: a real server over a data directory of the old (hashed)
layout, and kill -9 in the middle of a stream of creations."""

from __future__ import annotations

import json
import sqlite3
import tarfile
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
import trio

from storage import is_file_name, locate, named_path, object_digest, object_path
from tests.conftest import ADMIN_HEADERS, SERVE_ENV, serve_argv
from tests.procs import running
from tests.test_doctor import run_doctor, stop, text

OLD_LAYOUT = Path(__file__).resolve().parent / "data" / "old-layout.tar.gz"
#: Fields tasks gained after the old layout was recorded: a task made before has them
#: at their defaults (no tags, no external id, a root of weight 1 without children).
NEW_FIELDS = {
    "tags": [],
    "externalId": None,
    "parentId": None,
    "childCount": 0,
    "weight": 1,
    "onChildFailure": "fail",
    "completeWithChildren": False,
    "depth": 1,
}


def unpack_old_layout(tmp_path: Path) -> tuple[Path, dict[str, Any]]:
    """The data directory written by the old code (tests/data/make_old_layout.py)."""
    with tarfile.open(OLD_LAYOUT) as tar:
        tar.extractall(tmp_path, filter="data")
    data = tmp_path / "data"
    return data, json.loads((data / "expected.json").read_text())


async def test_a_data_dir_of_the_old_layout_is_still_served(tmp_path: Path) -> None:
    data, expected = unpack_old_layout(tmp_path)
    for task_id in expected:
        assert object_path(data, "task", task_id).exists()
    async with (
        running(serve_argv(data), env=SERVE_ENV) as server,
        httpx.AsyncClient(base_url=server.url, headers=ADMIN_HEADERS, timeout=60) as http,
    ):
        for task_id, answer in expected.items():
            response = await http.get(f"/tasks/{task_id}")
            assert response.status_code == 200, response.text
            assert response.json() == {**answer, **NEW_FIELDS}
        listed = (await http.get("/tasks", params={"limit": 100})).json()
        assert {task["taskId"] for task in listed["tasks"]} == set(expected)

        update = {"taskId": "old-running", "progress": 77}
        assert (await http.post("/tasks/updateProgress", json=update)).status_code == 200
        assert (await http.get("/tasks/old-running")).json()["progress"] == 77
        assert (await http.delete("/tasks/old-pending")).status_code in (200, 204)
        assert not object_path(data, "task", "old-pending").exists()
        body = {"id": "new-task"}
        assert (await http.post("/tasks/create", json=body)).status_code == 201
        metrics = (await http.get("/metrics")).text
        assert 'spectral_pool_files_ready{kind="task"}' in metrics
        assert 'spectral_pool_misses_total{kind="task"}' in metrics
        await stop(server)

    # Old rows keep the hashed layout; the new task has a named file from the pool.
    assert locate(data, "task", "old-running") == object_path(data, "task", "old-running")
    new_file = locate(data, "task", "new-task")
    assert is_file_name(new_file.stem) and new_file.exists()
    checked = await run_doctor(data)
    assert checked.returncode == 0, text(checked)


CLIENTS = 16
KILL_AFTER = 150


async def create_until_killed(url: str, acknowledged: set[str], enough: trio.Event) -> None:
    """Create tasks from many connections; stop at the first connection error."""

    async def client(http: httpx.AsyncClient, index: int) -> None:
        n = 0
        while True:
            task_id = f"c{index}-{n}"
            n += 1
            try:
                response = await http.post("/tasks/create", json={"id": task_id})
            except httpx.HTTPError:
                return  # the server died under us
            if response.status_code == 201:
                acknowledged.add(task_id)
                if len(acknowledged) >= KILL_AFTER:
                    enough.set()

    limits = httpx.Limits(max_connections=CLIENTS, max_keepalive_connections=CLIENTS)
    async with (
        httpx.AsyncClient(base_url=url, headers=ADMIN_HEADERS, timeout=60, limits=limits) as http,
        trio.open_nursery() as nursery,
    ):
        for index in range(CLIENTS):
            nursery.start_soon(client, http, index)


def check_map(data: Path) -> dict[str, str | None]:
    """Every task row points at a file that holds that task; no two rows share a file."""
    conn = sqlite3.connect(data / "registry.sqlite")
    rows = dict(conn.execute("SELECT id, file FROM objects WHERE kind = 'task'"))
    conn.close()
    shared = [name for name, n in Counter(f for f in rows.values() if f).items() if n > 1]
    assert not shared, shared
    for task_id, name in rows.items():
        path = named_path(data, "task", name) if name else object_path(data, "task", task_id)
        assert name is None or path.stem != object_digest("task", task_id)
        holder = sqlite3.connect(path)
        try:
            (held,) = holder.execute("SELECT value FROM _object WHERE key = 'id'").fetchone()
        finally:
            holder.close()
        assert held == task_id, (task_id, path)
    return rows


async def test_kill_9_during_creations_leaves_the_map_consistent(tmp_path: Path) -> None:
    data = tmp_path / "data"
    acknowledged: set[str] = set()
    for _cycle in range(2):
        async with running(serve_argv(data), env=SERVE_ENV) as server:
            enough = trio.Event()
            async with trio.open_nursery() as nursery:
                nursery.start_soon(create_until_killed, server.url, acknowledged, enough)
                with trio.fail_after(120):
                    await enough.wait()
                server.kill()  # SIGKILL: 16 clients are still creating
                await server.wait()
        rows = check_map(data)
        assert acknowledged <= set(rows)  # a 201 means the row was committed

    # Restart (start-up recovery reclaims cut-short creations), then the doctor.
    async with (
        running(serve_argv(data), env=SERVE_ENV) as server,
        httpx.AsyncClient(base_url=server.url, headers=ADMIN_HEADERS, timeout=60) as http,
    ):
        for task_id in sorted(acknowledged)[:50]:
            assert (await http.get(f"/tasks/{task_id}")).status_code == 200
        await stop(server)
    check_map(data)
    repaired = await run_doctor(data, "--repair")
    assert repaired.returncode == 0, text(repaired)
    # At most cut-short creations (no record: nothing lost) can be left to reclaim.
    for line in repaired.stdout.decode().splitlines():
        assert line.startswith(("repair", "after repair", str(data))) or ": abandoned:" in line, (
            line
        )
    check_map(data)
