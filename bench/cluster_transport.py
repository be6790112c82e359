"""The node-to-node transport against httpx to the project's HTTP front, on loopback.

``python bench/cluster_transport.py [--seconds 3] [--calls 5000]`` prints one JSON
document. For each route (``transport``: spectral/cluster/transport.py, framed TCP;
``httpx``: httpx.AsyncClient POSTing to spectral/front's Server with a trivial
application) it starts the server in a subprocess pinned to one core, pins itself to
the other (when ``os.sched_setaffinity`` allows), and measures with a trivial handler
that echoes its JSON body:

- ``sequential``: one call at a time, round trip p50/p99/mean in µs;
- ``concurrent``: 1, 16 and 64 calls in flight for ``--seconds`` each: calls/s, p50/p99
  latency, and the CPU µs per call of the client process and of the server process
  (from getrusage and /proc/PID/stat), the cost the forwarding node would pay.

``raw_echo_floor`` is the floor under both: bytes echoed by a bare trio socket loop,
one round trip at a time (no framing, no JSON, no multiplexing).

``--serve transport|http|raw`` runs only a server (what the subprocess does).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import orjson
import trio

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from spectral.cluster.transport import TransportClient, open_transport_client, serve_transport
from spectral.front import Request, Response, Server

HOST = "127.0.0.1"
#: A forwarded request of the size spectral's would be (a progress update).
BODY = {"method": "POST", "path": "/tasks/updateProgress", "key": "k-0123456789abcdef",
        "body": {"taskId": "task-0001", "progress": 42.5, "message": "working"}}  # fmt: skip
LEVELS = (1, 16, 64)


async def echo(op: str, body: Any) -> Any:
    """The trivial transport handler."""
    return body


class EchoApp:
    """The trivial HTTP application: answers POST /echo with its JSON body."""

    async def handle(self, request: Request) -> Response:
        """Echo the body (parsed and encoded again, as the transport handler's is)."""
        body = orjson.dumps(orjson.loads(request.body))
        return Response(200, body, [("content-type", "application/json")])

    def takes_upgrade(self, request: Request) -> bool:
        """No upgrades."""
        return False

    async def upgrade(self, request: Request, stream: trio.abc.Stream) -> None:
        """Never called."""

    def refuse(self, request: Request | None, status: int, message: str) -> Response:
        """A bare refusal."""
        return Response(status, message.encode(), close=True)


async def serve(kind: str) -> None:
    """Serve one route on a free port, print it, run until killed."""
    if kind == "raw":

        async def bounce(stream: trio.SocketStream) -> None:
            while data := await stream.receive_some(65536):
                await stream.send_all(data)

        listeners = await trio.open_tcp_listeners(0, host=HOST)
        print(f"PORT {listeners[0].socket.getsockname()[1]}", flush=True)
        await trio.serve_listeners(bounce, listeners)
    elif kind == "transport":
        async with trio.open_nursery() as nursery:
            server = await nursery.start(serve_transport, echo, HOST, 0)
            print(f"PORT {server.port}", flush=True)
    else:
        listeners = await trio.open_tcp_listeners(0, host=HOST)
        print(f"PORT {listeners[0].socket.getsockname()[1]}", flush=True)
        async with trio.open_nursery() as nursery:
            await Server(EchoApp()).serve(listeners, nursery)


def pin(cpu: int) -> bool:
    """Pin this process to one CPU if the machine has it; whether it did. (A child
    inherits its parent's mask, so this asks the machine, not the current mask.)"""
    try:
        if cpu < (os.cpu_count() or 1):
            os.sched_setaffinity(0, {cpu})
            return True
    except (AttributeError, OSError):
        pass
    return False


def cpu_seconds(pid: int | None = None) -> float:
    """User + system CPU seconds of this process, or of ``pid`` (from /proc)."""
    if pid is None:
        usage = resource.getrusage(resource.RUSAGE_SELF)
        return usage.ru_utime + usage.ru_stime
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def quantiles(samples: list[float]) -> dict[str, float]:
    """p50/p99/mean of latencies in seconds, as µs."""
    ordered = sorted(samples)
    pick = lambda q: ordered[min(len(ordered) - 1, int(q * len(ordered)))]  # noqa: E731
    return {"p50_us": round(pick(0.50) * 1e6, 1), "p99_us": round(pick(0.99) * 1e6, 1),
            "mean_us": round(statistics.fmean(ordered) * 1e6, 1)}  # fmt: skip


async def measure(call: Any, server_pid: int, calls: int, seconds: float) -> dict[str, Any]:
    """Sequential and concurrent figures for one route's ``call()``."""
    for _ in range(500):  # warm-up: connections, caches
        await call()
    samples = []
    for _ in range(calls):
        start = time.perf_counter()
        await call()
        samples.append(time.perf_counter() - start)
    result: dict[str, Any] = {"sequential": {"calls": calls, **quantiles(samples)}}
    concurrent = {}
    for level in LEVELS:
        latencies: list[float] = []
        deadline = time.perf_counter() + seconds

        async def worker(latencies: list[float] = latencies, deadline: float = deadline) -> None:
            while (start := time.perf_counter()) < deadline:
                await call()
                latencies.append(time.perf_counter() - start)

        client_cpu, server_cpu, began = cpu_seconds(), cpu_seconds(server_pid), time.perf_counter()
        async with trio.open_nursery() as nursery:
            for _ in range(level):
                nursery.start_soon(worker)
        elapsed = time.perf_counter() - began
        done = len(latencies)
        concurrent[str(level)] = {
            "calls_per_s": round(done / elapsed),
            **quantiles(latencies),
            "client_cpu_us_per_call": round((cpu_seconds() - client_cpu) / done * 1e6, 1),
            "server_cpu_us_per_call": round((cpu_seconds(server_pid) - server_cpu) / done * 1e6, 1),
        }
    result["concurrent"] = concurrent
    return result


def start_server(kind: str, cpu: int | None) -> tuple[subprocess.Popen[str], int]:
    """The server subprocess (pinned to ``cpu``) and its port."""
    argv = [sys.executable, __file__, "--serve", kind]
    if cpu is not None:
        argv += ["--cpu", str(cpu)]
    process = subprocess.Popen(argv, stdout=subprocess.PIPE, text=True)
    assert process.stdout is not None
    line = process.stdout.readline()
    if not line.startswith("PORT "):
        process.kill()
        raise RuntimeError(f"{kind} server did not start: {line!r}")
    return process, int(line.split()[1])


async def bench_transport(port: int, pid: int, args: argparse.Namespace) -> dict[str, Any]:
    """Figures for the transport client."""
    async with open_transport_client(HOST, port, pool_size=args.pool_size) as client:
        figures = await measure(_transport_call(client), pid, args.calls, args.seconds)
        figures["connections"] = client.connects
        return figures


def _transport_call(client: TransportClient) -> Any:
    async def call() -> Any:
        return await client.call("echo", BODY)

    return call


async def bench_raw(port: int, pid: int, args: argparse.Namespace) -> dict[str, Any]:
    """Sequential round trips of a framed body over a bare socket (the floor)."""
    stream = await trio.open_tcp_stream(HOST, port)
    payload = orjson.dumps(BODY)
    samples = []
    for index in range(500 + args.calls):
        start = time.perf_counter()
        await stream.send_all(payload)
        received = 0
        while received < len(payload):
            received += len(await stream.receive_some(65536))
        if index >= 500:
            samples.append(time.perf_counter() - start)
    await stream.aclose()
    return {"sequential": {"calls": args.calls, **quantiles(samples)}}


async def bench_httpx(port: int, pid: int, args: argparse.Namespace) -> dict[str, Any]:
    """Figures for httpx.AsyncClient with a keep-alive pool."""
    limits = httpx.Limits(max_connections=max(LEVELS), max_keepalive_connections=max(LEVELS))
    url = f"http://{HOST}:{port}/echo"
    async with httpx.AsyncClient(limits=limits) as client:

        async def call() -> Any:
            response = await client.post(url, json=BODY)
            response.raise_for_status()
            return response.json()

        return await measure(call, pid, args.calls, args.seconds)


def main() -> None:
    """Run the benchmark (or one server with --serve) and print JSON."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--serve", choices=["transport", "http", "raw"])
    parser.add_argument("--cpu", type=int)
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--calls", type=int, default=5000)
    parser.add_argument("--pool-size", type=int, default=2)
    args = parser.parse_args()
    if args.serve:
        if args.cpu is not None:
            pin(args.cpu)
        trio.run(serve, args.serve)
        return
    pinned = os.cpu_count() is not None and os.cpu_count() >= 2 and pin(1)  # type: ignore[operator]
    out: dict[str, Any] = {
        "python": sys.version.split()[0], "trio": trio.__version__, "httpx": httpx.__version__,
        "cpus": os.cpu_count(), "pinned": "server cpu 0, client cpu 1" if pinned else "no",
        "body_bytes": len(orjson.dumps(BODY)), "pool_size": args.pool_size,
        "seconds_per_level": args.seconds,
    }  # fmt: skip
    for name, kind, run in [("transport", "transport", bench_transport),
                            ("httpx_to_front", "http", bench_httpx),
                            ("raw_echo_floor", "raw", bench_raw)]:  # fmt: skip
        process, port = start_server(kind, 0 if pinned else None)
        try:
            out[name] = trio.run(run, port, process.pid, args)
        finally:
            process.kill()
            process.wait()
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
