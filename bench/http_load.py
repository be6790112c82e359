"""Load scenarios against a running spectral server (and the bare stack's echo): prints JSON.

Scenarios (``--scenario NAME``, default all): ``echo`` (a minimal quart-trio JSON echo on
the same hypercorn settings: the ceiling), ``mutate`` (64 keep-alive connections,
updateProgress over 1,000 tasks), ``batch`` (batchUpdateProgress, 100 per call over
100 tasks), ``batch_dense`` (1,000 per call over 10 tasks),
``read`` (GET a task), ``fanout`` (1,000 and 10,000 watchers on one task: delivery
latency from the update's send to each watcher's receipt, missed messages, server
memory per idle WebSocket), ``rooms`` (the same for a room's broadcast), ``list``
(GET /tasks pages over 100,000 tasks) and ``restart`` (start to serving with 100,000 tasks on disk).

The load generator is this process: raw HTTP/1.1 keep-alive and a minimal
WebSocket reader on trio sockets, far lighter than an HTTP library, but it shares
the machine's two cores with the server. ``--quick`` shrinks everything.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import secrets
import shutil
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import orjson
import trio

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.procs import Server, running  # noqa: E402

#: The admin key the benchmarked server runs with (admins are never rate limited).
BENCH_KEY = "spectral-bench-admin-key-0123456789"
SERVE_ENV = {"SPECTRAL_ADMIN_KEY": BENCH_KEY}


def log(message: str) -> None:
    """Progress on stderr."""
    print(message, file=sys.stderr, flush=True)


def percentiles(samples: list[float]) -> dict[str, float]:
    """p50/p99/max of seconds, in ms."""
    if not samples:
        return {"p50_ms": 0.0, "p99_ms": 0.0, "max_ms": 0.0}
    ordered = sorted(samples)
    return {
        "p50_ms": round(1000 * ordered[len(ordered) // 2], 2),
        "p99_ms": round(1000 * ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))], 2),
        "max_ms": round(1000 * ordered[-1], 2),
    }


def rss_kib(pid: int) -> int:
    """Resident memory of a process, KiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError("no VmRSS")


class Connection:
    """One keep-alive HTTP/1.1 connection (enough of the protocol for these servers)."""

    def __init__(self, stream: trio.SocketStream, host: str) -> None:
        self.stream = stream
        self.host = host.encode()
        self.buffer = b""

    @classmethod
    async def open(cls, url: str) -> Connection:
        """Connect to ``http://host:port``."""
        host, port = url.removeprefix("http://").rsplit(":", 1)
        return cls(await trio.open_tcp_stream(host, int(port)), host)

    async def request(self, method: str, path: str, body: Any = None) -> tuple[int, bytes]:
        """Send one request; the status and body of the answer."""
        payload = b"" if body is None else json.dumps(body).encode()
        head = (
            f"{method} {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            f"X-API-Key: {BENCH_KEY}\r\n"
            f"Content-Length: {len(payload)}\r\n\r\n"
        ).encode()
        await self.stream.send_all(head + payload)
        while b"\r\n\r\n" not in self.buffer:
            await self._fill()
        header, _, self.buffer = self.buffer.partition(b"\r\n\r\n")
        lines = header.split(b"\r\n")
        status = int(lines[0].split()[1])
        length = 0
        for line in lines[1:]:
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value)
        while len(self.buffer) < length:
            await self._fill()
        data, self.buffer = self.buffer[:length], self.buffer[length:]
        return status, data

    async def _fill(self) -> None:
        chunk = await self.stream.receive_some(65536)
        if not chunk:
            raise ConnectionError("server closed the connection")
        self.buffer += chunk

    async def aclose(self) -> None:
        """Close the socket."""
        await self.stream.aclose()


async def closed_loop(
    url: str,
    connections: int,
    seconds: float,
    make_request: Callable[[int], tuple[str, str, Any]],
    check: Callable[[int, bytes], int] | None = None,
) -> dict[str, Any]:
    """``connections`` clients send requests back to back for ``seconds``; figures."""
    latencies: list[float] = []
    counter = iter(range(10**9))
    errors = 0
    units = 0

    async def client(conn: Connection, deadline: float) -> None:
        nonlocal errors, units
        while trio.current_time() < deadline:
            method, path, body = make_request(next(counter))
            started = time.perf_counter()
            status, data = await conn.request(method, path, body)
            latencies.append(time.perf_counter() - started)
            if status >= 300:
                errors += 1
            units += check(status, data) if check else 1

    conns = [await Connection.open(url) for _ in range(connections)]
    started = time.perf_counter()
    deadline = trio.current_time() + seconds
    async with trio.open_nursery() as nursery:
        for conn in conns:
            nursery.start_soon(client, conn, deadline)
    elapsed = time.perf_counter() - started
    for conn in conns:
        await conn.aclose()
    return {
        "connections": connections,
        "requests": len(latencies),
        "requests_per_s": round(len(latencies) / elapsed),
        "units_per_s": round(units / elapsed),
        "errors": errors,
        **percentiles(latencies),
    }


def serve_argv(data_dir: Path) -> list[str]:
    """spectral serve on a free port, quiet logs."""
    return [
        sys.executable, "-m", "spectral", "serve", "--port", "0",
        "--data-dir", str(data_dir), "--log-level", "WARNING",
    ]  # fmt: skip


async def create_tasks(url: str, ids: list[str], connections: int = 32) -> None:
    """Create tasks over HTTP (untimed set-up)."""
    pending = iter(ids)

    async def client() -> None:
        conn = await Connection.open(url)
        for task_id in pending:
            status, data = await conn.request("POST", "/tasks/create", {"id": task_id})
            if status != 201:
                raise RuntimeError(f"create {task_id}: {status} {data[:200]!r}")
        await conn.aclose()

    async with trio.open_nursery() as nursery:
        for _ in range(connections):
            nursery.start_soon(client)


# -- scenarios --------------------------------------------------------------------


async def echo(base: Path, quick: bool) -> dict[str, Any]:
    """The ceiling: a JSON echo on the bare stack."""
    seconds = 2 if quick else 6
    body = {"taskId": "task-0001", "progress": 42.5}
    async with running([sys.executable, str(ROOT / "bench" / "echo_app.py")]) as server:
        await closed_loop(server.url, 64, 1, lambda _: ("POST", "/echo", body))  # warm-up
        return await closed_loop(server.url, 64, seconds, lambda _: ("POST", "/echo", body))


async def mutate(server: Server, quick: bool) -> dict[str, Any]:
    """updateProgress over 1,000 tasks from 64 keep-alive connections."""
    ids = [f"m-{n:04d}" for n in range(1000)]
    seconds = 2 if quick else 6

    def make(n: int) -> tuple[str, str, Any]:
        body = {"taskId": ids[n % len(ids)], "progress": float(n % 100)}
        return ("POST", "/tasks/updateProgress", body)

    await closed_loop(server.url, 64, 1, make)  # warm-up
    return await closed_loop(server.url, 64, seconds, make)


async def batch(server: Server, quick: bool) -> dict[str, Any]:
    """batchUpdateProgress, 100 updates per call, over the mutate scenario's tasks."""
    ids = [f"m-{n:04d}" for n in range(1000)]
    seconds = 2 if quick else 6

    def make(n: int) -> tuple[str, str, Any]:
        start = (n * 100) % len(ids)
        updates = [{"taskId": ids[start + i], "progress": float(n % 100)} for i in range(100)]
        return ("POST", "/tasks/batchUpdateProgress", {"updates": updates})

    def applied(status: int, data: bytes) -> int:
        return sum(1 for r in json.loads(data)["results"] if r["ok"]) if status == 200 else 0

    result = await closed_loop(server.url, 8, seconds, make, applied)
    result["updates_per_s"] = result.pop("units_per_s")
    return result


async def batch_dense(server: Server, quick: bool) -> dict[str, Any]:
    """batchUpdateProgress, 1,000 updates per call over 10 tasks (100 each, interleaved)."""
    ids = [f"m-{n:04d}" for n in range(1000)]
    seconds = 2 if quick else 6

    def make(n: int) -> tuple[str, str, Any]:
        tasks = ids[(n * 10) % len(ids) :][:10]
        updates = [
            {"taskId": task, "progress": float(step)} for step in range(100) for task in tasks
        ]
        return ("POST", "/tasks/batchUpdateProgress", {"updates": updates})

    def applied(status: int, data: bytes) -> int:
        return sum(1 for r in json.loads(data)["results"] if r["ok"]) if status == 200 else 0

    result = await closed_loop(server.url, 8, seconds, make, applied)
    result["updates_per_s"] = result.pop("units_per_s")
    return result


async def read(server: Server, quick: bool) -> dict[str, Any]:
    """GET /tasks/{id} over the mutate scenario's tasks."""
    ids = [f"m-{n:04d}" for n in range(1000)]
    seconds = 2 if quick else 6
    return await closed_loop(
        server.url, 64, seconds, lambda n: ("GET", f"/tasks/{ids[n % 1000]}", None)
    )


async def open_watcher(url: str, path: str) -> trio.SocketStream:
    """A raw WebSocket handshake; returns the stream after the 101."""
    host, port = url.removeprefix("http://").rsplit(":", 1)
    stream = await trio.open_tcp_stream(host, int(port))
    key = base64.b64encode(secrets.token_bytes(16)).decode()
    await stream.send_all(
        (
            f"GET {path} HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            f"X-API-Key: {BENCH_KEY}\r\n"
            f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
        ).encode()
    )
    buffer = b""
    while b"\r\n\r\n" not in buffer:
        buffer += await stream.receive_some(4096)
    if not buffer.startswith(b"HTTP/1.1 101"):
        raise RuntimeError(f"handshake refused: {buffer[:100]!r}")
    return stream, buffer.partition(b"\r\n\r\n")[2]


def frames(buffer: bytearray) -> list[bytes]:
    """Payloads of the complete unmasked text frames at the front of ``buffer``.

    Control frames (ping, pong) are skipped; a close frame raises :class:`ConnectionError`.
    """
    out: list[bytes] = []
    while len(buffer) >= 2:
        opcode = buffer[0] & 0x0F
        size = buffer[1] & 0x7F
        offset = 2
        if size == 126:
            if len(buffer) < 4:
                break
            size = int.from_bytes(buffer[2:4], "big")
            offset = 4
        elif size == 127:
            if len(buffer) < 10:
                break
            size = int.from_bytes(buffer[2:10], "big")
            offset = 10
        if len(buffer) < offset + size:
            break
        payload = bytes(buffer[offset : offset + size])
        del buffer[: offset + size]
        if opcode == 0x8:
            code = int.from_bytes(payload[:2], "big") if len(payload) >= 2 else 1005
            raise ConnectionError(f"closed by the server with code {code}")
        if opcode == 0x1:
            out.append(payload)
    return out


async def fanout_once(
    server: Server, watchers: int, updates: int, gap: float, room: bool = False
) -> dict[str, Any]:
    """``watchers`` on one task (or room); ``updates`` spaced by ``gap``; delivery latencies."""
    task_id = f"fan-{watchers}"
    if room:
        # A room stream carries room messages only: a subscriber is ready once the room's
        # health counts it (checked below), not on a message of its own.
        watch_path, ready, seq_field, first_seq = f"/rooms/{task_id}/subscribe", None, "roomSeq", 1
    else:
        await create_tasks(server.url, [task_id], 1)
        watch_path, ready, seq_field, first_seq = f"/ws/task/{task_id}", b'"snapshot"', "seq", 2
    rss_before = rss_kib(server.process.pid)
    sent_at: dict[int, float] = {}
    latencies: list[float] = []
    received = [0] * watchers
    streams: list[trio.SocketStream] = []
    closes: dict[str, int] = {}

    async def watcher(index: int, *, task_status: Any) -> None:
        stream, rest = await open_watcher(server.url, watch_path)
        streams.append(stream)
        buffer = bytearray(rest)
        snapshot_seen = ready is None
        while not snapshot_seen:
            for payload in frames(buffer):
                snapshot_seen = snapshot_seen or ready in payload
            if not snapshot_seen:
                buffer += await stream.receive_some(65536)
        task_status.started()
        while received[index] < updates:
            data = await stream.receive_some(65536)
            if not data:
                closes["eof"] = closes.get("eof", 0) + 1
                return
            now = time.perf_counter()
            buffer += data
            try:
                payloads = frames(buffer)
            except ConnectionError as closed:
                closes[str(closed)] = closes.get(str(closed), 0) + 1
                return
            for payload in payloads:
                seq = orjson.loads(payload)[seq_field]  # the readers' CPU is the bench's limit
                latencies.append(now - sent_at[seq])
                received[index] += 1

    async with trio.open_nursery() as nursery:
        for start in range(0, watchers, 200):  # connect 200 at a time
            async with trio.open_nursery() as connecting:
                for index in range(start, min(watchers, start + 200)):
                    connecting.start_soon(nursery.start, watcher, index)
        conn = await Connection.open(server.url)
        while room:
            _, health = await conn.request("GET", f"/rooms/{task_id}/health")
            if json.loads(health)["connections"] >= watchers:
                break
            await trio.sleep(0.1)
        await trio.sleep(1.0)
        rss_after = rss_kib(server.process.pid)
        for step in range(updates):
            sent_at[step + first_seq] = time.perf_counter()
            if room:
                await conn.request("POST", f"/rooms/{task_id}/broadcast", {"step": step})
            else:
                body = {"taskId": task_id, "progress": float(step)}
                await conn.request("POST", "/tasks/updateProgress", body)
            await trio.sleep(gap)
        with trio.move_on_after(30):
            while sum(received) < watchers * updates:
                await trio.sleep(0.05)
        nursery.cancel_scope.cancel()
    for stream in streams:
        await stream.aclose()
    await conn.aclose()
    return {
        "watchers": watchers,
        "updates": updates,
        "deliveries": len(latencies),
        "missed": watchers * updates - len(latencies),
        "closed_early": closes,
        **percentiles(latencies),
        "server_kib_per_idle_ws": round((rss_after - rss_before) / watchers, 1),
    }


async def rooms(server: Server, quick: bool) -> dict[str, Any]:
    """A room broadcast to 1,000 then 10,000 subscribers."""
    sizes = [200, 1000] if quick else [1000, 10_000]
    out = {}
    for size in sizes:
        log(f"room fanout {size}...")
        out[str(size)] = await fanout_once(server, size, 10 if quick else 20, 0.5, room=True)
        await trio.sleep(2)
    return out


async def fanout(server: Server, quick: bool) -> dict[str, Any]:
    """1,000 then 10,000 watchers."""
    sizes = [200, 1000] if quick else [1000, 10_000]
    out = {}
    for size in sizes:
        log(f"fanout {size}...")
        out[str(size)] = await fanout_once(server, size, 10 if quick else 20, 0.5)
        await trio.sleep(2)  # let the server reap the closed sockets
    return out


async def build_dataset(data_dir: Path, count: int) -> None:
    """``count`` tasks in ``data_dir``, written by the runtime in-process (set-up, cached)."""
    from actors import RouterConfig, open_router
    from spectral.tasks.actor import Mutate, Task
    from spectral.tasks.state import Create

    marker = data_dir / f"dataset-{count}-tree"
    if marker.exists():
        return
    shutil.rmtree(data_dir, ignore_errors=True)  # an older dataset: rebuilt from scratch
    log(f"building {count} tasks in {data_dir} (once; reused later)")
    # Set-up, not measured: no fsyncs (the live cap's evictions checkpoint every WAL).
    config = RouterConfig(max_live=1000, synchronous="OFF")
    async with open_router(data_dir, [Task], config) as router:
        pending = iter(range(count))

        async def creator() -> None:
            for n in pending:
                # Tags for the listing's filters: each shard-K on 10 % of the tasks, "all"
                # on every one (the worst case of a tag filter), "rare" on 0.1 %.
                tags = (f"shard-{n % 10}", "all", *(("rare",) if n % 1000 == 0 else ()))
                # A tree: the first 1,000 tasks are parents; one task in ten after them
                # is a child of one of them (about 100 children each).
                parent = f"t{n % 1000:07d}" if n >= 1000 and n % 10 == 5 else None
                command = Create(
                    task_id=f"t{n:07d}", owner="admin", epoch="e", tags=tags,
                    parent_id=parent, depth=2 if parent else 1,
                )  # fmt: skip
                await router.call("task", f"t{n:07d}", Mutate(command), create=True)
                if n % 10_000 == 0:
                    log(f"  {n}")

        async with trio.open_nursery() as nursery:
            for _ in range(32):
                nursery.start_soon(creator)
    marker.write_text("ok\n")


async def listing(server: Server, quick: bool) -> dict[str, Any]:
    """GET /tasks pages (newest first, and filtered) over the big dataset."""
    seconds = 2 if quick else 5

    def make(n: int) -> tuple[str, str, Any]:
        page = 1 + n % 50
        status = "&status=pending" if n % 2 else ""
        return ("GET", f"/tasks?page={page}&limit=20{status}", None)

    concurrent = await closed_loop(server.url, 4, seconds, make)
    concurrent["one_connection"] = await closed_loop(server.url, 1, seconds, make)

    # Tag filters (docs/api.md, "Reading"): a 10 % tag, with status half the time; two
    # tags; the tag every task has (the count of its total scans 100,000 index rows);
    # a tag with a creation-time window; a creation-time window alone.
    first = await _first_created(server.url)
    window = f"&createdAfter={_iso(first - 1)}&createdBefore={_iso(first + 3600)}"

    def tagged(n: int) -> tuple[str, str, Any]:
        page = 1 + n % 50
        status = "&status=pending" if n % 2 else ""
        return ("GET", f"/tasks?page={page}&limit=20&tag=shard-{n % 10}{status}", None)

    variants: dict[str, Callable[[int], tuple[str, str, Any]]] = {
        "tag": tagged,
        "two_tags": lambda n: ("GET", f"/tasks?limit=20&tag=shard-{n % 10}&tag=rare", None),
        "tag_on_every_task": lambda n: ("GET", f"/tasks?page={1 + n % 50}&tag=all", None),
        "tag_and_created": lambda n: ("GET", f"/tasks?tag=shard-{n % 10}{window}", None),
        "created": lambda n: ("GET", f"/tasks?page={1 + n % 50}{window}", None),
        "parent": lambda n: ("GET", f"/tasks?page={1 + n % 5}&parentId=t{n % 1000:07d}", None),
        "parent_and_status": lambda n: (
            "GET",
            f"/tasks?parentId=t{n % 1000:07d}&status=pending",
            None,
        ),
    }
    for name, make_variant in variants.items():
        concurrent[name] = await closed_loop(server.url, 4, seconds, make_variant)
    return concurrent


async def _first_created(url: str) -> float:
    """The dataset's oldest createdAt, as unix seconds."""
    conn = await Connection.open(url)
    try:
        _, data = await conn.request("GET", "/tasks?limit=1&page=100000", None)
    finally:
        await conn.aclose()
    tasks = json.loads(data)["tasks"]
    if not tasks:
        return time.time() - 86400
    from datetime import datetime

    return datetime.fromisoformat(tasks[0]["createdAt"].replace("Z", "+00:00")).timestamp()


def _iso(seconds: float) -> str:
    from datetime import UTC, datetime

    return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


SCENARIOS = ["echo", "mutate", "batch", "batch_dense", "read", "fanout", "rooms", "list", "restart"]


async def main_async(names: list[str], base: Path, quick: bool) -> dict[str, Any]:
    """Run the chosen scenarios."""
    results: dict[str, Any] = {"quick": quick, "cpus": os.cpu_count()}
    if "echo" in names:
        log("echo...")
        results["echo"] = await echo(base, quick)
    live = [n for n in names if n in {"mutate", "batch", "batch_dense", "read", "fanout", "rooms"}]
    if live:
        with tempfile.TemporaryDirectory(dir=base, prefix="bench-http-") as data:
            async with running(serve_argv(Path(data)), env=SERVE_ENV) as server:
                await create_tasks(server.url, [f"m-{n:04d}" for n in range(1000)])
                for name in live:
                    log(f"{name}...")
                    scenario: Callable[[Server, bool], Awaitable[dict[str, Any]]] = {
                        "mutate": mutate,
                        "batch": batch,
                        "batch_dense": batch_dense,
                        "read": read,
                        "fanout": fanout,
                        "rooms": rooms,
                    }[name]
                    results[name] = await scenario(server, quick)
                    log(f"{name}: {json.dumps(results[name])}")
    if "echo" in results and "mutate" in results:
        ceiling = results["echo"]["requests_per_s"]
        results["mutate_vs_echo"] = round(results["mutate"]["requests_per_s"] / ceiling, 2)
    if "list" in names or "restart" in names:
        count = 10_000 if quick else 100_000
        data_dir = base / f"bench-http-dataset-{count}"
        await build_dataset(data_dir, count)
        restart: dict[str, Any] = {"tasks": count}
        for how in ("after_clean_stop", "after_kill_9"):
            started = time.perf_counter()
            async with running(serve_argv(data_dir), env=SERVE_ENV) as server:
                restart[how] = round(time.perf_counter() - started, 2)
                if "list" in names and how == "after_clean_stop":
                    log("list...")
                    results["list"] = {"tasks": count, **await listing(server, quick)}
                if how == "after_clean_stop":
                    server.kill()  # the next start recovers from an unclean stop
                else:
                    server.terminate()  # leave the dataset cleanly stopped
                    with trio.fail_after(30):
                        await server.wait()
        results["restart"] = restart
    return results


def main() -> None:
    """Parse flags, run, print JSON."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--scenario", choices=SCENARIOS, action="append")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--dir", type=Path, default=Path(tempfile.gettempdir()))
    args = parser.parse_args()
    results = trio.run(main_async, args.scenario or SCENARIOS, args.dir, args.quick)
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
