"""The SDK's exactly-once retries against a real crash: a burst of mutating calls from
concurrent workers (threads of a blocking ``Client``, asyncio tasks, trio tasks), the
server killed with SIGKILL (or stopped with SIGTERM) in the middle of it and restarted on
the same port and data directory. Every call returns success, and every task's history
holds each call's effect exactly once, in the order the worker made them, and every
answer the SDK returned names the event its call made.

Two kinds of worker share the burst:

- *direct* workers talk to the server's port: at the kill their calls are wherever they
  are (sent, applied, answered), then meet refused connections until the restart;
- *held* workers talk through :class:`HoldingProxy`, which, once armed, forwards their
  requests but withholds the answers to their batches. The server answers only after it
  committed the change and its idempotency record, so when every held worker has an
  answer withheld, each has a batch that the server applied but the caller never heard
  of. The server is stopped only then: the SDK's retry of each such batch (same
  ``Idempotency-Key``) must be answered from the record (``Idempotent-Replayed: true``),
  not applied twice.

The kill is triggered by counters and events (answers returned, answers withheld), never
by sleeping.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import re
import threading
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import trio

from spectral.client import AsyncClient, CircuitBreaker, Client, RetryPolicy
from tests.conftest import ADMIN_KEY, SERVE_ENV
from tests.procs import running
from tests.test_client_watch import fixed_port_argv, free_port

#: Workers calling the server directly, and through the holding proxy.
DIRECT = 4
HELD = 2
#: Rounds per worker: update_progress, add_event and (see Burst.batches)
#: batch_update_progress of 2 items; then complete.
ROUNDS = 10
#: Calls answered before the proxy starts withholding answers (and the kill follows).
ARM_AFTER = 40
#: A generous guard for the whole scenario: nothing here should come close.
GUARD = 120
#: Long enough to cover the restart; quick retries once the server is back.
RETRY = RetryPolicy(deadline=60.0, base=0.02, cap=0.25)
KEY_HEADER = re.compile(rb"idempotency-key: *([!-~]+)", re.IGNORECASE)


def breaker() -> CircuitBreaker:
    """A breaker that never opens: during the outage every caller keeps retrying."""
    return CircuitBreaker(threshold=1_000_000)


# -- what each worker does -----------------------------------------------------------------


def script(task_id: str, batches: bool) -> list[tuple[str, tuple[Any, ...], dict[str, Any]]]:
    """The worker's logical calls, in order: (method, args, kwargs)."""
    steps: list[tuple[str, tuple[Any, ...], dict[str, Any]]] = [
        ("create_task", (task_id,), {"metadata": {"worker": task_id}})
    ]
    for r in range(ROUNDS):
        steps.append(("update_progress", (task_id, 3 * r + 1, f"{task_id}/p{r}"), {}))
        steps.append(("add_event", (task_id, f"{task_id}/e{r}"), {}))
        if batches:
            items = [
                {"taskId": task_id, "progress": 3 * r + 2 + i, "message": f"{task_id}/b{r}.{i}"}
                for i in range(2)
            ]
            steps.append(("batch_update_progress", (items,), {}))
    steps.append(("complete", (task_id,), {}))
    return steps


def expected_history(task_id: str, batches: bool) -> list[tuple[str, str | None, float | None]]:
    """(eventType, message, progress) of every event after ``created``, in order."""
    events: list[tuple[str, str | None, float | None]] = []
    for r in range(ROUNDS):
        events.append(("progress", f"{task_id}/p{r}", 3 * r + 1))
        events.append(("log", f"{task_id}/e{r}", None))
        if batches:
            events.extend(("progress", f"{task_id}/b{r}.{i}", 3 * r + 2 + i) for i in range(2))
    events.append(("success", "Task completed", 100))
    return events


def seqs_of(method: str, answer: Any) -> list[int]:
    """The seqs a call's answer reports (a batch: one per item; -1 for an item not ok)."""
    if method == "batch_update_progress":
        return [item.task.seq if item.ok and item.task else -1 for item in answer]
    return [answer.seq]


TASK_IDS = [f"direct-{n}" for n in range(DIRECT)] + [f"held-{n}" for n in range(HELD)]


# -- the proxy ---------------------------------------------------------------------------


@dataclass
class HoldingProxy:
    """A TCP relay to ``127.0.0.1:port`` that, once ``armed``, withholds the answers to
    ``batchUpdateProgress``: it keeps the request's Idempotency-Key in ``held`` and, on
    ``release``, closes the caller's connection without a byte of the answer."""

    port: int
    armed: bool = False
    held: list[str] = field(default_factory=list)
    held_changed: trio.Event = field(default_factory=trio.Event)
    released: trio.Event = field(default_factory=trio.Event)

    def release(self) -> None:
        """Drop every withheld answer's connection; forward answers again."""
        self.armed = False
        self.released.set()

    async def relay(self, downstream: trio.SocketStream) -> None:
        """One caller's connection (requests one after another, as httpx sends them)."""
        try:
            upstream = await trio.open_tcp_stream("127.0.0.1", self.port)
        except OSError:
            await downstream.aclose()  # the server is down: the caller sees a disconnect
            return
        request = bytearray()
        answering = False

        async def up() -> None:
            nonlocal answering
            while chunk := await downstream.receive_some(65536):
                if answering:
                    request.clear()  # a new request after the last answer
                    answering = False
                request.extend(chunk)
                await upstream.send_all(chunk)

        async def down() -> None:
            nonlocal answering
            while chunk := await upstream.receive_some(65536):
                if self.armed and request.startswith(b"POST /tasks/batchUpdateProgress "):
                    match = KEY_HEADER.search(bytes(request))
                    assert match is not None, bytes(request)
                    self.held.append(match.group(1).decode())
                    self.held_changed.set()
                    await self.released.wait()
                    return
                answering = True
                await downstream.send_all(chunk)

        async with upstream, downstream, trio.open_nursery() as nursery:

            async def side(run: Callable[[], Awaitable[None]]) -> None:
                with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
                    await run()
                nursery.cancel_scope.cancel()  # either side ending ends the connection

            nursery.start_soon(side, up)
            nursery.start_soon(side, down)


# -- the burst -----------------------------------------------------------------------------


@dataclass
class Burst:
    """Counters the workers report to (from the trio thread) and what they saw."""

    #: Whether the direct workers send batches too (held workers always do).
    direct_batches: bool
    answered: int = 0
    enough: trio.Event = field(default_factory=trio.Event)
    seqs: dict[str, list[int]] = field(default_factory=dict)
    errors: list[tuple[str, str, BaseException]] = field(default_factory=list)
    finished: set[str] = field(default_factory=set)
    all_done: trio.Event = field(default_factory=trio.Event)
    #: Idempotency-Key -> attempts sent; keys answered from a record.
    attempts: dict[str, int] = field(default_factory=dict)
    replayed: set[str] = field(default_factory=set)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def batches(self, task_id: str) -> bool:
        """Whether this worker sends batch_update_progress."""
        return task_id.startswith("held-") or self.direct_batches

    def script(self, task_id: str) -> list[tuple[str, tuple[Any, ...], dict[str, Any]]]:
        """This worker's calls."""
        return script(task_id, self.batches(task_id))

    @property
    def calls(self) -> int:
        """Logical calls in the burst."""
        return sum(len(self.script(task_id)) for task_id in TASK_IDS)

    def returned(self, task_id: str, method: str, answer: Any) -> None:
        self.seqs.setdefault(task_id, []).extend(seqs_of(method, answer))
        self.answered += 1
        if self.answered >= ARM_AFTER:
            self.enough.set()

    def failed(self, task_id: str, method: str, error: BaseException) -> None:
        self.errors.append((task_id, method, error))

    def done(self, task_id: str) -> None:
        self.finished.add(task_id)
        if len(self.finished) == len(TASK_IDS):
            self.all_done.set()

    # httpx event hooks (any thread): count attempts per key, note replayed answers

    def on_request(self, request: Any) -> None:
        key = request.headers.get("idempotency-key")
        if key is not None:
            with self.lock:
                self.attempts[key] = self.attempts.get(key, 0) + 1

    def on_response(self, response: Any) -> None:
        key = response.request.headers.get("idempotency-key")
        if key is not None and response.headers.get("idempotent-replayed") == "true":
            with self.lock:
                self.replayed.add(key)


def hooked_sync(client: Client, burst: Burst) -> Client:
    client._http.event_hooks = {"request": [burst.on_request], "response": [burst.on_response]}
    return client


def hooked_async(client: AsyncClient, burst: Burst) -> AsyncClient:
    async def on_request(request: Any) -> None:
        burst.on_request(request)

    async def on_response(response: Any) -> None:
        burst.on_response(response)

    client._http.event_hooks = {"request": [on_request], "response": [on_response]}
    return client


def run_sync_workers(burst: Burst, direct_url: str, proxy_url: str, token: Any) -> None:
    """Blocking ``Client``s, one thread per worker (a client each for direct and held)."""
    report = functools.partial(trio.from_thread.run_sync, trio_token=token)
    clients = {
        url: hooked_sync(Client(url, ADMIN_KEY, retry=RETRY, breaker=breaker()), burst)
        for url in (direct_url, proxy_url)
    }

    def worker(task_id: str, client: Client) -> None:
        try:
            for method, args, kwargs in burst.script(task_id):
                try:
                    answer = getattr(client, method)(*args, **kwargs)
                except Exception as error:  # reported, and the test fails on it
                    report(burst.failed, task_id, method, error)
                    return
                report(burst.returned, task_id, method, answer)
        finally:
            report(burst.done, task_id)

    threads = [
        threading.Thread(target=worker, args=(task_id, clients[url]))
        for task_id, url in urls_of(direct_url, proxy_url)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for client in clients.values():
        client.close()


async def async_workers(
    burst: Burst,
    direct_url: str,
    proxy_url: str,
    report: Callable[..., Any],
    gather: Callable[[list[Callable[[], Awaitable[None]]]], Awaitable[None]],
) -> None:
    """``AsyncClient``s, one task per worker (under asyncio or trio, as ``gather`` runs
    them); ``report`` calls a Burst method in the trio thread."""
    clients = {
        url: hooked_async(AsyncClient(url, ADMIN_KEY, retry=RETRY, breaker=breaker()), burst)
        for url in (direct_url, proxy_url)
    }

    async def worker(task_id: str, client: AsyncClient) -> None:
        try:
            for method, args, kwargs in burst.script(task_id):
                try:
                    answer = await getattr(client, method)(*args, **kwargs)
                except Exception as error:  # reported, and the test fails on it
                    report(burst.failed, task_id, method, error)
                    return
                report(burst.returned, task_id, method, answer)
        finally:
            report(burst.done, task_id)

    await gather(
        [
            functools.partial(worker, task_id, clients[url])
            for task_id, url in urls_of(direct_url, proxy_url)
        ]
    )
    for client in clients.values():
        await client.aclose()


def urls_of(direct_url: str, proxy_url: str) -> list[tuple[str, str]]:
    """Each worker's task id and the URL it calls."""
    return [(t, proxy_url if t.startswith("held-") else direct_url) for t in TASK_IDS]


async def run_trio_workers(burst: Burst, direct_url: str, proxy_url: str) -> None:
    async def gather(jobs: list[Callable[[], Awaitable[None]]]) -> None:
        async with trio.open_nursery() as nursery:
            for job in jobs:
                nursery.start_soon(job)

    def report(method: Callable[..., Any], *args: Any) -> None:
        method(*args)

    await async_workers(burst, direct_url, proxy_url, report, gather)


def run_asyncio_workers(burst: Burst, direct_url: str, proxy_url: str, token: Any) -> None:
    async def gather(jobs: list[Callable[[], Awaitable[None]]]) -> None:
        await asyncio.gather(*(job() for job in jobs))

    def report(method: Callable[..., Any], *args: Any) -> None:
        trio.from_thread.run_sync(method, *args, trio_token=token)

    asyncio.run(async_workers(burst, direct_url, proxy_url, report, gather))


async def start_workers(
    nursery: trio.Nursery, mode: str, burst: Burst, direct_url: str, proxy_url: str
) -> None:
    token = trio.lowlevel.current_trio_token()
    if mode == "sync":
        run = functools.partial(run_sync_workers, burst, direct_url, proxy_url, token)
        nursery.start_soon(trio.to_thread.run_sync, run)
    elif mode == "asyncio":
        run = functools.partial(run_asyncio_workers, burst, direct_url, proxy_url, token)
        nursery.start_soon(trio.to_thread.run_sync, run)
    else:
        nursery.start_soon(run_trio_workers, burst, direct_url, proxy_url)


# -- the test ------------------------------------------------------------------------------


async def full_history(client: AsyncClient, task_id: str) -> list[Any]:
    """Every event of the task, paging 7 at a time."""
    events: list[Any] = []
    after: int | None = 0
    while after is not None:
        page = await client.history(task_id, after=after, limit=7)
        events.extend(page.events)
        after = page.next_after
    return events


@pytest.mark.parametrize(
    ("mode", "stop"),
    [("sync", "kill"), ("asyncio", "kill"), ("trio", "kill"), ("sync", "terminate")],
)
async def test_a_burst_across_a_crash_applies_every_call_once(
    tmp_path: Path, mode: str, stop: str
) -> None:
    """Every worker sends batches too: a batch cut by kill -9 between its tasks' commits
    and the registry's record is answered from the tasks' own records when retried."""
    await burst_across_a_stop(tmp_path, mode, stop, direct_batches=True)


async def burst_across_a_stop(tmp_path: Path, mode: str, stop: str, direct_batches: bool) -> None:
    """The scenario: a burst, the server stopped (``kill`` or ``terminate``) in its
    middle and restarted; then every call once in every history."""
    port = free_port()
    argv = fixed_port_argv(tmp_path / "data", port)
    proxy = HoldingProxy(port)
    burst = Burst(direct_batches)
    direct_url = f"http://127.0.0.1:{port}"
    with trio.fail_after(GUARD):
        async with trio.open_nursery() as nursery:
            listeners = await nursery.start(
                functools.partial(trio.serve_tcp, host="127.0.0.1"), proxy.relay, 0
            )
            proxy_url = f"http://127.0.0.1:{listeners[0].socket.getsockname()[1]}"
            async with running(argv, env=SERVE_ENV) as server:
                assert server.url == direct_url
                await start_workers(nursery, mode, burst, direct_url, proxy_url)
                await burst.enough.wait()
                proxy.armed = True
                while len(proxy.held) < HELD:  # each held worker: applied, unanswered
                    proxy.held_changed = trio.Event()
                    await proxy.held_changed.wait()
                answered_before = burst.answered
                # the workers whose calls the stop interrupts: at least one direct one
                interrupted = set(TASK_IDS) - burst.finished
                assert interrupted & {t for t in TASK_IDS if t.startswith("direct-")}
                if stop == "kill":
                    server.kill()  # SIGKILL: the direct workers' calls are in flight
                    await server.wait()
                else:
                    server.terminate()
                    assert await server.wait() == 0
                proxy.release()
            async with running(argv, env=SERVE_ENV) as server:
                assert server.url == direct_url
                await burst.all_done.wait()
                async with AsyncClient(server.url, ADMIN_KEY) as client:
                    histories = {t: await full_history(client, t) for t in TASK_IDS}
                    tasks = {t: await client.get_task(t) for t in TASK_IDS}
            nursery.cancel_scope.cancel()

    assert burst.errors == [], burst.errors
    assert answered_before < burst.answered == burst.calls
    # one key per logical call, the same for all its attempts
    assert len(burst.attempts) == burst.calls
    # the held calls were applied before the stop and answered from their record after
    assert len(set(proxy.held)) == HELD
    assert set(proxy.held) <= burst.replayed
    assert all(burst.attempts[key] >= 2 for key in proxy.held)
    # every interrupted worker retried a call (sent again with its key, or first refused)
    retried = {key for key, sent in burst.attempts.items() if sent > 1}
    assert len(retried) >= len(interrupted)
    for task_id in TASK_IDS:
        events = histories[task_id]
        assert [e.seq for e in events] == list(range(1, len(events) + 1)), task_id
        assert events[0].event_type.value == "created"
        got = [(e.event_type.value, e.message, e.progress) for e in events[1:]]
        assert got == expected_history(task_id, burst.batches(task_id)), task_id
        # every answer the SDK returned names the one event its call made
        assert burst.seqs[task_id] == [e.seq for e in events], task_id
        task = tasks[task_id]
        assert (task.status.value, task.progress, task.seq) == ("success", 100, len(events))
        assert task.metadata == {"worker": task_id}
