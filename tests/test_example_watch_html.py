"""examples/watch.html, the browser page that watches a task, in a real browser against a
real server: the bar follows REST updates, the watch resumes across server restarts
(SIGTERM and SIGKILL) with every seq once, and a bad token stops it with an error.

Debian's chromium, driven by Playwright's sync API in a worker thread of its own (as
tests/test_reference_browser.py does), opens the file from disk with the server, task
and token in its query string. Every HTTP request the page makes to anything but the
server is aborted and recorded, and every WebSocket it opens is recorded: the test
fails if it reached for anything else. ``SPECTRAL_SCREENSHOT=1`` also writes the
screenshot docs/sdk.md shows (docs/watch-page.png):

    SPECTRAL_SCREENSHOT=1 .venv/bin/python -m pytest tests/test_example_watch_html.py -k moves
"""

from __future__ import annotations

import os
import re
import socket
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import httpx
import pytest
import trio
from playwright.sync_api import Page

from tests.browser import (
    LOW_CONTRAST,
    OVERFLOW,
    Seen,
    Tab,
    open_tab,
    png_size,
    wait_for,
)
from tests.conftest import ADMIN_HEADERS, SERVE_ENV, serve_argv
from tests.procs import ROOT, Server, running

PAGE = ROOT / "examples" / "watch.html"
SCREENSHOT = ROOT / "docs" / "watch-page.png"
NARROW = 360
#: Generous deadline of every wait on a condition in the page (milliseconds).
WAIT_MS = 60_000
#: Whole-test guard (seconds): nothing here should come close.
GUARD = 180
#: Fast reconnects for the tests (seconds): the page's defaults are 0.25 and 10.
BACKOFF = {"backoff": "0.05", "maxBackoff": "0.5"}
#: Text that means the page printed a value it did not understand.
FORBIDDEN = ("undefined", "[object Object]", "NaN", "null%")


@asynccontextmanager
async def watch_page(
    server_url: str,
    query: dict[str, str],
    *,
    width: int = 800,
    height: int = 900,
    scheme: str = "light",
) -> AsyncIterator[Tab]:
    """examples/watch.html opened from disk with ``query``, in a thread of its own."""
    url = PAGE.as_uri() + "?" + urlencode(query)
    async with open_tab(
        server_url, url, width=width, height=height, scheme=scheme, local_file=PAGE
    ) as tab:
        yield tab


# -- what runs in the page's thread ----------------------------------------------------------


#: Where the page stands, as one dict.
STATE = """() => ({
  phase: window.__watch && window.__watch.phase,
  pending: window.__watch && window.__watch.pending,
  connections: window.__watch && window.__watch.connections,
  drops: window.__watch && window.__watch.drops,
  seqs: window.__seqs,
  value: document.getElementById("bar").value,
  percent: document.getElementById("percent").textContent,
  status: document.getElementById("status").textContent,
  message: document.getElementById("message").textContent,
  connection: document.getElementById("connection").textContent,
  error: document.getElementById("error").hidden ? null
    : document.getElementById("error").textContent,
  log: [...document.querySelectorAll("#log li")].map((li) => li.textContent).reverse(),
  logged: [...document.querySelectorAll("#log li[data-seq]")].map((li) => +li.dataset.seq)
    .reverse(),
  text: document.body.innerText,
})"""

#: The bar and the message show ``value``/``message`` (the progressbar read through its role).
SHOWS = """([value, message]) => {
  const bar = document.querySelector("progress");
  return bar.value === value && bar.getAttribute("aria-label") === "Task progress" &&
    document.getElementById("message").textContent === message;
}"""

DONE = "() => window.__watch && window.__watch.phase === 'done'"


def state(page: Page, seen: Seen) -> dict[str, Any]:
    found = page.evaluate(STATE)
    found["problems"] = seen.problems(page)
    found["sockets"] = list(seen.sockets)
    found["requested"] = list(seen.requested)
    return found


def assert_clean(found: dict[str, Any]) -> None:
    """Nothing reached elsewhere, no script error, nothing shown that reads as a bug."""
    assert found["problems"] == []
    assert found["requested"] == []  # no HTTP at all: only the WebSocket
    for word in FORBIDDEN:
        assert word not in found["text"], (word, found["text"])


# -- the server side ---------------------------------------------------------------------------


async def post(http: httpx.AsyncClient, path: str, body: dict[str, Any]) -> dict[str, Any]:
    """POST; the JSON answer (2xx asserted)."""
    response = await http.post(path, json=body)
    assert response.is_success, response.text
    return response.json()


async def progress(http: httpx.AsyncClient, task_id: str, value: float, message: str) -> int:
    """updateProgress; the new seq."""
    body = {"taskId": task_id, "progress": value, "message": message}
    return (await post(http, "/tasks/updateProgress", body))["task"]["seq"]


async def watch_token(http: httpx.AsyncClient, task_id: str) -> str:
    """``POST /tokens/watch`` for ``task_id``."""
    return (await post(http, "/tokens/watch", {"taskId": task_id}))["token"]


def query(server: Server, task_id: str, token: str) -> dict[str, str]:
    return {"server": server.url, "task": task_id, "token": token, **BACKOFF}


def free_port() -> int:
    """A loopback port nothing listens on now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def fixed_port_argv(data_dir: Path, port: int) -> list[str]:
    """``spectral serve`` over ``data_dir`` on ``port`` (so a restart keeps the URL)."""
    argv = serve_argv(data_dir)
    argv[argv.index("--port") + 1] = str(port)
    return argv


# -- the tests ---------------------------------------------------------------------------------


async def test_the_bar_moves_with_each_update_and_the_page_ends_at_complete(
    server: Server, client: httpx.AsyncClient, tmp_path: Path
) -> None:
    await post(client, "/tasks/create", {"id": "export-42", "metadata": {"rows": 1200}})
    token = await watch_token(client, "export-42")
    with trio.fail_after(GUARD):
        async with watch_page(server.url, query(server, "export-42", token)) as tab:
            snapshot = await tab.run(wait_for("() => window.__seqs.length === 1 && window.__seqs"))
            assert snapshot == [1]
            first = await tab.run(state)
            assert (first["status"], first["value"], first["percent"]) == ("pending", 0, "0%")
            for value in (12.5, 40, 75):
                rows = f"{round(value * 12)} of 1200 rows exported"
                await progress(client, "export-42", value, rows)
                await tab.run(wait_for(SHOWS, [value, rows]))
            middle = await tab.run(state)
            image = await tab.run(lambda page, seen: page.screenshot(full_page=True))
            await post(client, "/tasks/complete", {"taskId": "export-42"})
            await tab.run(wait_for(DONE))
            end = await tab.run(state)
    assert (middle["status"], middle["percent"], middle["phase"]) == ("in-progress", "75%", "open")
    assert middle["seqs"] == [1, 2, 3, 4]
    assert (end["status"], end["value"], end["percent"]) == ("success", 100, "100%")
    assert end["message"] == "Task completed"
    assert end["seqs"] == end["logged"] == [1, 2, 3, 4, 5]
    assert end["connections"] == 1 and end["drops"] == 0 and end["error"] is None
    assert end["pending"] is False  # closed, nothing scheduled: the watch is over
    assert end["connection"].startswith("finished")
    assert len(end["sockets"]) == 1 and "/ws/task/export-42?token=" in end["sockets"][0]
    assert_clean(end)

    width, _ = png_size(image)
    assert width == 800
    (tmp_path / SCREENSHOT.name).write_bytes(image)
    if os.environ.get("SPECTRAL_SCREENSHOT") == "1":
        SCREENSHOT.write_bytes(image)


@pytest.mark.parametrize("stop", ["terminate", "kill"])
async def test_the_page_resumes_across_a_restart_with_every_seq_once(
    tmp_path: Path, stop: str
) -> None:
    """terminate: close 1001, then refused connections; kill: the connection drops.

    While the server is down the browser is also offline, so the updates sent after the
    restart are missed live and must come back as the replay of ``since``/``epoch``; going
    online again makes the page reconnect at once (its ``online`` listener).
    """
    data, port = tmp_path / "data", free_port()
    argv = fixed_port_argv(data, port)
    with trio.fail_after(GUARD):
        async with running(argv, env=SERVE_ENV) as server:
            url = server.url
            async with httpx.AsyncClient(base_url=url, headers=ADMIN_HEADERS) as http:
                task = (await post(http, "/tasks/create", {"id": "long"}))["task"]
                token = await watch_token(http, "long")
            async with watch_page(url, query(server, "long", token)) as tab:
                await tab.run(wait_for("() => window.__seqs.length === 1"))
                async with httpx.AsyncClient(base_url=url, headers=ADMIN_HEADERS) as http:
                    for value in range(1, 4):  # received live
                        await progress(http, "long", value * 10, f"step {value}")
                        await tab.run(wait_for(SHOWS, [value * 10, f"step {value}"]))
                    for value in range(4, 7):  # maybe in flight when the server stops
                        await progress(http, "long", value * 10, f"step {value}")
                if stop == "terminate":
                    server.terminate()
                    assert await server.wait() == 0
                else:
                    server.kill()
                    await server.wait()
                await tab.run(wait_for("() => window.__watch.drops >= 1"))
                await tab.run(lambda page, seen: page.context.set_offline(True))
                down = await tab.run(state)
                async with (
                    running(argv, env=SERVE_ENV) as again,
                    httpx.AsyncClient(base_url=url, headers=ADMIN_HEADERS) as http,
                ):
                    assert again.url == url
                    for value in range(7, 10):  # the page is offline: these are replayed
                        last = await progress(http, "long", value * 10, f"step {value}")
                    await tab.run(lambda page, seen: page.context.set_offline(False))
                    await tab.run(wait_for(SHOWS, [90, "step 9"]))
                    resumed = await tab.run(state)
                    await post(http, "/tasks/complete", {"taskId": "long"})
                    await tab.run(wait_for(DONE))
                    end = await tab.run(state)
    assert down["phase"] in ("waiting", "connecting") and down["seqs"][:4] == [1, 2, 3, 4]
    # Every seq exactly once and in order, across the restart.
    assert end["seqs"] == end["logged"] == list(range(1, last + 2)), end["seqs"]
    assert resumed["seqs"] == list(range(1, last + 1))
    assert (end["status"], end["value"], end["phase"]) == ("success", 100, "done")
    assert end["connections"] >= 2 and end["drops"] >= 1 and end["error"] is None
    # It resumed with since and epoch, and was sent what it missed as a replay.
    resumes = [s for s in end["sockets"] if "since=" in s]
    assert resumes and all(f"epoch={task['epoch']}" in s for s in resumes), end["sockets"]
    replayed = [line for line in end["log"] if "(replayed)" in line]
    assert any(f"#{last} progress (replayed)" in line for line in replayed), end["log"]
    assert any("resuming after seq" in line for line in end["log"])
    assert_clean(end)


async def test_a_bad_token_shows_an_error_and_is_never_retried(
    server: Server, client: httpx.AsyncClient
) -> None:
    for task_id in ("mine", "other", "gone"):
        await post(client, "/tasks/create", {"id": task_id})
    good = await watch_token(client, "mine")
    other = await watch_token(client, "other")
    gone = await watch_token(client, "gone")
    assert (await client.delete("/tasks/gone")).is_success
    # Forged: the same payload under another signature.
    payload, signature = good.rsplit(".", 1)
    forged = payload + "." + ("A" if signature[0] != "A" else "B") + signature[1:]

    def stopped(code: int) -> str:
        return f"""() => window.__watch && window.__watch.phase === "failed" &&
          !document.getElementById("error").hidden &&
          document.getElementById("error").textContent.includes("({code})")"""

    def watch_with_form(task_id: str, token: str) -> Callable[[Page, Seen], None]:
        """Fill the labelled fields and press Watch, as a person would."""

        def command(page: Page, seen: Seen) -> None:
            page.get_by_label("Task id").fill(task_id)
            page.get_by_label("Watch token").fill(token)
            page.get_by_role("button", name="Watch").click()

        return command

    outcomes = {}
    with trio.fail_after(GUARD):
        async with watch_page(server.url, query(server, "mine", forged)) as tab:
            for name, task_id, token, code in (
                ("forged", "mine", forged, 4401),
                ("garbage", "mine", "not-a-token", 4401),
                ("another task's", "mine", other, 4401),
                ("deleted task's", "gone", gone, 4404),
            ):
                if name != "forged":  # the first comes from the query string
                    await tab.run(watch_with_form(task_id, token))
                await tab.run(wait_for(stopped(code)))
                # Nothing is scheduled and the socket is gone; with reconnects 50 ms
                # apart, a retry loop would have shown itself well within a second.
                await tab.run(lambda page, seen: page.wait_for_timeout(1000))
                outcomes[name] = await tab.run(state)
            # The form then watches the right task with its own token.
            await tab.run(watch_with_form("mine", good))
            await tab.run(wait_for("() => window.__watch.phase === 'open'"))
            await tab.run(wait_for("() => window.__seqs.length === 1"))
            fine = await tab.run(state)
    for name, found in outcomes.items():
        assert found["phase"] == "failed" and found["pending"] is False, name
        assert found["connections"] == 1 and found["drops"] == 0, name
        assert found["seqs"] == [], name
    assert "token" in outcomes["forged"]["error"]
    assert "No such task" in outcomes["deleted task's"]["error"]
    # One socket per watch started: none of the four was retried.
    assert len(fine["sockets"]) == 5, fine["sockets"]
    assert (fine["seqs"], fine["status"], fine["error"]) == ([1], "pending", None)
    assert_clean(fine)


def _narrow(page: Page, seen: Seen) -> dict[str, Any]:
    page.wait_for_function(DONE, timeout=WAIT_MS)
    found = state(page, seen)
    found["overflow"] = page.evaluate(OVERFLOW)
    found["low_contrast"] = page.evaluate(LOW_CONTRAST)
    found["background"] = page.evaluate("getComputedStyle(document.body).backgroundColor")
    found["unlabelled"] = page.evaluate(
        "[...document.querySelectorAll('input, button, progress')]"
        ".filter((el) => !(el.labels && el.labels.length) && !el.getAttribute('aria-label')"
        " && !el.textContent.trim()).map((el) => el.id)"
    )
    found["progressbar"] = page.get_by_role("progressbar", name="Task progress").count()
    return found


async def test_the_page_reads_at_360px_in_light_and_dark(
    server: Server, client: httpx.AsyncClient
) -> None:
    await post(client, "/tasks/create", {"id": "a-rather-long-task-id-for-a-narrow-screen"})
    await post(
        client, "/tasks/fail", {"taskId": "a-rather-long-task-id-for-a-narrow-screen", "error": "x"}
    )
    token = await watch_token(client, "a-rather-long-task-id-for-a-narrow-screen")
    found = {}
    with trio.fail_after(GUARD):
        for scheme in ("light", "dark"):
            async with watch_page(
                server.url,
                query(server, "a-rather-long-task-id-for-a-narrow-screen", token),
                width=NARROW,
                height=740,
                scheme=scheme,
            ) as tab:
                found[scheme] = await tab.run(_narrow)
    for scheme, seen in found.items():
        # A snapshot of a finished task ends the watch at once.
        assert (seen["status"], seen["seqs"], seen["connections"]) == ("failed", [2], 1), scheme
        assert seen["overflow"] == [NARROW, NARROW, NARROW], scheme
        assert seen["low_contrast"] == [], scheme
        assert seen["unlabelled"] == [] and seen["progressbar"] == 1, scheme
        assert_clean(seen)
    assert found["light"]["background"] == "rgb(255, 255, 255)"
    red, green, blue = map(int, re.findall(r"\d+", found["dark"]["background"])[:3])
    assert max(red, green, blue) < 64, found["dark"]["background"]
