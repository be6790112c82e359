"""examples/counter.py end to end: a second object kind on the runtime, over HTTP and WebSocket."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import httpx
import trio
from trio_websocket import ConnectionClosed, open_websocket_url

from tests.procs import running


def counter_argv(data_dir: Path) -> list[str]:
    """argv of the example on a free port."""
    return [sys.executable, "examples/counter.py", "--data-dir", str(data_dir), "--port", "0"]


async def test_counter_operations_history_and_errors(tmp_path: Path) -> None:
    async with (
        running(counter_argv(tmp_path)) as server,
        httpx.AsyncClient(base_url=server.url, timeout=60) as http,
    ):
        assert (await http.post("/counters/c/increment", json={"by": 5})).json()["value"] == 5
        assert (await http.post("/counters/c/increment")).json()["value"] == 6
        assert (await http.post("/counters/c/decrement", json={"by": 10})).json()["value"] == -4
        assert (await http.post("/counters/c/set", json={"value": 100})).json()["value"] == 100
        assert (await http.post("/counters/c/reset")).json()["value"] == 0
        assert (await http.get("/counters/c")).json() == {"value": 0, "seq": 5}
        history = (await http.get("/counters/c/history")).json()
        assert [(h["op"], h["amount"], h["value"]) for h in history] == [
            ("increment", 5, 5),
            ("increment", 1, 6),
            ("decrement", 10, -4),
            ("set", 100, 100),
            ("reset", None, 0),
        ]
        assert [h["seq"] for h in (await http.get("/counters/c/history?limit=2")).json()] == [4, 5]

        missing = await http.get("/counters/nobody")
        assert missing.status_code == 404
        for path, body, field in [
            ("/counters/c/increment", {"by": "5"}, "by"),
            ("/counters/c/increment", {"by": 1.5}, "by"),
            ("/counters/c/increment", {"by": True}, "by"),
            ("/counters/c/set", {}, "value"),
            ("/counters/c/set", {"value": 2**60}, "value"),
            ("/counters/c/decrement", [1], "body"),
        ]:
            response = await http.post(path, json=body)
            assert response.status_code == 400, (path, body)
            assert response.json()["error"]["message"].startswith(field)
        bad_limit = await http.get("/counters/c/history?limit=0")
        assert bad_limit.status_code == 400
        assert (await http.get("/counters/c")).json() == {"value": 0, "seq": 5}
        # A refused first message creates nothing.
        await http.post("/counters/fresh/increment", json={"by": "x"})
        assert (await http.get("/counters/fresh")).status_code == 404


async def test_a_watcher_gets_the_snapshot_then_every_change_in_order(tmp_path: Path) -> None:
    async with (
        running(counter_argv(tmp_path)) as server,
        httpx.AsyncClient(base_url=server.url, timeout=60) as http,
    ):
        await http.post("/counters/w/set", json={"value": 10})
        async with open_websocket_url(server.ws_url + "/counters/w/watch") as ws:
            snapshot = json.loads(await ws.get_message())
            assert snapshot == {"type": "snapshot", "value": 10, "seq": 1}
            async with trio.open_nursery() as nursery:
                for _ in range(50):
                    nursery.start_soon(http.post, "/counters/w/increment")
            changes = [json.loads(await ws.get_message()) for _ in range(50)]
        assert [c["seq"] for c in changes] == list(range(2, 52))
        assert [c["value"] for c in changes] == list(range(11, 61))
        async with open_websocket_url(server.ws_url + "/counters/none/watch") as ws:
            try:
                await ws.get_message()
            except ConnectionClosed as closed:
                assert closed.reason.code == 4404
            else:
                raise AssertionError("expected a 4404 close")


async def test_values_survive_a_graceful_restart(tmp_path: Path) -> None:
    async with running(counter_argv(tmp_path)) as server:
        async with httpx.AsyncClient(base_url=server.url, timeout=60) as http:
            await http.post("/counters/keep/increment", json={"by": 7})
        server.terminate()
        with trio.fail_after(60):
            assert await server.wait() == 0
    async with (
        running(counter_argv(tmp_path)) as server,
        httpx.AsyncClient(base_url=server.url, timeout=60) as http,
    ):
        assert (await http.get("/counters/keep")).json() == {"value": 7, "seq": 1}
