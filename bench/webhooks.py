"""Webhook benchmark against a running spectral server: prints one JSON object.

Scenarios, in one run:

- ``throughput``: one webhook (``all``) to a fast local receiver on 127.0.0.1; 10,000
  task events are made with ``batchUpdateProgress``; deliveries/s from the first
  event until the receiver has them all (every 100th delivery's signature is checked
  with the ``standardwebhooks`` library).
- ``queued``: the receiver answers 503 (so deliveries wait for their retries); 10,000
  events are queued; then updateProgress latency (one connection, sequential) of a
  task the webhook does not take is measured against the same figure with no webhook
  backlog, and that of the hooked task (each of its updates adds a delivery).
- ``outage`` (a server of its own, retry schedule "0,0.5,1,2,4,8,8,8"): updateProgress
  latency of a task no webhook takes, then the receiver's listener is closed
  (connections refused) and 1,000 updates of a hooked task are timed; the listener
  comes back on the same port and the time until every delivery arrived is measured,
  with the failed attempts the outage cost (a down receiver is probed, not hammered).
  tests/test_webhooks_delivery.py checks the same outage for correctness only.

``--quick`` shrinks the counts; ``--scenario outage`` runs the outage alone. The server
runs with SPECTRAL_WEBHOOK_ALLOW_PRIVATE=1 (the receiver is on loopback) and, for the
first two scenarios, a retry schedule of "0,60" (one retry a minute later).
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import trio

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.http_load import BENCH_KEY, Connection, log, percentiles  # noqa: E402
from tests.procs import running  # noqa: E402

SERVE_ENV = {
    "SPECTRAL_ADMIN_KEY": BENCH_KEY,
    "SPECTRAL_WEBHOOK_ALLOW_PRIVATE": "1",
    "SPECTRAL_WEBHOOK_RETRY_SCHEDULE": "0,60",
}
OUTAGE_ENV = {**SERVE_ENV, "SPECTRAL_WEBHOOK_RETRY_SCHEDULE": "0,0.5,1,2,4,8,8,8"}


class FastReceiver:
    """A minimal HTTP/1.1 server that answers every POST with ``status`` and counts them."""

    def __init__(self) -> None:
        self.status = 200
        self.received = 0
        self.samples: list[tuple[dict[str, str], bytes]] = []
        self.done = trio.Event()
        self.expect = 0
        self.port = 0

    async def serve(self, *, task_status: trio.TaskStatus[None]) -> None:
        """Listen on 127.0.0.1 (on the same port as before, if any) until cancelled."""
        listeners = await trio.open_tcp_listeners(self.port, host="127.0.0.1")
        self.port = listeners[0].socket.getsockname()[1]
        task_status.started()
        await trio.serve_listeners(self._connection, listeners)

    async def start(self, nursery: trio.Nursery) -> trio.CancelScope:
        """Serve in ``nursery``; cancelling the returned scope closes listener and connections."""

        async def run(*, task_status: trio.TaskStatus[trio.CancelScope]) -> None:
            with trio.CancelScope() as scope:
                async with trio.open_nursery() as inner:
                    await inner.start(self.serve)
                    task_status.started(scope)

        return await nursery.start(run)

    async def _connection(self, stream: trio.SocketStream) -> None:
        buffer = b""
        try:
            while True:
                while b"\r\n\r\n" not in buffer:
                    chunk = await stream.receive_some(65536)
                    if not chunk:
                        return
                    buffer += chunk
                head, _, buffer = buffer.partition(b"\r\n\r\n")
                headers = {}
                for line in head.split(b"\r\n")[1:]:
                    name, _, value = line.partition(b":")
                    headers[name.strip().lower().decode()] = value.strip().decode()
                length = int(headers.get("content-length", "0"))
                while len(buffer) < length:
                    chunk = await stream.receive_some(65536)
                    if not chunk:
                        return
                    buffer += chunk
                body, buffer = buffer[:length], buffer[length:]
                if self.status == 200:
                    self.received += 1
                    if self.received % 100 == 1:
                        self.samples.append((headers, body))
                    if self.expect and self.received >= self.expect:
                        self.done.set()
                reason = b"OK" if self.status == 200 else b"Unavailable"
                await stream.send_all(
                    b"HTTP/1.1 %d %s\r\nContent-Length: 0\r\n\r\n" % (self.status, reason)
                )
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            return


async def make_events(conn: Connection, task_id: str, count: int) -> None:
    """``count`` progress events on ``task_id`` through batchUpdateProgress."""
    for start in range(0, count, 500):
        updates = [
            {"taskId": task_id, "progress": float((start + i) % 100)}
            for i in range(min(500, count - start))
        ]
        status, data = await conn.request(
            "POST", "/tasks/batchUpdateProgress", {"updates": updates}
        )
        assert status == 200, data[:200]


async def latencies(conn: Connection, task_id: str, count: int) -> list[float]:
    """Sequential updateProgress latencies."""
    out = []
    for n in range(count):
        started = time.perf_counter()
        status, _ = await conn.request(
            "POST", "/tasks/updateProgress", {"taskId": task_id, "progress": float(n % 100)}
        )
        out.append(time.perf_counter() - started)
        assert status == 200
    return out


def failed_attempts(metrics: str) -> int:
    """Failed delivery attempts so far, from the server's /metrics text."""
    found = re.search(r'spectral_webhook_deliveries_total\{result="failed"\} ([0-9.e+]+)', metrics)
    return int(float(found.group(1))) if found else 0


async def outage(base: Path, quick: bool) -> dict[str, Any]:
    """The ``outage`` scenario, on a server of its own."""
    samples = 200 if quick else 1_000
    receiver = FastReceiver()
    with tempfile.TemporaryDirectory(dir=base, prefix="bench-webhooks-outage-") as data:
        argv = [
            sys.executable, "-m", "spectral", "serve", "--port", "0",
            "--data-dir", data, "--log-level", "WARNING",
        ]  # fmt: skip
        async with trio.open_nursery() as nursery, running(argv, env=OUTAGE_ENV) as server:
            listening = await receiver.start(nursery)
            conn = await Connection.open(server.url)
            for task_id in ("outage", "quiet"):
                await conn.request("POST", "/tasks/create", {"id": task_id})
            await latencies(conn, "quiet", samples // 5)  # warm-up
            baseline = await latencies(conn, "quiet", samples)
            status, body = await conn.request(
                "POST",
                "/webhooks",
                {
                    "url": f"http://127.0.0.1:{receiver.port}/hook",
                    "eventType": "progress",
                    "taskIdPrefix": "outage",
                },
            )
            assert status == 201, body
            listening.cancel()
            log(f"outage: {samples} updates while the receiver is down...")
            down = time.perf_counter()
            during = await latencies(conn, "outage", samples)
            await trio.sleep(1)  # a bench may wait: let the failures and pauses play out
            receiver.expect = samples
            listening = await receiver.start(nursery)
            back = time.perf_counter()
            with trio.fail_after(600):
                await receiver.done.wait()
            delivered = time.perf_counter()
            _, metrics = await conn.request("GET", "/metrics")
            results = {
                "updates_during_outage": samples,
                "mutation_latency_without_webhooks": percentiles(baseline),
                "mutation_latency_during_outage": percentiles(during),
                "p99_ratio": round(
                    percentiles(during)["p99_ms"] / max(percentiles(baseline)["p99_ms"], 1e-6), 2
                ),
                "outage_seconds": round(back - down, 2),
                "failed_attempts": failed_attempts(metrics.decode()),
                "delivered": receiver.received,
                "seconds_to_deliver_after_restart": round(delivered - back, 2),
            }
            log(f"outage: {json.dumps(results)}")
            await conn.aclose()
            nursery.cancel_scope.cancel()
    return results


async def main_async(base: Path, quick: bool, scenario: str) -> dict[str, Any]:
    """Run the scenarios: throughput and queued on one server, outage on another."""
    if scenario == "outage":
        return {"outage": await outage(base, quick)}
    results = await delivery(base, quick)
    results["outage"] = await outage(base, quick)
    return results


async def delivery(base: Path, quick: bool) -> dict[str, Any]:
    """The ``throughput`` and ``queued`` scenarios, on one server."""
    from standardwebhooks.webhooks import Webhook

    events = 1_000 if quick else 10_000
    samples = 200 if quick else 1_000
    receiver = FastReceiver()
    results: dict[str, Any] = {"events": events}
    with tempfile.TemporaryDirectory(dir=base, prefix="bench-webhooks-") as data:
        argv = [
            sys.executable, "-m", "spectral", "serve", "--port", "0",
            "--data-dir", data, "--log-level", "WARNING",
        ]  # fmt: skip
        async with trio.open_nursery() as nursery, running(argv, env=SERVE_ENV) as server:
            await nursery.start(receiver.serve)
            conn = await Connection.open(server.url)
            for task_id in ("hooked", "quiet"):
                await conn.request("POST", "/tasks/create", {"id": task_id})
            baseline = await latencies(conn, "quiet", samples)
            status, body = await conn.request(
                "POST",
                "/webhooks",
                {
                    "url": f"http://127.0.0.1:{receiver.port}/hook",
                    "eventType": "all",
                    "taskIdPrefix": "hooked",
                },
            )
            assert status == 201, body
            secret = json.loads(body)["secret"]
            # Throughput.
            receiver.expect = events
            log(f"throughput: {events} events...")
            started = time.perf_counter()
            await make_events(conn, "hooked", events)
            made = time.perf_counter() - started
            with trio.fail_after(600):
                await receiver.done.wait()
            elapsed = time.perf_counter() - started
            for headers, payload in receiver.samples:
                Webhook(secret).verify(payload, headers)
            results["throughput"] = {
                "deliveries": receiver.received,
                "seconds": round(elapsed, 2),
                "deliveries_per_s": round(receiver.received / elapsed),
                "events_made_in_s": round(made, 2),
                "signatures_checked": len(receiver.samples),
            }
            log(f"throughput: {json.dumps(results['throughput'])}")
            # Mutation latency with 10,000 deliveries waiting for their retry.
            receiver.status = 503
            await make_events(conn, "hooked", events)
            await trio.sleep(10)  # first attempts fail; the backlog waits for its retry
            queued = await latencies(conn, "quiet", samples)
            hooked = await latencies(conn, "hooked", samples)
            results["queued"] = {
                "deliveries_waiting": events,
                "mutation_latency_without_backlog": percentiles(baseline),
                "mutation_latency_with_backlog": percentiles(queued),
                "hooked_task_mutation_latency_with_backlog": percentiles(hooked),
            }
            log(f"queued: {json.dumps(results['queued'])}")
            await conn.aclose()
            nursery.cancel_scope.cancel()
    return results


def main() -> None:
    """Parse flags, run, print JSON."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--scenario", choices=["all", "outage"], default="all")
    parser.add_argument("--dir", type=Path, default=Path(tempfile.gettempdir()))
    args = parser.parse_args()
    print(json.dumps(trio.run(main_async, args.dir, args.quick, args.scenario), indent=2))


if __name__ == "__main__":
    main()
