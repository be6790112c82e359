"""Socket sets and watchers: non-blocking broadcast, slow watchers dropped with 4008, the
writer loop, finish/close, and watchers that outlive their actor's eviction.
"""

from __future__ import annotations

import inspect
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.lowlevel
import trio.testing
from trio.testing import MockClock

from actors import (
    CLOSE_GOING_AWAY,
    CLOSE_NORMAL,
    CLOSE_TOO_SLOW,
    CloseReason,
    RouterConfig,
    SocketSet,
    Watcher,
    open_router,
)
from tests.kinds import KINDS, Append, Delete, Refused, reset

DELETED = CloseReason(CLOSE_NORMAL, "deleted")
TOO_SLOW = CloseReason(CLOSE_TOO_SLOW, "too slow")


@pytest.fixture(autouse=True)
def _reset_kinds() -> Iterator[None]:
    reset()
    yield
    reset()


class Peer:
    """A fake socket: records what it was sent; can be made to block or fail."""

    def __init__(self) -> None:
        self.got: list[Any] = []
        self.gate: trio.Event | None = None
        self.fail_on: Any = object()

    async def send(self, message: Any) -> None:
        if message == self.fail_on:
            raise ConnectionError("peer went away")
        self.got.append(message)
        if self.gate is not None:
            await self.gate.wait()


async def run_writer(watcher: Watcher, peer: Peer, results: list[CloseReason], **kw: Any) -> None:
    results.append(await watcher.serve_writer(peer.send, **kw))


# -- broadcast -----------------------------------------------------------------------------


async def test_broadcast_never_awaits() -> None:
    assert not inspect.iscoroutinefunction(SocketSet.broadcast)
    assert not inspect.iscoroutinefunction(Watcher.send_nowait)
    sockets = SocketSet()
    stuck, idle = Watcher(queue_size=200), Watcher(queue_size=200)
    sockets.attach(stuck)
    sockets.attach(idle)
    peer = Peer()
    peer.gate = trio.Event()  # never set: the first send never completes
    results: list[CloseReason] = []
    async with trio.open_nursery() as nursery:
        nursery.start_soon(run_writer, stuck, peer, results)
        await trio.testing.wait_all_tasks_blocked()
        payload = {"same": "object"}
        ticks = 0
        spying = trio.CancelScope()

        async def spy() -> None:  # runs whenever the broadcaster yields
            nonlocal ticks
            with spying:
                while True:
                    ticks += 1
                    await trio.lowlevel.checkpoint()

        nursery.start_soon(spy)
        await trio.lowlevel.checkpoint()
        before = ticks
        delivered = [sockets.broadcast(payload)] + [sockets.broadcast(n) for n in range(99)]
        assert ticks == before  # nothing else ran: broadcast never yielded
        spying.cancel()
        assert delivered == [2] * 100
        assert sockets.sent == 200 and sockets.dropped == 0
        await trio.testing.wait_all_tasks_blocked()
        # The writer took the first message and is stuck sending it; 99 wait behind it.
        assert peer.got == [payload] and peer.got[0] is payload
        assert stuck.queued == 99 and idle.queued == 100
        first = await idle.next()
        assert first is payload  # the same object on every queue, not a copy
        stuck.close(CloseReason(CLOSE_GOING_AWAY, "test over"))
    assert results == [CloseReason(CLOSE_GOING_AWAY, "test over")]


async def test_an_overflowing_watcher_is_closed_4008_and_dropped_the_others_get_everything() -> (
    None
):
    sockets = SocketSet()
    slow = Watcher(queue_size=3)  # nobody drains it
    fast = Watcher(queue_size=10)
    sockets.attach(slow)
    sockets.attach(fast)
    peer = Peer()
    results: list[CloseReason] = []
    delivered: list[int] = []
    async with trio.open_nursery() as nursery:
        nursery.start_soon(run_writer, fast, peer, results)
        for chunk in range(20):
            for n in range(chunk * 5, chunk * 5 + 5):
                delivered.append(sockets.broadcast(n))
            await trio.testing.wait_all_tasks_blocked()  # the fast writer catches up
        fast.finish(DELETED)
    assert delivered == [2, 2, 2] + [1] * 97
    assert slow.close_reason == TOO_SLOW
    assert list(sockets) == [fast] and len(sockets) == 1
    assert (sockets.sent, sockets.dropped) == (3 * 2 + 97, 1)
    assert peer.got == list(range(100))
    assert results == [DELETED]
    # A closed (not finished) watcher discards its queue: its writer sends nothing.
    late = Peer()
    assert await slow.serve_writer(late.send) == TOO_SLOW
    assert late.got == []
    with pytest.raises(trio.EndOfChannel):
        await slow.next()


async def test_a_watcher_whose_writer_died_is_dropped_as_going_away() -> None:
    sockets = SocketSet()
    watcher, other = Watcher(), Watcher()
    sockets.attach(watcher)
    sockets.attach(other)
    peer = Peer()
    peer.fail_on = "boom"
    sockets.broadcast("hello")
    sockets.broadcast("boom")
    with pytest.raises(ConnectionError):
        await watcher.serve_writer(peer.send)
    assert peer.got == ["hello"]
    assert sockets.broadcast("after") == 1  # only `other` took it
    assert watcher.close_reason == CloseReason(CLOSE_GOING_AWAY, "writer gone")
    assert list(sockets) == [other]
    assert [await other.next() for _ in range(3)] == ["hello", "boom", "after"]


# -- the writer ----------------------------------------------------------------------------


async def test_serve_writer_delivers_in_order_and_returns_the_close_reason() -> None:
    watcher = Watcher()
    peer = Peer()
    results: list[CloseReason] = []
    async with trio.open_nursery() as nursery:
        nursery.start_soon(run_writer, watcher, peer, results)
        for n in range(500):
            assert watcher.send_nowait(n)
            if n % 7 == 0:
                await trio.lowlevel.checkpoint()
        watcher.finish(DELETED)
        assert not watcher.send_nowait("too late")
    assert peer.got == list(range(500))
    assert results == [DELETED] and watcher.close_reason == DELETED


async def test_finish_drains_the_queue_then_closes_with_its_reason() -> None:
    sockets = SocketSet()
    watcher = Watcher()
    sockets.attach(watcher)
    for n in range(5):
        sockets.broadcast(n)
    watcher.finish(DELETED)
    assert watcher.close_reason == DELETED
    assert watcher.queued == 5
    assert not watcher.send_nowait(99)
    assert sockets.broadcast(5) == 0 and len(sockets) == 0  # a finishing watcher takes no more
    peer = Peer()
    assert await watcher.serve_writer(peer.send) == DELETED
    assert peer.got == [0, 1, 2, 3, 4]

    pulled = Watcher()
    for n in ("a", "b"):
        pulled.send_nowait(n)
    pulled.finish(DELETED)
    assert [await pulled.next(), await pulled.next()] == ["a", "b"]
    with pytest.raises(trio.EndOfChannel):
        await pulled.next()
    assert pulled.close_reason == DELETED


async def test_close_stops_a_writer_blocked_in_send_and_discards_the_queue() -> None:
    watcher = Watcher()
    peer = Peer()
    peer.gate = trio.Event()
    results: list[CloseReason] = []
    bye = CloseReason(CLOSE_GOING_AWAY, "bye")
    async with trio.open_nursery() as nursery:
        nursery.start_soon(run_writer, watcher, peer, results)
        for n in range(5):
            watcher.send_nowait(n)
        await trio.testing.wait_all_tasks_blocked()
        assert peer.got == [0]
        with trio.fail_after(30):
            watcher.close(bye)
            watcher.close(TOO_SLOW)  # the first reason stays
            await trio.testing.wait_all_tasks_blocked()
    assert results == [bye]
    assert peer.got == [0]
    assert not watcher.send_nowait(5)


async def test_a_send_slower_than_send_timeout_closes_the_watcher_4008(
    autojump_clock: MockClock,
) -> None:
    watcher = Watcher()
    watcher.send_nowait("slow")
    watcher.send_nowait("never")
    sent: list[str] = []

    async def slow_send(message: str) -> None:
        sent.append(message)
        await trio.sleep(60)

    start = trio.current_time()
    assert await watcher.serve_writer(slow_send, send_timeout=10) == TOO_SLOW
    assert trio.current_time() - start == pytest.approx(10)
    assert sent == ["slow"]


async def test_close_all_finishes_or_closes_every_watcher() -> None:
    sockets = SocketSet()
    first, second = Watcher(), Watcher()
    for watcher in (first, second):
        sockets.attach(watcher)
    sockets.broadcast("x")
    sockets.close_all(DELETED)
    assert len(sockets) == 0
    assert first.close_reason == DELETED and second.close_reason == DELETED
    assert await first.next() == "x"  # drained first

    sockets = SocketSet()
    third = Watcher()
    sockets.attach(third)
    sockets.broadcast("y")
    sockets.close_all(TOO_SLOW, drain=False)
    assert third.close_reason == TOO_SLOW
    with pytest.raises(trio.EndOfChannel):
        await third.next()
    sockets.detach(third)  # idempotent on an empty set


# -- watchers and the router -----------------------------------------------------------------


async def test_a_watcher_keeps_receiving_through_eviction_and_reactivation(
    tmp_path: Path, autojump_clock: MockClock
) -> None:
    # Virtual time: the reaper evicts only while the test waits for it, never between steps.
    config = RouterConfig(idle_timeout=0.05)
    peer = Peer()
    results: list[CloseReason] = []
    async with open_router(tmp_path, KINDS, config) as router:
        await router.call("ledger", "w", Append("before"), create=True)
        sockets = router.sockets("ledger", "w")
        watcher = Watcher()
        sockets.attach(watcher)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(run_writer, watcher, peer, results)
            await router.call("ledger", "w", Append(1))
            assert await router.evict("ledger", "w")  # evicted by hand ...
            await router.call("ledger", "w", Append(2))
            with trio.fail_after(5):  # ... and by the idle reaper
                while router.is_live("ledger", "w"):
                    await trio.sleep(0.01)
            await router.call("ledger", "w", Append(3))
            stats = router.statistics()
            assert (stats.activations, stats.evicted) == (3, 2)
            assert (stats.socket_sets, stats.watchers) == (1, 1)
            assert router.sockets("ledger", "w") is sockets  # the same set throughout
            with trio.fail_after(5):
                while len(peer.got) < 3:
                    await trio.sleep(0.01)
            assert peer.got == [1, 2, 3]  # "before" was sent before it attached
            # Detached and evicted: the router lets go of the empty set.
            sockets.detach(watcher)
            watcher.close(DELETED)
            assert await router.evict("ledger", "w")
            with trio.fail_after(5):
                while router.statistics().socket_sets:
                    await trio.sleep(0.01)
    assert results == [DELETED]


async def test_router_shutdown_finishes_watchers_with_1001_after_draining(
    tmp_path: Path,
) -> None:
    async with open_router(tmp_path, KINDS) as router:
        await router.call("ledger", "s", Append(0), create=True)
        watcher = Watcher()
        router.sockets("ledger", "s").attach(watcher)
        for n in range(1, 4):
            await router.call("ledger", "s", Append(n))
        assert watcher.queued == 3
    assert watcher.close_reason == CloseReason(CLOSE_GOING_AWAY, "server shutting down")
    peer = Peer()
    assert await watcher.serve_writer(peer.send) == watcher.close_reason
    assert peer.got == [1, 2, 3]


async def test_watchers_get_only_committed_changes_across_delete_and_recreate(
    tmp_path: Path,
) -> None:
    async with open_router(tmp_path, KINDS) as router:
        await router.call("ledger", "d", Append(0), create=True)
        watcher = Watcher()
        router.sockets("ledger", "d").attach(watcher)
        await router.call("ledger", "d", Append(1))
        with pytest.raises(Refused, match="refused 2"):
            await router.call("ledger", "d", Append(2, fail="reject"))
        await router.call("ledger", "d", Delete())
        await router.call("ledger", "d", Append(3), create=True)  # a new object, same id
        assert [await watcher.next() for _ in range(watcher.queued)] == [1, 3]
