"""Closing the router closes every watcher with 1001 after it drained its queue."""

from __future__ import annotations

from pathlib import Path

import trio

from actors import CLOSE_GOING_AWAY, CloseReason, RouterConfig, Watcher, open_router

CLOSE_REASON = CloseReason(CLOSE_GOING_AWAY, "test")


async def test_watchers_get_1001_with_their_queue_delivered(tmp_path: Path) -> None:
    received: list[str] = []
    watcher = Watcher()
    async with open_router(tmp_path, [], RouterConfig()) as router:
        router.sockets("any", "object").attach(watcher)
        router.sockets("any", "object").broadcast("last words")
        assert router.statistics().watchers == 1

    async def send(message: str) -> None:
        received.append(message)

    with trio.fail_after(5):
        reason = await watcher.serve_writer(send)
    assert reason.code == CLOSE_GOING_AWAY
    assert received == ["last words"]


async def test_close_watchers_counts_and_empties_every_set(tmp_path: Path) -> None:
    async with open_router(tmp_path, [], RouterConfig()) as router:
        watchers = [Watcher() for _ in range(3)]
        router.sockets("a", "1").attach(watchers[0])
        router.sockets("a", "2").attach(watchers[1])
        router.sockets("a", "2").attach(watchers[2])
        assert router.close_watchers(CLOSE_REASON) == 3
        assert router.statistics().watchers == 0
        assert router.statistics().socket_sets == 0
        assert all(w.close_reason == CLOSE_REASON for w in watchers)
