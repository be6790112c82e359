"""Task trees: latency from a child's update to its parent's watcher, under load.

One parent with 1,000 children, updated at ``--rate`` progress updates per second in
all (batches of 100 random children every 100 ms, ``batchUpdateProgress``), and one
*probe* child of weight 1,000,000 that a sequential client moves every ``--every``
seconds through 1, 2, ... 99, 1, 2, ... The parent's progress is then
``(1e6 * probe + S) / (1e6 + 1000)`` with S (the 1,000 others' weighted sum) at most
100,000, so from each progress message on the parent's WebSocket the probe value it
reflects is ``floor(progress * 1.001)``: the latency of that probe update is the time
from sending its request (so it includes the child's own commit) to the first parent
message reflecting it. Printed as one JSON object: p50/p99/max in ms, the probes
measured and missed, the load actually sent, and the parent's turns (messages it took).

    .venv/bin/python bench/rollup.py [--seconds 30] [--rate 1000] [--every 0.05]
"""

from __future__ import annotations

import argparse
import json
import math
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import trio
from trio_websocket import open_websocket_url

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.http_load import BENCH_KEY, SERVE_ENV, log, serve_argv  # noqa: E402
from tests.procs import running  # noqa: E402

CHILDREN = 1000
PROBE_WEIGHT = 1_000_000


def percentile(values: list[float], fraction: float) -> float:
    """The value below which ``fraction`` of ``values`` lie (nearest rank)."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(fraction * len(ordered)) - 1))]


async def measure(seconds: float, rate: int, every: float, count: int) -> dict[str, Any]:
    """Run the scenario against a fresh server; the figures."""
    headers = {"X-API-Key": BENCH_KEY}
    with tempfile.TemporaryDirectory() as data:
        async with (
            running(serve_argv(Path(data)), env=SERVE_ENV) as server,
            httpx.AsyncClient(base_url=server.url, headers=headers, timeout=60) as http,
        ):
            await http.post("/tasks/create", json={"id": "parent"})
            children = [f"parent-c{n}" for n in range(count)]
            limiter = trio.CapacityLimiter(16)

            async def make(child_id: str, weight: float) -> None:
                async with limiter:
                    body = {"id": child_id, "parentId": "parent", "weight": weight}
                    response = await http.post("/tasks/create", json=body)
                    assert response.status_code == 201, response.text

            async with trio.open_nursery() as nursery:
                for child in children:
                    nursery.start_soon(make, child, 1)
                nursery.start_soon(make, "probe", PROBE_WEIGHT)
            log(f"made {count} children and the probe")

            sent: dict[int, float] = {}  # probe value -> when its latest request was sent
            latencies: list[float] = []
            seen: set[int] = set()
            probes = 0
            load_sent = 0
            stop = trio.Event()

            async def watch(task_status: trio.TaskStatus[None]) -> None:
                url = server.url.replace("http", "ws", 1) + "/ws/task/parent"
                async with open_websocket_url(
                    url, extra_headers=[(b"X-API-Key", BENCH_KEY.encode())]
                ) as ws:
                    task_status.started()
                    while True:
                        message = json.loads(await ws.get_message())
                        now = time.perf_counter()
                        task = message.get("task") or {}
                        if message.get("type") != "progress" or "progress" not in task:
                            continue
                        value = math.floor(task["progress"] * (1 + count / PROBE_WEIGHT) + 1e-9)
                        if value in sent and value not in seen:
                            seen.add(value)
                            latencies.append((now - sent[value]) * 1000)

            async def load() -> None:
                nonlocal load_sent
                per_batch = rate // 10
                if not per_batch:
                    return
                next_at = trio.current_time()
                while not stop.is_set():
                    updates = [
                        {"taskId": random.choice(children), "progress": random.uniform(0, 100)}
                        for _ in range(per_batch)
                    ]
                    await http.post("/tasks/batchUpdateProgress", json={"updates": updates})
                    load_sent += per_batch
                    next_at += 0.1  # paced by the clock, not by the answers
                    await trio.sleep_until(max(next_at, trio.current_time()))

            async def probe() -> None:
                nonlocal probes
                deadline = trio.current_time() + seconds
                value = 0
                while trio.current_time() < deadline:
                    value = value % 99 + 1
                    seen.discard(value)
                    sent[value] = time.perf_counter()
                    response = await http.post(
                        "/tasks/updateProgress", json={"taskId": "probe", "progress": value}
                    )
                    assert response.status_code == 200, response.text
                    probes += 1
                    await trio.sleep(every)
                await trio.sleep(1)  # the last ones' reports
                stop.set()

            async with trio.open_nursery() as nursery:
                await nursery.start(watch)
                nursery.start_soon(load)
                started = time.perf_counter()
                await probe()
                elapsed = time.perf_counter() - started
                nursery.cancel_scope.cancel()
            history = await http.get("/tasks/parent/history", params={"limit": 1})
            parent = (await http.get("/tasks/parent")).json()
    return {
        "children": count,
        "load_updates_per_s": round(load_sent / elapsed),
        "command": " ".join(sys.argv),
        "probes": probes,
        "measured": len(latencies),
        "missed": probes - len(latencies),
        "latency_ms": {
            "p50": round(statistics.median(latencies), 2),
            "p99": round(percentile(latencies, 0.99), 2),
            "max": round(max(latencies), 2),
        },
        "parent_events": parent["seq"],
        "child_updates": load_sent + probes,
        "history_ok": history.status_code == 200,
    }


def main() -> None:
    """Parse flags, run, print JSON."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=30)
    parser.add_argument("--rate", type=int, default=1000, help="load updates per second")
    parser.add_argument("--every", type=float, default=0.05, help="seconds between probes")
    parser.add_argument("--children", type=int, default=CHILDREN, help="at most 1,000")
    args = parser.parse_args()
    figures = trio.run(measure, args.seconds, args.rate, args.every, args.children)
    print(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
