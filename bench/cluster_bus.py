"""Fan-out bus benchmark: publish -> subscriber latency and throughput over a private Redis.

    python bench/cluster_bus.py [--paced 5000] [--burst 50000] [--rate 1000]

Starts its own redis-server on a free loopback port (tests/redis_fixture.py), then for 1
and 2 subscriber *processes* (each runs ``open_bus`` + one ``subscription``):

- paced: ``--paced`` messages of 300 bytes at ``--rate`` msgs/s through ``Bus.publish``;
- burst: ``--burst`` messages as fast as the publisher's buffer drains (pipelined, 100 per
  round trip); throughput = messages / (last receipt - first publish).

Each payload starts with its send time (``time.perf_counter_ns``: CLOCK_MONOTONIC, shared
by every process on Linux). Subscribers print their latencies' p50/p99 and how many
arrived; the parent prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import trio

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from spectral.cluster.bus import open_bus
from spectral.cluster.gaps import Envelope
from tests.redis_fixture import RedisServer

PAYLOAD = 300
STAMP = struct.Struct("<q")


def _percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def _subscriber(url: str, channel: str, count: int, idle: float) -> None:
    latencies: list[float] = []
    last_receipt = 0
    done = trio.Event()
    resyncs: list[int] = []

    def on_message(envelope: Envelope) -> None:
        nonlocal last_receipt
        now = time.perf_counter_ns()
        (sent,) = STAMP.unpack_from(envelope.payload)
        latencies.append((now - sent) / 1e6)
        last_receipt = now
        if len(latencies) >= count:
            done.set()

    async def resync(channel: str, after_seq: int) -> tuple[list[Envelope], int]:
        resyncs.append(after_seq)
        return [], after_seq  # counted, not filled: the benchmark expects no gaps

    async with open_bus(url, resync) as bus, bus.subscription(channel, on_message, after_seq=0):
        print("ready", flush=True)
        while not done.is_set():
            seen = len(latencies)
            with trio.move_on_after(idle):
                await done.wait()
            if len(latencies) == seen and seen:
                break  # nothing for `idle` seconds: the rest was lost
    print(
        json.dumps(
            {
                "received": len(latencies),
                "p50_ms": round(_percentile(latencies, 0.50), 3),
                "p99_ms": round(_percentile(latencies, 0.99), 3),
                "max_ms": round(max(latencies, default=float("nan")), 3),
                "last_receipt_ns": last_receipt,
                "resyncs": len(resyncs),
            }
        ),
        flush=True,
    )


def _payload(seq: int) -> bytes:
    return STAMP.pack(time.perf_counter_ns()) + b"x" * (PAYLOAD - STAMP.size)


async def _publish(url: str, channel: str, count: int, rate: float | None) -> int:
    async def no_resync(channel: str, after_seq: int) -> tuple[list[Envelope], int]:
        return [], after_seq

    async with open_bus(url, no_resync) as bus:
        start = time.perf_counter_ns()
        if rate:
            interval = 1 / rate
            t0 = trio.current_time()
            for seq in range(1, count + 1):
                await trio.sleep_until(t0 + seq * interval)
                bus.publish(channel, seq, _payload(seq), "e")
        else:
            for seq in range(1, count + 1):
                while bus.statistics().buffered >= 5_000:
                    await trio.sleep(0.0005)  # let the writer drain; never overflow
                bus.publish(channel, seq, _payload(seq), "e")
        with trio.fail_after(60):
            while bus.statistics().buffered:
                await trio.sleep(0.001)
        await trio.sleep(0.05)
        assert bus.statistics().dropped == 0
    return start


def _run(server: RedisServer, mode: str, subscribers: int, count: int, rate: float) -> dict:
    channel = f"task:bench-{mode}-{subscribers}"
    procs = [
        subprocess.Popen(
            [sys.executable, __file__, "--sub", server.url, channel, str(count)],
            stdout=subprocess.PIPE,
            text=True,
            env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])},
        )
        for _ in range(subscribers)
    ]
    try:
        for proc in procs:
            assert proc.stdout is not None
            assert proc.stdout.readline().strip() == "ready"
        deadline = time.monotonic() + 10
        while server.numsub(channel) < subscribers:
            assert time.monotonic() < deadline, "subscribers did not subscribe"
            time.sleep(0.01)
        start = trio.run(_publish, server.url, channel, count, rate if mode == "paced" else None)
        results = []
        for proc in procs:
            out, _ = proc.communicate(timeout=120)
            results.append(json.loads(out.strip().splitlines()[-1]))
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    summary: dict = {"mode": mode, "subscribers": subscribers, "messages": count}
    if mode == "paced":
        summary["rate"] = rate
    else:
        last = max(r["last_receipt_ns"] for r in results)
        summary["msgs_per_s"] = round(count / ((last - start) / 1e9))
    summary["per_subscriber"] = [
        {k: v for k, v in r.items() if k != "last_receipt_ns"} for r in results
    ]
    return summary


def main() -> None:
    """Run the benchmark (or, with --sub, one subscriber process) and print JSON."""
    if len(sys.argv) > 1 and sys.argv[1] == "--sub":
        url, channel, count = sys.argv[2], sys.argv[3], int(sys.argv[4])
        trio.run(_subscriber, url, channel, count, 3.0)
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--paced", type=int, default=5_000)
    parser.add_argument("--burst", type=int, default=50_000)
    parser.add_argument("--rate", type=float, default=1_000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        server = RedisServer(Path(tmp))
        server.start()
        try:
            version = server.command("INFO", "server").split(b"redis_version:")[1].split()[0]
            runs = [
                _run(server, mode, subscribers, count, args.rate)
                for mode, count in (("paced", args.paced), ("burst", args.burst))
                for subscribers in (1, 2)
            ]
        finally:
            server.stop()
    import coredis

    print(
        json.dumps(
            {
                "redis": version.decode(),
                "coredis": coredis.__version__,
                "payload_bytes": PAYLOAD,
                "cpus": os.cpu_count(),
                "runs": runs,
            },
            indent=1,
        )
    )


if __name__ == "__main__":
    main()
