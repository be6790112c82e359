"""HTTP benchmarks with a native load generator (wrk), client and server on separate cores.

How to run it::

    apt-get install -y wrk                                  # Debian's wrk 4.1 (checked)
    .venv/bin/python bench/http_wrk.py --dir /work          # all scenarios, twice: ~8 min
    .venv/bin/python bench/http_wrk.py --dir /work --quiet-wait 120   # on a shared machine
    .venv/bin/python bench/http_wrk.py --quick              # a short run (~1 min)
    .venv/bin/python bench/http_wrk.py --scenario mutate --scenario read --duration 20

JSON on stdout, progress on stderr. It starts the real ``spectral serve`` (with an admin
key: admins are never rate limited) on a fresh data directory under ``--dir`` (default
/work when it exists, else the system's temporary directory; the JSON names the
filesystem, which should be a disk, not tmpfs), pinned to one core (``taskset -c 1``),
and drives it with ``taskset -c 0 wrk`` and the Lua scripts of bench/wrk/, so that the
load generator is not the limit: each figure comes with the share of its core that the
server and the client used (``server_cpu_share`` near 1.0 means the server is the
limit). Each HTTP scenario is also run against bench/lean_echo.py (trio + httptools
answering the same requests with the same JSON shapes, no storage) in the same
repetition, on the same core, with the same script and connections: ``vs_echo`` is the
ratio to that ceiling. ``--repeat`` (default 2) runs everything again on a fresh server.

Scenarios (``--scenario NAME``, repeatable; default all):

- ``mutate``: POST /tasks/updateProgress over 100 and over 1,000 tasks, progress varying;
- ``read``: GET /tasks/{id} over 100 tasks;
- ``create``: POST /tasks/create, a new id per request (each task its own SQLite file);
- ``batch``: POST /tasks/batchUpdateProgress, 1,000 items over 10 tasks: updates/s;
- ``fanout``: 1,000 WebSocket watchers of one task receiving 200 updates sent back to
  back, and 10,000 watchers receiving 20 updates 0.5 s apart: latency from each update's
  send to each receipt (p50/p99/max), missed messages, server memory per idle socket,
  the time for all the updates, the server's and the readers' CPU. The watchers are
  read by bench/fanout_readers.py, a separate process pinned to the client's core:
  one epoll loop over every socket, no task per socket, no JSON decoding, so that
  the readers cost less than the server they measure.
- ``socketio``: the same 1,000-watcher fan-out (200 updates back to back) twice, each on
  a fresh server: native WebSocket watchers, then Socket.IO connections on the
  WebSocket transport following every task (bench/socketio_readers.py, the same epoll
  loop speaking Engine.IO 4 / Socket.IO 5); ``vs_native_cpu_per_delivery`` is the
  ratio of the server's CPU per delivery (the target: at most 1.2).

The connection count (``--connections``, default 32 keep-alive; ``--batch-connections``,
default 8) and ``--duration`` are flags. Every answer's status is checked by wrk's
``response()`` hook (bench/wrk/common.lua), and every batch item's ``ok``: any non-2xx
answer, socket error, timeout or failed item marks the scenario ``"valid": false``,
is printed on stderr with the first bad answer, and makes the script exit 1.
Server CPU comes from /proc/PID/stat before and after each measurement; /proc/stat
tells how busy each pinned core was, and ``server_core_others`` how much of the server's
core other processes took (near 0: a clean measurement). ``--quiet-wait S`` waits up
to S seconds before each measurement for both cores to idle.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import resource
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import trio

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.http_load import (  # noqa: E402
    BENCH_KEY,
    SERVE_ENV,
    Connection,
    create_tasks,
    frames,
    log,
    open_watcher,
    percentiles,
    rss_kib,
    serve_argv,
)
from tests.procs import Server, running  # noqa: E402

WRK_DIR = Path(__file__).resolve().parent / "wrk"
SCENARIOS = ["mutate", "read", "create", "batch", "fanout", "socketio"]
#: Tasks created before the measurements: t-00000 ... t-00999.
PREFIX = "t-"
TASKS = 1000
#: Which echo measurement each HTTP scenario is compared with.
ECHO_OF = {
    "mutate_100": "echo_update",
    "mutate_1000": "echo_update",
    "read": "echo_read",
    "create": "echo_create",
    "batch": "echo_batch",
}
INSTALL_WRK = "wrk is not installed: apt-get update && apt-get install -y wrk"


@dataclass
class Bench:
    """What every measurement needs: flags, the pinning, the problems found so far."""

    connections: int
    batch_connections: int
    duration: float
    warmup: float
    threads: int
    client_pin: list[str]
    server_pin: list[str]
    fanouts: list[tuple[int, int, float]]
    #: The pinned cores (client, server), or None when not pinned.
    cores: tuple[int, int] | None
    #: Seconds to wait, before each measurement, for the cores to be quiet (0: don't).
    quiet_wait: float = 0.0
    problems: list[str] = field(default_factory=list)


# -- measuring --------------------------------------------------------------------


def cpu_seconds(pid: int) -> float:
    """User + system CPU of a process (all its threads), seconds."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def process_state(pid: int) -> str:
    """The scheduler state letter of a process's main thread (/proc/PID/stat)."""
    return Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0]


class StateSampler:
    """Samples the scheduler state of a process's main thread (the server's event loop)."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.counts: dict[str, int] = {}

    async def run(self) -> None:
        """Every 20 ms until cancelled: R running or runnable, S asleep, D waiting on disk."""
        while True:
            state = process_state(self.pid)
            self.counts[state] = self.counts.get(state, 0) + 1
            await trio.sleep(0.02)

    def report(self) -> dict[str, float]:
        """The share of samples in each state; ``D`` well above 0 means the loop blocked on I/O."""
        total = sum(self.counts.values()) or 1
        return {state: round(n / total, 3) for state, n in sorted(self.counts.items())}


def children_cpu_seconds() -> float:
    """User + system CPU of this process's finished children, seconds."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def core_times(core: int) -> tuple[int, int, int]:
    """Jiffies of one core since boot (/proc/stat): processes (steal included), interrupts, all."""
    for line in Path("/proc/stat").read_text().splitlines():
        if line.startswith(f"cpu{core} "):
            user, nice, system, idle, iowait, irq, softirq, steal = map(int, line.split()[1:9])
            processes, interrupts = user + nice + system + steal, irq + softirq
            return processes, interrupts, processes + interrupts + idle + iowait
    raise RuntimeError(f"no core {core} in /proc/stat")


class CoreMeter:
    """How busy the pinned cores were from its creation to :meth:`report`."""

    def __init__(self, cores: tuple[int, int] | None) -> None:
        self.cores = cores or ()
        self.before = [core_times(core) for core in self.cores]

    def shares(self) -> list[tuple[float, float]]:
        """Per core (client, server): the share taken by processes, and by interrupts."""
        out = []
        for core, (processes, interrupts, total) in zip(self.cores, self.before, strict=True):
            now = core_times(core)
            elapsed = (now[2] - total) or 1
            out.append(((now[0] - processes) / elapsed, (now[1] - interrupts) / elapsed))
        return out

    def report(self, server_share: float) -> dict[str, float]:
        """Busy shares, and the server core's time taken by processes other than the server.

        ``server_core_others`` well above 0 means another process ran on the server's core:
        that measurement is not clean. ``server_core_interrupts`` is mostly the kernel's
        loopback network work for the server's sockets.
        """
        if not self.cores:
            return {}
        (client, client_irq), (server, server_irq) = self.shares()
        return {
            "client_core_busy": round(client + client_irq, 2),
            "server_core_busy": round(server + server_irq, 2),
            "server_core_interrupts": round(server_irq, 2),
            "server_core_others": round(max(0.0, server - server_share), 2),
        }


async def wait_quiet(bench: Bench) -> float:
    """Wait (at most ``bench.quiet_wait`` s) for both cores to idle 90 % of a second."""
    if not bench.quiet_wait or not bench.cores:
        return 0.0
    started = time.perf_counter()
    while (waited := time.perf_counter() - started) < bench.quiet_wait:
        meter = CoreMeter(bench.cores)
        await trio.sleep(1)
        if all(processes + interrupts < 0.1 for processes, interrupts in meter.shares()):
            return round(waited, 1)
    log(f"the cores are still busy after {bench.quiet_wait} s: measuring anyway")
    return round(waited, 1)


def load_average() -> list[float]:
    """The 1, 5 and 15 minute load averages."""
    return [float(x) for x in Path("/proc/loadavg").read_text().split()[:3]]


def filesystem(path: Path) -> str:
    """The filesystem holding ``path``: type, device and mount point."""
    best = ("?", "?", "/")
    for line in Path("/proc/mounts").read_text().splitlines():
        device, mount, kind = line.split()[:3]
        if str(path.resolve()).startswith(mount) and len(mount) >= len(best[2]):
            best = (kind, device, mount)
    return f"{best[0]} ({best[1]} on {best[2]})"


def pinning(client: int, server: int) -> tuple[list[str], list[str], str]:
    """taskset prefixes for the client and the server, and what was done."""
    cpus = os.sched_getaffinity(0)
    if shutil.which("taskset") is None:
        return [], [], "none: taskset not found (apt-get install util-linux)"
    if client not in cpus or server not in cpus or client == server:
        return [], [], f"none: cores {client} and {server} not both available in {sorted(cpus)}"
    os.sched_setaffinity(0, {client})  # this process (watchers, set-up) with the client
    return (
        ["taskset", "-c", str(client)],
        ["taskset", "-c", str(server)],
        f"client (wrk, this process) on core {client}, server on core {server}",
    )


def problems_of(name: str, result: dict[str, Any]) -> list[str]:
    """What makes a measurement worthless: non-2xx answers, socket errors, failed items."""
    out = []
    if result["non2xx"]:
        out.append(f"{result['non2xx']} answers not 2xx")
    if result["failed_items"]:
        out.append(f"{result['failed_items']} batch items failed")
    sockets = {k: v for k, v in result["socket_errors"].items() if v}
    if sockets:
        out.append(f"socket errors {sockets}")
    if result["requests"] == 0:
        out.append("no answer at all")
    if out and result["first_error"]:
        out.append(f"first: {result['first_error'][:300]}")
    return [f"{name}: " + "; ".join(out)] if out else []


async def wrk(
    bench: Bench,
    url: str,
    script: str,
    pid: int,
    seconds: float,
    connections: int,
    env: dict[str, str],
) -> dict[str, Any]:
    """One wrk run of bench/wrk/SCRIPT.lua; its figures with the server's CPU."""
    argv = [
        *bench.client_pin, "wrk", f"-t{bench.threads}", f"-c{connections}",
        f"-d{max(1, round(seconds))}s", "--timeout", "30s",
        "-s", str(WRK_DIR / f"{script}.lua"), url,
    ]  # fmt: skip
    full_env = {**os.environ, "BENCH_KEY": BENCH_KEY, **env}
    load = load_average()[0]
    server_before, client_before = cpu_seconds(pid), children_cpu_seconds()
    meter = CoreMeter(bench.cores)
    states = StateSampler(pid)
    started = time.perf_counter()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(states.run)
        done = await trio.run_process(argv, capture_stdout=True, capture_stderr=True, env=full_env)
        nursery.cancel_scope.cancel()
    wall = time.perf_counter() - started
    server_cpu = cpu_seconds(pid) - server_before
    client_cpu = children_cpu_seconds() - client_before
    lines = [line for line in done.stdout.decode().splitlines() if line.startswith("WRKJSON ")]
    if not lines:
        raise RuntimeError(f"wrk printed no figures:\n{done.stdout.decode()}{done.stderr.decode()}")
    raw = json.loads(lines[-1].removeprefix("WRKJSON "))
    elapsed = raw["duration_us"] / 1e6
    units = raw["ok_items"] if script == "batch" else raw["requests"]
    return {
        "connections": connections,
        "requests": raw["requests"],
        "requests_per_s": round(raw["requests"] / elapsed),
        **(
            {"updates": units, "updates_per_s": round(units / elapsed)} if script == "batch" else {}
        ),
        "p50_ms": raw["p50_us"] / 1000,
        "p90_ms": raw["p90_us"] / 1000,
        "p99_ms": raw["p99_us"] / 1000,
        "max_ms": raw["max_us"] / 1000,
        "server_cpu_s": round(server_cpu, 2),
        "server_cpu_share": round(server_cpu / wall, 2),
        f"server_cpu_us_per_{'update' if script == 'batch' else 'request'}": (
            round(1e6 * server_cpu / units, 1) if units else None
        ),
        "client_cpu_share": round(client_cpu / wall, 2),
        **meter.report(server_cpu / wall),
        "server_loop_states": states.report(),
        "load_avg_1m": load,
        "non2xx": raw["non2xx"],
        "failed_items": raw["failed_items"],
        "socket_errors": {
            k: raw[k] for k in ("connect_errors", "read_errors", "write_errors", "timeouts")
        },
        "first_error": raw["first_error"].strip(),
    }


async def measure(
    bench: Bench, name: str, server: Server, script: str, tasks: int = 100
) -> dict[str, Any]:
    """A warm-up then the measured wrk run of one scenario; problems recorded, not hidden."""
    connections = bench.batch_connections if script == "batch" else bench.connections
    runs = []
    waited = await wait_quiet(bench)
    for seconds in (bench.warmup, bench.duration):
        env = {"BENCH_TASKS": str(tasks), "BENCH_PREFIX": PREFIX}
        if script == "create":  # ids never seen before, in every run
            env["BENCH_PREFIX"] = f"c{secrets.token_hex(4)}-"
        runs.append(
            await wrk(bench, server.url, script, server.process.pid, seconds, connections, env)
        )
    warm, result = runs
    result["waited_for_quiet_s"] = waited
    found = problems_of(f"{name} (warm-up)", warm) + problems_of(name, result)
    result["valid"] = not found
    for problem in found:
        log(f"INVALID {problem}")
    bench.problems.extend(found)
    log(f"{name}: {json.dumps(result)}")
    return result


# -- fan-out ----------------------------------------------------------------------


async def warm_watcher(url: str, path: str) -> None:
    """One watcher until its snapshot, then closed: the server's WebSocket path is warm."""
    stream, rest = await open_watcher(url, path)
    buffer = bytearray(rest)
    while not any(b'"snapshot"' in payload for payload in frames(buffer)):
        buffer += await stream.receive_some(65536)
    await stream.aclose()


async def fanout(
    bench: Bench,
    server: Server,
    watchers: int,
    updates: int,
    gap: float,
    *,
    socketio: bool = False,
) -> dict[str, Any]:
    """``watchers`` on one new task; ``updates`` sent ``gap`` apart (0: back to back).

    Native WebSocket watchers (bench/fanout_readers.py), or with ``socketio`` Socket.IO
    connections following every task (bench/socketio_readers.py). Update ``step`` sends
    progress ``step / 10``, which tells Socket.IO events apart (they carry no seq).
    """
    name = f"{'socketio' if socketio else 'fanout'}_{watchers}"
    waited = await wait_quiet(bench)
    task_id = f"fan-{watchers}-{secrets.token_hex(3)}"
    pid = server.process.pid
    await create_tasks(server.url, [task_id], 1)
    await warm_watcher(server.url, f"/ws/task/{task_id}")
    rss_before = rss_kib(pid)
    sent_at: dict[int, float] = {}
    total = watchers * updates
    host, port = server.url.removeprefix("http://").rsplit(":", 1)
    readers, target = ("fanout_readers.py", f"/ws/task/{task_id}")
    if socketio:
        readers, target = ("socketio_readers.py", task_id)
    readers_argv = [
        *bench.client_pin, sys.executable, str(ROOT / "bench" / readers),
        host, port, target, str(watchers), str(updates),
    ]  # fmt: skip
    readers = await trio.lowlevel.open_process(
        readers_argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE
    )
    assert readers.stdin is not None and readers.stdout is not None
    output = bytearray()
    while b"\n" not in output:
        chunk = await readers.stdout.receive_some(65536)
        if not chunk:
            raise RuntimeError("the fan-out readers ended before they were ready")
        output += chunk
    if not output.startswith(b"ready"):
        raise RuntimeError(f"the fan-out readers: {bytes(output[:200])!r}")
    del output[: output.index(b"\n") + 1]
    await trio.sleep(1.0)  # let the connections settle before reading the memory
    rss_idle = rss_kib(pid)
    bad_answers: list[str] = []
    conn = await Connection.open(server.url)
    load = load_average()[0]
    server_before = cpu_seconds(pid)
    meter = CoreMeter(bench.cores)
    states = StateSampler(pid)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(states.run)
        first_send = time.perf_counter()
        for step in range(updates):
            seq = step + 2  # the task's snapshot is seq 1
            sent_at[seq] = time.perf_counter()
            body = {"taskId": task_id, "progress": step / 10}
            status, data = await conn.request("POST", "/tasks/updateProgress", body)
            if status != 200 or json.loads(data)["task"]["seq"] != seq:
                bad_answers.append(f"{status} {data[:200]!r}")
            if gap:
                await trio.sleep(gap)
        sending = time.perf_counter() - first_send

        async def collect() -> None:
            while chunk := await readers.stdout.receive_some(1 << 20):
                output.extend(chunk)

        with trio.move_on_after(60) as waiting:
            await collect()
        if waiting.cancelled_caught:  # some deliveries never came: stop the readers
            await readers.stdin.send_all(b"stop\n")
            await collect()
        server_cpu = cpu_seconds(pid) - server_before
        window = time.perf_counter() - first_send
        nursery.cancel_scope.cancel()
    await readers.wait()
    report = json.loads(output)
    receipts = report["receipts"]
    latencies = [when - sent_at[int(seq)] for seq, times in receipts.items() for when in times]
    last_receipt = max((max(times) for times in receipts.values() if times), default=first_send)
    closes = report["closes"]
    readers_cpu = report["cpu_s"]
    await conn.aclose()
    await trio.sleep(2)  # let the server reap the closed sockets
    delivered = len(latencies)
    result = {
        "watchers": watchers,
        "updates": updates,
        "gap_s": gap,
        "deliveries": delivered,
        "missed": total - delivered,
        "closed_early": closes,
        **percentiles(latencies),
        # Back to back: from the first update's send to the last watcher's last receipt.
        "seconds_for_all_updates": round(last_receipt - first_send, 2) if not gap else None,
        "seconds_sending": round(sending, 2),
        "server_kib_per_idle_ws": round((rss_idle - rss_before) / watchers, 1),
        "server_cpu_s": round(server_cpu, 2),
        "server_cpu_us_per_delivery": round(1e6 * server_cpu / delivered, 1) if delivered else None,
        "readers_cpu_s": round(readers_cpu, 2),
        **meter.report(server_cpu / window),
        "server_loop_states": states.report(),
        "load_avg_1m": load,
        "update_errors": len(bad_answers),
        "waited_for_quiet_s": waited,
    }
    found = (
        [f"{name}: {len(bad_answers)} updates failed; first: {bad_answers[0]}"]
        if bad_answers
        else []
    )
    result["valid"] = not found
    for problem in found:
        log(f"INVALID {problem}")
    bench.problems.extend(found)
    log(f"{name}: {json.dumps(result)}")
    return result


# -- a repetition -----------------------------------------------------------------


@asynccontextmanager
async def spectral(bench: Bench, base: Path, tasks: int) -> AsyncIterator[Server]:
    """``spectral serve`` on the server core, a fresh data dir under ``base``, ``tasks`` tasks."""
    with tempfile.TemporaryDirectory(dir=base, prefix="bench-wrk-") as data:
        async with running([*bench.server_pin, *serve_argv(Path(data))], env=SERVE_ENV) as server:
            log(f"spectral on {server.url} (pid {server.process.pid}), data in {data}")
            await create_tasks(server.url, [f"{PREFIX}{n:05d}" for n in range(tasks)])
            yield server


async def repetition(bench: Bench, base: Path, names: list[str]) -> dict[str, Any]:
    """Echo then spectral, every chosen scenario once."""
    out: dict[str, Any] = {}
    echoes = [("echo_update", "mutate"), ("echo_read", "read"), ("echo_create", "create")]
    echoes.append(("echo_batch", "batch"))
    echoes = [(name, script) for name, script in echoes if script in names]
    if echoes:
        echo_argv = [*bench.server_pin, sys.executable, str(ROOT / "bench" / "lean_echo.py")]
        async with running(echo_argv) as echo:
            for name, script in echoes:
                out[name] = await measure(bench, name, echo, script)
    http = [
        ("mutate_100", "mutate", 100),
        ("mutate_1000", "mutate", 1000),
        ("read", "read", 100),
        ("batch", "batch", 100),
        ("create", "create", 100),
    ]
    http = [row for row in http if row[1] in names]
    if http:
        async with spectral(bench, base, TASKS) as server:
            for name, script, tasks in http:
                out[name] = await measure(bench, name, server, script, tasks)
                ceiling = out.get(ECHO_OF[name])
                if ceiling:
                    key = "updates_per_s" if script == "batch" else "requests_per_s"
                    out[name]["vs_echo"] = round(out[name][key] / ceiling[key], 3)
    if "fanout" in names:
        # A fresh server each: its memory growth is then the watchers' alone.
        for watchers, updates, gap in bench.fanouts:
            log(f"fanout: {watchers} watchers, {updates} updates, gap {gap} s...")
            async with spectral(bench, base, 0) as server:
                out[f"fanout_{watchers}"] = await fanout(bench, server, watchers, updates, gap)
    if "socketio" in names:
        # The same fan-out (1,000 watchers, 200 updates back to back) natively and over
        # Socket.IO, each on a fresh server, in the same repetition.
        watchers, updates = (200, 50) if bench.duration < 10 else (1000, 200)
        for socketio in (False, True):
            log(f"socketio: {watchers} {'Socket.IO' if socketio else 'native'} watchers...")
            async with spectral(bench, base, 0) as server:
                result = await fanout(bench, server, watchers, updates, 0.0, socketio=socketio)
            out[f"{'socketio' if socketio else 'native'}_{watchers}"] = result
        native, sio = out[f"native_{watchers}"], out[f"socketio_{watchers}"]
        if native["server_cpu_us_per_delivery"] and sio["server_cpu_us_per_delivery"]:
            ratio = sio["server_cpu_us_per_delivery"] / native["server_cpu_us_per_delivery"]
            sio["vs_native_cpu_per_delivery"] = round(ratio, 3)
    return out


def summary(runs: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    """The headline figures of each scenario, one entry per repetition."""
    keys = [
        "requests_per_s", "updates_per_s", "vs_echo", "p50_ms", "p99_ms", "max_ms",
        "server_cpu_share", "server_core_busy", "server_core_others", "server_core_interrupts",
        "client_cpu_share", "client_core_busy", "server_cpu_us_per_request",
        "server_cpu_us_per_update", "missed", "seconds_for_all_updates",
        "server_kib_per_idle_ws", "server_cpu_us_per_delivery", "readers_cpu_s", "server_cpu_s",
        "server_loop_states", "load_avg_1m", "waited_for_quiet_s", "vs_native_cpu_per_delivery",
        "valid",
    ]  # fmt: skip
    out: dict[str, list[dict[str, Any]]] = {}
    for run in runs:
        for name, result in run.items():
            out.setdefault(name, []).append({k: result[k] for k in keys if k in result})
    return out


async def main_async(bench: Bench, base: Path, names: list[str], repeat: int) -> dict[str, Any]:
    """Every repetition; the JSON document."""
    runs = []
    for number in range(repeat):
        log(f"repetition {number + 1} of {repeat} (load average {load_average()})")
        runs.append(await repetition(bench, base, names))
    return {"summary": summary(runs), "runs": runs}


def wrk_version() -> str:
    """wrk's version line; exits with the install command when wrk is missing."""
    if shutil.which("wrk") is None:
        sys.exit(INSTALL_WRK)
    done = subprocess.run(["wrk", "-v"], capture_output=True, text=True, check=False)
    return (done.stdout + done.stderr).splitlines()[0].strip()


def default_dir() -> Path:
    """/work when it exists (a disk here), else the system's temporary directory."""
    work = Path("/work")
    return work if work.is_dir() and os.access(work, os.W_OK) else Path(tempfile.gettempdir())


def main() -> None:
    """Parse flags, run, print JSON; exit 1 when any measurement saw an error."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--scenario", choices=SCENARIOS, action="append")
    parser.add_argument("--quick", action="store_true", help="3 s runs, smaller fan-outs, once")
    parser.add_argument("--dir", type=Path, default=default_dir(), help="where data dirs go")
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--batch-connections", type=int, default=8)
    parser.add_argument("--duration", type=float, help="seconds per measurement (default 10)")
    parser.add_argument("--repeat", type=int, help="repetitions (default 2; 1 with --quick)")
    parser.add_argument("--threads", type=int, default=1, help="wrk threads (default 1)")
    parser.add_argument(
        "--quiet-wait",
        type=float,
        default=0,
        help="wait up to this many seconds before each measurement for both cores to idle",
    )
    parser.add_argument("--client-cpu", type=int, default=0)
    parser.add_argument("--server-cpu", type=int, default=1)
    args = parser.parse_args()
    version = wrk_version()
    if importlib.util.find_spec("httptools") is None:
        sys.exit("httptools is missing (bench/lean_echo.py needs it): pip install -e '.[dev]'")
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))  # 10,000 watchers
    client_pin, server_pin, pinned = pinning(args.client_cpu, args.server_cpu)
    cores = (args.client_cpu, args.server_cpu) if server_pin else None
    quick = args.quick
    bench = Bench(
        connections=args.connections,
        batch_connections=args.batch_connections,
        duration=args.duration or (3 if quick else 10),
        warmup=1 if quick else 2,
        threads=args.threads,
        client_pin=client_pin,
        server_pin=server_pin,
        cores=cores,
        quiet_wait=args.quiet_wait,
        fanouts=[(200, 50, 0.0), (1000, 10, 0.5)]
        if quick
        else [(1000, 200, 0.0), (10_000, 20, 0.5)],
    )
    names = args.scenario or SCENARIOS
    repeat = args.repeat or (1 if quick else 2)
    header = {
        "command": " ".join(sys.argv),
        "wrk": version,
        "pinning": pinned,
        "cpus": os.cpu_count(),
        "open_files": hard,
        "data_dir": f"{args.dir} on {filesystem(args.dir)}",
        "connections": bench.connections,
        "batch_connections": bench.batch_connections,
        "duration_s": bench.duration,
        "repeat": repeat,
        "load_avg_at_start": load_average(),
    }
    log(json.dumps(header))
    results = {**header, **trio.run(main_async, bench, args.dir, names, repeat)}
    results["load_avg_at_end"] = load_average()
    results["problems"] = bench.problems
    print(json.dumps(results, indent=2))
    if bench.problems:
        sys.exit("INVALID: " + " | ".join(bench.problems))


if __name__ == "__main__":
    main()
