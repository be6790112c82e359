"""/rpc called by the real JavaScript ``@orpc/client`` (RPCLink over fetch) under Node.

``tests/node/orpc-client.test.mjs`` exercises every procedure, Dates, typed errors and
an unknown procedure, and prints a JSON summary; this runs it against a real
``spectral serve`` once per client version the original pinned or that is current.
Node.js (>= 20) and ``npm ci`` in tests/node (``make test`` does it) are required: a
missing one fails these tests, it never skips them.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess

import pytest
import trio

from tests.conftest import ADMIN_KEY
from tests.procs import ROOT, Server

NODE_DIR = ROOT / "tests" / "node"
SCRIPT = "orpc-client.test.mjs"
#: Checks the script must report as passed (so that a script doing nothing cannot pass).
EXPECTED_CHECKS = 16


def _node() -> str:
    node = shutil.which("node")
    if node is None:
        pytest.fail("Node.js (>= 20) is required for the oRPC client tests; install it")
    return node


@pytest.mark.parametrize(
    ("alias", "version"),
    [("orpc-client-194", "1.9.4"), ("orpc-client-latest", None)],
)
async def test_the_real_orpc_client_calls_every_procedure(
    server: Server, alias: str, version: str | None
) -> None:
    node = _node()
    package = NODE_DIR / "node_modules" / alias / "package.json"
    if not package.exists():
        pytest.fail(f"{package} is missing: run `npm ci` in tests/node (`make test` does)")
    installed = json.loads(package.read_text())["version"]
    with trio.fail_after(90):
        result = await trio.run_process(
            [node, SCRIPT, "--client", alias, "--url", f"{server.url}/rpc", "--prefix", alias],
            cwd=NODE_DIR,
            env={**os.environ, "SPECTRAL_API_KEY": ADMIN_KEY},
            capture_stdout=True,
            capture_stderr=True,
            check=False,
            stdin=subprocess.DEVNULL,
        )
    stdout, stderr = result.stdout.decode(), result.stderr.decode()
    assert result.returncode == 0, f"node failed ({result.returncode}):\n{stdout}\n{stderr}"
    summary = json.loads(stdout.strip().splitlines()[-1])
    assert summary["failed"] == [], json.dumps(summary["failed"], indent=2)
    assert len(summary["passed"]) == EXPECTED_CHECKS, summary["passed"]
    assert summary["version"] == installed
    if version is None:
        assert installed.startswith("1."), installed  # the 1.x line (docs/api.md, "RPC")
    else:
        assert installed == version
    assert summary["requests"] > 20
