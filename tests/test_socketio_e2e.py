"""``/socket.io/`` end to end on a real server, speaking raw Engine.IO: long-polling
over httpx, WebSocket over trio-websocket (docs/api.md, "Socket.IO (the seeds' jobs
system)"). The real socket.io-client is in tests/test_socketio_client.py.

No assertion depends on timing: every wait is for a packet, under a generous bound.
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
import trio
from trio_websocket import ConnectionClosed, WebSocketConnection, open_websocket_url

from tests.conftest import ADMIN_HEADERS, ADMIN_KEY, SERVE_ENV, serve_argv
from tests.procs import Server, running

PATH = "/socket.io/"
Owners = tuple[Server, httpx.AsyncClient, dict[str, Any]]


def key_of(headers: dict[str, str]) -> str:
    """The API key in a headers dict of the ``owners`` fixture."""
    return headers["X-API-Key"]


class Polling:
    """A raw Engine.IO session on long-polling."""

    def __init__(self, http: httpx.AsyncClient) -> None:
        self.http = http
        self.sid = ""
        self.open: dict[str, Any] = {}
        self.pending: list[str] = []

    async def handshake(self, **params: str) -> Polling:
        """Open the session."""
        answer = await self.http.get(PATH, params={"EIO": "4", "transport": "polling", **params})
        assert answer.status_code == 200, answer.text
        assert answer.headers["content-type"].startswith("text/plain")
        assert answer.text[0] == "0"
        self.open = json.loads(answer.text[1:])
        self.sid = self.open["sid"]
        return self

    @property
    def params(self) -> dict[str, str]:
        """The query of this session's requests."""
        return {"EIO": "4", "transport": "polling", "sid": self.sid}

    async def post(self, *texts: str) -> httpx.Response:
        """Send packets (joined by the record separator)."""
        return await self.http.post(PATH, params=self.params, content="\x1e".join(texts))

    async def poll(self) -> list[str]:
        """One long-poll's packets."""
        with trio.fail_after(60):
            answer = await self.http.get(PATH, params=self.params)
        assert answer.status_code == 200, answer.text
        return answer.text.split("\x1e")

    async def next_packet(self) -> str:
        """The next packet the server sends, pings answered."""
        with trio.fail_after(60):
            while True:
                while not self.pending:
                    self.pending = await self.poll()
                packet = self.pending.pop(0)
                if packet == "2":
                    assert (await self.post("3")).text == "ok"
                elif packet != "6":
                    return packet

    async def connect(self, auth: dict[str, Any] | None = None) -> dict[str, Any]:
        """CONNECT to the main namespace; the ``connected`` event's payload."""
        assert (await self.post("40" + (json.dumps(auth) if auth else ""))).text == "ok"
        answer = await self.next_packet()
        assert answer.startswith('40{"sid":'), answer
        name, payload = event_of(await self.next_packet())
        assert name == "connected"
        return payload


def event_of(packet: str) -> tuple[str, Any]:
    """The name and first argument of an EVENT packet's Engine.IO text."""
    assert packet.startswith("42"), packet
    name, *args = json.loads(packet[2:])
    return name, args[0] if args else None


class Socket:
    """A raw Engine.IO session on WebSocket (direct, or upgraded from ``Polling``)."""

    def __init__(self, ws: WebSocketConnection) -> None:
        self.ws = ws

    async def next_packet(self) -> str:
        """The next packet the server sends, pings answered."""
        with trio.fail_after(60):
            while True:
                packet = await self.ws.get_message()
                if packet == "2":
                    await self.ws.send_message("3")
                else:
                    return packet

    async def next_event(self) -> tuple[str, Any]:
        """The next EVENT (other packets skipped)."""
        while True:
            packet = await self.next_packet()
            if packet.startswith("42"):
                return event_of(packet)

    async def connect(self, auth: dict[str, Any] | None = None) -> dict[str, Any]:
        """CONNECT to the main namespace; the ``connected`` event's payload."""
        await self.ws.send_message("40" + (json.dumps(auth) if auth else ""))
        answer = await self.next_packet()
        assert answer.startswith('40{"sid":'), answer
        name, payload = event_of(await self.next_packet())
        assert name == "connected"
        return payload

    async def ack(self, ack_id: int, name: str, *args: Any) -> Any:
        """Emit an event with an ack id; the ack's first argument (events skipped)."""
        await self.ws.send_message(f"42{ack_id}" + json.dumps([name, *args]))
        while True:
            packet = await self.next_packet()
            if packet.startswith(f"43{ack_id}["):
                return json.loads(packet[2 + len(str(ack_id)) :])[0]


async def direct_socket(
    nursery: trio.Nursery, server: Server, key: str | None = None, **params: str
) -> tuple[Socket, dict[str, Any]]:
    """A WebSocket session opened without polling, and its OPEN payload."""
    query = "&".join(f"{k}={v}" for k, v in params.items())
    url = f"{server.ws_url}{PATH}?EIO=4&transport=websocket" + (f"&{query}" if query else "")
    headers = [(b"Authorization", f"Bearer {key}".encode())] if key else None
    ws = await nursery_websocket(nursery, url, headers)
    opened = await ws.get_message()
    assert opened[0] == "0", opened
    return Socket(ws), json.loads(opened[1:])


async def nursery_websocket(
    nursery: trio.Nursery, url: str, headers: list[tuple[bytes, bytes]] | None = None
) -> WebSocketConnection:
    """A WebSocket kept open until ``nursery`` ends."""
    ready: list[WebSocketConnection] = []
    opened = trio.Event()

    async def hold() -> None:
        async with open_websocket_url(url, extra_headers=headers) as ws:
            ready.append(ws)
            opened.set()
            await trio.sleep_forever()

    nursery.start_soon(hold)
    with trio.fail_after(30):
        await opened.wait()
    return ready[0]


async def create(http: httpx.AsyncClient, headers: dict[str, str], task_id: str) -> None:
    """Create a task as ``headers``' key."""
    made = await http.post("/tasks/create", json={"taskId": task_id}, headers=headers)
    assert made.status_code == 201, made.text


async def mutate(http: httpx.AsyncClient, headers: dict[str, str], path: str, **body: Any) -> None:
    """One mutation of a task."""
    done = await http.post(f"/tasks/{path}", json=body, headers=headers)
    assert done.status_code == 200, done.text


@pytest.fixture
async def quick(tmp_path: Path) -> AsyncIterator[tuple[Server, httpx.AsyncClient]]:
    """A server whose Engine.IO pings come every 0.5 s, with 1 s to answer."""
    env = {
        **SERVE_ENV,
        "SPECTRAL_SOCKETIO_PING_INTERVAL": "0.5",
        "SPECTRAL_SOCKETIO_PING_TIMEOUT": "1",
    }
    async with (
        running(serve_argv(tmp_path / "data"), env=env) as server,
        httpx.AsyncClient(base_url=server.url, timeout=60) as http,
    ):
        yield server, http


# -- Engine.IO ---------------------------------------------------------------------------


async def test_the_polling_handshake_poll_and_post(owners: Owners) -> None:
    _, http, headers = owners
    session = await Polling(http).handshake()
    assert session.open["upgrades"] == ["websocket"]
    assert (session.open["pingInterval"], session.open["pingTimeout"]) == (25000, 20000)
    assert session.open["maxPayload"] > 0
    greeting = await session.connect({"token": key_of(headers["alice"])})
    assert greeting["userId"] == "alice"
    assert isinstance(greeting["message"], str) and isinstance(greeting["timestamp"], int)
    await create(http, headers["alice"], "poll-1")
    await mutate(http, headers["alice"], "updateProgress", taskId="poll-1", progress=40)
    name, payload = event_of(await session.next_packet())
    assert name == "job:progress"
    assert payload["jobId"] == "poll-1" and payload["progress"] == 40
    assert payload["state"] == "active"


async def test_the_credential_may_come_from_the_handshake(owners: Owners) -> None:
    _, http, headers = owners
    bearer = {"Authorization": f"Bearer {key_of(headers['bob'])}"}
    session = Polling(httpx.AsyncClient(base_url=str(http.base_url), headers=bearer))
    async with session.http:
        await session.handshake()
        assert (await session.connect())["userId"] == "bob"
    by_query = await Polling(http).handshake(token=key_of(headers["alice"]))
    assert (await by_query.connect())["userId"] == "alice"


async def test_engineio_refusals(owners: Owners) -> None:
    _, http, _ = owners

    async def refused(method: str, status: int, code: int, **params: str) -> None:
        answer = await http.request(method, PATH, params=params)
        assert answer.status_code == status, answer.text
        assert answer.json()["code"] == code, answer.text
        assert isinstance(answer.json()["message"], str)

    await refused("GET", 400, 5, EIO="3", transport="polling")
    await refused("GET", 400, 5, transport="polling")
    await refused("GET", 400, 0, EIO="4", transport="carrier-pigeon")
    await refused("GET", 400, 1, EIO="4", transport="polling", sid="nope")
    await refused("POST", 400, 1, EIO="4", transport="polling", sid="nope")
    await refused("POST", 400, 2, EIO="4", transport="polling")
    await refused("GET", 400, 3, EIO="4", transport="websocket")  # no Upgrade header
    answer = await http.get(PATH, params={"EIO": "4", "transport": "polling", "sid": "nope"})
    assert answer.json() == {"code": 1, "message": "Session ID unknown"}


async def test_an_unknown_sid_is_refused_on_the_websocket_too(owners: Owners) -> None:
    server, http, _ = owners
    url = f"{server.url}{PATH}?EIO=4&transport=websocket&sid=nope"
    upgrade = {
        "Connection": "Upgrade",
        "Upgrade": "websocket",
        "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==",
        "Sec-WebSocket-Version": "13",
    }
    answer = await http.get(url, headers=upgrade)
    assert answer.status_code == 400
    assert answer.json() == {"code": 1, "message": "Session ID unknown"}


async def test_the_upgrade_from_polling_to_websocket(owners: Owners) -> None:
    server, http, headers = owners
    session = await Polling(http).handshake()
    await session.connect({"token": key_of(headers["alice"])})
    url = f"{server.ws_url}{PATH}?EIO=4&transport=websocket&sid={session.sid}"
    async with trio.open_nursery() as nursery:
        answered: list[list[str]] = []

        async def pending_poll() -> None:
            answered.append(await session.poll())

        nursery.start_soon(pending_poll)
        ws = await nursery_websocket(nursery, url)
        await ws.send_message("2probe")
        with trio.fail_after(30):
            assert await ws.get_message() == "3probe"
        with trio.fail_after(30):
            while not answered:
                await trio.sleep(0.01)
        assert answered == [["6"]]  # the poll ended with a noop, so the client may pause
        await ws.send_message("5")
        socket = Socket(ws)
        assert await socket.ack(1, "subscribe:job", "up-1") == {"ok": True}
        await create(http, headers["alice"], "up-1")
        await mutate(http, headers["alice"], "updateProgress", taskId="up-1", progress=5)
        events = {(await socket.next_event())[0] for _ in range(2)}
        assert events == {"job:progress", "job:up-1:progress"}
        # Polling on an upgraded session is refused.
        late = await http.get(PATH, params=session.params)
        assert late.status_code == 400 and late.json()["code"] == 3
        nursery.cancel_scope.cancel()


async def test_a_failed_probe_leaves_the_session_on_polling(owners: Owners) -> None:
    server, http, headers = owners
    session = await Polling(http).handshake()
    await session.connect({"token": key_of(headers["alice"])})
    url = f"{server.ws_url}{PATH}?EIO=4&transport=websocket&sid={session.sid}"
    async with open_websocket_url(url) as ws:
        await ws.send_message("2probe")
        with trio.fail_after(30):
            assert await ws.get_message() == "3probe"
    await create(http, headers["alice"], "probe-1")
    await mutate(http, headers["alice"], "updateProgress", taskId="probe-1", progress=1)
    name, payload = event_of(await session.next_packet())
    assert (name, payload["jobId"]) == ("job:progress", "probe-1")
    assert (await session.post("3")).text == "ok"  # still a polling session


async def test_a_direct_websocket_session(owners: Owners) -> None:
    server, http, headers = owners
    async with trio.open_nursery() as nursery:
        socket, opened = await direct_socket(nursery, server)
        assert opened["upgrades"] == []
        assert (await socket.connect({"token": key_of(headers["bob"])}))["userId"] == "bob"
        await create(http, headers["bob"], "ws-1")
        await mutate(http, headers["bob"], "complete", taskId="ws-1", metadata={"result": [1]})
        name, payload = await socket.next_event()
        assert (name, payload["state"], payload["result"]) == ("job:completed", "completed", [1])
        nursery.cancel_scope.cancel()


async def test_pings_are_answered_and_a_missing_pong_closes(
    quick: tuple[Server, httpx.AsyncClient],
) -> None:
    server, http = quick
    session = await Polling(http).handshake()
    assert (session.open["pingInterval"], session.open["pingTimeout"]) == (500, 1000)
    await session.connect({"token": ADMIN_KEY})
    for _ in range(3):  # next_packet answers each ping; the session lives on
        packets = await session.poll()
        if "2" in packets:
            assert (await session.post("3")).text == "ok"
    # Now never answer: the session ends (a CLOSE packet, then an unknown sid).
    with trio.fail_after(60):
        while True:
            answer = await http.get(PATH, params=session.params)
            if answer.status_code == 400 or "1" in answer.text.split("\x1e"):
                break
    answer = await http.get(PATH, params=session.params)
    assert answer.json() == {"code": 1, "message": "Session ID unknown"}
    async with trio.open_nursery() as nursery:
        socket, _ = await direct_socket(nursery, server, ADMIN_KEY)
        with trio.fail_after(60):
            assert await socket.ws.get_message() == "2"
            await socket.ws.send_message("3")
            try:
                while True:  # no more pongs: the server closes the socket
                    await socket.ws.get_message()
            except ConnectionClosed:
                pass
        nursery.cancel_scope.cancel()


async def test_a_session_that_never_connects_is_closed(
    quick: tuple[Server, httpx.AsyncClient],
) -> None:
    _, http = quick
    session = await Polling(http).handshake()
    with trio.fail_after(60):
        while True:
            answer = await http.get(PATH, params=session.params)
            if answer.status_code == 400:
                break
            if "2" in answer.text.split("\x1e"):
                await session.post("3")
    assert answer.json()["code"] == 1


# -- Socket.IO ---------------------------------------------------------------------------


async def test_a_refused_credential_is_a_connect_error(owners: Owners) -> None:
    server, http, headers = owners
    session = await Polling(http).handshake()
    await session.post('40{"token":"spk_not_a_key"}')
    error = await session.next_packet()
    assert error.startswith("44"), error
    assert "not valid" in json.loads(error[2:])["message"]
    no_credential = await Polling(http).handshake()
    await no_credential.post("40")
    assert json.loads((await no_credential.next_packet())[2:])["message"]
    # The session may try again with a good one.
    assert (await session.connect({"token": key_of(headers["alice"])}))["userId"] == "alice"
    async with trio.open_nursery() as nursery:
        socket, _ = await direct_socket(nursery, server)
        await socket.ws.send_message('40{"token":"spk_not_a_key"}')
        assert (await socket.next_packet()).startswith('44{"message":')
        nursery.cancel_scope.cancel()


async def test_other_namespaces_are_refused(owners: Owners) -> None:
    _, http, headers = owners
    session = await Polling(http).handshake()
    await session.post('40/admin,{"token":"x"}')
    assert await session.next_packet() == '44/admin,{"message":"Invalid namespace"}'
    assert (await session.connect({"token": key_of(headers["alice"])}))["userId"] == "alice"


async def test_bad_packets_get_no_500_and_the_server_lives(owners: Owners) -> None:
    server, http, headers = owners
    for body in ["", "\x1e", "9", "b", "4" + "[" * 50_000, "\xff"]:
        session = await Polling(http).handshake()
        answer = await session.post(body)
        assert answer.status_code in (200, 400), (body, answer.status_code)
    broken = await Polling(http).handshake()
    answer = await http.post(PATH, params=broken.params, content=b"\xff\xfe")
    assert answer.status_code == 400
    assert answer.json()["code"] == 3
    # A malformed Socket.IO packet ends the session (socket.io's "parse error").
    for text in ["42", "42{}", '42["x"', "4x", "49", '45["a"]']:
        session = await Polling(http).handshake()
        await session.connect({"token": key_of(headers["alice"])})
        assert (await session.post(text)).status_code == 200
        gone = await http.get(PATH, params=session.params)
        assert gone.status_code == 400 or gone.text.endswith("1"), (text, gone.text)
    # Events the server does not know, binary events, and events before CONNECT.
    async with trio.open_nursery() as nursery:
        socket, _ = await direct_socket(nursery, server)
        await socket.ws.send_message('42["subscribe:job","x"]')  # before CONNECT: ignored
        await socket.ws.send_message(b"\x00\x01")  # binary: ignored
        await socket.connect({"token": key_of(headers["alice"])})
        assert (await socket.ack(7, "whatever"))["ok"] is False
        await socket.ws.send_message('451-7["subscribe:job",{"_placeholder":true,"num":0}]')
        assert json.loads((await socket.next_packet())[3:])[0]["ok"] is False
        for bad in ([], [None], [{"jobId": 5}], ["a/b"], ["x" * 129]):
            assert (await socket.ack(8, "subscribe:job", *bad))["ok"] is False
        assert await socket.ack(9, "unsubscribe:job", "never-subscribed") == {"ok": True}
        await socket.ws.send_message("7")  # not an Engine.IO packet: the session closes
        with trio.fail_after(30), pytest.raises(ConnectionClosed):
            while True:
                await socket.ws.get_message()
        nursery.cancel_scope.cancel()
    assert (await http.get("/health")).status_code == 200
    assert "Traceback" not in server.output


async def test_owners_are_isolated_and_admins_follow_everyone(owners: Owners) -> None:
    server, http, headers = owners
    async with trio.open_nursery() as nursery:
        alice, _ = await direct_socket(nursery, server)
        await alice.connect({"token": key_of(headers["alice"])})
        reader = await Polling(http).handshake()
        await reader.connect({"token": key_of(headers["reader"])})
        admin, _ = await direct_socket(nursery, server, ADMIN_KEY)
        assert (await admin.connect())["userId"] == "admin"
        # alice subscribes to bob's id (before and after it exists): ok, and nothing fires.
        for form in ("bob-1", {"jobId": "bob-1"}, {"job_id": "bob-2"}):
            assert await alice.ack(1, "subscribe:job", form) == {"ok": True}
        assert await admin.ack(1, "subscribe:job", "bob-1") == {"ok": True}
        await create(http, headers["bob"], "bob-1")
        await mutate(http, headers["bob"], "updateProgress", taskId="bob-1", progress=10)
        await create(http, headers["bob"], "bob-2")
        await mutate(http, headers["bob"], "fail", taskId="bob-2", error="boom")
        await create(http, headers["alice"], "alice-1")
        await mutate(http, headers["alice"], "updateProgress", taskId="alice-1", progress=20)
        # The admin sees bob's events (and its subscription's), then alice's.
        seen = [await admin.next_event() for _ in range(4)]
        assert [(name, payload["jobId"]) for name, payload in seen] == [
            ("job:progress", "bob-1"),
            ("job:bob-1:progress", "bob-1"),
            ("job:failed", "bob-2"),
            ("job:progress", "alice-1"),
        ]
        assert seen[2][1]["error"] == "boom" and seen[2][1]["state"] == "failed"
        # alice and her reader see alice-1 first: nothing of bob's came before it.
        name, payload = await alice.next_event()
        assert (name, payload["jobId"]) == ("job:progress", "alice-1")
        name, payload = event_of(await reader.next_packet())
        assert (name, payload["jobId"]) == ("job:progress", "alice-1")
        nursery.cancel_scope.cancel()


async def test_subscriptions_and_every_kind_of_event(owners: Owners) -> None:
    server, http, headers = owners
    alice_headers = headers["alice"]
    async with trio.open_nursery() as nursery:
        socket, _ = await direct_socket(nursery, server)
        await socket.connect({"token": key_of(alice_headers)})
        assert await socket.ack(1, "subscribe:job", {"jobId": "j-1"}) == {"ok": True}
        await create(http, alice_headers, "j-1")
        await mutate(http, alice_headers, "updateProgress", taskId="j-1", progress=50)
        progress = [await socket.next_event() for _ in range(2)]
        assert [name for name, _ in progress] == ["job:progress", "job:j-1:progress"]
        assert progress[0][1] == progress[1][1]
        assert set(progress[0][1]) == {"jobId", "state", "progress", "timestamp"}
        await mutate(http, alice_headers, "cancel", taskId="j-1")
        canceled = [await socket.next_event() for _ in range(2)]
        assert [name for name, _ in canceled] == ["job:failed", "job:j-1:failed"]
        assert canceled[0][1]["error"] == "canceled"
        assert await socket.ack(2, "unsubscribe:job", "j-1") == {"ok": True}
        await create(http, alice_headers, "j-2")
        await mutate(http, alice_headers, "complete", taskId="j-2")
        name, payload = await socket.next_event()
        assert (name, payload["jobId"], payload["progress"]) == ("job:completed", "j-2", 100)
        nursery.cancel_scope.cancel()


async def test_a_socketio_socket_and_a_native_watcher_share_every_update(
    owners: Owners,
) -> None:
    server, http, headers = owners
    alice_headers = headers["alice"]
    await create(http, alice_headers, "shared-1")
    async with trio.open_nursery() as nursery:
        socket, _ = await direct_socket(nursery, server)
        await socket.connect({"token": key_of(alice_headers)})
        assert await socket.ack(1, "subscribe:job", "shared-1") == {"ok": True}
        native = await nursery_websocket(
            nursery,
            f"{server.ws_url}/ws/task/shared-1",
            [(b"X-API-Key", key_of(alice_headers).encode())],
        )
        with trio.fail_after(30):
            assert json.loads(await native.get_message())["type"] == "snapshot"
        for progress in range(1, 21):
            await mutate(
                http, alice_headers, "updateProgress", taskId="shared-1", progress=progress
            )
        for progress in range(1, 21):
            with trio.fail_after(30):
                message = json.loads(await native.get_message())
            assert (message["type"], message["task"]["progress"]) == ("progress", progress)
            for name in ("job:progress", "job:shared-1:progress"):
                got, payload = await socket.next_event()
                assert (got, payload["progress"]) == (name, progress)
        nursery.cancel_scope.cancel()


async def test_a_connection_counts_as_a_watch_connection(tmp_path: Path) -> None:
    env = {**SERVE_ENV, "SPECTRAL_WS_MAX_PER_KEY": "1"}
    async with (
        running(serve_argv(tmp_path / "data"), env=env) as server,
        httpx.AsyncClient(base_url=server.url, timeout=60) as http,
    ):
        made = await http.post(
            "/admin/keys", json={"owner": "carol", "role": "reader"}, headers=ADMIN_HEADERS
        )
        key = made.json()["key"]
        first = await Polling(http).handshake()
        await first.connect({"token": key})
        second = await Polling(http).handshake()
        await second.post("40" + json.dumps({"token": key}))
        refused = await second.next_packet()
        assert refused.startswith("44") and "too many" in refused
        await first.post("41")  # leaving the namespace frees the slot
        assert (await second.connect({"token": key}))["userId"] == "carol"


async def test_sessions_waiting_to_connect_are_capped(tmp_path: Path) -> None:
    env = {**SERVE_ENV, "SPECTRAL_SOCKETIO_MAX_PENDING": "2"}
    async with (
        running(serve_argv(tmp_path / "data"), env=env) as server,
        httpx.AsyncClient(base_url=server.url, timeout=60) as http,
        trio.open_nursery() as nursery,
    ):
        first = await Polling(http).handshake()
        await direct_socket(nursery, server)
        refused = await http.get(PATH, params={"EIO": "4", "transport": "polling"})
        assert refused.status_code == 503 and refused.headers["retry-after"] == "1"
        assert refused.json()["code"] == 4 and "waiting to connect" in refused.json()["message"]
        url = f"{server.ws_url}{PATH}?EIO=4&transport=websocket"
        async with open_websocket_url(url) as ws:
            with pytest.raises(ConnectionClosed) as closed:
                await ws.get_message()
            assert closed.value.reason.code == 1013
        await first.connect({"token": ADMIN_KEY})  # one waiting less: room for one more
        await Polling(http).handshake()
        nursery.cancel_scope.cancel()


async def test_cross_origin_polling_follows_the_cors_origins(tmp_path: Path) -> None:
    env = {**SERVE_ENV, "SPECTRAL_CORS_ORIGINS": "http://app.example"}
    async with (
        running(serve_argv(tmp_path / "data"), env=env) as server,
        httpx.AsyncClient(base_url=server.url, timeout=60) as http,
    ):
        query = {"EIO": "4", "transport": "polling"}
        allowed = await http.get(PATH, params=query, headers={"Origin": "http://app.example"})
        assert allowed.headers["access-control-allow-origin"] == "http://app.example"
        assert allowed.headers["access-control-allow-credentials"] == "true"
        other = await http.get(PATH, params=query, headers={"Origin": "http://evil.example"})
        assert "access-control-allow-origin" not in other.headers
        preflight = await http.options(
            PATH,
            params=query,
            headers={
                "Origin": "http://app.example",
                "Access-Control-Request-Method": "POST",
                "Access-Control-Request-Headers": "authorization",
            },
        )
        assert preflight.status_code == 204
        assert preflight.headers["access-control-allow-origin"] == "http://app.example"
        assert "POST" in preflight.headers["access-control-allow-methods"]


async def test_shutdown_closes_every_session(tmp_path: Path) -> None:
    async with (
        running(serve_argv(tmp_path / "data"), env=SERVE_ENV) as server,
        httpx.AsyncClient(base_url=server.url, timeout=60) as http,
    ):
        session = await Polling(http).handshake()
        await session.connect({"token": ADMIN_KEY})
        answered: list[list[str] | Exception] = []
        async with trio.open_nursery() as nursery:

            async def pending_poll() -> None:
                try:
                    answered.append(await session.poll())
                except httpx.TransportError as error:
                    answered.append(error)

            nursery.start_soon(pending_poll)
            socket, _ = await direct_socket(nursery, server, ADMIN_KEY)
            await socket.connect()
            assert await socket.ack(1, "subscribe:job", "x") == {"ok": True}
            server.terminate()
            with trio.fail_after(30):
                try:
                    while True:
                        await socket.ws.get_message()
                except ConnectionClosed as closed:
                    assert closed.reason.code == 1001
            with trio.fail_after(30):
                assert await server.wait() == 0
            nursery.cancel_scope.cancel()
        # The poll, held since before the WebSocket opened, is answered CLOSE (only if it
        # had not reached the server before the listener closed is it refused instead).
        assert answered == [["1"]] or isinstance(answered[0], httpx.TransportError), answered


async def test_a_jwt_connects_as_its_owner(tmp_path: Path) -> None:
    secret = "socketio-test-secret-0123456789abcdef"
    env = {**SERVE_ENV, "SPECTRAL_JWT_SECRET": secret, "SPECTRAL_JWT_OWNER_CLAIM": "userId"}

    def token(user: str, ttl: int, role: str = "reader") -> str:
        claims = {"userId": user, "role": role, "exp": int(time.time()) + ttl}
        return jwt.encode(claims, secret, "HS256")

    async with (
        running(serve_argv(tmp_path / "data"), env=env) as server,
        httpx.AsyncClient(base_url=server.url, timeout=60) as http,
    ):
        session = await Polling(http).handshake()
        assert (await session.connect({"token": token("user-7", 3600)}))["userId"] == "user-7"
        by_query = await Polling(http).handshake(token=token("user-8", 3600))
        assert (await by_query.connect())["userId"] == "user-8"
        expired = await Polling(http).handshake()
        await expired.post("40" + json.dumps({"token": token("user-7", -60)}))
        refused = await expired.next_packet()
        assert refused.startswith('44{"message":'), refused
        service = {"Authorization": f"Bearer {token('user-7', 3600, 'service')}"}
        await create(http, service, "jwt-1")
        await mutate(http, service, "updateProgress", taskId="jwt-1", progress=3)
        name, payload = event_of(await session.next_packet())
        assert (name, payload["jobId"]) == ("job:progress", "jwt-1")
