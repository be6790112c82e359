"""Engine.IO sessions and the jobs feed in one process, without sockets
(spectral/socketio/sessions.py, feed.py): long-polls, the upgrade's NOOP, overlapping
polls, a slow session dropped, the heartbeat on virtual time, and one encoded frame
shared by every socket of a frame kind."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
import trio
from trio.testing import MockClock, wait_all_tasks_blocked

from actors import CLOSE_TOO_SLOW, Watcher
from spectral.api.context import Principal
from spectral.socketio import engineio
from spectral.socketio.feed import JobsFeed
from spectral.socketio.sessions import (
    CONNECT_TIMEOUT,
    PING_TIMEOUT,
    EngineConfig,
    Session,
    Sessions,
    SessionsFullError,
    Transport,
)
from spectral.tasks.events import TaskEvent
from spectral.wire import Outgoing


class Recorder:
    """A handler that records what reaches it and joins on any message."""

    def __init__(self) -> None:
        self.received: list[str] = []
        self.ended: list[Session] = []

    async def receive(self, session: Session, data: str) -> None:
        self.received.append(data)
        session.socket = "joined"

    def closed(self, session: Session) -> None:
        self.ended.append(session)


@pytest.fixture
async def sessions() -> AsyncIterator[tuple[Sessions, Recorder]]:
    recorder = Recorder()
    table = Sessions(EngineConfig(ping_interval=25, ping_timeout=20, queue_size=3), recorder)
    async with trio.open_nursery() as nursery:
        await nursery.start(table.serve)
        yield table, recorder
        nursery.cancel_scope.cancel()


def message(text: str) -> Outgoing:
    return Outgoing(0, engineio.message(text))


async def test_a_poll_takes_everything_queued(sessions: tuple[Sessions, Recorder]) -> None:
    table, _ = sessions
    session = table.open(Transport.POLLING, None)
    session.send_message("0")
    session.send_message('2["a"]')
    assert await session.poll() == '40\x1e42["a"]'


async def test_a_poll_waits_for_the_next_message(sessions: tuple[Sessions, Recorder]) -> None:
    table, _ = sessions
    session = table.open(Transport.POLLING, None)
    answers: list[str | None] = []
    async with trio.open_nursery() as nursery:
        nursery.start_soon(lambda: _append(answers, session.poll()))
        await wait_all_tasks_blocked()
        assert answers == []
        session.send_message('2["late"]')
    assert answers == ['42["late"]']


async def _append(into: list[Any], awaitable: Any) -> None:
    into.append(await awaitable)


async def test_the_upgrade_answers_the_pending_poll_with_a_noop(
    sessions: tuple[Sessions, Recorder],
) -> None:
    table, _ = sessions
    session = table.open(Transport.POLLING, None)
    answers: list[str | None] = []
    async with trio.open_nursery() as nursery:
        nursery.start_soon(lambda: _append(answers, session.poll()))
        await wait_all_tasks_blocked()
        assert session.begin_upgrade()
        assert not session.begin_upgrade()  # one probe at a time
    assert answers == ["6"]
    session.send_message('2["queued"]')
    assert await session.poll() == "6"  # still upgrading: the queue waits for the socket
    session.finish_upgrade()
    assert session.transport is Transport.WEBSOCKET
    assert await session.poll() is None
    assert (await session.watcher.next()).text == '42["queued"]'


async def test_two_polls_at_once_end_the_session(sessions: tuple[Sessions, Recorder]) -> None:
    table, recorder = sessions
    session = table.open(Transport.POLLING, None)
    answers: list[str | None] = []
    async with trio.open_nursery() as nursery:
        nursery.start_soon(lambda: _append(answers, session.poll()))
        await wait_all_tasks_blocked()
        assert await session.poll() is None
    assert answers == ["1"]
    assert session.closed and table.get(session.sid) is None
    assert recorder.ended == [session]


async def test_a_session_that_falls_behind_is_closed(sessions: tuple[Sessions, Recorder]) -> None:
    table, _ = sessions
    session = table.open(Transport.POLLING, None)
    for index in range(4):  # the queue holds 3
        session.send_message(f'2["{index}"]')
    assert session.closed
    assert session.watcher.close_reason is not None
    assert session.watcher.close_reason.code == CLOSE_TOO_SLOW
    assert await session.poll() == "1"


async def test_packets_reach_the_handler(sessions: tuple[Sessions, Recorder]) -> None:
    table, recorder = sessions
    session = table.open(Transport.POLLING, None)
    for packet in engineio.decode_payload('40\x1e42["a"]\x1ebAQID\x1e6'):
        await session.receive(packet)
    assert recorder.received == ["0", '2["a"]']  # binary and noop ignored
    await session.receive(engineio.decode("1"))
    assert session.closed


async def test_the_heartbeat(autojump_clock: MockClock) -> None:
    recorder = Recorder()
    table = Sessions(EngineConfig(ping_interval=25, ping_timeout=20), recorder)
    async with trio.open_nursery() as nursery:
        await nursery.start(table.serve)
        answering = table.open(Transport.POLLING, None)
        await answering.receive(engineio.decode("40"))  # joins (see Recorder)
        silent = table.open(Transport.POLLING, None)
        await silent.receive(engineio.decode("40"))
        never_joined = table.open(Transport.POLLING, None)
        for _ in range(3):
            assert await answering.poll() == "2"
            await answering.receive(engineio.decode("3"))
            await never_joined.receive(engineio.decode("3"))
        nursery.cancel_scope.cancel()
    assert silent.closed and silent.watcher.close_reason == PING_TIMEOUT
    assert never_joined.closed and never_joined.watcher.close_reason == CONNECT_TIMEOUT
    assert answering.closed  # the table's shutdown closed it
    assert len(table) == 0


async def test_a_missing_pong_closes_at_exactly_interval_plus_timeout(
    autojump_clock: MockClock,
) -> None:
    table = Sessions(EngineConfig(ping_interval=25, ping_timeout=20), Recorder())
    async with trio.open_nursery() as nursery:
        await nursery.start(table.serve)
        start = trio.current_time()
        session = table.open(Transport.POLLING, None)
        assert await session.poll() == "2"
        assert trio.current_time() - start == 25
        assert await session.poll() == "1"
        assert trio.current_time() - start == 45
        assert session.watcher.close_reason == PING_TIMEOUT
        nursery.cancel_scope.cancel()


def _event(owner: str, task_id: str, event_type: str = "progress") -> TaskEvent:
    task = {"taskId": task_id, "status": "in-progress", "progress": 40, "metadata": {}}
    return TaskEvent(owner, task_id, 2, event_type, time.time(), task, {"progress": 40})


def test_the_feed_encodes_once_per_frame_kind_and_isolates_owners() -> None:
    feed = JobsFeed()
    alice, bob = Principal("a", "alice", "service"), Principal("b", "bob", "reader")
    admin = Principal("bootstrap", "admin", "admin")
    watchers = {name: Watcher(10) for name in ("alice1", "alice2", "bob", "admin", "sub")}
    feed.follow(alice, watchers["alice1"])
    feed.follow(alice, watchers["alice2"])
    feed.follow(bob, watchers["bob"])
    feed.follow(admin, watchers["admin"])
    feed.subscribe(alice, "t1", watchers["sub"])
    feed.subscribe(bob, "t1", watchers["bob"])  # alice's task: never fires for bob
    feed.listener(_event("alice", "t1"))
    feed.listener(_event("alice", "t1", "created"))  # no seed event
    got = {name: [] for name in watchers}
    for name, watcher in watchers.items():
        while watcher.queued:
            got[name].append(watcher._receive.receive_nowait())
    assert got["bob"] == []
    assert len(got["alice1"]) == len(got["alice2"]) == len(got["admin"]) == len(got["sub"]) == 1
    shared = got["alice1"][0]
    assert got["alice2"][0] is shared and got["admin"][0] is shared  # one encoding
    assert shared.text.startswith('42["job:progress",{"jobId":"t1","state":"active"')
    assert got["sub"][0].text.startswith('42["job:t1:progress",')
    feed.unsubscribe(alice, "t1", watchers["sub"])
    feed.unsubscribe(bob, "t1", watchers["bob"])
    for name in ("alice1", "alice2"):
        feed.unfollow(alice, watchers[name])
    feed.unfollow(bob, watchers["bob"])
    feed.unfollow(admin, watchers["admin"])
    assert feed.owners == {} and feed.jobs == {} and not len(feed.everyone)


async def test_sessions_waiting_to_connect_are_capped() -> None:
    recorder = Recorder()
    table = Sessions(EngineConfig(max_pending=2), recorder)
    async with trio.open_nursery() as nursery:
        await nursery.start(table.serve)
        first = table.open(Transport.POLLING, None)
        table.open(Transport.WEBSOCKET, None)
        with pytest.raises(SessionsFullError):
            table.open(Transport.POLLING, None)
        await first.receive(engineio.decode("40"))  # joins (see Recorder)
        third = table.open(Transport.POLLING, None)  # one waiting less: room for one more
        with pytest.raises(SessionsFullError):
            table.open(Transport.POLLING, None)
        third.close(PING_TIMEOUT)
        table.open(Transport.POLLING, None)
        nursery.cancel_scope.cancel()
