"""A Counter object on the actor runtime, served by a tiny quart-trio app.

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
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import hypercorn.trio
import trio
from hypercorn.config import Config
from quart import Response, request, websocket
from quart_trio import QuartTrio

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


def create_app(router: Router) -> QuartTrio:
    """The HTTP and WebSocket routes over ``router``."""
    app = QuartTrio("counter")

    def error(status: int, code: str, message: str) -> Response:
        body = json.dumps({"error": {"code": code, "message": message}})
        return Response(body, status=status, content_type="application/json")

    async def call(counter_id: str, message: Any, create: bool = False) -> Any:
        return await router.call("counter", counter_id, message, create=create)

    async def body_field(name: str, default: Any) -> Any:
        try:
            body = json.loads((await request.get_data()) or b"{}")
        except ValueError:
            raise BadAmount("body", "must be a JSON object") from None
        if not isinstance(body, dict):
            raise BadAmount("body", "must be a JSON object")
        if default is None and name not in body:
            raise BadAmount(name, "is required")
        return body.get(name, default)

    @app.errorhandler(BadAmount)
    async def bad_amount(exc: BadAmount) -> Response:
        return error(400, "bad_request", str(exc))

    @app.errorhandler(ObjectNotFoundError)
    @app.errorhandler(NoSuchCounter)
    async def not_found(exc: Exception) -> Response:
        return error(404, "not_found", str(exc))

    @app.post("/counters/<counter_id>/increment")
    async def increment(counter_id: str) -> dict[str, Any]:
        """Add ``by`` (default 1)."""
        return await call(counter_id, Increment(await body_field("by", 1)), create=True)

    @app.post("/counters/<counter_id>/decrement")
    async def decrement(counter_id: str) -> dict[str, Any]:
        """Subtract ``by`` (default 1)."""
        return await call(counter_id, Decrement(await body_field("by", 1)), create=True)

    @app.post("/counters/<counter_id>/set")
    async def set_value(counter_id: str) -> dict[str, Any]:
        """Set ``value``."""
        return await call(counter_id, SetValue(await body_field("value", None)), create=True)

    @app.post("/counters/<counter_id>/reset")
    async def reset(counter_id: str) -> dict[str, Any]:
        """Back to zero."""
        return await call(counter_id, Reset(), create=True)

    @app.get("/counters/<counter_id>")
    async def get(counter_id: str) -> dict[str, Any]:
        """The value."""
        return await call(counter_id, Snapshot())

    @app.get("/counters/<counter_id>/history")
    async def history(counter_id: str) -> Any:
        """The last changes, oldest first (``?limit=``, 1-1000)."""
        raw = request.args.get("limit", "50")
        if not raw.isdigit() or not 1 <= int(raw) <= 1000:
            raise BadAmount("limit", "must be an integer from 1 to 1000")
        return await call(counter_id, History(int(raw)))

    @app.websocket("/counters/<counter_id>/watch")
    async def watch(counter_id: str) -> None:
        """The value, then every change."""
        watcher = Watcher()
        try:
            snapshot = await call(counter_id, Snapshot(watcher))
        except (ObjectNotFoundError, NoSuchCounter):
            await websocket.accept()
            await websocket.close(4404, "no such counter")
            return
        try:
            await websocket.send(json.dumps({"type": "snapshot", **snapshot}))
            reason = await watcher.serve_writer(websocket.send)
            await websocket.close(reason.code, reason.reason)
        finally:
            watcher.close(CloseReason(CLOSE_GOING_AWAY, "gone"))
            router.sockets("counter", counter_id).detach(watcher)
            router.release_sockets("counter", counter_id)

    return app


async def serve(data_dir: Path, host: str, port: int) -> None:
    """Serve until SIGINT/SIGTERM; the router outlives the HTTP server."""
    config = Config()
    config.bind = [f"[{host}]:{port}" if ":" in host else f"{host}:{port}"]
    config.graceful_timeout = 2
    stop = trio.Event()
    async with open_router(data_dir, [Counter]) as router:
        with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
            async with trio.open_nursery() as nursery:

                async def on_signal() -> None:
                    async for _ in signals:
                        stop.set()
                        return

                nursery.start_soon(on_signal)
                serve_app = partial(hypercorn.trio.serve, shutdown_trigger=stop.wait)
                urls = await nursery.start(serve_app, create_app(router), config)
                host_port = urls[0].removeprefix("http://")
                print(f"counter example listening on http://{host_port}", flush=True)
                await stop.wait()
                router.close_watchers(CloseReason(CLOSE_GOING_AWAY, "shutting down"))


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
