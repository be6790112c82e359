"""The SDK's resuming watch/subscribe iterators (spectral.client.watching) against a
real server process: sync, asyncio and trio; restarts, deletion, auth, rooms."""

from __future__ import annotations

import asyncio
import math
import socket
import subprocess
import sys
import threading
from collections.abc import Callable
from contextlib import aclosing
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio

from spectral.client.errors import AuthError, NotFoundError
from spectral.client.watching import (
    asubscribe_room,
    awatch_task,
    subscribe_room,
    watch_task,
)
from tests.conftest import ADMIN_HEADERS, ADMIN_KEY, SERVE_ENV, serve_argv
from tests.procs import Server, running

MODES = ["sync", "asyncio", "trio"]
#: Generous guard: nothing here should come close.
GUARD = 120

Item = tuple[str, Any]


def fixed_port_argv(data_dir: Path, port: int) -> list[str]:
    """``spectral serve`` over ``data_dir`` on ``port`` (so a restart keeps the URL)."""
    argv = serve_argv(data_dir)
    argv[argv.index("--port") + 1] = str(port)
    return argv


def free_port() -> int:
    """A loopback port nothing listens on now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_consumer(
    nursery: trio.Nursery,
    mode: str,
    make_sync: Callable[[], Any],
    make_async: Callable[[], Any],
    limit: int | None = None,
) -> trio.MemoryReceiveChannel[Item]:
    """Run an iterator in ``mode``; its messages, then ("end", None) or ("error", exc).

    With ``limit``, the consumer stops (breaks out of the loop) after that many messages.
    """
    send, receive = trio.open_memory_channel[Item](math.inf)

    def put(item: Item) -> None:
        trio.from_thread.run_sync(send.send_nowait, item)

    def in_thread_sync() -> None:
        try:
            for count, message in enumerate(make_sync(), 1):
                put(("message", message))
                if count == limit:
                    break
        except Exception as error:  # handed to the test
            put(("error", error))
        else:
            put(("end", None))

    async def consume_async(report: Callable[[Item], Any]) -> None:
        try:
            count = 0
            # aclosing: leaving the loop early closes the generator here, in this task
            async with aclosing(make_async()) as messages:
                async for message in messages:
                    await report(("message", message))
                    count += 1
                    if count == limit:
                        break
        except Exception as error:  # handed to the test
            await report(("error", error))
        else:
            await report(("end", None))

    def in_thread_asyncio() -> None:
        async def report(item: Item) -> None:
            put(item)

        asyncio.run(consume_async(report))

    if mode == "sync":
        nursery.start_soon(trio.to_thread.run_sync, in_thread_sync)
    elif mode == "asyncio":
        nursery.start_soon(trio.to_thread.run_sync, in_thread_asyncio)
    else:
        nursery.start_soon(consume_async, send.send)
    return receive


def task_watcher(
    nursery: trio.Nursery, mode: str, url: str, task_id: str, **kwargs: Any
) -> trio.MemoryReceiveChannel[Item]:
    """A watcher of ``task_id`` in ``mode``."""
    args = {"api_key": ADMIN_KEY, "task_id": task_id, **kwargs}
    return start_consumer(
        nursery, mode, lambda: watch_task(url, **args), lambda: awatch_task(url, **args)
    )


def room_subscriber(
    nursery: trio.Nursery, mode: str, url: str, room_id: str, limit: int, **kwargs: Any
) -> trio.MemoryReceiveChannel[Item]:
    """A subscriber of ``room_id`` in ``mode``."""
    args = {"api_key": ADMIN_KEY, "room_id": room_id, **kwargs}
    return start_consumer(
        nursery,
        mode,
        lambda: subscribe_room(url, **args),
        lambda: asubscribe_room(url, **args),
        limit=limit,
    )


async def next_message(channel: trio.MemoryReceiveChannel[Item]) -> dict[str, Any]:
    """The next message (fails on end or error)."""
    kind, value = await channel.receive()
    if kind == "error":
        raise value
    assert kind == "message", (kind, value)
    return value


async def until_end(channel: trio.MemoryReceiveChannel[Item]) -> list[dict[str, Any]]:
    """Every message until the iterator ends (raises its error)."""
    out = []
    async for kind, value in channel:
        if kind == "end":
            return out
        if kind == "error":
            raise value
        out.append(value)
    raise AssertionError("channel closed")


async def post(http: httpx.AsyncClient, path: str, body: dict[str, Any]) -> dict[str, Any]:
    """POST; the JSON answer (2xx asserted)."""
    response = await http.post(path, json=body)
    assert response.is_success, response.text
    return response.json()


async def progress(http: httpx.AsyncClient, task_id: str, value: float) -> int:
    """updateProgress; the new seq."""
    answer = await post(http, "/tasks/updateProgress", {"taskId": task_id, "progress": value})
    return answer["task"]["seq"]


@pytest.mark.parametrize("mode", MODES)
async def test_snapshot_then_every_update_then_ends_after_complete(
    server: Server, client: httpx.AsyncClient, mode: str
) -> None:
    await post(client, "/tasks/create", {"id": "job"})
    with trio.fail_after(GUARD):
        async with trio.open_nursery() as nursery:
            watcher = task_watcher(nursery, mode, server.url, "job")
            snapshot = await next_message(watcher)
            assert (snapshot["type"], snapshot["seq"]) == ("snapshot", 1)
            for value in (10, 20, 30):
                await progress(client, "job", value)
            await post(client, "/tasks/complete", {"taskId": "job"})
            rest = await until_end(watcher)
    assert [(m["type"], m["seq"]) for m in rest] == [
        ("progress", 2),
        ("progress", 3),
        ("progress", 4),
        ("complete", 5),
    ]


@pytest.mark.parametrize("stop", ["terminate", "kill"])
@pytest.mark.parametrize("mode", MODES)
async def test_resumes_across_a_restart_every_seq_once_in_order(
    tmp_path: Path, mode: str, stop: str
) -> None:
    """terminate: close 1001 then refused connections; kill: the TCP connection drops."""
    data, port = tmp_path / "data", free_port()
    argv = fixed_port_argv(data, port)
    seen: list[dict[str, Any]] = []
    with trio.fail_after(GUARD):
        async with trio.open_nursery() as nursery:
            async with (
                running(argv, env=SERVE_ENV) as server,
                httpx.AsyncClient(base_url=server.url, headers=ADMIN_HEADERS) as http,
            ):
                url = server.url
                await post(http, "/tasks/create", {"id": "long"})
                watcher = task_watcher(nursery, mode, url, "long", backoff=0.05, max_backoff=0.5)
                seen.append(await next_message(watcher))
                for value in range(1, 4):  # received live
                    await progress(http, "long", value)
                    seen.append(await next_message(watcher))
                for value in range(4, 7):  # maybe in flight when the server stops
                    last = await progress(http, "long", value)
                if stop == "terminate":
                    server.terminate()
                    assert await server.wait() == 0
                else:
                    server.kill()
                    await server.wait()
            async with (
                running(argv, env=SERVE_ENV) as server,
                httpx.AsyncClient(base_url=server.url, headers=ADMIN_HEADERS) as http,
            ):
                assert server.url == url
                for value in range(7, 10):  # likely before the watcher is back
                    last = await progress(http, "long", value)
                await post(http, "/tasks/complete", {"taskId": "long"})
                seen.extend(await until_end(watcher))
    seqs = [m["seq"] for m in seen]
    assert seqs == list(range(1, last + 2)), seqs
    assert seen[0]["type"] == "snapshot"
    assert seen[-1]["type"] == "complete"
    assert all(m["type"] == "progress" for m in seen[1:-1])


@pytest.mark.parametrize("mode", MODES)
async def test_deletion_ends_the_iterator(
    server: Server, client: httpx.AsyncClient, mode: str
) -> None:
    await post(client, "/tasks/create", {"id": "gone"})
    with trio.fail_after(GUARD):
        async with trio.open_nursery() as nursery:
            watcher = task_watcher(nursery, mode, server.url, "gone")
            assert (await next_message(watcher))["type"] == "snapshot"
            await progress(client, "gone", 5)
            response = await client.delete("/tasks/gone")
            assert response.is_success, response.text
            rest = await until_end(watcher)
    assert [(m["type"], m["seq"]) for m in rest] == [("progress", 2), ("deleted", 3)]


@pytest.mark.parametrize("mode", MODES)
async def test_bad_key_raises_auth_error(
    server: Server, client: httpx.AsyncClient, mode: str
) -> None:
    await post(client, "/tasks/create", {"id": "secret"})
    with trio.fail_after(GUARD):
        async with trio.open_nursery() as nursery:
            watcher = task_watcher(nursery, mode, server.url, "secret", api_key="spk_nope")
            with pytest.raises(AuthError):
                await next_message(watcher)


@pytest.mark.parametrize("mode", MODES)
async def test_unknown_task_raises_not_found(server: Server, mode: str) -> None:
    with trio.fail_after(GUARD):
        async with trio.open_nursery() as nursery:
            watcher = task_watcher(nursery, mode, server.url, "no-such-task")
            with pytest.raises(NotFoundError):
                await next_message(watcher)


async def test_a_task_already_finished_ends_after_its_snapshot(
    server: Server, client: httpx.AsyncClient
) -> None:
    await post(client, "/tasks/create", {"id": "done"})
    await post(client, "/tasks/complete", {"taskId": "done"})
    with trio.fail_after(GUARD):
        messages = [m async for m in awatch_task(server.url, api_key=ADMIN_KEY, task_id="done")]
    assert [(m["type"], m["task"]["status"]) for m in messages] == [("snapshot", "success")]


async def test_resume_with_since_skips_what_was_seen(
    server: Server, client: httpx.AsyncClient
) -> None:
    task = (await post(client, "/tasks/create", {"id": "again"}))["task"]
    for value in (1, 2, 3):
        await progress(client, "again", value)
    await post(client, "/tasks/complete", {"taskId": "again"})
    with trio.fail_after(GUARD):
        messages = [
            m
            async for m in awatch_task(
                server.url, api_key=ADMIN_KEY, task_id="again", since=2, epoch=task["epoch"]
            )
        ]
    # replayed 3, 4, 5 (complete): it ends there; the snapshot (seq 5) is a duplicate
    assert [(m["type"], m["seq"]) for m in messages] == [
        ("progress", 3),
        ("progress", 4),
        ("complete", 5),
    ]
    assert all(m.get("replayed") for m in messages)


@pytest.mark.parametrize("mode", MODES)
async def test_room_subscribe_broadcast_and_resume_across_a_restart(
    tmp_path: Path, mode: str
) -> None:
    data, port = tmp_path / "data", free_port()
    argv = fixed_port_argv(data, port)
    seen: list[dict[str, Any]] = []
    with trio.fail_after(GUARD):
        async with trio.open_nursery() as nursery:
            async with (
                running(argv, env=SERVE_ENV) as server,
                httpx.AsyncClient(base_url=server.url, headers=ADMIN_HEADERS) as http,
            ):
                # since=0: whatever is broadcast before the subscriber is attached is replayed
                subscriber = room_subscriber(
                    nursery,
                    mode,
                    server.url,
                    "request_7",
                    limit=8,
                    since=0,
                    backoff=0.05,
                    max_backoff=0.5,
                )
                for n in range(1, 4):
                    await post(http, "/rooms/request_7/broadcast", {"n": n})
                    seen.append(await next_message(subscriber))
                for n in range(4, 6):
                    await post(http, "/rooms/request_7/broadcast", {"n": n})
                server.terminate()
                assert await server.wait() == 0
            async with (
                running(argv, env=SERVE_ENV) as server,
                httpx.AsyncClient(base_url=server.url, headers=ADMIN_HEADERS) as http,
            ):
                for n in range(6, 9):
                    answer = await post(http, "/rooms/request_7/broadcast", {"n": n})
                    assert answer["roomSeq"] == n
                # a room stream never ends by itself: the consumer stops after 8
                seen.extend(await until_end(subscriber))
    assert [m["roomSeq"] for m in seen] == list(range(1, 9))
    assert [m["n"] for m in seen] == list(range(1, 9))


def test_import_pulls_in_no_server_dependency() -> None:
    code = (
        "import sys, spectral.client.watching\n"
        "bad = [m for m in sys.modules if m.split('.')[0] in"
        " ('trio', 'quart', 'hypercorn', 'actors', 'storage')]\n"
        # The answer models (spectral.api.schemas, on spectral.tasks.state) are shared
        # with the server on purpose: pydantic only. Nothing of its runtime may load.
        "bad += [m for m in sys.modules if m.startswith(('spectral.server', 'spectral.front',"
        " 'spectral.api.app', 'spectral.tasks.actor', 'spectral.ops'))]\n"
        "assert not bad, bad\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=Path(__file__).parent.parent)


async def test_a_task_recreated_under_the_same_id_goes_on_with_the_new_epoch(
    server: Server, client: httpx.AsyncClient
) -> None:
    old = (await post(client, "/tasks/create", {"id": "phoenix"}))["task"]
    for value in (1, 2, 3):
        last = await progress(client, "phoenix", value)
    assert (await client.delete("/tasks/phoenix")).is_success
    new = (await post(client, "/tasks/create", {"id": "phoenix"}))["task"]
    assert new["epoch"] != old["epoch"] and new["seq"] < last
    with trio.fail_after(GUARD):
        async with aclosing(
            awatch_task(
                server.url, api_key=ADMIN_KEY, task_id="phoenix", since=last, epoch=old["epoch"]
            )
        ) as messages:
            snapshot = await anext(messages)
            assert snapshot["type"] == "snapshot"
            assert (snapshot["epoch"], snapshot["seq"], snapshot["recovered"]) == (
                new["epoch"],
                new["seq"],
                False,
            )
            # the new task's seqs are yielded though lower than the old task's last one
            await post(client, "/tasks/complete", {"taskId": "phoenix"})
            rest = [m async for m in messages]
    assert [(m["type"], m["seq"]) for m in rest] == [("complete", new["seq"] + 1)]


async def test_a_watcher_closed_4008_for_falling_behind_resumes_without_a_gap(
    server: Server, client: httpx.AsyncClient
) -> None:
    """The consumer stops reading after the snapshot until the server has dropped it."""
    await post(client, "/tasks/create", {"id": "flood"})
    gate = threading.Event()
    send, receive = trio.open_memory_channel[Item](math.inf)

    def consume() -> None:
        seqs = []
        try:
            for message in watch_task(server.url, api_key=ADMIN_KEY, task_id="flood"):
                seqs.append(message["seq"])
                if len(seqs) == 1:
                    trio.from_thread.run_sync(send.send_nowait, ("message", message))
                    gate.wait()
        except Exception as error:  # handed to the test
            trio.from_thread.run_sync(send.send_nowait, ("error", error))
        else:
            trio.from_thread.run_sync(send.send_nowait, ("end", seqs))

    with trio.fail_after(GUARD):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(trio.to_thread.run_sync, consume)
            assert (await next_message(receive))["seq"] == 1
            big = {"blob": "z" * 600}
            batch = [{"taskId": "flood", "progress": 1, "metadata": big}] * 1000
            for _ in range(6):
                await post(client, "/tasks/batchUpdateProgress", {"updates": batch})
            while "spectral_watchers_dropped_total 1.0" not in (await client.get("/metrics")).text:
                await trio.sleep(0.1)  # polling the server's state, not a timed wait
            gate.set()
            await post(client, "/tasks/complete", {"taskId": "flood"})
            kind, seqs = await receive.receive()
    assert kind == "end", seqs
    assert seqs == list(range(1, 6003))
