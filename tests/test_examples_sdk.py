"""examples/report_progress.py and examples/asyncio_worker.py run against a live server."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
import trio

from tests.conftest import ADMIN_HEADERS, ADMIN_KEY
from tests.procs import Server

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize("example", ["report_progress.py", "asyncio_worker.py"])
async def test_a_worker_example_reports_and_completes(server: Server, example: str) -> None:
    task_id = f"example-{example.removesuffix('.py')}"
    env = {**os.environ, "SPECTRAL_URL": server.url, "SPECTRAL_API_KEY": ADMIN_KEY}
    done = await trio.to_thread.run_sync(
        lambda: subprocess.run(
            [sys.executable, str(ROOT / "examples" / example), task_id],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == [task_id, "success"]
    async with httpx.AsyncClient(base_url=server.url, headers=ADMIN_HEADERS) as http:
        task = (await http.get(f"/tasks/{task_id}")).json()
        events = (await http.get(f"/tasks/{task_id}/history", params={"limit": 1000})).json()
    assert (task["progress"], task["metadata"]) == (100, {"items": 1000})
    progress = [e for e in events["events"] if e["eventType"] == "progress"]
    assert progress[-1]["message"] == "1000/1000 items"  # the last value always arrives
    assert len(events["events"]) < 100  # 1,000 calls coalesced


async def test_notify_user_reaches_the_listener(server: Server) -> None:
    env = {**os.environ, "SPECTRAL_URL": server.url, "SPECTRAL_API_KEY": ADMIN_KEY}
    example = str(ROOT / "examples" / "notify_user.py")
    listener = await trio.lowlevel.open_process(
        [sys.executable, example, "listen", "alice"], env=env, stdout=subprocess.PIPE
    )
    assert listener.stdout is not None
    try:
        async with httpx.AsyncClient(base_url=server.url, headers=ADMIN_HEADERS) as http:
            with trio.fail_after(60):  # attached once the room's health counts it
                while True:
                    health = await http.get("/rooms/user_alice/health")
                    if health.status_code == 200 and health.json()["connections"] == 1:
                        break
                    await trio.sleep(0.05)
        sent = await trio.to_thread.run_sync(
            lambda: subprocess.run(
                [sys.executable, example, "notify", "alice", "your report is ready"],
                env=env,
                capture_output=True,
                text=True,
                timeout=60,
                check=True,
            )
        )
        assert sent.stdout.startswith("delivered to 1 subscriber(s)")
        line = b""
        with trio.fail_after(60):
            while not line.endswith(b"\n"):
                line += await listener.stdout.receive_some(1)
        message = json.loads(line)
        assert (message["type"], message["text"], message["roomSeq"]) == (
            "notification",
            "your report is ready",
            1,
        )
    finally:
        listener.kill()
        await listener.wait()


async def test_provider_callbacks_drive_a_task_the_watcher_follows(server: Server) -> None:
    env = {**os.environ, "SPECTRAL_URL": server.url, "SPECTRAL_API_KEY": ADMIN_KEY}
    done = await trio.to_thread.run_sync(
        lambda: subprocess.run(
            [sys.executable, str(ROOT / "examples" / "provider_callbacks.py"), "pay_7"],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
    )
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert [line for line in lines if line.startswith("provider:")] == [
        "provider: payment.created -> initialized",
        "provider: payment.processing -> processing",
        "provider: payment.processing -> processing",
        "provider: payment.succeeded -> completed",
    ]
    # The watcher saw every change, in order, from the creation to the end.
    seen = [line.split()[3:] for line in lines if line.startswith("watcher:")]
    assert seen[1:] == [["progress", "30%"], ["progress", "70%"], ["complete", "100%"]]
    assert lines[-1].endswith(": success 100.0")
    async with httpx.AsyncClient(base_url=server.url, headers=ADMIN_HEADERS) as http:
        task = (await http.get("/tasks/by-external-id/pay_7")).json()
        assert (task["status"], task["owner"]) == ("success", "admin")
        assert (await http.get("/integrations")).json() == {"integrations": []}  # cleaned up
