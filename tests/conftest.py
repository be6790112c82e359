"""Shared fixtures: a real ``spectral serve`` process on a free loopback port."""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.procs import Server, running

#: The admin key test servers run with (``SPECTRAL_ADMIN_KEY``), and the headers that send it.
ADMIN_KEY = "spectral-test-admin-key-0123456789"
ADMIN_HEADERS = {"X-API-Key": ADMIN_KEY}
WS_HEADERS = [(b"X-API-Key", ADMIN_KEY.encode())]
#: Environment for test servers.
SERVE_ENV = {"SPECTRAL_ADMIN_KEY": ADMIN_KEY}


def serve_argv(data_dir: Path, *extra: str) -> list[str]:
    """argv of ``spectral serve`` on a free port over ``data_dir``."""
    return [
        sys.executable,
        "-m",
        "spectral",
        "serve",
        "--port",
        "0",
        "--data-dir",
        str(data_dir),
        "--log-level",
        "WARNING",
        *extra,
    ]


@pytest.fixture
async def server(tmp_path: Path) -> AsyncIterator[Server]:
    """A server over a fresh data directory."""
    async with running(serve_argv(tmp_path / "data"), env=SERVE_ENV) as process:
        yield process


@pytest.fixture
async def client(server: Server) -> AsyncIterator[httpx.AsyncClient]:
    """An HTTP client for :func:`server`."""
    async with httpx.AsyncClient(base_url=server.url, timeout=60, headers=ADMIN_HEADERS) as http:
        yield http


# Private PostgreSQL and Redis servers for the cluster tests (started only when a test asks).
pytest_plugins = ["tests.engines"]


@pytest.fixture
async def owners(tmp_path: Path) -> AsyncIterator[tuple[Server, httpx.AsyncClient, dict[str, Any]]]:
    """A server and headers for the admin, alice (service), alice's reader and bob."""
    async with (
        running(serve_argv(tmp_path / "data"), env=SERVE_ENV) as server,
        httpx.AsyncClient(base_url=server.url, timeout=60) as http,
    ):
        headers: dict[str, Any] = {"admin": ADMIN_HEADERS}
        for name, owner, role in [
            ("alice", "alice", "service"),
            ("reader", "alice", "reader"),
            ("bob", "bob", "service"),
        ]:
            made = await http.post(
                "/admin/keys", json={"owner": owner, "role": role}, headers=ADMIN_HEADERS
            )
            assert made.status_code == 201, made.text
            headers[name] = {"X-API-Key": made.json()["key"]}
        yield server, http, headers
