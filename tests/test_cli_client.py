"""The command line's client commands end to end: ``spectral tasks|watch|rooms|webhooks``
run as separate processes against a real server, read as a script reads them (stdout
not a terminal: tables, ``--json``, JSON lines, exit statuses, errors on stderr).
tests/test_cli_terminal.py reads ``spectral watch`` as a person does, in a terminal."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import aclosing, asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
import trio

from spectral.client import AsyncClient
from tests.conftest import ADMIN_KEY, SERVE_ENV, serve_argv
from tests.procs import ROOT, Server, running
from tests.test_client_watch import fixed_port_argv, free_port

#: What a command needs from the test's environment (and nothing that names a server).
BASE_ENV = {
    name: value
    for name, value in os.environ.items()
    if not name.startswith("SPECTRAL_") and name != "COLUMNS"
}


async def cli(
    *args: str,
    url: str | None,
    key: str | None = ADMIN_KEY,
    cwd: Path = ROOT,
    env: dict[str, str] | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run ``spectral ARGS`` (stdout and stderr captured, so not terminals)."""
    full_env = {**BASE_ENV, "COLUMNS": "160", **(env or {})}
    if url is not None:
        full_env["SPECTRAL_URL"] = url
    if key is not None:
        full_env["SPECTRAL_API_KEY"] = key
    with trio.fail_after(60):
        done = await trio.run_process(
            [sys.executable, "-m", "spectral", *args],
            capture_stdout=True,
            capture_stderr=True,
            check=False,
            env=full_env,
            cwd=cwd,
        )
    return subprocess.CompletedProcess(
        done.args, done.returncode, done.stdout.decode(), done.stderr.decode()
    )


async def cli_json(*args: str, url: str) -> Any:
    """``spectral ARGS --json``, which must succeed: its one JSON document."""
    done = await cli(*args, "--json", url=url)
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""
    assert len(done.stdout.splitlines()) == 1, done.stdout
    return json.loads(done.stdout)


async def test_a_task_from_create_to_delete(server: Server) -> None:
    url = server.url
    created = await cli_json("tasks", "create", "cli-1", "--metadata", '{"kind": "x"}', url=url)
    assert (created["taskId"], created["status"], created["metadata"]) == (
        "cli-1",
        "pending",
        {"kind": "x"},
    )
    updated = await cli_json("tasks", "update", "cli-1", "40", "-m", "reading rows", url=url)
    assert (updated["status"], updated["progress"], updated["seq"]) == ("in-progress", 40, 2)
    assert (await cli_json("tasks", "get", "cli-1", url=url))["progress"] == 40

    table = await cli("tasks", "list", url=url)
    assert table.returncode == 0, table.stderr
    header, row, footer = table.stdout.splitlines()
    assert header.split() == ["ID", "STATUS", "PROGRESS", "OWNER", "UPDATED"]
    assert row.split()[:3] == ["cli-1", "in-progress", "40%"]
    assert footer == "1 task(s); page 1 of 1"
    page = await cli_json("tasks", "list", "--status", "in-progress", url=url)
    assert [task["taskId"] for task in page["tasks"]] == ["cli-1"]
    assert (await cli_json("tasks", "list", "--status", "success", url=url))["tasks"] == []

    shown = await cli("tasks", "get", "cli-1", url=url)
    assert "in-progress" in shown.stdout and '{"kind":"x"}' in shown.stdout

    done = await cli_json("tasks", "complete", "cli-1", url=url)
    assert (done["status"], done["progress"]) == ("success", 100)
    history = await cli_json("tasks", "history", "cli-1", url=url)
    assert [(e["seq"], e["eventType"]) for e in history["events"]] == [
        (1, "created"),
        (2, "progress"),
        (3, "success"),
    ]
    assert history["events"][1]["message"] == "reading rows"
    page_of_two = await cli_json("tasks", "history", "cli-1", "--after", "1", url=url)
    assert [e["seq"] for e in page_of_two["events"]] == [2, 3]
    lines = (await cli("tasks", "history", "cli-1", url=url)).stdout.splitlines()
    assert lines[0].split() == ["SEQ", "TIME", "TYPE", "PROGRESS", "MESSAGE"]
    assert lines[2].split()[2:] == ["progress", "40%", "reading", "rows"]

    deleted = await cli("tasks", "delete", "cli-1", url=url)
    assert (deleted.returncode, deleted.stdout) == (0, "deleted cli-1\n")
    gone = await cli("tasks", "get", "cli-1", url=url)
    assert (gone.returncode, gone.stdout) == (3, "")
    assert gone.stderr.startswith("spectral: TASK_NOT_FOUND: ")


async def test_tags_external_ids_and_filters(server: Server) -> None:
    url = server.url
    args = ("tasks", "create", "cli-t1", "--tag", "red", "--tag", "big", "--external-id", "E-1")
    made = await cli_json(*args, url=url)
    assert (made["tags"], made["externalId"]) == (["red", "big"], "E-1")
    await cli_json("tasks", "create", "cli-t2", "--tag", "red", url=url)
    again = await cli("tasks", "create", "cli-t3", "--external-id", "E-1", url=url)
    assert again.returncode == 1 and "EXTERNAL_ID_EXISTS" in again.stderr
    page = await cli_json("tasks", "list", "--tag", "red", "--tag", "big", url=url)
    assert [task["taskId"] for task in page["tasks"]] == ["cli-t1"]
    after = await cli_json("tasks", "list", "--created-after", made["createdAt"], url=url)
    assert [task["taskId"] for task in after["tasks"]] == ["cli-t2"]
    before = await cli_json("tasks", "list", "--created-before", made["createdAt"], url=url)
    assert before["tasks"] == []
    bad = await cli("tasks", "list", "--created-after", "yesterday", url=url)
    assert bad.returncode == 2 and "createdAfter" in bad.stderr
    shown = await cli("tasks", "get", "cli-t1", url=url)
    assert "red, big" in shown.stdout and "E-1" in shown.stdout


async def test_trees_with_parent(server: Server) -> None:
    url = server.url
    await cli_json("tasks", "create", "cli-root", "--complete-with-children", url=url)
    child = await cli_json(
        "tasks", "create", "cli-kid", "--parent", "cli-root", "--weight", "2", url=url
    )
    assert (child["parentId"], child["weight"], child["depth"]) == ("cli-root", 2, 2)
    await cli_json("tasks", "create", "cli-other", "--tag", "x", url=url)
    page = await cli_json("tasks", "list", "--parent", "cli-root", url=url)
    assert [task["taskId"] for task in page["tasks"]] == ["cli-kid"]
    shown = await cli("tasks", "get", "cli-kid", url=url)
    assert "cli-root (weight 2)" in shown.stdout
    root = await cli("tasks", "get", "cli-root", url=url)
    assert "children" in root.stdout
    refused = await cli("tasks", "update", "cli-root", "5", url=url)
    assert refused.returncode == 1 and "PROGRESS_COMPUTED" in refused.stderr
    orphan = await cli("tasks", "create", "cli-orphan", "--parent", "nobody", url=url)
    assert orphan.returncode == 2 and "parentId" in orphan.stderr


async def test_fail_and_cancel_and_generated_ids(server: Server) -> None:
    url = server.url
    first = await cli_json("tasks", "create", url=url)
    second = await cli_json("tasks", "create", "--status", "in-progress", url=url)
    assert first["taskId"] != second["taskId"]
    failed = await cli_json("tasks", "fail", first["taskId"], "disk full", url=url)
    assert (failed["status"], failed["error"]) == ("failed", "disk full")
    canceled = await cli_json("tasks", "cancel", second["taskId"], url=url)
    assert canceled["status"] == "canceled"
    again = await cli("tasks", "complete", first["taskId"], url=url)
    assert again.returncode == 1
    assert again.stderr.startswith("spectral: TASK_TERMINAL: "), again.stderr


@pytest.mark.parametrize(
    ("args", "named"),
    [
        (("tasks", "update", "t", "140"), "progress"),
        (("tasks", "update", "t", "40", "--metadata", "[1]"), "--metadata"),
        (("tasks", "create", "--metadata", "{nope"), "--metadata"),
        (("tasks", "create", "bad id!"), "taskId"),
        (("tasks", "create", "--status", "success"), "status"),
        (("rooms", "broadcast", "user_admin", "[1, 2]"), "JSON"),
        (("tasks", "list", "--timeout", "0"), "--timeout"),
    ],
)
async def test_bad_input_is_a_usage_error_naming_the_field(
    server: Server, args: tuple[str, ...], named: str
) -> None:
    done = await cli(*args, url=server.url)
    assert done.returncode == 2, (done.stdout, done.stderr)
    assert done.stdout == ""
    assert done.stderr.startswith("spectral: ") and named in done.stderr, done.stderr


async def test_usage_errors_of_the_parser_exit_2() -> None:
    for args in (("tasks",), ("tasks", "update", "t", "half"), ("webhooks", "nope")):
        done = await cli(*args, url=None)
        assert done.returncode == 2, args
        assert "usage: spectral" in done.stderr


async def test_keys_from_flags_environment_and_the_local_admin_key(
    server: Server, tmp_path: Path
) -> None:
    url = server.url
    bad = await cli("tasks", "list", url=url, key="spk_not_a_key_0123456789")
    assert bad.returncode == 4 and bad.stderr.startswith("spectral: UNAUTHENTICATED: ")
    flag = await cli("tasks", "list", "--api-key", ADMIN_KEY, url=url, key="spk_wrong_0123456789")
    assert flag.returncode == 0, flag.stderr

    empty = tmp_path / "elsewhere"
    empty.mkdir()
    none = await cli("tasks", "list", url=url, key=None, cwd=empty)
    assert none.returncode == 4
    assert "no API key: pass --api-key" in none.stderr

    (empty / "data").mkdir()
    (empty / "data" / "admin.key").write_text(ADMIN_KEY + "\n")
    local = await cli("tasks", "list", "--json", url=url, key=None, cwd=empty)
    assert local.returncode == 0, local.stderr
    other = tmp_path / "other-data"
    other.mkdir()
    (other / "admin.key").write_text(ADMIN_KEY + "\n")
    by_env = await cli(
        "tasks", "list", url=url, key=None, cwd=tmp_path, env={"SPECTRAL_DATA_DIR": str(other)}
    )
    assert by_env.returncode == 0, by_env.stderr

    async with AsyncClient(url, ADMIN_KEY) as admin:
        reader = await admin.create_key("someone", "reader")
        await admin.create_task("admins-own")
    refused = await cli("tasks", "create", url=url, key=reader.key)
    assert refused.returncode == 4 and refused.stderr.startswith("spectral: FORBIDDEN: ")
    hidden = await cli("tasks", "get", "admins-own", url=url, key=reader.key)
    assert hidden.returncode == 3


async def test_an_unreachable_server_is_exit_5() -> None:
    done = await cli("tasks", "list", "--timeout", "0.5", url=f"http://127.0.0.1:{free_port()}")
    assert done.returncode == 5
    assert done.stderr.startswith("spectral: UNREACHABLE: no answer from http://127.0.0.1:")
    watch = await cli(
        "watch", "t", "--reconnect-deadline", "0.5", url=f"http://127.0.0.1:{free_port()}"
    )
    assert watch.returncode == 5, watch.stderr
    assert watch.stderr.startswith("spectral: UNREACHABLE: ")


async def test_rooms_broadcast(server: Server) -> None:
    async with AsyncClient(server.url, ADMIN_KEY) as client:
        got: list[dict[str, Any]] = []
        async with trio.open_nursery() as nursery:

            async def listen() -> None:
                async with aclosing(client.subscribe("user_admin", since=0)) as messages:
                    async for message in messages:
                        got.append(message)
                        if message.get("hello") == 1:
                            nursery.cancel_scope.cancel()

            nursery.start_soon(listen)
            answer = await cli_json(
                "rooms", "broadcast", "user_admin", '{"hello": 1}', url=server.url
            )
            assert answer["roomSeq"] == 1
        assert (got[-1]["hello"], got[-1]["roomSeq"]) == (1, 1)
    plain = await cli("rooms", "broadcast", "user_admin", "{}", url=server.url)
    assert plain.stdout.startswith("broadcast to user_admin: room seq 2")


async def test_webhooks_create_list_delete(tmp_path: Path) -> None:
    env = {**SERVE_ENV, "SPECTRAL_WEBHOOK_ALLOW_PRIVATE": "1"}
    async with running(serve_argv(tmp_path / "data"), env=env) as server:
        await webhooks_round_trip(server.url)


async def webhooks_round_trip(url: str) -> None:
    """Create (secret shown once), list as JSON and as a table, delete."""
    created = await cli_json(
        "webhooks",
        "create",
        "http://127.0.0.1:9/hook",
        "--event-type",
        "completed",
        "--task-id-prefix",
        "export-",
        url=url,
    )
    assert created["secret"].startswith("whsec_")
    listing = await cli_json("webhooks", "list", url=url)
    assert [(h["id"], h["taskIdPrefix"]) for h in listing["webhooks"]] == [
        (created["id"], "export-")
    ]
    assert "secret" not in listing["webhooks"][0]
    table = (await cli("webhooks", "list", url=url)).stdout.splitlines()
    assert table[1].split() == [
        created["id"],
        "http://127.0.0.1:9/hook",
        "completed",
        "export-*",
        "yes",
    ]
    plain = await cli("webhooks", "create", "http://127.0.0.1:9/other", url=url)
    assert "signing secret (shown once): whsec_" in plain.stdout
    assert (await cli("webhooks", "delete", created["id"], url=url)).returncode == 0
    assert (await cli("webhooks", "delete", created["id"], url=url)).returncode == 3
    bad = await cli("webhooks", "create", "ftp://x", url=url)
    assert bad.returncode == 2 and "url" in bad.stderr


# -- spectral watch, not on a terminal: one JSON line per message -----------------------


@asynccontextmanager
async def watching(
    url: str, task_id: str, *extra: str
) -> AsyncIterator[tuple[trio.Process, trio.MemoryReceiveChannel[dict[str, Any]]]]:
    """``spectral watch`` with stdout a pipe; yields it and a channel of its parsed lines."""
    env = {**BASE_ENV, "SPECTRAL_URL": url, "SPECTRAL_API_KEY": ADMIN_KEY}
    process = await trio.lowlevel.open_process(
        [sys.executable, "-m", "spectral", "watch", task_id, *extra],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        stdin=subprocess.DEVNULL,
        env=env,
    )
    send, receive = trio.open_memory_channel[dict[str, Any]](10_000)
    assert process.stdout is not None
    stdout = process.stdout

    async def read_lines() -> None:
        buffer = b""
        async with send:
            while chunk := await stdout.receive_some():
                buffer += chunk
                *lines, buffer = buffer.split(b"\n")
                for text in lines:
                    await send.send(json.loads(text))

    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(read_lines)
            yield process, receive
    finally:
        if process.returncode is None:
            process.kill()
        await process.wait()


async def drain(channel: trio.MemoryReceiveChannel[dict[str, Any]]) -> list[dict[str, Any]]:
    """Every message until the watch process closes its stdout."""
    with trio.fail_after(60):
        return [message async for message in channel]


async def test_watch_writes_json_lines_and_exits_0_on_success(server: Server) -> None:
    async with AsyncClient(server.url, ADMIN_KEY) as client:
        await client.create_task("w")
        async with watching(server.url, "w") as (process, messages):
            with trio.fail_after(60):
                snapshot = await messages.receive()
            assert (snapshot["type"], snapshot["seq"]) == ("snapshot", 1)
            for value in (10, 50, 90):
                await client.update_progress("w", value, f"step {value}")
            await client.complete("w")
            rest = await drain(messages)
            assert await process.wait() == 0
    assert [(m["type"], m["seq"]) for m in rest] == [
        ("progress", 2),
        ("progress", 3),
        ("progress", 4),
        ("complete", 5),
    ]
    assert rest[0]["task"]["progress"] == 10


@pytest.mark.parametrize("ending", ["fail", "cancel", "delete", "finished"])
async def test_watch_exits_1_unless_the_task_succeeds(server: Server, ending: str) -> None:
    async with AsyncClient(server.url, ADMIN_KEY) as client:
        await client.create_task("w")
        if ending == "finished":
            await client.complete("w")
            await client.create_task("f")
            await client.fail("f", "broke")
            for task_id, status in (("w", 0), ("f", 1)):
                done = await cli("watch", task_id, url=server.url)
                assert done.returncode == status
                (line,) = done.stdout.splitlines()
                assert json.loads(line)["type"] == "snapshot"
            return
        async with watching(server.url, "w") as (process, messages):
            with trio.fail_after(60):
                await messages.receive()
            if ending == "fail":
                await client.fail("w", "broke")
            elif ending == "cancel":
                await client.cancel("w")
            else:
                await client.delete_task("w")
            (last,) = await drain(messages)
            assert await process.wait() == 1
    assert last["type"] == {"fail": "fail", "cancel": "cancel", "delete": "deleted"}[ending]


async def test_watch_of_a_missing_task_is_exit_3(server: Server) -> None:
    done = await cli("watch", "nope", url=server.url)
    assert (done.returncode, done.stdout) == (3, "")
    assert done.stderr.startswith("spectral: TASK_NOT_FOUND: ")


async def test_watch_resumes_across_a_server_crash(tmp_path: Path) -> None:
    port = free_port()
    argv = fixed_port_argv(tmp_path / "data", port)
    url = f"http://127.0.0.1:{port}"
    async with running(argv, env=SERVE_ENV) as first, AsyncClient(url, ADMIN_KEY) as client:
        await client.create_task("r")
        async with watching(url, "r") as (process, messages):
            with trio.fail_after(60):
                seen = [await messages.receive()]
            for value in range(1, 21):
                await client.update_progress("r", value)
            with trio.fail_after(60):
                while seen[-1]["seq"] < 21:
                    seen.append(await messages.receive())
            first.kill()
            await first.wait()
            async with running(argv, env=SERVE_ENV):
                for value in range(21, 41):
                    await client.update_progress("r", value)
                await client.complete("r")
                seen += await drain(messages)
                assert await process.wait() == 0
    seqs = [message["seq"] for message in seen]
    assert seqs == list(range(1, 43))
    assert seen[-1]["type"] == "complete"
