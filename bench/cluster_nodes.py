"""Cluster mode end to end: one plain server, then 1, 2 and 3 ``serve --cluster`` nodes.

Layouts: ``single`` (``spectral serve``, no cluster), ``1``, ``2`` and ``3`` nodes (a, b,
c), each cluster layout on a fresh PostgreSQL database and a fresh Redis (tests/engines.py:
private engines on loopback). Every server process is pinned to one core (node *i* to
core ``i % cpu_count``, every thread of it); the load generator (this process), PostgreSQL
and Redis are not pinned, so on a small machine the nodes, the engines and the load
generator compete for the same cores: the output says which cores each had.

Scenarios (``--seconds S`` each after a 1 s warm-up; 64 keep-alive connections):

- ``mutate_home`` / ``read_home``: updateProgress / GET /tasks/{id} over 1,000 tasks
  created through node a, connections to a;
- ``mutate_remote`` / ``read_remote``: the same tasks, connections to b (forwarded to a);
- ``mutate_spread``: 1,000 tasks created through every node, connections spread evenly
  over the nodes, each updating tasks homed on its own node (the scale-out case);
  ``mutate_spread_forwarded``: each connection updates tasks homed on the other nodes;
- ``fanout``: one task homed on a, 300 watchers (raw WebSockets) spread evenly over the
  nodes, 200 updates at ~100/s sent to a: delivery latency from the send to each
  receipt, split by the watcher's node (home or other), missed messages;
  ``fanout_one_per_node``: one watcher per node, twice the updates; the CPU per update is
  the fixed cost of an update on the home (commit, bus publish) and on each other node
  (the bus's receipt and one delivery).

Each scenario reports requests/s, p50/p99 latency, errors, and the CPU seconds every
process consumed during it (``/proc/PID/stat`` utime + stime; the nodes, the client,
PostgreSQL's processes, Redis, and the whole machine from ``/proc/stat``), with server
CPU per request. One JSON document on stdout; progress on stderr.

    .venv/bin/python bench/cluster_nodes.py [--seconds 5] [--layout 2 ...] [--scenario NAME ...]
                                            [--quick]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
import trio

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.http_load import (  # noqa: E402
    BENCH_KEY,
    Connection,
    closed_loop,
    create_tasks,
    frames,
    open_watcher,
    percentiles,
    rss_kib,
)
from tests.engines import Postgres, Redis, start_postgres, start_redis  # noqa: E402
from tests.procs import Server, running  # noqa: E402

SERVE_ENV = {"SPECTRAL_ADMIN_KEY": BENCH_KEY}
LAYOUTS = ["single", "1", "2", "3"]
SCENARIOS = [
    "mutate_home", "mutate_remote", "read_home", "read_remote", "mutate_spread",
    "mutate_spread_forwarded", "fanout", "fanout_one_per_node",
]  # fmt: skip
NAMES = ("a", "b", "c")
CONNECTIONS = 64
CLK = os.sysconf("SC_CLK_TCK")
CPUS = os.cpu_count() or 1


def log(message: str) -> None:
    """Progress on stderr."""
    print(message, file=sys.stderr, flush=True)


# -- CPU accounting ---------------------------------------------------------------


def _stat_fields(pid: int) -> list[str]:
    """Fields of /proc/PID/stat from the state on (the command may hold spaces)."""
    text = Path(f"/proc/{pid}/stat").read_text()
    return text[text.rindex(")") + 2 :].split()


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process (all its threads), seconds; 0 if it is gone."""
    try:
        fields = _stat_fields(pid)
    except (FileNotFoundError, ProcessLookupError):
        return 0.0
    return (int(fields[11]) + int(fields[12])) / CLK


def children_of(parent: int) -> list[int]:
    """Processes whose parent is ``parent`` (PostgreSQL's backends under the postmaster)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if int(_stat_fields(int(entry.name))[1]) == parent:
                    found.append(int(entry.name))
            except (FileNotFoundError, ProcessLookupError, IndexError):
                continue
    return found


def machine_ticks() -> tuple[float, float]:
    """Busy and stolen seconds of all cores since boot (/proc/stat)."""
    values = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    user, nice, system, _idle, _iowait, irq, softirq, steal = values[:8]
    return (user + nice + system + irq + softirq) / CLK, steal / CLK


def pin(pid: int, core: int) -> int:
    """Pin every thread of ``pid`` to ``core`` (threads made later inherit it); how many."""
    threads = 0
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            os.sched_setaffinity(int(task.name), {core})
            threads += 1
        except ProcessLookupError:
            continue
    return threads


# -- layouts ----------------------------------------------------------------------


@dataclass
class Layout:
    """The running servers of one layout, and the engines they use."""

    name: str
    nodes: dict[str, Server]
    cores: dict[str, int]
    postmaster: int | None = None
    redis_pid: int | None = None
    idle_rate: dict[str, float] = field(default_factory=dict)  # CPU s per s, per node

    def url(self, name: str) -> str:
        """Node ``name``'s base URL."""
        return self.nodes[name].url

    def repin(self) -> None:
        """Pin every node's threads again (a thread started while pinning ran kept the old mask)."""
        for name, server in self.nodes.items():
            pin(server.process.pid, self.cores[name])

    def sample(self) -> dict[str, float]:
        """CPU seconds so far of every process of interest, and of the machine."""
        out = {f"node_{n}": cpu_seconds(s.process.pid) for n, s in self.nodes.items()}
        out["client"] = cpu_seconds(os.getpid())
        if self.postmaster is not None:
            pids = [self.postmaster, *children_of(self.postmaster)]
            out["postgresql"] = sum(cpu_seconds(p) for p in pids)
        if self.redis_pid is not None:
            out["redis"] = cpu_seconds(self.redis_pid)
        out["machine_busy"], out["machine_steal"] = machine_ticks()
        out["wall"] = time.perf_counter()
        return out

    def cpu(self, before: dict[str, float], after: dict[str, float]) -> dict[str, Any]:
        """CPU seconds consumed between two samples, and what nobody here accounts for."""
        spent = {k: round(after[k] - before[k], 3) for k in before if k != "wall"}
        ours = sum(v for k, v in spent.items() if not k.startswith("machine"))
        # PostgreSQL backends that ended in between are missing from ``ours``: "others"
        # is then slightly overstated, never the reverse.
        spent["others"] = round(max(0.0, spent["machine_busy"] - ours), 3)
        spent["wall"] = round(after["wall"] - before["wall"], 3)
        return spent


@asynccontextmanager
async def layout(name: str, base: Path, postgres: Postgres | None) -> AsyncIterator[Layout]:
    """Start the layout's servers (a fresh database and Redis for a cluster); stop them."""
    async with AsyncExitStack() as stack:
        data = Path(stack.enter_context(tempfile.TemporaryDirectory(dir=base, prefix="cn-")))
        extra: dict[str, list[str]] = {}
        redis: Redis | None = None
        names = ("a",) if name == "single" else NAMES[: int(name)]
        if name != "single":
            assert postgres is not None
            pg_url = postgres.create_database()
            redis = await trio.to_thread.run_sync(start_redis)
            stack.callback(redis.close)
            for node in names:
                extra[node] = ["--cluster", pg_url, "--redis", redis.url, "--node-id", node]
        nodes: dict[str, Server] = {}
        cores: dict[str, int] = {}
        for index, node in enumerate(names):
            argv = [
                sys.executable, "-m", "spectral", "serve", "--port", "0",
                "--data-dir", str(data / node), "--log-level", "WARNING", *extra.get(node, []),
            ]  # fmt: skip
            nodes[node] = await stack.enter_async_context(running(argv, env=SERVE_ENV))
            cores[node] = index % CPUS
            pin(nodes[node].process.pid, cores[node])
        postmaster = None
        if postgres is not None and name != "single":
            pidfile = postgres.data / "postmaster.pid"
            postmaster = int(pidfile.read_text().split("\n", 1)[0])
        yield Layout(
            name,
            nodes,
            cores,
            postmaster=postmaster,
            redis_pid=redis.process.pid if redis and redis.process else None,
        )


# -- scenarios --------------------------------------------------------------------


@dataclass
class Plan:
    """Sizes of one run."""

    seconds: float
    warmup: float
    tasks: int
    watchers: int
    updates: int
    rate: float
    settle: float
    idle: float
    only: tuple[str, ...] = ()


def ids_of(node: str, count: int) -> list[str]:
    """Ids of the tasks created through ``node``."""
    return [f"t-{node}-{n:04d}" for n in range(count)]


async def measured(lay: Layout, run: Callable[[], Any], requests_key: str = "requests") -> Any:
    """Run a timed part with CPU accounting; adds ``cpu_s`` and server CPU per request."""
    lay.repin()
    before = lay.sample()
    result = await run()
    after = lay.sample()
    result["cpu_s"] = lay.cpu(before, after)
    requests = result.get(requests_key) or 0
    if requests:
        per = {
            name: round(1e6 * result["cpu_s"][f"node_{name}"] / requests, 1) for name in lay.nodes
        }
        result["server_cpu_us_per_request"] = per
        result["server_cpu_us_per_request_total"] = round(sum(per.values()), 1)
    wall = result["cpu_s"]["wall"]
    result["node_core_busy"] = {
        name: round(result["cpu_s"][f"node_{name}"] / wall, 2) for name in lay.nodes
    }
    return result


async def single_target(lay: Layout, node: str, plan: Plan, make: Callable[[int], Any]) -> Any:
    """``CONNECTIONS`` connections to one node: a warm-up, then the timed run."""
    url = lay.url(node)
    await closed_loop(url, CONNECTIONS, plan.warmup, make)
    result = await measured(lay, lambda: closed_loop(url, CONNECTIONS, plan.seconds, make))
    result["target"] = node
    return result


async def spread_loop(
    targets: list[tuple[str, str, Callable[[int], tuple[str, str, Any]]]], seconds: float
) -> dict[str, Any]:
    """Connections to several nodes at once: ``(node, url, make)`` per connection."""
    latencies: list[float] = []
    by_node: dict[str, list[float]] = {}
    errors = 0

    async def client(node: str, conn: Connection, make: Any, deadline: float) -> None:
        nonlocal errors
        n = 0
        while trio.current_time() < deadline:
            method, path, body = make(n)
            n += 1
            started = time.perf_counter()
            status, _ = await conn.request(method, path, body)
            elapsed = time.perf_counter() - started
            latencies.append(elapsed)
            by_node.setdefault(node, []).append(elapsed)
            errors += status >= 300

    conns = [(node, await Connection.open(url), make) for node, url, make in targets]
    started = time.perf_counter()
    deadline = trio.current_time() + seconds
    async with trio.open_nursery() as nursery:
        for node, conn, make in conns:
            nursery.start_soon(client, node, conn, make, deadline)
    elapsed = time.perf_counter() - started
    for _, conn, _ in conns:
        await conn.aclose()
    return {
        "connections": len(conns),
        "requests": len(latencies),
        "requests_per_s": round(len(latencies) / elapsed),
        "errors": errors,
        **percentiles(latencies),
        "by_node": {
            node: {
                "connections": sum(1 for n, _, _ in targets if n == node),
                "requests": len(samples),
                "requests_per_s": round(len(samples) / elapsed),
                **percentiles(samples),
            }
            for node, samples in sorted(by_node.items())
        },
    }


def updater(ids: list[str], offset: int) -> Callable[[int], tuple[str, str, Any]]:
    """updateProgress round-robin over ``ids``, each connection from its own offset."""

    def make(n: int) -> tuple[str, str, Any]:
        task = ids[(offset + n * 7) % len(ids)]
        return ("POST", "/tasks/updateProgress", {"taskId": task, "progress": float(n % 100)})

    return make


async def spread(lay: Layout, plan: Plan, forwarded: bool) -> dict[str, Any]:
    """Connections spread over the nodes, each on its own node's tasks or the others'."""
    names = list(lay.nodes)
    targets = []
    for index in range(CONNECTIONS):
        node = names[index % len(names)]
        homes = [n for n in names if n != node] if forwarded else [node]
        ids = [task for home in homes for task in ids_of(home, plan.tasks)]
        targets.append((node, lay.url(node), updater(ids, index * 131)))
    await spread_loop(targets, plan.warmup)
    result = await measured(lay, lambda: spread_loop(targets, plan.seconds))
    result["tasks_updated"] = "homed on other nodes" if forwarded else "homed on own node"
    for node, figures in result["by_node"].items():
        # This node's CPU over the requests its own connections sent (for the forwarded
        # variant it also serves, as a home, the other nodes' forwarded requests).
        own = figures["requests"]
        figures["cpu_us_per_own_request"] = round(1e6 * result["cpu_s"][f"node_{node}"] / own, 1)
    return result


async def fanout(lay: Layout, plan: Plan, watchers: int, updates: int) -> dict[str, Any]:
    """One task homed on a; watchers spread over every node; paced updates sent to a."""
    names = list(lay.nodes)
    task_id = f"fan-{watchers}"
    await create_tasks(lay.url("a"), [task_id], 1)
    node_of = [names[i % len(names)] for i in range(watchers)]
    rss_before = {n: rss_kib(s.process.pid) for n, s in lay.nodes.items()}
    sent_at: dict[float, float] = {}  # by the update's progress value (each is unique)
    latencies: dict[str, list[float]] = {"home": [], "other": []}
    by_node: dict[str, list[float]] = {n: [] for n in names}
    received = [0] * watchers
    snapshot_seq: list[int] = []
    odd = {"unknown_progress": 0, "out_of_order": 0, "duplicate": 0, "no_seq_or_progress": 0}
    closes: dict[str, int] = {}
    streams: list[trio.SocketStream] = []

    async def watcher(index: int, *, task_status: Any) -> None:
        node = node_of[index]
        stream, rest = await open_watcher(lay.url(node), f"/ws/task/{task_id}")
        streams.append(stream)
        buffer = bytearray(rest)
        last = None
        while last is None:
            for payload in frames(buffer):
                message = orjson.loads(payload)
                if message.get("type") == "snapshot":
                    last = message["seq"]
            if last is None:
                chunk = await stream.receive_some(65536)
                if not chunk:
                    raise ConnectionError(f"watcher {index} on {node}: closed before snapshot")
                buffer += chunk
        snapshot_seq.append(last)
        task_status.started()
        where = "home" if node == "a" else "other"
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
                message = orjson.loads(payload)
                seq = message.get("seq")
                progress = message.get("task", {}).get("progress")
                if seq is None or progress is None:
                    odd["no_seq_or_progress"] += 1
                    continue
                if seq <= last:
                    odd["duplicate" if seq == last else "out_of_order"] += 1
                    continue
                last = seq
                if float(progress) not in sent_at:
                    odd["unknown_progress"] += 1
                    continue
                latency = now - sent_at[float(progress)]
                latencies[where].append(latency)
                by_node[node].append(latency)
                received[index] += 1

    send_errors = 0
    send_latencies: list[float] = []

    pool: list[Connection] = []

    async def send(step: int) -> None:
        # Sent on time whatever the previous answers do: a free connection, or a new one.
        nonlocal send_errors
        conn = pool.pop() if pool else await Connection.open(lay.url("a"))
        progress = round(step * 100 / updates, 3)
        sent_at[progress] = started = time.perf_counter()
        status, _ = await conn.request(
            "POST", "/tasks/updateProgress", {"taskId": task_id, "progress": progress}
        )
        send_latencies.append(time.perf_counter() - started)
        send_errors += status >= 300
        pool.append(conn)

    async def run() -> dict[str, Any]:
        pool.append(await Connection.open(lay.url("a")))
        async with trio.open_nursery() as nursery:
            for start in range(0, watchers, 100):  # connect 100 at a time
                async with trio.open_nursery() as connecting:
                    for index in range(start, min(watchers, start + 100)):
                        connecting.start_soon(nursery.start, watcher, index)
            if len(set(snapshot_seq)) != 1:
                raise RuntimeError(f"watchers saw different snapshots: {set(snapshot_seq)}")
            await trio.sleep(1.0)  # remote watchers' bus subscriptions settle
            lay.repin()
            before = lay.sample()
            began = trio.current_time()
            send_began = time.perf_counter()
            async with trio.open_nursery() as sending:
                for step in range(updates):
                    await trio.sleep_until(began + step / plan.rate)
                    sending.start_soon(send, step)
                send_seconds = time.perf_counter() - send_began
            with trio.move_on_after(15):
                while sum(received) < watchers * updates:
                    await trio.sleep(0.02)
            after = lay.sample()
            nursery.cancel_scope.cancel()
        for conn in pool:
            await conn.aclose()
        for stream in streams:
            await stream.aclose()
        expected = {
            where: updates * sum(1 for n in node_of if (n == "a") == (where == "home"))
            for where in ("home", "other")
        }
        delivered = sum(received)
        spent = lay.cpu(before, after)
        return {
            "watchers": watchers,
            "watchers_per_node": {n: node_of.count(n) for n in names},
            "updates": updates,
            "updates_per_s_sent": round((updates - 1) / send_seconds, 1),
            "sending_connections": len(pool),
            "send_errors": send_errors,
            "send": percentiles(send_latencies),
            "deliveries": delivered,
            "missed": watchers * updates - delivered,
            "missed_by_node": {
                n: updates * node_of.count(n)
                - sum(r for r, m in zip(received, node_of, strict=True) if m == n)
                for n in names
            },
            "closed_early": closes,
            "anomalies": odd,
            "latency_home_watchers": {
                "deliveries": len(latencies["home"]),
                "expected": expected["home"],
                **percentiles(latencies["home"]),
            },
            "latency_other_watchers": {
                "deliveries": len(latencies["other"]),
                "expected": expected["other"],
                **percentiles(latencies["other"]),
            },
            "latency_by_node": {n: percentiles(v) for n, v in by_node.items()},
            "cpu_s": spent,
            "server_cpu_us_per_update": {
                n: round(1e6 * spent[f"node_{n}"] / updates, 1) for n in names
            },
            # Less each node's idle rate (lease renewals, registry flushes, the bus's
            # pings), measured before the scenarios: what the updates themselves cost.
            "server_cpu_us_per_update_less_idle": {
                n: round(1e6 * (spent[f"node_{n}"] - lay.idle_rate[n] * spent["wall"]) / updates, 1)
                for n in names
            },
            "server_cpu_us_per_delivery": {
                n: round(1e6 * spent[f"node_{n}"] / max(1, updates * node_of.count(n)), 1)
                for n in names
            },
            "rss_kib_before_watchers": rss_before,
        }

    return await run()


async def run_layout(lay: Layout, plan: Plan) -> dict[str, Any]:
    """Every scenario that applies to ``lay``."""
    out: dict[str, Any] = {
        "nodes": list(lay.nodes),
        "node_cores": lay.cores,
        "node_pids": {n: s.process.pid for n, s in lay.nodes.items()},
    }
    names = list(lay.nodes)
    started = time.perf_counter()
    for node in names:
        await create_tasks(lay.url(node), ids_of(node, plan.tasks))
    out["create_seconds"] = round(time.perf_counter() - started, 2)
    out["tasks_created"] = plan.tasks * len(names)
    log(f"  {len(names) * plan.tasks} tasks created in {out['create_seconds']} s")

    await trio.sleep(plan.settle)  # the file pool refills, the registry mirror catches up
    lay.repin()
    before = lay.sample()
    await trio.sleep(plan.idle)
    idle = lay.cpu(before, lay.sample())
    lay.idle_rate = {n: idle[f"node_{n}"] / idle["wall"] for n in names}
    out["idle_cpu_ms_per_s"] = {
        k: round(1000 * v / idle["wall"], 1)
        for k, v in idle.items()
        if k.startswith("node_") or k in {"postgresql", "redis"}
    }

    ids_a = ids_of("a", plan.tasks)

    def mutate(n: int) -> tuple[str, str, Any]:
        return (
            "POST",
            "/tasks/updateProgress",
            {"taskId": ids_a[n % len(ids_a)], "progress": float(n % 100)},
        )

    def read(n: int) -> tuple[str, str, Any]:
        return ("GET", f"/tasks/{ids_a[n % len(ids_a)]}", None)

    scenarios: list[tuple[str, Callable[[], Any]]] = [
        ("mutate_home", lambda: single_target(lay, "a", plan, mutate)),
    ]
    if len(names) > 1:
        scenarios.append(("mutate_remote", lambda: single_target(lay, "b", plan, mutate)))
    scenarios.append(("read_home", lambda: single_target(lay, "a", plan, read)))
    if len(names) > 1:
        scenarios += [
            ("read_remote", lambda: single_target(lay, "b", plan, read)),
            ("mutate_spread", lambda: spread(lay, plan, forwarded=False)),
            ("mutate_spread_forwarded", lambda: spread(lay, plan, forwarded=True)),
        ]
    scenarios += [
        ("fanout", lambda: fanout(lay, plan, plan.watchers, plan.updates)),
        # One watcher per node, twice the updates: the fixed cost of an update on the
        # home (commit, publish) and on every other node (the bus's receipt), per update.
        ("fanout_one_per_node", lambda: fanout(lay, plan, len(names), 2 * plan.updates)),
    ]
    for name, scenario in scenarios:
        if plan.only and name not in plan.only:
            continue
        log(f"  {name}...")
        out[name] = await scenario()
        brief = {
            k: out[name][k]
            for k in ("requests_per_s", "p50_ms", "p99_ms", "errors", "missed")
            if k in out[name]
        }
        log(f"  {name}: {json.dumps(brief)} cpu {json.dumps(out[name]['cpu_s'])}")
        await trio.sleep(1.0)
    out["server_output_tail"] = {
        n: s.lines[-5:] for n, s in lay.nodes.items() if any(line.strip() for line in s.lines)
    }
    return out


async def main_async(layouts: list[str], base: Path, plan: Plan) -> dict[str, Any]:
    """Run every layout; one document."""
    results: dict[str, Any] = {
        "bench": "cluster_nodes",
        "python": platform.python_version(),
        "trio": trio.__version__,
        "cpus": CPUS,
        "plan": plan.__dict__,
        "connections": CONNECTIONS,
        "client_cores": sorted(os.sched_getaffinity(0)),
        "pinning": (
            f"node i (a, b, c) pinned to core i % {CPUS} (every thread); the load generator"
            f" (this process, cores {sorted(os.sched_getaffinity(0))}), PostgreSQL and Redis"
            " unpinned: on this machine nodes, engines and the load generator compete for"
            " the same cores"
        ),
        "load_average_at_start": os.getloadavg(),
        "layouts": {},
    }
    postgres = None
    if any(name != "single" for name in layouts):
        postgres = await trio.to_thread.run_sync(start_postgres)
    try:
        if postgres is not None:
            import psycopg

            with psycopg.connect(postgres.url) as conn:
                results["postgresql"] = conn.execute("SHOW server_version").fetchone()[0]
        for name in layouts:
            log(f"layout {name}...")
            async with layout(name, base, postgres) as lay:
                results["layouts"][name] = await run_layout(lay, plan)
                results["layouts"][name]["load_average_after"] = os.getloadavg()
    finally:
        if postgres is not None:
            await trio.to_thread.run_sync(postgres.close)
    results["summary"] = summary(results["layouts"])
    return results


def summary(layouts: dict[str, Any]) -> dict[str, Any]:
    """The key figures of every layout, for the table in docs/performance.md."""
    out: dict[str, Any] = {}
    for name, figures in layouts.items():
        rows: dict[str, Any] = {}
        for scenario, result in figures.items():
            if not isinstance(result, dict):
                continue
            if "requests_per_s" in result:
                rows[scenario] = {
                    "req_per_s": result["requests_per_s"],
                    "p50_ms": result["p50_ms"],
                    "p99_ms": result["p99_ms"],
                    "errors": result["errors"],
                    "server_cpu_us_per_req": result.get("server_cpu_us_per_request"),
                    "node_core_busy": result.get("node_core_busy"),
                    "client_cpu_s": result["cpu_s"]["client"],
                    "others_cpu_s": result["cpu_s"]["others"],
                }
                if "by_node" in result:
                    rows[scenario]["by_node"] = {
                        node: {k: v for k, v in f.items() if k in {"requests_per_s", "p50_ms",
                               "p99_ms", "cpu_us_per_own_request"}}
                        for node, f in result["by_node"].items()
                    }  # fmt: skip
            elif scenario.startswith("fanout"):
                rows[scenario] = {
                    "home": result["latency_home_watchers"],
                    "other": result["latency_other_watchers"],
                    "missed": result["missed"],
                    "updates_per_s_sent": result["updates_per_s_sent"],
                    "server_cpu_us_per_update": result["server_cpu_us_per_update"],
                    "less_idle": result["server_cpu_us_per_update_less_idle"],
                }
        out[name] = rows
    return out


def main() -> None:
    """Parse flags, run, print JSON."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--layout", choices=LAYOUTS, action="append")
    parser.add_argument("--scenario", choices=SCENARIOS, action="append", help="default: all")
    parser.add_argument("--quick", action="store_true", help="1 s runs, fewer tasks/watchers")
    parser.add_argument("--dir", type=Path, default=Path(tempfile.gettempdir()))
    args = parser.parse_args()
    if args.quick:
        plan = Plan(
            seconds=1.0, warmup=0.5, tasks=100, watchers=60, updates=40, rate=100, settle=1,
            idle=1,
        )  # fmt: skip
    else:
        plan = Plan(
            seconds=args.seconds, warmup=1.0, tasks=1000, watchers=300, updates=200, rate=100,
            settle=3, idle=5,
        )  # fmt: skip
    plan.only = tuple(args.scenario or ())
    results = trio.run(main_async, args.layout or LAYOUTS, args.dir, plan)
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
