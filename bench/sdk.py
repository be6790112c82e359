"""The Python SDK's cost against raw HTTP on the same server: prints one JSON object.

Two measurements, on one ``spectral serve`` (the server pinned to core 1, this process
to core 0 when both exist):

- ``per_call``: the same sequence of calls, one keep-alive connection, blocking and
  sequential: ``calls`` updateProgress calls round-robin over 10 tasks, then ``calls``
  GETs of a task, made with ``spectral.client.Client`` (``sdk``), with a bare
  ``httpx.Client`` sending the same requests with the same headers (an
  ``Idempotency-Key`` per mutating call, as the SDK sends, and the answer decoded with
  ``response.json()``: ``httpx``), and with ``http.client`` (``http_client``). Per call:
  the client's CPU (``time.thread_time`` of the calling thread; the process's CPU is
  reported too), the server's CPU (``/proc/PID/stat``) and the wall time. The variants
  take turns, ``rounds`` times; figures are the medians over rounds.
  ``sdk_extra_cpu_vs_httpx`` is the SDK's client CPU per call over raw httpx's (the
  target: at most +15 %).
- ``track``: ``task.progress(i)`` in a loop as fast as it goes for ``seconds`` inside
  ``Client.track()`` (and ``AsyncClient.track()`` under asyncio, the loop awaiting
  ``asyncio.sleep(0)`` after each call): progress() calls/s, HTTP requests/s actually
  sent (counted by an httpx event hook), the process's CPU seconds per wall second, and
  whether the last value is the task's last progress event.

The measuring runs in a worker thread; the main thread only runs trio (waiting on the
server's output). ``--quick`` shrinks everything; ``--calls`` and ``--rounds`` set the
per-call sizes. On a two-core machine shared with other work, pinning keeps client and
server apart but not the others away: compare the variants within one run.
"""

from __future__ import annotations

import argparse
import asyncio
import http.client
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import trio

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.http_load import BENCH_KEY, SERVE_ENV, log  # noqa: E402
from spectral.client import AsyncClient, Client  # noqa: E402
from tests.procs import running  # noqa: E402

TASKS = [f"sdk-bench-{n}" for n in range(10)]
CLIENT_CORE, SERVER_CORE = 0, 1


def cpu_seconds(pid: int) -> float:
    """User + system CPU of a process (all its threads), seconds (10 ms resolution)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def load_average() -> list[float]:
    """The 1, 5 and 15 minute load averages (other sessions share the machine)."""
    return [float(x) for x in Path("/proc/loadavg").read_text().split()[:3]]


def pinning() -> tuple[list[str], str]:
    """Pin this process to core 0; the taskset prefix for the server (core 1), and what was done."""
    cpus = os.sched_getaffinity(0)
    if CLIENT_CORE not in cpus or SERVER_CORE not in cpus:
        return [], f"none: cores {CLIENT_CORE} and {SERVER_CORE} not both in {sorted(cpus)}"
    if shutil.which("taskset") is None:
        return [], "none: taskset not found"
    os.sched_setaffinity(0, {CLIENT_CORE})  # before any thread starts: they all inherit it
    return (
        ["taskset", "-c", str(SERVER_CORE)],
        f"client (this process, all threads) on core {CLIENT_CORE}, server on core {SERVER_CORE}",
    )


# -- per call ----------------------------------------------------------------------


class Variant:
    """One way of making the calls: ``update(task_id, progress)`` and ``get(task_id)``."""

    name = ""

    def update(self, task_id: str, progress: float) -> None:
        raise NotImplementedError

    def get(self, task_id: str) -> None:
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError


class Sdk(Variant):
    """``spectral.client.Client``."""

    name = "sdk"

    def __init__(self, url: str) -> None:
        self.client = Client(url, api_key=BENCH_KEY)

    def update(self, task_id: str, progress: float) -> None:
        self.client.update_progress(task_id, progress)

    def get(self, task_id: str) -> None:
        self.client.get_task(task_id)

    def close(self) -> None:
        self.client.close()


class RawHttpx(Variant):
    """A bare ``httpx.Client`` with the SDK's headers; answers decoded, status checked."""

    name = "httpx"

    def __init__(self, url: str) -> None:
        self.http = httpx.Client(
            base_url=url,
            timeout=10.0,
            headers={"User-Agent": "spectral-client", "X-API-Key": BENCH_KEY},
        )

    def update(self, task_id: str, progress: float) -> None:
        response = self.http.post(
            "/tasks/updateProgress",
            json={"taskId": task_id, "progress": progress},
            headers={"Idempotency-Key": uuid.uuid4().hex},
        )
        assert response.status_code == 200, response.text
        response.json()

    def get(self, task_id: str) -> None:
        response = self.http.get(f"/tasks/{task_id}")
        assert response.status_code == 200, response.text
        response.json()

    def close(self) -> None:
        self.http.close()


class RawHttpClient(Variant):
    """``http.client.HTTPConnection`` (keep-alive) with the same headers."""

    name = "http_client"

    def __init__(self, url: str) -> None:
        host, port = url.removeprefix("http://").rsplit(":", 1)
        self.conn = http.client.HTTPConnection(host, int(port), timeout=10.0)
        self.headers = {"User-Agent": "spectral-client", "X-API-Key": BENCH_KEY}

    def update(self, task_id: str, progress: float) -> None:
        body = json.dumps({"taskId": task_id, "progress": progress}).encode()
        headers = {
            **self.headers,
            "Content-Type": "application/json",
            "Idempotency-Key": uuid.uuid4().hex,
        }
        self.conn.request("POST", "/tasks/updateProgress", body, headers)
        response = self.conn.getresponse()
        data = response.read()
        assert response.status == 200, data
        json.loads(data)

    def get(self, task_id: str) -> None:
        self.conn.request("GET", f"/tasks/{task_id}", headers=self.headers)
        response = self.conn.getresponse()
        data = response.read()
        assert response.status == 200, data
        json.loads(data)

    def close(self) -> None:
        self.conn.close()


def timed(pid: int, calls: int, run: Callable[[int], None]) -> dict[str, float]:
    """Run ``run(n)`` for n in range(calls); client CPU, server CPU and wall per call, µs."""
    server0, process0, thread0, wall0 = (
        cpu_seconds(pid),
        time.process_time(),
        time.thread_time(),
        time.perf_counter(),
    )
    for n in range(calls):
        run(n)
    wall = time.perf_counter() - wall0
    thread = time.thread_time() - thread0
    process = time.process_time() - process0
    server = cpu_seconds(pid) - server0
    return {
        "client_cpu_us": 1e6 * thread / calls,
        "client_process_cpu_us": 1e6 * process / calls,
        "server_cpu_us": 1e6 * server / calls,
        "wall_us": 1e6 * wall / calls,
    }


def per_call(url: str, pid: int, calls: int, rounds: int) -> dict[str, Any]:
    """The ``per_call`` measurement (runs in a worker thread)."""
    variants: list[Variant] = [Sdk(url), RawHttpx(url), RawHttpClient(url)]
    setup = variants[0]
    assert isinstance(setup, Sdk)
    for task_id in TASKS:
        setup.client.create_task(task_id)
    operations: dict[str, Callable[[Variant], Callable[[int], None]]] = {
        "update_progress": lambda v: lambda n: v.update(TASKS[n % len(TASKS)], float(n % 100)),
        "get_task": lambda v: lambda n: v.get(TASKS[n % len(TASKS)]),
    }
    samples: dict[str, dict[str, list[dict[str, float]]]] = {
        op: {v.name: [] for v in variants} for op in operations
    }
    for variant in variants:  # warm-up: connections, imports, caches
        for op in operations.values():
            timed(pid, max(50, calls // 10), op(variant))
    for round_ in range(rounds):
        order = variants[round_ % len(variants) :] + variants[: round_ % len(variants)]
        for name, op in operations.items():
            for variant in order:
                samples[name][variant.name].append(timed(pid, calls, op(variant)))
        log(f"per_call: round {round_ + 1}/{rounds} done")
    for variant in variants:
        variant.close()
    results: dict[str, Any] = {"calls_per_round": calls, "rounds": rounds}
    for name, by_variant in samples.items():
        figures = {
            variant: {key: round(statistics.median(s[key] for s in runs), 1) for key in runs[0]}
            for variant, runs in by_variant.items()
        }
        sdk, raw = figures["sdk"], figures["httpx"]
        # Per round (the variants ran back to back), then the median of those ratios.
        ratios = [
            s["client_cpu_us"] / r["client_cpu_us"] - 1
            for s, r in zip(by_variant["sdk"], by_variant["httpx"], strict=True)
        ]
        figures["sdk_extra_client_cpu_us"] = round(sdk["client_cpu_us"] - raw["client_cpu_us"], 1)
        figures["sdk_extra_cpu_vs_httpx"] = f"{100 * statistics.median(ratios):+.1f} %"
        figures["sdk_extra_cpu_vs_httpx_per_round"] = [f"{100 * r:+.1f} %" for r in ratios]
        figures["target_met"] = statistics.median(ratios) <= 0.15
        results[name] = figures
    return results


# -- track() ---------------------------------------------------------------------------


class RequestCounter:
    """An httpx event hook counting requests by path."""

    def __init__(self) -> None:
        self.paths: dict[str, int] = {}

    def __call__(self, request: httpx.Request) -> None:
        self.paths[request.url.path] = self.paths.get(request.url.path, 0) + 1

    async def acall(self, request: httpx.Request) -> None:
        self(request)


def last_progress_event(client: Client, task_id: str) -> float | None:
    """The progress of the task's last ``progress`` event (its history, page by page)."""
    last, after = None, None
    while True:
        page = client.history(task_id, after=after, limit=1000)
        for event in page.events:
            if event.event_type == "progress":
                last = event.progress
        if not page.events:
            return last
        after = page.events[-1].seq


def thread_cpu_seconds(native_id: int) -> float:
    """User + system CPU of one thread of this process, seconds (10 ms resolution)."""
    stat = Path(f"/proc/self/task/{native_id}/stat").read_text()
    fields = stat.rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def track_report(
    calls: int,
    last_value: float,
    wall: float,
    cpu: float,
    paths: dict[str, int],
    arrived: float | None,
) -> dict[str, Any]:
    """The figures of one track() run (``paths``: requests sent during it, by path)."""
    batches = paths.get("/tasks/batchUpdateProgress", 0)
    requests = sum(paths.values())
    return {
        "seconds": round(wall, 2),
        "progress_calls": calls,
        "progress_calls_per_s": round(calls / wall),
        "http_requests": requests,
        "http_requests_per_s": round(requests / wall, 1),
        "requests_by_path": paths,
        "batches_per_s": round(batches / wall, 1),
        "process_cpu_s_per_wall_s": round(cpu / wall, 2),
        "last_value": last_value,
        "last_progress_event": arrived,
        "final_progress_arrived": arrived == last_value,
    }


def track_blocking(url: str, seconds: float) -> dict[str, Any]:
    """``Client.track()`` under a tight loop of ``progress()`` (runs in a worker thread)."""
    counter = RequestCounter()
    with Client(url, api_key=BENCH_KEY) as client:
        client._http.event_hooks["request"].append(counter)  # a bench's peek inside
        cpu0, wall0 = time.process_time(), time.perf_counter()
        deadline = wall0 + seconds
        n = 0
        value = 0.0
        with client.track() as task:
            flusher = client._flusher_thread
            assert flusher is not None and flusher.native_id is not None
            while True:
                value = (n % 10_000) / 100
                task.progress(value)
                n += 1
                if not n % 64 and time.perf_counter() >= deadline:
                    break
            sender_cpu = thread_cpu_seconds(flusher.native_id)
        wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
        paths = dict(counter.paths)
        arrived = last_progress_event(client, task.task_id)
    report = track_report(n, value, wall, cpu, paths, arrived)
    report["sender_thread_cpu_s_per_wall_s"] = round(sender_cpu / wall, 3)
    return report


async def track_async(url: str, seconds: float) -> dict[str, Any]:
    """``AsyncClient.track()`` under asyncio, yielding after every ``progress()``."""
    counter = RequestCounter()
    async with AsyncClient(url, api_key=BENCH_KEY) as client:
        client._http.event_hooks["request"].append(counter.acall)
        cpu0, wall0 = time.process_time(), time.perf_counter()
        deadline = wall0 + seconds
        n = 0
        value = 0.0
        async with client.track() as task:
            while True:
                value = (n % 10_000) / 100
                task.progress(value)
                n += 1
                await asyncio.sleep(0)
                if not n % 64 and time.perf_counter() >= deadline:
                    break
        wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
        paths = dict(counter.paths)
    with Client(url, api_key=BENCH_KEY) as reader:
        arrived = last_progress_event(reader, task.task_id)
    return track_report(n, value, wall, cpu, paths, arrived)


# -- main -------------------------------------------------------------------------------


def measure(url: str, pid: int, quick: bool, calls: int, rounds: int) -> dict[str, Any]:
    """Everything, in the worker thread."""
    results: dict[str, Any] = {"per_call": per_call(url, pid, calls, rounds)}
    seconds = 1.0 if quick else 5.0
    results["track"] = [track_blocking(url, seconds) for _ in range(1 if quick else 3)]
    log(f"track: {json.dumps(results['track'][-1])}")
    results["track_async"] = [
        asyncio.run(track_async(url, seconds)) for _ in range(1 if quick else 3)
    ]
    log(f"track_async: {json.dumps(results['track_async'][-1])}")
    return results


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    """Start the server, measure in a worker thread."""
    prefix, pinned = pinning()
    calls = args.calls or (300 if args.quick else 2_000)
    rounds = args.rounds or (3 if args.quick else 5)
    results: dict[str, Any] = {
        "python": sys.version.split()[0],
        "httpx": httpx.__version__,
        "cores": os.cpu_count(),
        "pinning": pinned,
        "load_average_before": load_average(),
    }
    with tempfile.TemporaryDirectory(dir=args.dir, prefix="bench-sdk-") as data:
        argv = [
            *prefix, sys.executable, "-m", "spectral", "serve", "--port", "0",
            "--data-dir", data, "--log-level", "WARNING",
        ]  # fmt: skip
        async with running(argv, env=SERVE_ENV) as server:
            pid = server.process.pid
            results.update(
                await trio.to_thread.run_sync(measure, server.url, pid, args.quick, calls, rounds)
            )
    results["load_average_after"] = load_average()
    return results


def main() -> None:
    """Parse flags, run, print JSON."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--calls", type=int, default=0, help="calls per variant and round")
    parser.add_argument("--rounds", type=int, default=0)
    parser.add_argument("--dir", type=Path, default=Path(tempfile.gettempdir()))
    args = parser.parse_args()
    print(json.dumps(trio.run(main_async, args), indent=2))


if __name__ == "__main__":
    main()
