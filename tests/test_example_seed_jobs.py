"""examples/seed_jobs/: the Socket.IO jobs system's browser page and webhook receiver,
unchanged, against a real spectral server.

The server verifies the users' HS256 JWTs (owner from ``userId``) and allows the
page's origin (a page opened from disk is ``null``; ``*`` here). Debian's chromium
(tests/browser.py) opens ``index.html`` from disk with a JWT for ``user-7`` and
subscribes to one job; the backend (this test, with the admin key) creates jobs for
``user-7`` and for ``user-8`` with ``"owner"`` and drives them. The page must show
user-7's jobs only, with the seed's payloads, over the WebSocket transport after the
upgrade; ``receiver.mjs`` under Node must verify and print the ``seed-jobs`` webhook
bodies of user-7's events, once each. ``SPECTRAL_SCREENSHOT=1`` also writes the
screenshot docs/migrating.md shows (docs/seed-jobs-page.png).
"""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import httpx
import jwt
import pytest
import trio

from tests.browser import Seen, open_tab, png_size, wait_for
from tests.conftest import ADMIN_HEADERS, SERVE_ENV, serve_argv
from tests.procs import ROOT, Server, running

EXAMPLE = ROOT / "examples" / "seed_jobs"
PAGE = EXAMPLE / "index.html"
SCREENSHOT = ROOT / "docs" / "seed-jobs-page.png"
SECRET = "seed-jobs-example-secret-0123456789abcdef"
ENV = {
    **SERVE_ENV,
    "SPECTRAL_JWT_SECRET": SECRET,
    "SPECTRAL_JWT_OWNER_CLAIM": "userId",
    "SPECTRAL_CORS_ORIGINS": "*",
    "SPECTRAL_WEBHOOK_ALLOW_PRIVATE": "1",
}
#: Generous bound of every wait (seconds): nothing here should come close.
GUARD = 120


def user_token(user: str) -> str:
    """The seed backend's token for ``user``: HS256, ``userId``, an hour to live."""
    return jwt.encode({"userId": user, "exp": int(time.time()) + 3600}, SECRET, "HS256")


async def post(http: httpx.AsyncClient, path: str, body: dict[str, Any]) -> dict[str, Any]:
    """POST with the admin key; the JSON answer (2xx asserted)."""
    response = await http.post(path, json=body)
    assert response.is_success, response.text
    return response.json()


def received(receiver: Server) -> list[dict[str, Any]]:
    """The deliveries the receiver verified and printed, in order."""
    return [json.loads(line) for line in receiver.lines if line.startswith("{")]


async def wait_for_deliveries(receiver: Server, count: int) -> list[dict[str, Any]]:
    """The receiver's deliveries once there are ``count`` of them."""
    with trio.fail_after(GUARD):
        while len(received(receiver)) < count:
            await trio.sleep(0.05)
    return received(receiver)


PAGE_STATE = """() => ({
  connected: window.__jobs.connected,
  user: window.__jobs.user,
  transport: window.__jobs.transport,
  events: window.__jobs.events,
  subscribed: window.__jobs.subscribed,
  jobs: Object.keys(window.__jobs.jobs).sort(),
  rows: [...document.querySelectorAll("#jobs li")].map((li) => li.innerText),
  connection: document.getElementById("connection").textContent,
  error: document.getElementById("error").hidden ? null
    : document.getElementById("error").textContent,
})"""

ALL_FINISHED = """() => ["job-42", "job-43", "job-44"].every(
  (id) => window.__jobs.jobs[id] && window.__jobs.jobs[id].state !== "active")
  && window.__jobs.subscribed.length >= 2"""


def page_state(page: Any, seen: Seen) -> dict[str, Any]:
    found = page.evaluate(PAGE_STATE)
    found["problems"] = seen.problems(page)
    return found


async def test_the_seed_page_and_receiver_follow_a_users_jobs(tmp_path: Path) -> None:
    node = shutil.which("node")
    if node is None:
        pytest.fail("Node.js (>= 20) is required for the webhook receiver; install it")
    async with (
        running(serve_argv(tmp_path / "data"), env=ENV) as server,
        httpx.AsyncClient(base_url=server.url, headers=ADMIN_HEADERS, timeout=60) as http,
    ):
        # The webhook first (its secret is shown once), then the receiver holding it.
        hook = await post(
            http,
            "/webhooks",
            {"url": "http://127.0.0.1:9/", "eventType": "all", "owner": "user-7",
             "format": "seed-jobs"},
        )  # fmt: skip
        receiver_env = {"WEBHOOK_SECRET": hook["secret"]}
        receiver_argv = [node, str(EXAMPLE / "receiver.mjs"), "--port", "0"]
        async with running(receiver_argv, env=receiver_env) as receiver:
            response = await http.put(f"/webhooks/{hook['id']}", json={"url": receiver.url + "/"})
            assert response.is_success, response.text
            query = {"server": server.url, "token": user_token("user-7"), "job": "job-42"}
            url = PAGE.as_uri() + "?" + urlencode(query)
            async with open_tab(server.url, url, width=720, height=560, local_file=PAGE) as tab:
                await tab.run(wait_for("() => window.__jobs && window.__jobs.user === 'user-7'"))

                # The backend: user-7's jobs and one of user-8, the page must not see.
                for task_id, owner in [("job-42", "user-7"), ("job-99", "user-8")]:
                    body = {"taskId": task_id, "owner": owner, "metadata": {"name": "export"}}
                    await post(http, "/tasks/create", body)
                await post(http, "/tasks/updateProgress", {"taskId": "job-99", "progress": 50})
                await post(http, "/tasks/updateProgress", {"taskId": "job-42", "progress": 40})
                result = {"rows": 1200}
                await post(
                    http, "/tasks/complete", {"taskId": "job-42", "metadata": {"result": result}}
                )
                await post(http, "/tasks/create", {"taskId": "job-43", "owner": "user-7"})
                await post(http, "/tasks/fail", {"taskId": "job-43", "error": "disk full"})
                await post(http, "/tasks/create", {"taskId": "job-44", "owner": "user-7"})
                await post(http, "/tasks/cancel", {"taskId": "job-44"})

                await tab.run(wait_for(ALL_FINISHED))
                found = await tab.run(page_state)
                if os.environ.get("SPECTRAL_SCREENSHOT"):
                    await tab.run(lambda page, _: page.screenshot(path=str(SCREENSHOT)))
                    assert png_size(SCREENSHOT.read_bytes())[0] == 720

            deliveries = await wait_for_deliveries(receiver, 4)

    # The page: user-7's jobs only, the seed's payloads, after the upgrade to WebSocket.
    assert found["problems"] == []
    assert found["error"] is None
    assert found["connection"] == "Connected as user-7"
    assert found["transport"] == "websocket"
    assert found["jobs"] == ["job-42", "job-43", "job-44"]
    by_job = {(e["jobId"], e["kind"]): e for e in found["events"]}
    assert by_job[("job-42", "progress")]["progress"] == 40
    assert by_job[("job-42", "progress")]["state"] == "active"
    assert by_job[("job-42", "completed")]["result"] == result
    assert by_job[("job-43", "failed")]["error"] == "disk full"
    assert by_job[("job-44", "failed")]["error"] == "canceled"
    assert all(isinstance(e["timestamp"], int) for e in found["events"])
    assert [e["kind"] for e in found["subscribed"]] == ["progress", "completed"]
    assert all(e["jobId"] == "job-42" for e in found["subscribed"])
    assert any("completed · 100%" in row and "Result:" in row for row in found["rows"])

    # The receiver: every seed event of user-7, verified, once each, in the seed's shape.
    jobs = [d["job"] for d in deliveries]
    assert len({d["webhookId"] for d in deliveries}) == len(deliveries) == 4
    assert {"id": "job-42", "jobname": "export", "userId": "user-7", "progress": 40,
            "eventType": "progress"} in jobs  # fmt: skip
    assert {"id": "job-42", "jobname": "export", "userId": "user-7", "result": result,
            "eventType": "completed"} in jobs  # fmt: skip
    assert {"id": "job-43", "jobname": "job-43", "userId": "user-7", "error": "disk full",
            "eventType": "failed"} in jobs  # fmt: skip
    assert {"id": "job-44", "jobname": "job-44", "userId": "user-7", "error": "canceled",
            "eventType": "failed"} in jobs  # fmt: skip
