"""The lean ceiling: a JSON echo on trio + httptools, answering like spectral does.

``python bench/lean_echo.py --port 0`` prints ``lean echo listening on http://HOST:PORT``.
It serves, with keep-alive, the four requests bench/http_wrk.py sends, and answers each
with the shape (and about the size) of spectral's answer, built from the request:

- ``POST /tasks/updateProgress`` -> 200 ``{"success", "task", "event", "latestHistory"}``
  (ten events, as a task's answer has once it has ten);
- ``GET /tasks/{id}`` -> 200, the task;
- ``POST /tasks/create`` -> 201 ``{"success", "taskId", "task"}``;
- ``POST /tasks/batchUpdateProgress`` -> 200 ``{"results": [{"taskId", "ok", "task"}]}``.

No storage, no actors, no authentication: what is left is parsing HTTP and JSON and
encoding the answer on one trio task per connection, the least any Python front costs.
A body that is not the expected JSON gets a 400, so a benchmark sending bad requests
to the echo sees errors as it would from spectral.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import time
from functools import partial
from typing import Any

import httptools
import trio

REASONS = {200: b"OK", 201: b"Created", 400: b"Bad Request", 404: b"Not Found"}


def now_iso() -> str:
    """The current UTC time as spectral writes it (milliseconds, ``Z``)."""
    now = time.time()
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(now)) + f".{int(now % 1 * 1000):03d}Z"


def task(task_id: str, progress: float, stamp: str) -> dict[str, Any]:
    """A task as spectral answers it."""
    return {
        "taskId": task_id, "status": "in-progress", "progress": progress, "metadata": {},
        "error": None, "owner": "admin", "seq": 2, "epoch": "535aca897becb55d",
        "createdAt": stamp, "updatedAt": stamp, "startedAt": stamp, "completedAt": None,
        "failedAt": None, "canceledAt": None, "timeoutSeconds": None, "ttlSeconds": None,
    }  # fmt: skip


def event(progress: float, stamp: str) -> dict[str, Any]:
    """A progress event as spectral answers it."""
    return {
        "seq": 2, "eventType": "progress", "message": f"Progress updated to {progress:g}%",
        "progress": progress, "metadata": None, "timestamp": stamp,
    }  # fmt: skip


def update(body: dict[str, Any], stamp: str) -> tuple[str, float]:
    """The taskId and progress of an update; ValueError if either is missing or wrong."""
    task_id, progress = body.get("taskId"), body.get("progress")
    if not isinstance(task_id, str) or not isinstance(progress, int | float):
        raise ValueError("taskId and progress required")
    return task_id, float(progress)


def answer(method: bytes, url: bytes, raw: bytes) -> tuple[int, Any]:
    """Status and JSON answer of one request."""
    stamp = now_iso()
    path = url.split(b"?", 1)[0].decode()
    try:
        if method == b"GET" and path.startswith("/tasks/"):
            return 200, task(path.removeprefix("/tasks/"), 0.0, stamp)
        if method != b"POST":
            return 404, {"error": {"code": "NOT_FOUND", "message": path}}
        body = json.loads(raw)
        if path == "/tasks/updateProgress":
            task_id, progress = update(body, stamp)
            done = event(progress, stamp)
            return 200, {
                "success": True, "task": task(task_id, progress, stamp), "event": done,
                "latestHistory": [done] * 10,
            }  # fmt: skip
        if path == "/tasks/create":
            task_id = body.get("id") or body.get("taskId")
            if not isinstance(task_id, str):
                raise ValueError("id required")
            return 201, {"success": True, "taskId": task_id, "task": task(task_id, 0.0, stamp)}
        if path == "/tasks/batchUpdateProgress":
            results = []
            for item in body["updates"]:
                task_id, progress = update(item, stamp)
                results.append(
                    {"taskId": task_id, "ok": True, "task": task(task_id, progress, stamp)}
                )
            return 200, {"results": results}
    except (ValueError, KeyError, TypeError, AttributeError) as bad:
        return 400, {"error": {"code": "VALIDATION_ERROR", "message": str(bad)}}
    return 404, {"error": {"code": "NOT_FOUND", "message": path}}


def encode(status: int, payload: Any, keep_alive: bool) -> bytes:
    """One HTTP/1.1 response."""
    body = json.dumps(payload, separators=(",", ":")).encode()
    head = (
        b"HTTP/1.1 %d %s\r\ncontent-type: application/json\r\ncontent-length: %d\r\n"
        b"date: %s\r\n%s\r\n"
        % (
            status,
            REASONS[status],
            len(body),
            time.strftime("%a, %d %b %Y %H:%M:%S GMT", time.gmtime()).encode(),
            b"" if keep_alive else b"connection: close\r\n",
        )
    )
    return head + body


class Requests:
    """httptools callbacks: collects the complete requests of one connection."""

    def __init__(self) -> None:
        self.parser = httptools.HttpRequestParser(self)
        self.url = b""
        self.body: list[bytes] = []
        self.complete: list[tuple[bytes, bytes, bytes, bool]] = []

    def on_url(self, url: bytes) -> None:
        """Part of the request target."""
        self.url += url

    def on_body(self, body: bytes) -> None:
        """Part of the body."""
        self.body.append(body)

    def on_message_complete(self) -> None:
        """One whole request: queue it."""
        parser = self.parser
        keep = parser.should_keep_alive()
        self.complete.append((parser.get_method(), self.url, b"".join(self.body), keep))
        self.url, self.body = b"", []


async def connection(stream: trio.SocketStream) -> None:
    """Serve one keep-alive connection (pipelined requests answered in order)."""
    requests = Requests()
    try:
        while True:
            data = await stream.receive_some(65536)
            if not data:
                return
            try:
                requests.parser.feed_data(data)
            except httptools.HttpParserError:
                await stream.send_all(encode(400, {"error": {"code": "BAD_REQUEST"}}, False))
                return
            if requests.complete:
                out = []
                keep = True
                for method, url, body, keep in requests.complete:
                    out.append(encode(*answer(method, url, body), keep))
                    if not keep:
                        break
                requests.complete.clear()
                await stream.send_all(b"".join(out))
                if not keep:
                    return
    except trio.BrokenResourceError:
        return
    finally:
        await stream.aclose()


async def serve(port: int) -> None:
    """Listen on 127.0.0.1 and serve until killed."""
    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(
            partial(trio.serve_tcp, connection, port, host="127.0.0.1", backlog=4096)
        )
        host, bound = listeners[0].socket.getsockname()[:2]
        gc.collect()
        gc.freeze()
        gc.set_threshold(100_000, 50, 100)
        print(f"lean echo listening on http://{host}:{bound}", flush=True)


def main() -> None:
    """Parse flags and serve."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--port", type=int, default=0)
    with contextlib.suppress(KeyboardInterrupt):
        trio.run(serve, parser.parse_args().port)


if __name__ == "__main__":
    main()
