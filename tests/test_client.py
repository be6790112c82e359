"""The SDK (spectral.client) against a real server, under trio, asyncio and blocking;
its retry rules and circuit breaker on their own; its table of methods against the
server's table of operations."""

from __future__ import annotations

import asyncio
import functools
import random
import subprocess
import sys
import time
from datetime import datetime
from typing import Any

import httpx
import pytest
import trio

from spectral.api.operations import OPERATIONS
from spectral.client import (
    AsyncClient,
    AuthError,
    CircuitBreaker,
    CircuitOpenError,
    Client,
    ConflictError,
    NotFoundError,
    RateLimitedError,
    RetryPolicy,
    ValidationError,
    calls,
)
from tests.conftest import ADMIN_KEY
from tests.procs import Server

# -- the table -----------------------------------------------------------------------


def test_every_operation_has_a_method_or_a_reason() -> None:
    served = {op.name for op in OPERATIONS}
    covered = set(calls.OPERATIONS.values()) | set(calls.NOT_METHODS)
    assert served - covered == set(), "operations the SDK forgot"
    assert covered - served == set(), "SDK entries naming no operation"
    for method in calls.OPERATIONS:
        assert callable(getattr(Client, method)), method
        assert callable(getattr(AsyncClient, method)), method


def test_mutating_operations_send_an_idempotency_key() -> None:
    mutating = {op.name for op in OPERATIONS if op.mutating} - set(calls.NOT_METHODS)
    keyed = {
        name
        for method, name in calls.OPERATIONS.items()
        if _sample_call(getattr(calls, method)).mutating
    }
    assert mutating == keyed
    for method in calls.OPERATIONS:  # a key per mutating call (none for the others)
        call = _sample_call(getattr(calls, method))
        assert len(call.idempotency_key) == (32 if call.mutating else 0), method


def _sample_call(build: Any) -> calls.Call:
    samples: dict[str, tuple[Any, ...]] = {
        "create_task": ("t",),
        "update_progress": ("t", 1),
        "add_event": ("t", "m"),
        "complete": ("t",),
        "fail": ("t", "e"),
        "cancel": ("t",),
        "batch_update_progress": ([{"taskId": "t", "progress": 1}],),
        "get_task": ("t",),
        "get_task_by_external_id": ("e",),
        "history": ("t",),
        "children": ("t",),
        "delete_task": ("t",),
        "broadcast": ("r", {"a": 1}),
        "room_health": ("r",),
        "create_webhook": ("http://127.0.0.1:1/",),
        "get_webhook": ("w",),
        "update_webhook": ("w",),
        "delete_webhook": ("w",),
        "deliveries": ("w",),
        "redeliver": ("w", "d"),
        "create_integration": ("n", "standard-webhooks", "id", "status", {"s": "completed"}),
        "get_integration": ("i",),
        "update_integration": ("i",),
        "delete_integration": ("i",),
        "create_key": ("o", "reader"),
        "revoke_key": ("k",),
    }
    return build(*samples.get(build.__name__, ()))


def test_importing_the_sdk_imports_nothing_of_the_server() -> None:
    code = (
        "import sys, spectral.client\n"
        "bad = [m for m in ('trio', 'quart', 'hypercorn', 'actors', 'storage',"
        " 'spectral.server', 'spectral.front') if m in sys.modules]\n"
        "assert not bad, bad\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


# -- the rules, alone ------------------------------------------------------------------


def test_full_jitter_stays_within_its_bounds_and_the_deadline() -> None:
    policy = RetryPolicy(deadline=10.0, base=0.1, cap=2.0)
    rng = random.Random(7)
    for attempt in range(12):
        assert 0.0 <= policy.delay(attempt, rng) <= min(2.0, 0.1 * 2**attempt)
    assert policy.delay(0, rng, retry_after=3.0) == 3.0
    assert policy.next_delay(0, started=0.0, now=9.99, rng=rng, retry_after=1.0) is None
    assert RetryPolicy(attempts=2).next_delay(1, 0.0, 0.0, rng) is None


def test_the_breaker_opens_probes_once_and_closes() -> None:
    now = [0.0]
    breaker = CircuitBreaker(threshold=3, reset_after=5.0, clock=lambda: now[0])
    for _ in range(3):
        breaker.before()
        breaker.failure()
    assert breaker.state == "open"
    with pytest.raises(CircuitOpenError):
        breaker.before()
    now[0] = 5.0
    breaker.before()  # the one probe
    with pytest.raises(CircuitOpenError):
        breaker.before()  # no second probe while the first is out
    breaker.failure()
    assert breaker.state == "open"
    now[0] = 10.0
    breaker.before()
    breaker.success()
    assert breaker.state == "closed"
    breaker.before()


def test_an_open_breaker_refuses_new_calls_but_lets_a_call_underway_ride_out() -> None:
    """A server restarting: the call underway keeps retrying within its deadline (so it
    is applied once, not abandoned); a call that starts while the circuit is open fails
    at once without a request."""
    sent: list[str] = []
    down = [True]

    def handler(request: httpx.Request) -> httpx.Response:
        sent.append(request.headers["idempotency-key"])
        if down[0] and len(sent) < 6:
            body = {"error": {"code": "UNAVAILABLE", "message": "restarting"}}
            return httpx.Response(503, json=body)
        return httpx.Response(200, json={"success": True, "task": _task_json("t")})

    client = _mocked(handler, [])
    client.breaker = CircuitBreaker(threshold=2, reset_after=60.0)
    assert client.update_progress("t", 5).task_id == "t"  # 5 refusals, then applied
    assert len(sent) == 6 and len(set(sent)) == 1
    assert client.breaker.state == "closed"  # the call's own success closed it

    sent.clear()
    down[0] = True
    client.breaker.failure()
    client.breaker.failure()
    with pytest.raises(CircuitOpenError):
        client.update_progress("t", 6)
    assert sent == []


def test_a_429_storm_is_waited_out_with_retry_after_and_one_key() -> None:
    keys: list[str] = []
    waits: list[float] = []

    def handler(request: httpx.Request) -> httpx.Response:
        keys.append(request.headers["idempotency-key"])
        if len(keys) < 4:
            body = {"error": {"code": "RATE_LIMITED", "message": "slow down"}}
            return httpx.Response(429, json=body, headers={"Retry-After": "0.01"})
        return httpx.Response(200, json={"success": True, "task": _task_json("t")})

    client = _mocked(handler, waits)
    task = client.update_progress("t", 5)
    assert task.task_id == "t"
    assert len(keys) == 4 and len(set(keys)) == 1
    assert all(wait >= 0.01 for wait in waits)


def test_other_4xx_are_never_retried() -> None:
    seen: list[int] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(1)
        body = {"error": {"code": "VALIDATION_ERROR", "message": "progress: must be ≤ 100"}}
        return httpx.Response(400, json=body)

    with pytest.raises(ValidationError, match="progress"):
        _mocked(handler, []).update_progress("t", 500)
    assert len(seen) == 1


def test_rate_limited_to_the_end_raises_with_the_last_retry_after() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        body = {"error": {"code": "RATE_LIMITED", "message": "slow down"}}
        return httpx.Response(429, json=body, headers={"Retry-After": "0.01"})

    client = _mocked(handler, [], RetryPolicy(attempts=3))
    with pytest.raises(RateLimitedError) as raised:
        client.get_task("t")
    assert raised.value.retry_after == 0.01


def _mocked(handler: Any, waits: list[float], retry: RetryPolicy | None = None) -> Client:
    client = Client("http://spectral.invalid", "key", retry=retry or RetryPolicy(deadline=5))
    client._http = httpx.Client(base_url=client.base_url, transport=httpx.MockTransport(handler))
    import spectral.client.client as module

    module.time.sleep = waits.append  # type: ignore[assignment]  # restored below
    return client


@pytest.fixture(autouse=True)
def _real_sleep() -> Any:
    import time as real_time

    import spectral.client.client as module

    sleep = real_time.sleep
    yield
    module.time.sleep = sleep


def _task_json(task_id: str) -> dict[str, Any]:
    return {
        "taskId": task_id,
        "status": "in-progress",
        "progress": 5,
        "metadata": {},
        "error": None,
        "owner": "admin",
        "seq": 2,
        "epoch": "e",
        "createdAt": "2026-12-02T00:00:00.000Z",
        "updatedAt": "2026-12-02T00:00:00.000Z",
        "startedAt": "2026-12-02T00:00:00.000Z",
        "completedAt": None,
        "failedAt": None,
        "canceledAt": None,
        "timeoutSeconds": None,
        "ttlSeconds": None,
    }


# -- against a live server -------------------------------------------------------------


async def test_a_task_from_create_to_delete_under_trio(server: Server) -> None:
    async with AsyncClient(server.url, ADMIN_KEY) as client:
        task = await client.create_task("sdk-trio", metadata={"kind": "export"})
        assert (task.task_id, task.status.value, task.seq) == ("sdk-trio", "pending", 1)
        task = await client.update_progress("sdk-trio", 40, "reading")
        assert (task.progress, task.seq) == (40, 2)
        task = await client.complete("sdk-trio")
        assert task.status.value == "success"
        with pytest.raises(ConflictError):
            await client.update_progress("sdk-trio", 50)
        page = await client.history("sdk-trio")
        assert [e.seq for e in page.events] == [1, 2, 3]
        listed = [t.task_id async for t in client.iter_tasks(q="sdk-")]
        assert listed == ["sdk-trio"]
        await client.delete_task("sdk-trio")
        with pytest.raises(NotFoundError):
            await client.get_task("sdk-trio")


async def test_tags_external_ids_and_creation_time_filters(server: Server) -> None:
    async with AsyncClient(server.url, ADMIN_KEY) as client:
        first = await client.create_task("sdk-t1", tags=["a", "b"], external_id="ext/1")
        assert first.tags == ["a", "b"] and first.external_id == "ext/1"
        await client.create_task("sdk-t2", tags=["a"])
        with pytest.raises(ConflictError) as info:
            await client.create_task("sdk-t3", external_id="ext/1")
        assert info.value.code == "EXTERNAL_ID_EXISTS"
        found = await client.get_task_by_external_id("ext/1")
        assert found.task_id == "sdk-t1" and found.tags == ["a", "b"]
        assert (await client.get_task_by_external_id("ext/1", owner="admin")).task_id == "sdk-t1"
        with pytest.raises(NotFoundError):
            await client.get_task_by_external_id("nope")
        assert [t.task_id for t in (await client.list_tasks(tag="a")).tasks] == ["sdk-t2", "sdk-t1"]
        both = await client.list_tasks(tag=["a", "b"])
        assert [t.task_id for t in both.tasks] == ["sdk-t1"]
        after = datetime.fromisoformat(first.created_at.replace("Z", "+00:00"))
        later = await client.list_tasks(created_after=after)
        assert [t.task_id for t in later.tasks] == ["sdk-t2"]
        earlier = await client.list_tasks(created_before=first.created_at.replace("Z", "+00:00"))
        assert earlier.tasks == []
        with pytest.raises(ValidationError, match="createdAfter"):
            await client.list_tasks(created_after="yesterday")


async def test_task_trees(server: Server) -> None:
    async with AsyncClient(server.url, ADMIN_KEY) as client:
        root = await client.create_task(
            "sdk-tree", complete_with_children=True, phases=[{"id": "a", "weight": 3}, {"id": "b"}]
        )
        assert root.child_count == 2 and root.complete_with_children
        extra = await client.create_task("sdk-tree-x", parent_id="sdk-tree", weight=4)
        assert (extra.parent_id, extra.weight, extra.depth) == ("sdk-tree", 4, 2)
        kids = await client.children("sdk-tree")
        assert sorted(t.task_id for t in kids.tasks) == ["sdk-tree-x", "sdk-tree:a", "sdk-tree:b"]
        listed = await client.list_tasks(parent_id="sdk-tree", limit=100)
        assert listed.pagination.total == 3
        with pytest.raises(ConflictError) as info:
            await client.update_progress("sdk-tree", 10)
        assert info.value.code == "PROGRESS_COMPUTED"
        await client.complete("sdk-tree:a")
        with trio.fail_after(20):
            while (await client.get_task("sdk-tree")).progress != 37.5:  # 3 * 100 / 8
                await trio.sleep(0.02)
        await client.delete_task("sdk-tree")
        with pytest.raises(NotFoundError):
            await client.get_task("sdk-tree:b")


async def test_errors_name_the_field_and_the_key(server: Server) -> None:
    async with AsyncClient(server.url, ADMIN_KEY) as client:
        await client.create_task("sdk-errors")
        with pytest.raises(ValidationError, match="progress"):
            await client.update_progress("sdk-errors", 101)
    async with AsyncClient(server.url, "not-a-key") as stranger:
        with pytest.raises(AuthError):
            await stranger.get_task("sdk-errors")


async def test_the_async_client_runs_under_asyncio(server: Server) -> None:
    async def main() -> list[float]:
        async with AsyncClient(server.url, ADMIN_KEY) as client:
            task = await client.create_task()
            for progress in (10, 20, 30):
                await client.update_progress(task.task_id, progress)
            results = await client.batch_update_progress(
                [{"taskId": task.task_id, "progress": 35}, {"taskId": "nope", "progress": 1}]
            )
            assert [r.ok for r in results] == [True, False]
            page = await client.history(task.task_id)
            return [e.progress for e in page.events if e.progress is not None]

    # asyncio.run in a thread of its own: this test's own loop is trio's.
    assert await trio.to_thread.run_sync(asyncio.run, main()) == [0, 10, 20, 30, 35]


async def test_the_blocking_client(server: Server) -> None:
    def work() -> tuple[str, int]:
        with Client(server.url, ADMIN_KEY) as client:
            task = client.create_task("sdk-sync")
            client.add_event("sdk-sync", "hello")
            task = client.fail("sdk-sync", "disk full")
            return task.status.value, task.seq

    assert await trio.to_thread.run_sync(work) == ("failed", 3)


async def test_an_answer_lost_after_the_request_is_applied_once(server: Server) -> None:
    """A proxy forwards the first request, takes the server's answer and drops the
    connection: the SDK retries with the same Idempotency-Key and the server answers
    from its record, so the update is in the history once."""
    host, port = server.url.removeprefix("http://").rsplit(":", 1)
    dropped = trio.Event()

    async def relay(client_stream: trio.SocketStream) -> None:
        upstream = await trio.open_tcp_stream(host, int(port))
        request = await client_stream.receive_some(65536)
        await upstream.send_all(request)
        answer = await upstream.receive_some(65536)
        if not dropped.is_set():
            dropped.set()  # the request is applied; the caller never hears so
            await client_stream.aclose()
            await upstream.aclose()
            return
        await client_stream.send_all(answer)
        await client_stream.aclose()
        await upstream.aclose()

    async with trio.open_nursery() as nursery:
        serve = functools.partial(trio.serve_tcp, host="127.0.0.1")
        listeners = await nursery.start(serve, relay, 0)
        proxy = f"http://127.0.0.1:{listeners[0].socket.getsockname()[1]}"
        async with AsyncClient(server.url, ADMIN_KEY) as direct:
            await direct.create_task("sdk-lost")
            async with AsyncClient(proxy, ADMIN_KEY, retry=RetryPolicy(base=0.01)) as client:
                task = await client.update_progress("sdk-lost", 42, "once")
            assert dropped.is_set()
            assert task.seq == 2
            events = (await direct.history("sdk-lost")).events
            assert [(e.seq, e.message) for e in events] == [(1, events[0].message), (2, "once")]
        nursery.cancel_scope.cancel()


# -- track() ---------------------------------------------------------------------------


async def test_a_million_progress_calls_are_a_few_requests(server: Server) -> None:
    def work() -> tuple[str, float]:
        with Client(server.url, ADMIN_KEY) as client:
            started = time.monotonic()
            with client.track("sdk-track") as tracker:
                for step in range(1_000_000):
                    tracker.progress(step / 10_000)
                tracker.progress(100, "all done")
            return tracker.task_id, time.monotonic() - started

    task_id, elapsed = await trio.to_thread.run_sync(work)
    async with AsyncClient(server.url, ADMIN_KEY) as client:
        events = (await client.history(task_id, limit=1000)).events
        task = await client.get_task(task_id)
    assert task.status.value == "success"
    # created, a handful of coalesced progress updates, the last value, completed
    assert len(events) < 200, len(events)
    # at most one flush per interval (0.25 s), however fast progress() is called
    progress = [e for e in events if e.event_type.value == "progress"]
    assert len(progress) <= elapsed / 0.25 + 3, (len(progress), elapsed)
    assert (events[-2].progress, events[-2].message) == (100, "all done")
    assert events[-1].event_type.value == "success"


async def test_track_fails_with_the_exception_and_cancels_on_interrupt(server: Server) -> None:
    def work() -> None:
        with Client(server.url, ADMIN_KEY) as client:
            with pytest.raises(RuntimeError), client.track("sdk-boom") as tracker:
                tracker.progress(30)
                tracker.log("about to fail")
                raise RuntimeError("disk full")
            with pytest.raises(KeyboardInterrupt), client.track("sdk-stop"):
                raise KeyboardInterrupt

    await trio.to_thread.run_sync(work)
    async with AsyncClient(server.url, ADMIN_KEY) as client:
        boom = await client.get_task("sdk-boom")
        assert (boom.status.value, boom.error, boom.progress) == ("failed", "disk full", 30)
        messages = [e.message for e in (await client.history("sdk-boom")).events]
        assert messages.index("about to fail") > 0
        assert (await client.get_task("sdk-stop")).status.value == "canceled"


async def test_async_track_under_trio_is_canceled_with_its_scope(server: Server) -> None:
    async with AsyncClient(server.url, ADMIN_KEY) as client:
        async with client.track("sdk-async") as tracker:
            for step in range(10_000):
                tracker.progress(step / 100)
            await tracker.log("half way")
        assert (await client.get_task("sdk-async")).status.value == "success"
        with trio.CancelScope() as scope:
            async with client.track("sdk-cancelled") as tracker:
                tracker.progress(5)
                scope.cancel()
                await trio.sleep_forever()
        cancelled = await client.get_task("sdk-cancelled")
        assert (cancelled.status.value, cancelled.progress) == ("canceled", 5)


async def test_async_track_under_asyncio(server: Server) -> None:
    async def main() -> tuple[str, float, int, float]:
        async with AsyncClient(server.url, ADMIN_KEY) as client:
            started = time.monotonic()
            async with client.track() as tracker:
                step = 0
                while time.monotonic() - started < 1.0:  # a second of a tight loop
                    tracker.progress(step % 100)
                    step += 1
                    await asyncio.sleep(0)
            elapsed = time.monotonic() - started
            task = await client.get_task(tracker.task_id)
            events = (await client.history(tracker.task_id, limit=1000)).events
            sent = sum(e.event_type.value == "progress" for e in events)
            return task.status.value, task.progress, sent, elapsed

    status, progress, sent, elapsed = await trio.to_thread.run_sync(asyncio.run, main())
    assert (status, progress) == ("success", 100)
    # at most one flush per interval (0.25 s), though the loop yields after every call
    assert sent <= elapsed / 0.25 + 3, (sent, elapsed)


async def test_watch_follows_a_tracked_task_to_its_end(server: Server) -> None:
    async with AsyncClient(server.url, ADMIN_KEY) as client:
        await client.create_task("sdk-watched")
        seen: list[tuple[str, int]] = []
        async with trio.open_nursery() as nursery:

            async def follow() -> None:
                async for message in client.watch("sdk-watched"):
                    seen.append((message["type"], message["seq"]))

            nursery.start_soon(follow)
            for value in (10, 20):
                await client.update_progress("sdk-watched", value)
            await client.complete("sdk-watched")
        # every seq once, in order (the snapshot may already show some), ending at complete
        seqs = [seq for _, seq in seen]
        assert seqs == sorted(set(seqs)) and seqs[-1] == 4
        assert seen[-1][0] == "complete"


def test_unsent_progress_is_kept_unless_a_newer_value_came() -> None:
    from spectral.client.tracking import Pending

    pending = Pending()
    pending.put("a", 10, None)
    pending.put("b", 20, "b")
    taken = pending.take()
    pending.put("a", 11, None)  # newer than what failed to send
    pending.restore(taken)
    assert sorted((i["taskId"], i["progress"]) for i in pending.take()) == [("a", 11), ("b", 20)]


async def test_an_admin_creates_a_task_for_another_owner(server: Server) -> None:
    async with AsyncClient(server.url, ADMIN_KEY) as admin:
        task = await admin.create_task("sdk-for-u1", owner="u1", metadata={"name": "export"})
        assert task.owner == "u1"
        u1 = await admin.create_key(owner="u1", role="service")
        u2 = await admin.create_key(owner="u2", role="service")
    async with AsyncClient(server.url, u1.key) as client:
        assert (await client.get_task("sdk-for-u1")).owner == "u1"
        with pytest.raises(AuthError):
            await client.create_task("sdk-for-u2", owner="u2")
    async with AsyncClient(server.url, u2.key) as client:
        with pytest.raises(NotFoundError):
            await client.get_task("sdk-for-u1")
