"""Provider-callback benchmark against a real spectral server: prints one JSON object.

One integration (Standard Webhooks), then, per phase, N signed callbacks sent by C
concurrent workers over keep-alive httpx connections (one each), every answer
checked (200, the expected step); callbacks/s from the first request to the last
answer, and per-request latency. Requests are signed before the clock starts, so the
figure is the server's: verify the signature, look up the delivery and the external
id, apply through the task's actor, record the delivery.

- ``initialized``: N new external ids (each creates a task);
- ``processing``: one per task, with progress (the task goes in-progress);
- ``replayed``: the processing deliveries again (same ids: answered from the record);
- ``completed``: one per task;
- ``rest_update_progress`` (between processing and replayed): the same number of
  ``POST /tasks/updateProgress`` with the admin key, the REST figure in the same harness.

``--quick`` shrinks N.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import trio

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.http_load import BENCH_KEY, SERVE_ENV, log, percentiles, serve_argv  # noqa: E402
from spectral.webhooks.signing import headers as sign  # noqa: E402
from tests.procs import running  # noqa: E402

STATUS_MAP = {"created": "initialized", "running": "processing", "paid": "completed"}
Request = tuple[bytes, dict[str, str]]


def signed(secret: str, body: dict[str, Any], message_id: str | None = None) -> Request:
    raw = json.dumps(body).encode()
    message_id = message_id or f"msg_{uuid.uuid4().hex}"
    headers = sign(secret, message_id, int(time.time()), raw)
    return raw, {**headers, "content-type": "application/json"}


async def phase(
    url: str,
    path: str,
    requests: list[Request],
    step: str | None,
    workers: int,
    task_ids: list[str] | None = None,
) -> dict[str, Any]:
    """Send ``requests`` with ``workers`` connections; every answer must be a 200 (of
    ``step``, for a callback); the answers' task ids are added to ``task_ids``."""
    latencies: list[float] = []
    errors: list[str] = []
    queue = list(reversed(requests))

    async def worker() -> None:
        async with httpx.AsyncClient(base_url=url, timeout=30) as http:
            await http.get("/health")  # connect before the clock matters
            await started.wait()
            while queue:
                body, headers = queue.pop()
                sent = time.perf_counter()
                answer = await http.post(path, content=body, headers=headers)
                latencies.append(time.perf_counter() - sent)
                if answer.status_code != 200 or (step and answer.json()["step"] != step):
                    errors.append(f"{answer.status_code} {answer.text[:200]}")
                elif task_ids is not None:
                    task_ids.append(answer.json()["taskId"])

    started = trio.Event()
    async with trio.open_nursery() as nursery:
        for _ in range(workers):
            nursery.start_soon(worker)
        await trio.sleep(0.2)  # let every worker connect (untimed)
        begin = time.perf_counter()
        started.set()
    elapsed = time.perf_counter() - begin
    if errors:
        raise RuntimeError(f"{len(errors)} failed, e.g. {errors[0]}")
    return {
        "callbacks": len(requests),
        "seconds": round(elapsed, 3),
        "callbacks_per_s": round(len(requests) / elapsed),
        **percentiles(latencies),
    }


async def main_async(base: Path, quick: bool, workers: int) -> dict[str, Any]:
    count = 300 if quick else 3_000
    results: dict[str, Any] = {"tasks": count, "workers": workers}
    with tempfile.TemporaryDirectory(dir=base, prefix="bench-callbacks-") as data:
        async with running(serve_argv(Path(data)), env=SERVE_ENV) as server:
            admin = {"X-API-Key": BENCH_KEY}
            async with httpx.AsyncClient(base_url=server.url, headers=admin) as http:
                made = await http.post("/integrations", json={
                    "name": "bench", "signing": "standard-webhooks", "externalIdPath": "data.id",
                    "statusPath": "type", "statusMap": STATUS_MAP, "progressPath": "data.pct",
                })  # fmt: skip
                made.raise_for_status()
            integration = made.json()
            secret, path = integration["secret"], integration["callbackPath"]
            ids = [f"pay_{n}" for n in range(count)]
            created = [signed(secret, {"type": "created", "data": {"id": i}}) for i in ids]
            log("initialized…")
            task_ids: list[str] = []
            results["initialized"] = await phase(
                server.url, path, created, "initialized", workers, task_ids
            )
            running_ = [
                signed(secret, {"type": "running", "data": {"id": i, "pct": 50}}) for i in ids
            ]
            log("processing…")
            results["processing"] = await phase(server.url, path, running_, "processing", workers)
            # The same work through the REST API with a key, for comparison.
            rest = [
                (json.dumps({"taskId": t, "progress": 60}).encode(),
                 {**admin, "content-type": "application/json"})
                for t in task_ids
            ]  # fmt: skip
            log("REST updateProgress…")
            results["rest_update_progress"] = await phase(
                server.url, "/tasks/updateProgress", rest, None, workers
            )
            log("replayed…")
            results["replayed"] = await phase(server.url, path, running_, "processing", workers)
            paid = [signed(secret, {"type": "paid", "data": {"id": i}}) for i in ids]
            log("completed…")
            results["completed"] = await phase(server.url, path, paid, "completed", workers)
    return results


def main() -> None:
    """Run it; print the figures as JSON."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--dir", type=Path, default=Path(tempfile.gettempdir()))
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--workers", type=int, default=8)
    args = parser.parse_args()
    print(json.dumps(trio.run(main_async, args.dir, args.quick, args.workers), indent=2))


if __name__ == "__main__":
    main()
