"""A Counter object on the actor runtime, served by a tiny app on spectral's HTTP front.

This is the second object kind of the project (the first is spectral's Task) and
uses nothing but the public API of ``actors``: the proof that the runtime knows
nothing of tasks. Each counter is one actor with its own SQLite file holding its
value and its history; a change is answered only once committed, and watchers
hear of it after the commit.

Run it::

    python examples/counter.py --data-dir /tmp/counters --port 8095
    curl -X POST localhost:8095/counters/c1/increment -d '{"by": 5}'
    curl localhost:8095/counters/c1/history
    websocat ws://localhost:8095/counters/c1/watch
"""

from __future__ import annotations

import argparse
import json
import signal
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import trio

from actors import (
    CLOSE_GOING_AWAY,
    Actor,
    CloseReason,
    Migration,
    ObjectNotFoundError,
    Rejected,
    Router,
    Watcher,
    open_router,
)
from spectral.front import Request, Response, Server
from spectral.front.websocket import PeerGone, accept

LIMIT = 2**53  # values stay exact in JavaScript clients

# -- the object kind ----------------------------------------------------------------


class BadAmount(Rejected):
    """An amount that is not an integer in range; names the field."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field


class NoSuchCounter(Rejected):
    """The counter was never written to."""


@dataclass(frozen=True)
class Increment:
    """Add ``by``."""

    by: int = 1


@dataclass(frozen=True)
class Decrement:
    """Subtract ``by``."""

    by: int = 1


@dataclass(frozen=True)
class SetValue:
    """Set the value."""

    value: int


@dataclass(frozen=True)
class Reset:
    """Back to zero."""


@dataclass(frozen=True)
class History:
    """The last ``limit`` changes, oldest first."""

    limit: int = 50


@dataclass(frozen=True)
class Snapshot:
    """The current value; attaches ``watcher`` (if any) after this turn."""

    watcher: Watcher | None = None


class Counter(Actor):
    """One counter: its value and the history of its changes."""

    kind = "counter"
    migrations = (
        Migration(
            1,
            """
            CREATE TABLE counter (id INTEGER PRIMARY KEY CHECK (id = 1), value INTEGER NOT NULL);
            CREATE TABLE history (
                seq INTEGER PRIMARY KEY, op TEXT NOT NULL, amount INTEGER,
                value_after INTEGER NOT NULL, at REAL NOT NULL
            );
            """,
        ),
    )

    def load(self) -> None:
        """Read the value and the last seq."""
        row = self.db.execute("SELECT value FROM counter").fetchone()
        self.value: int | None = None if row is None else row[0]
        self.seq: int = self.db.execute("SELECT coalesce(max(seq), 0) FROM history").fetchone()[0]

    def handle(self, message: Any) -> Any:
        """Apply one message (inside the turn's transaction)."""
        match message:
            case Increment(by=by):
                return self._change("increment", _amount("by", by), (self.value or 0) + by)
            case Decrement(by=by):
                return self._change("decrement", _amount("by", by), (self.value or 0) - by)
            case SetValue(value=value):
                return self._change("set", _amount("value", value), value)
            case Reset():
                return self._change("reset", None, 0)
            case History(limit=limit):
                self._require()
                rows = self.db.execute(
                    "SELECT seq, op, amount, value_after, at FROM history"
                    " ORDER BY seq DESC LIMIT ?",
                    (limit,),
                ).fetchall()
                return [
                    {"seq": s, "op": op, "amount": a, "value": v, "at": at}
                    for s, op, a, v, at in reversed(rows)
                ]
            case Snapshot(watcher=watcher):
                self._require()
                if watcher is not None:
                    sockets = self.sockets
                    self.after_commit(lambda: sockets.attach(watcher))
                return {"value": self.value, "seq": self.seq}
        raise TypeError(f"not a counter message: {message!r}")

    def _require(self) -> None:
        if self.value is None:
            raise NoSuchCounter(f"counter {self.id!r} does not exist")

    def _change(self, op: str, amount: int | None, new_value: int) -> dict[str, Any]:
        if abs(new_value) > LIMIT:
            raise BadAmount("value", f"the result must stay within ±{LIMIT}")
        seq = self.seq + 1
        self.db.execute("INSERT OR REPLACE INTO counter (id, value) VALUES (1, ?)", (new_value,))
        self.db.execute(
            "INSERT INTO history (seq, op, amount, value_after, at) VALUES (?, ?, ?, ?, ?)",
            (seq, op, amount, new_value, self.now()),
        )
        self.update_record(status="active", progress=float(new_value))
        change = {"type": "changed", "seq": seq, "op": op, "amount": amount, "value": new_value}
        text = json.dumps(change)
        sockets = self.sockets
        self.after_commit(lambda: sockets.broadcast(text))
        self.value, self.seq = new_value, seq  # last: nothing above can fail any more
        return change


def _amount(field: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise BadAmount(field, "must be an integer")
    if abs(value) > LIMIT:
        raise BadAmount(field, f"must be within ±{LIMIT}")
    return value


# -- the app ------------------------------------------------------------------------

JSON = [("content-type", "application/json")]


def answer(status: int, payload: Any) -> Response:
    """A JSON answer."""
    return Response(status, json.dumps(payload).encode(), list(JSON))


def error(status: int, code: str, message: str) -> Response:
    """An error answer."""
    return answer(status, {"error": {"code": code, "message": message}})


def body_field(request: Request, name: str, default: Any) -> Any:
    """A field of the JSON body (``default`` None: required)."""
    try:
        body = json.loads(request.body or b"{}")
    except ValueError:
        raise BadAmount("body", "must be a JSON object") from None
    if not isinstance(body, dict):
        raise BadAmount("body", "must be a JSON object")
    if default is None and name not in body:
        raise BadAmount(name, "is required")
    return body.get(name, default)


class CounterApp:
    """The HTTP and WebSocket routes over ``router``, on spectral's HTTP front."""

    def __init__(self, router: Router) -> None:
        self.router = router

    async def call(self, counter_id: str, message: Any, create: bool = False) -> Any:
        """Send ``message`` to the counter's actor."""
        return await self.router.call("counter", counter_id, message, create=create)

    async def handle(self, request: Request) -> Response:
        """``/counters/{id}[/increment|/decrement|/set|/reset|/history]``."""
        parts = request.path.strip("/").split("/")
        if len(parts) not in (2, 3) or parts[0] != "counters" or not parts[1]:
            return error(404, "not_found", f"no route for {request.method} {request.path}")
        counter_id, action = parts[1], parts[2] if len(parts) == 3 else ""
        try:
            return answer(200, await self._route(request, counter_id, action))
        except BadAmount as exc:
            return error(400, "bad_request", str(exc))
        except (ObjectNotFoundError, NoSuchCounter) as exc:
            return error(404, "not_found", str(exc))
        except LookupError:
            return error(404, "not_found", f"no route for {request.method} {request.path}")

    async def _route(self, request: Request, counter_id: str, action: str) -> Any:
        match request.method, action:
            case "POST", "increment":
                return await self.call(
                    counter_id, Increment(body_field(request, "by", 1)), create=True
                )
            case "POST", "decrement":
                return await self.call(
                    counter_id, Decrement(body_field(request, "by", 1)), create=True
                )
            case "POST", "set":
                value = body_field(request, "value", None)
                return await self.call(counter_id, SetValue(value), create=True)
            case "POST", "reset":
                return await self.call(counter_id, Reset(), create=True)
            case "GET", "":
                return await self.call(counter_id, Snapshot())
            case "GET", "history":
                raw = request.query().get("limit", "50")
                if not raw.isdigit() or not 1 <= int(raw) <= 1000:
                    raise BadAmount("limit", "must be an integer from 1 to 1000")
                return await self.call(counter_id, History(int(raw)))
        raise LookupError(action)

    def takes_upgrade(self, request: Request) -> bool:
        """``GET /counters/{id}/watch`` as a WebSocket."""
        parts = request.path.strip("/").split("/")
        return len(parts) == 3 and parts[0] == "counters" and parts[2] == "watch"

    async def upgrade(self, request: Request, stream: trio.abc.Stream) -> None:
        """The value, then every change."""
        counter_id = request.path.strip("/").split("/")[1]
        head = f"GET {request.target} HTTP/1.1\r\n" + "".join(
            f"{name}: {value}\r\n" for name, value in request.headers.items()
        )
        accepted = await accept(stream, (head + "\r\n").encode("latin-1"), send_timeout=10)
        if accepted is None:
            return
        peer, _ = accepted
        watcher = Watcher()
        try:
            try:
                snapshot = await self.call(counter_id, Snapshot(watcher))
            except (ObjectNotFoundError, NoSuchCounter):
                await peer.close(4404, "no such counter")
                return
            await peer.send_text(json.dumps({"type": "snapshot", **snapshot}))
            async with trio.open_nursery() as nursery:

                async def read_client() -> None:
                    # Answers pings and the close handshake; the client leaving ends it all.
                    async for _ in peer.messages():
                        pass
                    watcher.close(CloseReason(CLOSE_GOING_AWAY, "client closed"))

                nursery.start_soon(read_client)
                reason = await watcher.serve_writer(peer.send_text)
                nursery.cancel_scope.cancel()
            await peer.close(reason.code, reason.reason)
        except PeerGone:
            pass
        finally:
            watcher.close(CloseReason(CLOSE_GOING_AWAY, "gone"))
            self.router.sockets("counter", counter_id).detach(watcher)
            self.router.release_sockets("counter", counter_id)
            await peer.abort()

    def refuse(self, request: Request | None, status: int, message: str) -> Response:
        """What the front refuses (a malformed or oversized request)."""
        return error(status, "bad_request", message)


async def serve(data_dir: Path, host: str, port: int) -> None:
    """Serve until SIGINT/SIGTERM; the router outlives the HTTP server."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = trio.socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    await sock.bind((host, port))
    sock.listen(128)
    listener = trio.SocketListener(sock)
    bound_host, bound_port = sock.getsockname()[:2]
    async with open_router(data_dir, [Counter]) as router:
        front = Server(CounterApp(router))
        with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
            async with trio.open_nursery() as connections:
                async with trio.open_nursery() as nursery:
                    await nursery.start(front.serve, [listener], connections)
                    where = f"[{bound_host}]" if ":" in bound_host else bound_host
                    print(f"counter example listening on http://{where}:{bound_port}", flush=True)
                    async for _ in signals:
                        break
                    nursery.cancel_scope.cancel()
                router.close_watchers(CloseReason(CLOSE_GOING_AWAY, "shutting down"))
                front.close()
                connections.cancel_scope.deadline = trio.current_time() + 2


def main() -> None:
    """Parse flags and serve."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--data-dir", type=Path, default=Path("counter-data"))
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8095)
    args = parser.parse_args()
    trio.run(serve, args.data_dir, args.host, args.port)


if __name__ == "__main__":
    main()
