"""Commit before answer: kill -9 a process running the runtime mid-stream; every answered
message is in the object's file afterwards (3 cycles on one data directory)."""

from __future__ import annotations

import sys
from pathlib import Path

import httpx
import trio

from tests.procs import running

COUNTERS = [f"k{n}" for n in range(8)]
CLIENTS = 32
#: Answers a cycle waits for before it kills the server (the clients keep sending).
KILL_AFTER = 200


def counter_argv(data_dir: Path) -> list[str]:
    """argv of the Counter example on a free port."""
    return [sys.executable, "examples/counter.py", "--data-dir", str(data_dir), "--port", "0"]


async def hammer(
    url: str, acknowledged: dict[str, dict[int, int]], enough: trio.Event, stop: trio.Event
) -> None:
    """Increment counters from many concurrent connections until ``stop``.

    Records every 200 answer; sets ``enough`` once :data:`KILL_AFTER` have arrived.
    """
    limits = httpx.Limits(max_connections=CLIENTS, max_keepalive_connections=CLIENTS)
    answered = 0

    async def client(http: httpx.AsyncClient, index: int) -> None:
        nonlocal answered
        step = 0
        while not stop.is_set():
            counter = COUNTERS[(index + step) % len(COUNTERS)]
            amount = index + 1
            step += 1
            try:
                response = await http.post(f"/counters/{counter}/increment", json={"by": amount})
            except httpx.HTTPError:
                return  # the server died under us: this one was not answered
            if response.status_code == 200:
                acknowledged[counter][response.json()["seq"]] = amount
                answered += 1
                if answered >= KILL_AFTER:
                    enough.set()

    async with (
        httpx.AsyncClient(base_url=url, timeout=60, limits=limits) as http,
        trio.open_nursery() as nursery,
    ):
        for index in range(CLIENTS):
            nursery.start_soon(client, http, index)


async def test_every_acknowledged_increment_survives_kill_9(tmp_path: Path) -> None:
    acknowledged: dict[str, dict[int, int]] = {name: {} for name in COUNTERS}
    for cycle in range(3):
        before = sum(len(seqs) for seqs in acknowledged.values())
        async with running(counter_argv(tmp_path)) as server:
            enough, stop = trio.Event(), trio.Event()
            async with trio.open_nursery() as nursery:
                nursery.start_soon(hammer, server.url, acknowledged, enough, stop)
                with trio.fail_after(120):
                    await enough.wait()
                server.kill()  # SIGKILL mid-stream: 32 clients are still sending
                await server.wait()
                stop.set()
        after = sum(len(seqs) for seqs in acknowledged.values())
        assert after >= before + KILL_AFTER, f"cycle {cycle}: {after - before} acknowledged"

        async with (
            running(counter_argv(tmp_path)) as server,
            httpx.AsyncClient(base_url=server.url, timeout=60) as http,
        ):
            for name, seqs in acknowledged.items():
                history = (await http.get(f"/counters/{name}/history?limit=1000")).json()
                found = {h["seq"]: h["amount"] for h in history}
                missing = {seq: amount for seq, amount in seqs.items() if found.get(seq) != amount}
                assert not missing, f"cycle {cycle}: {name} lost acknowledged increments {missing}"
                value = (await http.get(f"/counters/{name}")).json()["value"]
                assert value == sum(h["amount"] for h in history)
