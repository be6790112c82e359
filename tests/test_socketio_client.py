"""``/socket.io/`` used by the real JavaScript ``socket.io-client`` 4.x under Node
(docs/api.md, "Socket.IO (the seeds' jobs system)").

``tests/node/socketio-client.test.mjs`` connects with the client's default options
(long-polling, then the upgrade), WebSocket only and long-polling only, checks
``connect_error`` and every ``job:*`` event, and prints a JSON summary; with
``--restart`` it waits while the server is killed and restarted on the same port and
data directory, and expects the client to reconnect by itself. Node.js (>= 20) and
``npm ci`` in tests/node (``make test`` does it) are required: a missing one fails
these tests, it never skips them.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest
import trio

from tests.conftest import ADMIN_KEY, SERVE_ENV
from tests.procs import ROOT, Server, running
from tests.test_client_watch import fixed_port_argv, free_port

NODE_DIR = ROOT / "tests" / "node"
SCRIPT = "socketio-client.test.mjs"
#: Checks the script must report as passed (so that a script doing nothing cannot pass).
EXPECTED_CHECKS = 8


def _node() -> str:
    node = shutil.which("node")
    if node is None:
        pytest.fail("Node.js (>= 20) is required for the Socket.IO client tests; install it")
    package = NODE_DIR / "node_modules" / "socket.io-client" / "package.json"
    if not package.exists():
        pytest.fail(f"{package} is missing: run `npm ci` in tests/node (`make test` does)")
    assert json.loads(package.read_text())["version"].startswith("4."), package
    return node


def _summary(stdout: str, stderr: str, returncode: int | None) -> dict[str, list[object]]:
    assert returncode == 0, f"node failed ({returncode}):\n{stdout}\n{stderr}"
    summary: dict[str, list[object]] = json.loads(stdout.strip().splitlines()[-1])
    assert summary["failed"] == [], json.dumps(summary["failed"], indent=2)
    return summary


async def test_the_real_socketio_client(server: Server) -> None:
    node = _node()
    with trio.fail_after(120):
        result = await trio.run_process(
            [node, SCRIPT, "--url", server.url],
            cwd=NODE_DIR,
            env={**os.environ, "SPECTRAL_API_KEY": ADMIN_KEY},
            capture_stdout=True,
            capture_stderr=True,
            check=False,
            stdin=subprocess.DEVNULL,
        )
    summary = _summary(result.stdout.decode(), result.stderr.decode(), result.returncode)
    assert len(summary["passed"]) == EXPECTED_CHECKS, summary["passed"]


async def test_the_real_client_reconnects_after_a_restart(tmp_path: Path) -> None:
    node = _node()
    port = free_port()
    argv = fixed_port_argv(tmp_path / "data", port)
    stdout = bytearray()
    stderr = bytearray()
    async with running(argv, env=SERVE_ENV) as first:
        url = first.url
        process = await trio.lowlevel.open_process(
            [node, SCRIPT, "--url", url, "--restart"],
            cwd=NODE_DIR,
            env={**os.environ, "SPECTRAL_API_KEY": ADMIN_KEY},
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        assert process.stdin is not None and process.stdout is not None
        assert process.stderr is not None

        ready = trio.Event()

        async def drain(stream: trio.abc.ReceiveStream, into: bytearray) -> None:
            async for chunk in stream:
                into.extend(chunk)
                if b"ready\n" in into:
                    ready.set()
            ready.set()  # the script ended early: its summary says why

        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(drain, process.stdout, stdout)
                nursery.start_soon(drain, process.stderr, stderr)
                with trio.fail_after(60):
                    await ready.wait()
                assert b"ready\n" in stdout, (bytes(stdout), bytes(stderr))
                first.kill()  # SIGKILL: the client only sees its connection drop
                with trio.fail_after(30):
                    await first.wait()
                async with running(argv, env=SERVE_ENV) as second:
                    assert second.url == url
                    await process.stdin.send_all(b"restarted\n")
                    with trio.fail_after(90):
                        await process.wait()
        finally:
            if process.returncode is None:
                process.kill()
    summary = _summary(stdout.decode(), stderr.decode(), process.returncode)
    assert len(summary["passed"]) == 1, summary["passed"]
