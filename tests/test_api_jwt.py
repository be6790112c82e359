"""JWT principals end to end (docs/api.md, "JWT"): a real server started with
``SPECTRAL_JWT_SECRET`` or ``SPECTRAL_JWT_PUBLIC_KEY``, real HTTP, SSE and WebSockets,
and the SDK. Expiry is never waited for: tokens are minted an hour expired.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import os
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
import trio
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from trio_websocket import ConnectionClosed, open_websocket_url

from spectral.client import AsyncClient, AuthError, Client, NotFoundError
from tests.conftest import ADMIN_HEADERS, SERVE_ENV, serve_argv
from tests.procs import ROOT, Server, running

SECRET = "the-seed's-jwt-secret-0123456789abcdef"
HOUR = 3600


def token(owner: Any, role: str | None = "service", **claims: Any) -> str:
    """An HS256 JWT carrying the owner as ``userId`` (as the seed's tokens do)."""
    body = {"userId": owner, "exp": int(time.time()) + HOUR, **claims}
    if role is not None:
        body["role"] = role
    return jwt.encode(body, SECRET, algorithm="HS256")


def bearer(jwt_text: str) -> dict[str, str]:
    """The JWT as an ``Authorization`` header."""
    return {"Authorization": f"Bearer {jwt_text}"}


@dataclass
class Jwts:
    """A server accepting HS256 JWTs, and an HTTP client without credentials."""

    server: Server
    http: httpx.AsyncClient

    async def ws(self, path: str, headers: dict[str, str] | None = None) -> str | int:
        """The first message's type if the socket opens with one, else the close code."""
        extra = [(k.encode(), v.encode()) for k, v in (headers or {}).items()]
        async with open_websocket_url(self.server.ws_url + path, extra_headers=extra) as ws:
            with trio.fail_after(30):
                try:
                    return json.loads(await ws.get_message())["type"]
                except ConnectionClosed as closed:
                    assert closed.reason is not None
                    return closed.reason.code

    async def sse(self, path: str, headers: dict[str, str] | None = None) -> int:
        """The status of an SSE stream (200 once its headers come)."""
        with trio.fail_after(30):
            async with self.http.stream("GET", path, headers=headers) as stream:
                return stream.status_code

    async def create(self, jwt_text: str, task_id: str) -> None:
        """Create a task with a JWT."""
        made = await self.http.post("/tasks/create", json={"id": task_id}, headers=bearer(jwt_text))
        assert made.status_code == 201, made.text


@pytest.fixture
async def jwts(tmp_path: Path) -> AsyncIterator[Jwts]:
    """A server taking HS256 JWTs whose owner is ``userId``."""
    env = {**SERVE_ENV, "SPECTRAL_JWT_SECRET": SECRET, "SPECTRAL_JWT_OWNER_CLAIM": "userId"}
    async with (
        running(serve_argv(tmp_path / "data"), env=env) as server,
        httpx.AsyncClient(base_url=server.url, timeout=60) as http,
    ):
        yield Jwts(server, http)


async def test_a_jwt_creates_reads_and_watches_its_tasks_on_every_surface(jwts: Jwts) -> None:
    alice = token("alice")
    await jwts.create(alice, "a-1")
    for headers, query in [(bearer(alice), ""), ({}, f"?token={alice}")]:
        read = await jwts.http.get(f"/tasks/a-1{query}", headers=headers)
        assert (read.status_code, read.json()["owner"]) == (200, "alice"), read.text
        listed = await jwts.http.get(f"/tasks{query}", headers=headers)
        assert [task["taskId"] for task in listed.json()["tasks"]] == ["a-1"]
        rpc = await jwts.http.post(
            f"/rpc/tasks/getById{query}", json={"json": {"taskId": "a-1"}}, headers=headers
        )
        assert rpc.status_code == 200, rpc.text
        assert await jwts.sse(f"/tasks/a-1/events{query}", headers) == 200
        assert await jwts.ws(f"/ws/task/a-1{query}", headers) == "snapshot"
    progressed = await jwts.http.post(
        f"/tasks/updateProgress?token={alice}", json={"taskId": "a-1", "progress": 50}
    )
    assert progressed.status_code == 200, progressed.text
    created = await jwts.http.post(
        f"/rpc/tasks/create?token={alice}", json={"json": {"taskId": "a-2"}}
    )
    assert created.status_code == 200, created.text
    me = await jwts.http.get("/me", headers=bearer(alice))
    assert me.json() == {"keyId": "jwt:alice", "owner": "alice", "role": "service", "name": None}


async def test_rooms_take_a_jwt_as_token(jwts: Jwts) -> None:
    alice = token("alice")
    url = f"{jwts.server.ws_url}/rooms/user_alice/subscribe?token={alice}"
    async with open_websocket_url(url) as ws:
        with trio.fail_after(30):
            while True:
                health = await jwts.http.get("/rooms/user_alice/health", headers=bearer(alice))
                if health.status_code == 200 and health.json()["connections"] == 1:
                    break
                await trio.sleep(0.01)
            sent = await jwts.http.post(
                "/rooms/user_alice/broadcast", json={"n": 1}, headers=bearer(alice)
            )
            assert sent.json()["delivered"] == 1, sent.text
            assert json.loads(await ws.get_message())["n"] == 1
    assert await jwts.ws(f"/rooms/user_alice/subscribe?token={token('bob')}") == 4404


async def test_owners_are_isolated_and_readers_cannot_mutate(jwts: Jwts) -> None:
    await jwts.create(token("alice"), "mine")
    bob = token("bob")
    assert (await jwts.http.get("/tasks/mine", headers=bearer(bob))).status_code == 404
    assert (await jwts.http.get(f"/tasks/mine?token={bob}")).status_code == 404
    assert await jwts.sse(f"/tasks/mine/events?token={bob}") == 404
    assert await jwts.ws(f"/ws/task/mine?token={bob}") == 4404
    assert (await jwts.http.get("/tasks", headers=bearer(bob))).json()["tasks"] == []
    for role in ("reader", "admin", None):  # "admin" in a JWT is a reader, never an admin
        reader = token("alice", role)
        assert (await jwts.http.get("/tasks/mine", headers=bearer(reader))).status_code == 200
        refused = await jwts.http.post(
            "/tasks/updateProgress",
            json={"taskId": "mine", "progress": 1},
            headers=bearer(reader),
        )
        assert (refused.status_code, refused.json()["error"]["code"]) == (403, "FORBIDDEN")
        make = await jwts.http.post("/tasks/create", json={"id": "r"}, headers=bearer(reader))
        assert make.status_code == 403
        assert (await jwts.http.get("/admin/keys", headers=bearer(reader))).status_code == 403
    me = await jwts.http.get("/me", headers=bearer(token(42, "admin")))
    assert me.json() == {"keyId": "jwt:42", "owner": "42", "role": "reader", "name": None}


def _unsigned(owner: str) -> str:
    def b64(value: dict[str, Any]) -> str:
        return base64.urlsafe_b64encode(json.dumps(value).encode()).rstrip(b"=").decode()

    return f"{b64({'alg': 'none', 'typ': 'JWT'})}.{b64({'userId': owner, 'role': 'service'})}."


@pytest.mark.parametrize(
    ("bad", "reason"),
    [
        (lambda: token("alice", exp=int(time.time()) - HOUR), "expired"),
        (lambda: token("alice", nbf=int(time.time()) + HOUR), "not yet valid"),
        (lambda: jwt.encode({"userId": "alice"}, "x" * 40, algorithm="HS256"), "signature"),
        (lambda: _unsigned("alice"), "alg: none"),
        (lambda: token(None), "owner claim"),
    ],
)
async def test_a_refused_jwt_is_401_on_every_path(jwts: Jwts, bad: Any, reason: str) -> None:
    await jwts.create(token("alice"), "t")
    text = bad()
    for headers, query in [(bearer(text), ""), ({}, f"?token={text}")]:
        answer = await jwts.http.get(f"/tasks/t{query}", headers=headers)
        assert answer.status_code == 401
        error = answer.json()["error"]
        assert error["code"] == "UNAUTHENTICATED"
        assert reason in error["message"]
        rpc = await jwts.http.post(
            f"/rpc/tasks/getById{query}", json={"json": {"taskId": "t"}}, headers=headers
        )
        assert rpc.status_code == 401
        minted = await jwts.http.post(
            f"/tokens/watch{query}", json={"taskId": "t"}, headers=headers
        )
        assert minted.status_code == 401
        assert await jwts.sse(f"/tasks/t/events{query}", headers) == 401
        assert await jwts.ws(f"/ws/task/t{query}", headers) == 4401


async def test_watch_tokens_minted_with_a_jwt_open_their_task(jwts: Jwts) -> None:
    reader = token("alice", "reader")
    await jwts.create(token("alice"), "w")
    minted = await jwts.http.post("/tokens/watch", json={"taskId": "w"}, headers=bearer(reader))
    assert minted.status_code == 200, minted.text
    watch = minted.json()["token"]
    assert watch.count(".") == 1
    assert await jwts.ws(f"/ws/task/w?token={watch}") == "snapshot"
    assert await jwts.sse(f"/tasks/w/events?token={watch}") == 200
    assert (await jwts.http.get(f"/tasks/w?token={watch}")).status_code == 401  # watch only


async def test_the_sdk_with_a_jwt_blocking_and_async(jwts: Jwts) -> None:
    url, alice = jwts.server.url, token("alice")

    def blocking() -> list[str]:
        with Client(url, token=alice) as client:
            client.create_task("sdk-1")
            client.update_progress("sdk-1", 40)
            client.complete("sdk-1")
            with Client(url, token=token("bob")) as bob, pytest.raises(NotFoundError):
                bob.get_task("sdk-1")
            with Client(url, token=token("alice", "reader")) as reader:
                with pytest.raises(AuthError) as refused:
                    reader.update_progress("sdk-1", 50)
                assert refused.value.status == 403
            return [message["type"] for message in client.watch("sdk-1")]

    assert await trio.to_thread.run_sync(blocking) == ["snapshot"]

    async with AsyncClient(url, token=alice) as client:
        await client.create_task("sdk-2")
        await client.complete("sdk-2")
        assert {task.task_id for task in (await client.list_tasks()).tasks} == {"sdk-1", "sdk-2"}
        assert [message["type"] async for message in client.watch("sdk-2")] == ["snapshot"]

    async def under_asyncio() -> str:
        async with AsyncClient(url, token=alice) as client:
            return (await client.get_task("sdk-2")).status

    assert await trio.to_thread.run_sync(asyncio.run, under_asyncio()) == "success"


# -- public keys ---------------------------------------------------------------------


def _pem(key: Any) -> bytes:
    return key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


@pytest.mark.parametrize(
    ("algorithm", "make"),
    [
        ("RS256", lambda: rsa.generate_private_key(public_exponent=65537, key_size=2048)),
        ("ES256", lambda: ec.generate_private_key(ec.SECP256R1())),
    ],
)
async def test_a_public_key_server_takes_its_algorithm_only(
    tmp_path: Path, algorithm: str, make: Any
) -> None:
    private = make()
    public_pem = _pem(private)
    (tmp_path / "jwt.pem").write_bytes(public_pem)
    env = {**SERVE_ENV, "SPECTRAL_JWT_PUBLIC_KEY": str(tmp_path / "jwt.pem")}
    async with (
        running(serve_argv(tmp_path / "data"), env=env) as server,
        httpx.AsyncClient(base_url=server.url, timeout=60) as http,
    ):
        good = jwt.encode({"sub": "acme", "role": "service"}, private, algorithm=algorithm)
        me = await http.get("/me", headers=bearer(good))
        assert me.json() == {"keyId": "jwt:acme", "owner": "acme", "role": "service", "name": None}
        # The key-confusion attack: HS256 with the public key's PEM text as the secret.
        head = base64.urlsafe_b64encode(b'{"alg":"HS256","typ":"JWT"}').rstrip(b"=")
        body = base64.urlsafe_b64encode(b'{"sub":"acme","role":"service"}').rstrip(b"=")
        mac = hmac.new(public_pem, head + b"." + body, hashlib.sha256).digest()
        forged = (head + b"." + body + b"." + base64.urlsafe_b64encode(mac).rstrip(b"=")).decode()
        refused = await http.get("/me", headers=bearer(forged))
        assert refused.status_code == 401
        assert f"accepts only {algorithm}" in refused.json()["error"]["message"]
        # API keys keep working beside JWTs.
        assert (await http.get("/me", headers=ADMIN_HEADERS)).json()["role"] == "admin"


async def test_an_unreadable_public_key_stops_the_start(tmp_path: Path) -> None:
    argv = [sys.executable, "-m", "spectral", "serve", "--data-dir", str(tmp_path / "data")]
    env = {**os.environ, "SPECTRAL_JWT_PUBLIC_KEY": str(tmp_path / "missing.pem")}
    result = await trio.run_process(
        argv, capture_stdout=True, capture_stderr=True, check=False, cwd=ROOT, env=env
    )
    assert result.returncode == 2
    assert b"invalid setting jwt_public_key" in result.stderr
    assert b"cannot read the JWT public key" in result.stderr
