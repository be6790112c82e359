"""spectral/cluster/pg.py + placement.py: place, activate and home_of per second, p50/p99.

Starts a private PostgreSQL (tests/engines.py: initdb into a temporary directory, default
settings, fsync on) unless ``--url`` names one, migrates, joins one node (renewing its
lease meanwhile), then for each operation runs ``--ops`` calls from 1 trio task and from
``--tasks`` concurrent tasks sharing a pool of ``--pool`` connections. place: a new id
per call (an INSERT in a transaction); activate: token + 1 on 64 placed ids (UPDATE ...
EXISTS(node current), in a transaction); home_of: one autocommit SELECT joining nodes.
Prints one JSON object.

    .venv/bin/python bench/cluster_pg.py [--ops 3000] [--tasks 16] [--pool 4] [--url DSN]
"""

from __future__ import annotations

import argparse
import itertools
import json
import platform
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import psycopg
import trio

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from spectral.cluster import schema  # noqa: E402
from spectral.cluster.membership import Membership, NodeRef  # noqa: E402
from spectral.cluster.pg import Database, open_database  # noqa: E402
from spectral.cluster.placement import Placements  # noqa: E402
from tests.engines import start_postgres  # noqa: E402


def _pct(sorted_ms: list[float], q: float) -> float:
    return round(sorted_ms[min(len(sorted_ms) - 1, int(q * len(sorted_ms)))], 3)


async def _measure(op: Callable[[int], Awaitable[Any]], ops: int, tasks: int) -> dict[str, Any]:
    latencies: list[float] = []
    counter = itertools.count()

    async def worker() -> None:
        while (i := next(counter)) < ops:
            start = time.perf_counter()
            await op(i)
            latencies.append((time.perf_counter() - start) * 1000)

    began = time.perf_counter()
    async with trio.open_nursery() as nursery:
        for _ in range(tasks):
            nursery.start_soon(worker)
    elapsed = time.perf_counter() - began
    latencies.sort()
    return {
        "tasks": tasks,
        "ops": len(latencies),
        "per_s": round(len(latencies) / elapsed),
        "p50_ms": _pct(latencies, 0.50),
        "p99_ms": _pct(latencies, 0.99),
    }


async def _bench(db: Database, node: NodeRef, ops: int, tasks: int) -> dict[str, Any]:
    placements = Placements(db)
    ids = itertools.count()
    hot = [f"hot{i}" for i in range(64)]
    for task_id in hot:
        await placements.place("task", task_id, node)
    results: dict[str, Any] = {}
    for concurrency in (1, tasks):
        results[f"place_{concurrency}"] = await _measure(
            lambda _i: placements.place("task", f"b{next(ids)}", node), ops, concurrency
        )
        results[f"activate_{concurrency}"] = await _measure(
            lambda i: placements.activate("task", hot[i % len(hot)], node), ops, concurrency
        )
        results[f"home_of_{concurrency}"] = await _measure(
            lambda i: placements.home_of("task", hot[i % len(hot)]), ops, concurrency
        )
    return results


async def main() -> None:
    """Run the benchmark and print one JSON object."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ops", type=int, default=3000)
    parser.add_argument("--tasks", type=int, default=16)
    parser.add_argument("--pool", type=int, default=4)
    parser.add_argument("--url", default=None)
    args = parser.parse_args()
    engine = None if args.url else await trio.to_thread.run_sync(start_postgres)
    url = args.url or engine.url  # type: ignore[union-attr]
    try:
        async with open_database(url, size=args.pool) as db:
            await db.run(schema.migrate)
            async with trio.open_nursery() as nursery:  # renewals run during the bench
                node = await nursery.start(Membership(db, "bench", "127.0.0.1:0").serve)
                results = await _bench(db, node, args.ops, args.tasks)
                nursery.cancel_scope.cancel()
            server = await db.run(lambda c: c.execute("SHOW server_version").fetchone()[0])
    finally:
        if engine is not None:
            await trio.to_thread.run_sync(engine.close)
    print(
        json.dumps(
            {
                "bench": "cluster_pg",
                "pool": args.pool,
                "postgresql": server,
                "psycopg": psycopg.__version__,
                "trio": trio.__version__,
                "python": platform.python_version(),
                **results,
            }
        )
    )


if __name__ == "__main__":
    trio.run(main)
