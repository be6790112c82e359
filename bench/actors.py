"""Benchmark of the actor runtime alone (no HTTP): prints one JSON object.

Scenarios (``--scenario NAME``, default all):

- ``hot``: one actor, 64 concurrent callers, committed updates/s and coalescing.
- ``spread``: 10,000 live actors, 64 callers round-robin, updates/s.
- ``create``: new objects (each a new SQLite file), 64 concurrent and sequential.
- ``fs_floor``: the same file work without the runtime (the filesystem's ceiling).
- ``cold``: first-call latency on hibernated objects, p50/p99/max.
- ``memory``: RSS and file descriptors per live idle actor.
- ``evict``: evictions/s of live actors.

``--quick`` runs small sizes (a smoke test). The data directory is a temporary
directory under ``--dir`` (default: the system's temp dir); progress goes to stderr.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import resource
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import trio

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from actors import Actor, Migration, Router, RouterConfig, open_router  # noqa: E402
from storage.tuning import sqlite_memory_used  # noqa: E402


class BenchCounter(Actor):
    """One row, updated per message; answers the new value."""

    kind = "bench"
    migrations = (Migration(1, "CREATE TABLE c (id INTEGER PRIMARY KEY, n INTEGER NOT NULL)"),)
    #: Created often, as tasks are: files come from a pool (storage/pool.py).
    pooled = True

    def load(self) -> None:
        """Read the value."""
        row = self.db.execute("SELECT n FROM c WHERE id = 1").fetchone()
        self.n = 0 if row is None else row[0]

    def handle(self, message: Any) -> int:
        """Increment and record progress in the registry."""
        self.n += 1
        self.db.execute("INSERT OR REPLACE INTO c (id, n) VALUES (1, ?)", (self.n,))
        self.update_record(status="active", progress=float(self.n % 100))
        return self.n


def log(message: str) -> None:
    """Progress on stderr."""
    print(message, file=sys.stderr, flush=True)


def percentiles(samples: list[float]) -> dict[str, float]:
    """p50, p99 and max of seconds, in milliseconds."""
    ordered = sorted(samples)
    return {
        "p50_ms": round(1000 * ordered[len(ordered) // 2], 3),
        "p99_ms": round(1000 * ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))], 3),
        "max_ms": round(1000 * ordered[-1], 3),
    }


def rss_kib() -> int:
    """Resident set size of this process, KiB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError("no VmRSS")


def open_fds() -> int:
    """Open file descriptors of this process."""
    return len(os.listdir("/proc/self/fd"))


async def run_callers(
    count: int, concurrency: int, call: Callable[[int], Awaitable[None]]
) -> tuple[float, list[float]]:
    """``count`` calls spread over ``concurrency`` callers; wall time and latencies."""
    latencies: list[float] = []
    next_index = iter(range(count))

    async def caller() -> None:
        for index in next_index:
            started = time.perf_counter()
            await call(index)
            latencies.append(time.perf_counter() - started)

    started = time.perf_counter()
    async with trio.open_nursery() as nursery:
        for _ in range(concurrency):
            nursery.start_soon(caller)
    return time.perf_counter() - started, latencies


async def create_objects(router: Router, prefix: str, count: int, concurrency: int = 64) -> None:
    """Create ``count`` objects (untimed set-up)."""
    await run_callers(
        count,
        concurrency,
        lambda i: router.call("bench", f"{prefix}{i}", None, create=True),
    )


async def hot(root: Path, quick: bool) -> dict[str, Any]:
    """One actor, 64 concurrent callers."""
    updates = 5_000 if quick else 50_000
    async with open_router(root, [BenchCounter], RouterConfig(max_live=live_cap())) as router:
        await router.call("bench", "hot", None, create=True)
        before = router.statistics()
        elapsed, latencies = await run_callers(
            updates, 64, lambda _: router.call("bench", "hot", None)
        )
        after = router.statistics()
    turns = after.turns - before.turns
    return {
        "updates": updates,
        "callers": 64,
        "updates_per_s": round(updates / elapsed),
        "turns": turns,
        "messages_per_turn": round(updates / turns, 1),
        "mean_commit_ms": round(1000 * (after.commit_seconds - before.commit_seconds) / turns, 3),
        **percentiles(latencies),
    }


def live_cap() -> int:
    """Live actors this process can hold open: 2 fds each, 500 fds kept for the rest."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    return (soft - 500) // 2


async def spread(root: Path, quick: bool) -> dict[str, Any]:
    """64 callers round-robin over up to 10,000 live actors (as many as fds allow)."""
    cap = live_cap()
    actors = 1_000 if quick else min(10_000, cap)
    updates = 5_000 if quick else 50_000
    async with open_router(root, [BenchCounter], RouterConfig(max_live=cap)) as router:
        log(f"spread: creating {actors} actors")
        await create_objects(router, "s", actors)
        before = router.statistics()
        elapsed, latencies = await run_callers(
            updates, 64, lambda i: router.call("bench", f"s{i % actors}", None)
        )
        after = router.statistics()
    return {
        "actors": actors,
        "live_cap": cap,
        "updates": updates,
        "callers": 64,
        "updates_per_s": round(updates / elapsed),
        "turns": after.turns - before.turns,
        "activations_during_run": after.activations - before.activations,
        **percentiles(latencies),
    }


async def create(root: Path, quick: bool) -> dict[str, Any]:
    """New objects, each its own new SQLite file."""
    count = 500 if quick else 5_000
    out: dict[str, Any] = {"objects": count}
    config = RouterConfig(max_live=live_cap())
    async with open_router(root, [BenchCounter], config) as router:
        for pool in router.pools.values():  # a server's pool is full a moment after start
            await pool.wait_ready(config.pool_high)
        elapsed, latencies = await run_callers(
            count, 64, lambda i: router.call("bench", f"c{i}", None, create=True)
        )
        out["concurrent_64_per_s"] = round(count / elapsed)
        out["concurrent_64"] = percentiles(latencies)
        elapsed, latencies = await run_callers(
            count, 1, lambda i: router.call("bench", f"q{i}", None, create=True)
        )
        out["sequential_per_s"] = round(count / elapsed)
        out["sequential"] = percentiles(latencies)
        out["pools"] = [{"taken": p.taken, "misses": p.misses} for p in router.statistics().pools]
    return out


async def fs_floor(root: Path, quick: bool) -> dict[str, Any]:
    """The filesystem's share of a creation, without the runtime: what ``create`` can reach.

    Per object, as the store does it: write the template to a temporary file, rename it
    into its shard, open it (exclusive locking), commit one row at ``synchronous=OFF``.
    """
    count = 500 if quick else 5_000
    template = root / "template.sqlite"
    conn = sqlite3.connect(template, isolation_level=None)
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("CREATE TABLE c (id INTEGER PRIMARY KEY, n INTEGER NOT NULL)")
    conn.close()
    data = template.read_bytes()
    for shard in range(256):
        (root / f"{shard:02x}").mkdir()
    keep: list[sqlite3.Connection] = []
    started = time.perf_counter()
    for i in range(count):
        path = root / f"{i % 256:02x}" / f"o{i}.sqlite"
        fd = os.open(f"{path}.tmp", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        os.write(fd, data)
        os.close(fd)
        os.replace(f"{path}.tmp", path)
        conn = sqlite3.connect(path, isolation_level=None)
        conn.execute("PRAGMA locking_mode = EXCLUSIVE")
        conn.execute("PRAGMA synchronous = OFF")
        conn.execute("BEGIN")
        conn.execute("INSERT INTO c (id, n) VALUES (1, 1)")
        conn.execute("COMMIT")
        keep.append(conn)
    elapsed = time.perf_counter() - started
    for conn in keep:
        conn.close()
    return {"objects": count, "sequential_per_s": round(count / elapsed)}


async def cold(root: Path, quick: bool) -> dict[str, Any]:
    """First call on hibernated objects (open file, read state, apply, commit)."""
    count = 200 if quick else 2_000
    async with open_router(root, [BenchCounter], RouterConfig(max_live=live_cap())) as router:
        await create_objects(router, "k", count)
    # A new router: every object is cold now.
    config = RouterConfig(max_live=live_cap())
    async with open_router(root, [BenchCounter], config) as router:
        for pool in router.pools.values():  # refilled at start: not during the measurement
            await pool.wait_ready(config.pool_high)
        _, cold_latencies = await run_callers(
            count, 1, lambda i: router.call("bench", f"k{i}", None)
        )
        _, warm_latencies = await run_callers(
            count, 1, lambda i: router.call("bench", f"k{i}", None)
        )
        activations = router.statistics().activations
    return {
        "objects": count,
        "activations": activations,
        "cold": percentiles(cold_latencies),
        "warm": percentiles(warm_latencies),
    }


async def memory(root: Path, quick: bool) -> dict[str, Any]:
    """RSS and fds per live idle actor (SQLite connection included)."""
    count = 1_000 if quick else min(10_000, live_cap() - 100)
    async with open_router(root, [BenchCounter], RouterConfig(max_live=live_cap())) as router:
        await create_objects(router, "m", 100)  # warm-up: templates, caches, code
        gc.collect()
        rss_before, fds_before = rss_kib(), open_fds()
        sqlite_before = sqlite_memory_used() or 0
        await create_objects(router, "n", count)
        await trio.sleep(11)  # idle: the reaper releases page caches (checks every 5 s)
        gc.collect()
        rss_after, fds_after = rss_kib(), open_fds()
        sqlite_after = sqlite_memory_used() or 0
        live = router.statistics().live
    return {
        "actors": count,
        "live": live,
        "rss_kib_per_actor": round((rss_after - rss_before) / count, 1),
        "sqlite_kib_per_actor": round((sqlite_after - sqlite_before) / 1024 / count, 1),
        "fds_per_actor": round((fds_after - fds_before) / count, 2),
    }


async def evict(root: Path, quick: bool) -> dict[str, Any]:
    """Evict live actors (each closes its connection, checkpointing its WAL)."""
    count = 500 if quick else 5_000
    async with open_router(root, [BenchCounter], RouterConfig(max_live=live_cap())) as router:
        await create_objects(router, "e", count)
        started = time.perf_counter()
        for i in range(count):
            await router.evict("bench", f"e{i}")
        while router.statistics().live or router.statistics().closing:
            await trio.sleep(0.001)
        elapsed = time.perf_counter() - started
    return {"actors": count, "evictions_per_s": round(count / elapsed)}


SCENARIOS: dict[str, Callable[[Path, bool], Awaitable[dict[str, Any]]]] = {
    "hot": hot,
    "spread": spread,
    "create": create,
    "fs_floor": fs_floor,
    "cold": cold,
    "memory": memory,
    "evict": evict,
}


async def main_async(names: list[str], base: Path, quick: bool) -> dict[str, Any]:
    """Run the scenarios, each in its own fresh data directory."""
    results: dict[str, Any] = {
        "python": platform.python_version(),
        "sqlite": sqlite3.sqlite_version,
        "cpus": os.cpu_count(),
        "quick": quick,
        "data_dir": str(base),
        "gc": "as spectral serve: gc.freeze() after imports, thresholds (100000, 50, 100)",
    }
    for name in names:
        log(f"{name}...")
        with tempfile.TemporaryDirectory(dir=base, prefix=f"bench-{name}-") as root:
            results[name] = await SCENARIOS[name](Path(root), quick)
        log(f"{name}: {json.dumps(results[name])}")
    return results


def run_isolated(names: list[str], base: Path, quick: bool) -> dict[str, Any]:
    """Each scenario in a fresh process (memory, fds and the heap start clean)."""
    results: dict[str, Any] = {}
    for name in names:
        argv = [sys.executable, __file__, "--scenario", name, "--dir", str(base), "--in-process"]
        if quick:
            argv.append("--quick")
        out = subprocess.run(argv, check=True, stdout=subprocess.PIPE, text=True).stdout
        one = json.loads(out)
        results.update({k: v for k, v in one.items() if k not in results})
    return results


def main() -> None:
    """Parse flags, run, print JSON."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--scenario", choices=sorted(SCENARIOS), action="append")
    parser.add_argument("--quick", action="store_true", help="small sizes (smoke test)")
    parser.add_argument("--dir", type=Path, default=Path(tempfile.gettempdir()))
    parser.add_argument("--in-process", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    names = args.scenario or list(SCENARIOS)
    if len(names) > 1 and not args.in_process:
        results = run_isolated(names, args.dir, args.quick)
    else:
        # The server's collector settings (spectral.server.tune_gc): measured, not defaults.
        gc.collect()
        gc.freeze()
        gc.set_threshold(100_000, 50, 100)
        results = trio.run(main_async, names, args.dir, args.quick)
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
