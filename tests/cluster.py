"""Several ``spectral serve --cluster`` nodes as real processes, for end-to-end tests.

Each node has its own data directory (a shared one would hide the data-locality
failures), a free public port and a free internal port, and the short lease that
:data:`LEASE` sets, so fencing tests wait seconds, not the default five. Nodes are
started, killed (SIGKILL), stopped (SIGTERM) and restarted on the same data
directory; a restarted node listens on a new port, so ask :meth:`Nodes.url` again.
"""

from __future__ import annotations

import signal
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import trio

from tests.conftest import ADMIN_HEADERS, SERVE_ENV, serve_argv
from tests.procs import Server, running

#: Seconds of each node's lease in tests (it fences itself at 80 % of it, after about
#: four missed renewals): short enough for the fencing tests to wait seconds, long enough
#: that a node on a loaded 2-core machine (a busy loop, other tests) keeps its lease.
LEASE = 6.0


@dataclass
class _Running:
    server: Server
    scope: trio.CancelScope


@dataclass
class Nodes:
    """The nodes of one test's cluster (see the module docstring)."""

    nursery: trio.Nursery
    root: Path
    pg_url: str
    redis_url: str
    env: dict[str, str] = field(default_factory=dict)
    running: dict[str, _Running] = field(default_factory=dict)
    #: More command-line arguments for every node (they win over the defaults).
    extra: tuple[str, ...] = ()

    def argv(self, name: str) -> list[str]:
        """The command line of node ``name``."""
        return serve_argv(
            self.root / name,
            "--cluster",
            self.pg_url,
            "--redis",
            self.redis_url,
            "--node-id",
            name,
            *self.extra,
        )

    async def start(self, name: str) -> Server:
        """Start node ``name`` (again, on its data directory) and wait until it listens."""
        env = {**SERVE_ENV, "SPECTRAL_CLUSTER_LEASE": str(LEASE), **self.env}

        async def run(*, task_status: trio.TaskStatus[_Running]) -> None:
            with trio.CancelScope() as scope:
                async with running(self.argv(name), env=env) as server:
                    task_status.started(_Running(server, scope))
                    await trio.sleep_forever()

        self.running[name] = await self.nursery.start(run)
        return self.running[name].server

    def server(self, name: str) -> Server:
        """Node ``name``'s process."""
        return self.running[name].server

    def url(self, name: str) -> str:
        """Node ``name``'s base URL."""
        return self.running[name].server.url

    def ws_url(self, name: str) -> str:
        """Node ``name``'s base URL with ws://."""
        return self.running[name].server.ws_url

    async def kill(self, name: str) -> None:
        """SIGKILL node ``name`` and wait until it is gone."""
        node = self.running.pop(name)
        node.server.kill()
        with trio.fail_after(20):
            await node.server.wait()
        node.scope.cancel()

    async def stop(self, name: str) -> int:
        """SIGTERM node ``name``; its exit status."""
        node = self.running.pop(name)
        node.server.terminate()
        with trio.fail_after(30):
            status = await node.server.wait()
        node.scope.cancel()
        return status

    def pause(self, name: str) -> None:
        """SIGSTOP node ``name`` (it keeps its sockets and files, and runs nothing)."""
        self.running[name].server.process.send_signal(signal.SIGSTOP)

    def resume(self, name: str) -> None:
        """SIGCONT node ``name``."""
        self.running[name].server.process.send_signal(signal.SIGCONT)

    @asynccontextmanager
    async def client(self, name: str, **options: Any) -> AsyncIterator[httpx.AsyncClient]:
        """An HTTP client of node ``name`` as the admin (headers may be overridden)."""
        headers = options.pop("headers", ADMIN_HEADERS)
        async with httpx.AsyncClient(
            base_url=self.url(name), timeout=30, headers=headers, **options
        ) as http:
            yield http


@asynccontextmanager
async def cluster(
    root: Path,
    pg_url: str,
    redis_url: str,
    names: tuple[str, ...] = ("a", "b", "c"),
    env: dict[str, str] | None = None,
    extra: tuple[str, ...] = (),
) -> AsyncIterator[Nodes]:
    """Start ``names`` (at once, with ``env`` added to theirs and ``extra`` arguments) and
    stop them all on exit."""
    async with trio.open_nursery() as nursery:
        nodes = Nodes(nursery, root, pg_url, redis_url, dict(env or {}), extra=extra)
        async with trio.open_nursery() as starting:
            for name in names:
                starting.start_soon(nodes.start, name)
        try:
            yield nodes
        finally:
            for name in list(nodes.running):
                # Shown by pytest when the test fails.
                print(f"--- node {name} ---\n{nodes.server(name).output}")
                nodes.server(name).kill()
            nursery.cancel_scope.cancel()
