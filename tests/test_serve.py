"""``spectral serve`` as a real process: defaults, admin key, /health, errors, shutdown."""

from __future__ import annotations

import json
import signal
import stat
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
import trio
from trio_websocket import open_websocket_url

from tests.procs import ROOT, running

SERVE = [sys.executable, "-m", "spectral", "serve", "--port", "0"]


def serve_in(data_dir: Path, *extra: str) -> list[str]:
    """argv of ``spectral serve`` on a free port over ``data_dir``."""
    return [*SERVE, "--data-dir", str(data_dir), *extra]


def admin_headers(data_dir: Path) -> dict[str, str]:
    """Headers with the admin key the server wrote on first start."""
    return {"X-API-Key": (data_dir / "admin.key").read_text().strip()}


async def test_first_start_creates_and_prints_admin_key_once(tmp_path: Path) -> None:
    data = tmp_path / "data"
    async with running(serve_in(data)) as server:
        key = (data / "admin.key").read_text().strip()
        assert key.startswith("spk_admin_") and len(key) > 40
        assert stat.S_IMODE((data / "admin.key").stat().st_mode) == 0o600
        assert key in server.output
    async with running(serve_in(data)) as server:
        assert (data / "admin.key").read_text().strip() == key
        assert key not in server.output
        assert "admin key" not in server.output


async def test_admin_key_from_environment_is_not_written(tmp_path: Path) -> None:
    secret = "env-admin-key-0123456789"
    async with running(serve_in(tmp_path), env={"SPECTRAL_ADMIN_KEY": secret}) as server:
        assert not (tmp_path / "admin.key").exists()
        assert secret not in server.output


async def test_default_data_dir_is_data_under_the_working_directory(tmp_path: Path) -> None:
    async with running([*SERVE], cwd=tmp_path, env={"SPECTRAL_DATA_DIR": ""}):
        assert (tmp_path / "data" / "admin.key").exists()
        assert (tmp_path / "data" / "registry.sqlite").exists()


async def test_health_answers_the_spec_shape(tmp_path: Path) -> None:
    async with running(serve_in(tmp_path)) as server, httpx.AsyncClient(timeout=60) as client:
        response = await client.get(server.url + "/health")
    assert response.status_code == 200
    body = response.json()
    assert list(body) == ["status", "version", "uptimeSeconds", "actors", "connections"]
    assert body["status"] == "healthy"
    assert isinstance(body["version"], str) and body["version"]
    assert 0 <= body["uptimeSeconds"] < 60
    assert body["actors"] == {"live": 0, "evicted": 0}
    assert body["connections"] == 0


async def test_unknown_route_and_method_get_the_json_error_envelope(tmp_path: Path) -> None:
    async with running(serve_in(tmp_path)) as server, httpx.AsyncClient(timeout=60) as client:
        anonymous = await client.get(server.url + "/no/such/route")
        missing = await client.get(server.url + "/no/such/route", headers=admin_headers(tmp_path))
        wrong_method = await client.delete(server.url + "/health")
    assert anonymous.status_code == 401  # routes are not revealed to anonymous callers
    assert anonymous.json()["error"]["code"] == "UNAUTHENTICATED"
    assert missing.status_code == 404
    assert missing.headers["content-type"] == "application/json"
    assert missing.json() == {
        "error": {"code": "NOT_FOUND", "message": "no route for GET /no/such/route"}
    }
    assert wrong_method.status_code == 405
    assert wrong_method.json()["error"]["code"] == "METHOD_NOT_ALLOWED"
    assert "GET" in wrong_method.headers["allow"]


async def test_every_request_is_logged_as_one_json_line(tmp_path: Path) -> None:
    async with running(serve_in(tmp_path)) as server, httpx.AsyncClient(timeout=60) as client:
        headers = admin_headers(tmp_path)
        await client.get(server.url + "/health")
        await client.get(server.url + "/missing", headers=headers)
        await client.post(server.url + "/tasks/create", json={"id": "log-me"}, headers=headers)
        await client.get(server.url + "/tasks/log-me?token=query-secret", headers=headers)
        body = {"taskId": "log-me", "progress": 5}
        await client.post(server.url + "/tasks/updateProgress", json=body, headers=headers)
        await client.post(
            server.url + "/rpc/tasks/getById", json={"json": {"taskId": "log-me"}}, headers=headers
        )
        url = server.ws_url + "/ws/task/log-me?token=query-secret"
        ws_headers = [(name.encode(), value.encode()) for name, value in headers.items()]
        async with open_websocket_url(url, extra_headers=ws_headers) as ws:
            await ws.get_message()
        server.terminate()
        with trio.fail_after(60):
            await server.wait()
    records = [json.loads(line) for line in server.lines if line.startswith("{")]
    requests = [r for r in records if r.get("msg") == "request"]
    # The path as requested (grep a task id), without the query (tokens travel there).
    assert [(r["method"], r["path"], r["route"], r["status"]) for r in requests] == [
        ("GET", "/health", "/health", 200),
        ("GET", "/missing", "(unmatched)", 404),
        ("POST", "/tasks/create", "/tasks/create", 201),
        ("GET", "/tasks/log-me", "/tasks/{taskId}", 200),
        ("POST", "/tasks/updateProgress", "/tasks/updateProgress", 200),
        ("POST", "/rpc/tasks/getById", "/rpc/tasks/getById", 200),
        ("GET", "/ws/task/log-me", "/ws/task/{taskId}", 101),
    ]
    # A task named in the path or the body is named in the line too.
    named = [r.get("taskId") for r in requests]
    assert named == [None, None, "log-me", "log-me", "log-me", "log-me", None]
    assert all(r["ms"] >= 0 for r in requests)
    assert "keyId" not in requests[0] and requests[1]["keyId"] == "bootstrap"
    assert not any("query-secret" in line for line in server.lines)
    secret = (tmp_path / "admin.key").read_text().strip()
    assert sum(secret in line for line in server.lines) == 1  # printed once, never logged


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
async def test_signal_shuts_down_gracefully_with_exit_code_zero(
    tmp_path: Path, signum: signal.Signals
) -> None:
    async with running(serve_in(tmp_path)) as server:
        server.process.send_signal(signum)
        with trio.fail_after(60):
            code = await server.wait()
    assert code == 0, server.output
    assert '"msg":"stopped"' in server.output


async def test_a_second_server_on_the_same_data_dir_is_refused(tmp_path: Path) -> None:
    async with running(serve_in(tmp_path)):
        second = await trio.run_process(
            serve_in(tmp_path), capture_stdout=True, capture_stderr=True, check=False
        )
    assert second.returncode == 1
    assert b"in use by another spectral process" in second.stderr


@pytest.mark.parametrize(
    ("flags", "field"), [(["--port", "70000"], "port"), (["--log-level", "LOUD"], "log_level")]
)
async def test_invalid_settings_exit_2_naming_the_field(
    tmp_path: Path, flags: list[str], field: str
) -> None:
    argv = [sys.executable, "-m", "spectral", "serve", "--data-dir", str(tmp_path), *flags]
    result = await trio.run_process(
        argv, capture_stdout=True, capture_stderr=True, check=False, cwd=ROOT
    )
    assert result.returncode == 2
    assert f"invalid setting {field}".encode() in result.stderr


def test_console_script_is_installed() -> None:
    script = Path(sys.executable).parent / "spectral"
    result = subprocess.run([script, "--version"], capture_output=True, text=True, check=True)
    assert result.stdout.startswith("spectral ")


def test_the_server_imports_no_framework() -> None:
    code = (
        "import sys, spectral.server; "
        "print(sorted({m.split('.')[0] for m in sys.modules} & {'quart', 'hypercorn', 'werkzeug'}))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT
    )
    assert result.stdout.strip() == "[]"


async def test_a_websocket_upgrade_on_a_later_request_of_a_connection(tmp_path: Path) -> None:
    async with running(serve_in(tmp_path)) as server:
        key = (tmp_path / "admin.key").read_text().strip()
        host, port = server.url.removeprefix("http://").rsplit(":", 1)
        stream = await trio.open_tcp_stream(host, int(port))
        head = f"host: x\r\nx-api-key: {key}\r\n"
        body = b'{"id": "upgraded"}'
        await stream.send_all(
            f"POST /tasks/create HTTP/1.1\r\n{head}content-length: {len(body)}\r\n\r\n".encode()
            + body
        )
        received = b""
        with trio.fail_after(30):
            while b'"upgraded"' not in received:
                received += await stream.receive_some(65536)
            assert received.startswith(b"HTTP/1.1 201")
            await stream.send_all(
                f"GET /ws/task/upgraded HTTP/1.1\r\n{head}upgrade: websocket\r\n"
                "connection: Upgrade\r\nsec-websocket-key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                "sec-websocket-version: 13\r\n\r\n".encode()
            )
            received = b""
            while b'"snapshot"' not in received:
                received += await stream.receive_some(65536)
        assert received.startswith(b"HTTP/1.1 101")
        await stream.aclose()
