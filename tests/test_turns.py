"""Turns: savepoint isolation inside coalesced batches, the output gate, supervision.

Real files under tmp_path, real trio, real SQLite; the kinds are in tests/kinds.py. Tests
that depend on a back-off or a cool-down run on pytest-trio's ``autojump_clock`` (virtual
time moves only when every task waits), so a busy machine cannot cut a window short.
"""

from __future__ import annotations

import itertools
import shutil
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing
from trio.testing import MockClock

from actors import (
    ActorBrokenError,
    ActorCrashedError,
    ObjectNotFoundError,
    Rejected,
    Router,
    RouterConfig,
    Watcher,
    open_router,
)
from tests.kinds import (
    ALL_KINDS,
    KINDS,
    Append,
    Count,
    Delete,
    GetRecord,
    Ledger,
    Refused,
    Rows,
    SetRecord,
    reset,
)


@pytest.fixture(autouse=True)
def _reset_kinds() -> Iterator[None]:
    reset()
    yield
    reset()


def rows_in_files(path: Path, scratch: Path) -> list[str]:
    """The entries a crash right now would leave: copy the database and its WAL, open the copy.

    The live actor holds its file with exclusive locking (no second connection can
    read it), but the bytes in the OS are what survive ``kill -9``.
    """
    scratch.mkdir(exist_ok=True)
    copy = scratch / "copy.sqlite"
    for suffix in ("", "-wal", "-shm"):
        Path(f"{copy}{suffix}").unlink(missing_ok=True)
    shutil.copyfile(path, copy)
    if Path(f"{path}-wal").exists():
        shutil.copyfile(f"{path}-wal", f"{copy}-wal")
    conn = sqlite3.connect(copy)
    try:
        return [r[0] for r in conn.execute("SELECT value FROM entries ORDER BY seq")]
    finally:
        conn.close()


def has_shm(path: Path) -> bool:
    return Path(f"{path}-shm").exists()


def read_file(path: Path) -> list[str]:
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=0)
    try:
        return [r[0] for r in conn.execute("SELECT value FROM entries ORDER BY seq")]
    finally:
        conn.close()


# -- batches ----------------------------------------------------------------------------------


async def test_a_failing_message_rolls_back_alone_inside_a_coalesced_batch(
    tmp_path: Path,
) -> None:
    outcomes: dict[int, Any] = {}
    broadcasts: list[int] = []
    async with open_router(tmp_path, KINDS) as router:
        await router.call("ledger", "batch", Append("first"), create=True)
        await router.call("ledger", "batch", SetRecord(owner="me", status="open", progress=0.5))
        watcher = Watcher()
        router.sockets("ledger", "batch").attach(watcher)
        before = router.statistics()

        async def caller(n: int) -> None:
            fail = {9: "reject", 29: "crash"}.get(n)  # the 10th and the 30th
            try:
                outcomes[n] = await router.call("ledger", "batch", Append(n, fail))
            except (Rejected, ActorCrashedError) as error:
                outcomes[n] = error

        async with trio.open_nursery() as nursery:
            for n in range(50):
                nursery.start_soon(caller, n)
        after = router.statistics()

        assert isinstance(outcomes[9], Refused) and str(outcomes[9]) == "refused 9"
        crash = outcomes[29]
        assert isinstance(crash, ActorCrashedError)
        assert isinstance(crash.__cause__, RuntimeError) and str(crash.__cause__) == "crash on 29"
        good = sorted(n for n in range(50) if n not in (9, 29))
        assert all(isinstance(outcomes[n], int) for n in good)
        # Sequence numbers: 48 distinct rows after the first two; failed ones used none.
        seqs = {n: outcomes[n] for n in good}
        assert sorted(seqs.values()) == list(range(2, 50))

        # Coalesced: 50 messages, a handful of transactions at most.
        assert after.messages - before.messages == 50
        assert after.turns - before.turns <= 3
        assert after.restarts - before.restarts == 1  # the crash; the refusal is not one

        rows = await router.call("ledger", "batch", Rows())
        assert rows[0] == "first" and sorted(int(v) for v in rows[1:]) == good
        # The order of rows is the order of sequence numbers handed out.
        assert rows[1:] == [str(n) for n in sorted(seqs, key=seqs.__getitem__)]
        # Effects of the failed messages were dropped: callbacks, broadcasts, record, alarm.
        assert sorted(v for _, v in Ledger.committed if v != "first") == good
        with trio.fail_after(30):
            while watcher.queued < len(good):
                await trio.sleep(0.001)
        while watcher.queued:
            broadcasts.append(await watcher.next())
        assert sorted(broadcasts) == good
        record = await router.call("ledger", "batch", GetRecord())
        assert (record["owner"], record["status"], record["progress"]) == ("me", "open", 0.5)
        assert record.get("alarm_at") is None
        assert router.statistics().alarms == 0
        row = router.registry.get("ledger", "batch")
        assert row is not None and (row.owner, row.status, row.alarm_at) == ("me", "open", None)
        # The crash reloaded the instance from the file: its in-memory damage is gone.
        assert await router.call("ledger", "batch", Count()) == 49
        assert Ledger.loads == ["batch", "batch"]
    assert read_file(router.store.path("ledger", "batch")) == rows


async def test_messages_of_one_turn_see_each_others_writes(tmp_path: Path) -> None:
    answers: list[int] = []
    async with open_router(tmp_path, KINDS) as router:
        await router.call("ledger", "seq", Append(0), create=True)
        turns = router.statistics().turns

        async def caller(n: int) -> None:
            answers.append(await router.call("ledger", "seq", Append(n)))

        async with trio.open_nursery() as nursery:
            for n in range(1, 30):
                nursery.start_soon(caller, n)
        assert router.statistics().turns - turns <= 3
    assert sorted(answers) == list(range(2, 31))


async def test_a_message_after_delete_in_the_same_batch_is_not_answered_as_applied(
    tmp_path: Path, autojump_clock: MockClock
) -> None:
    outcomes: dict[str, object] = {}
    config = RouterConfig(crash_backoff=0.3)
    async with open_router(tmp_path, KINDS, config) as router:
        await router.call("ledger", "d", Append("first"), create=True)
        # A crash makes the actor back off for 0.3 s (virtual): what arrives meanwhile is
        # one batch.
        with pytest.raises(ActorCrashedError):
            await router.call("ledger", "d", Append("boom", fail="crash"))

        async def call(name: str, message: object) -> None:
            try:
                outcomes[name] = await router.call("ledger", "d", message)
            except ObjectNotFoundError as error:
                outcomes[name] = error

        turns = router.statistics().turns
        async with trio.open_nursery() as nursery:
            nursery.start_soon(call, "delete", Delete())
            await trio.testing.wait_all_tasks_blocked()
            nursery.start_soon(call, "append", Append("after delete"))
        assert router.statistics().turns - turns == 1  # both in one batch, in this order
        assert outcomes["delete"] == "deleted"
        assert not router.store.exists("ledger", "d")
        assert ("d", "after delete") not in Ledger.committed
        assert isinstance(outcomes["append"], ObjectNotFoundError)


# -- the output gate -----------------------------------------------------------------------


async def test_after_commit_and_the_answer_come_after_the_commit(tmp_path: Path) -> None:
    seen_by_callback: list[tuple[object, list[str], bool]] = []
    scratch = tmp_path / "scratch"
    async with open_router(tmp_path, KINDS) as router:
        path = router.store.path("ledger", "gate")

        def on_commit(object_id: str, value: object) -> None:
            conn = router._live[("ledger", object_id)].conn
            seen_by_callback.append((value, rows_in_files(path, scratch), conn.in_transaction))

        Ledger.on_commit = on_commit
        for n in range(5):
            seq = await router.call("ledger", "gate", Append(n), create=True)
            assert seq == n + 1
            # The answer comes after the callback (output gate) ...
            assert Ledger.committed[-1] == ("gate", n)
            # ... and after the data reached the files.
            assert rows_in_files(path, scratch) == [str(v) for v in range(n + 1)]
        # Each callback already found its own row in the files, outside any transaction.
        assert seen_by_callback == [(n, [str(v) for v in range(n + 1)], False) for n in range(5)]
        # The actor holds its file exclusively: a second connection cannot read it.
        with pytest.raises(sqlite3.OperationalError, match="locked"):
            read_file(path)
        assert not has_shm(path)
    # A fresh router on the same directory sees all of it.
    async with open_router(tmp_path, KINDS) as router:
        assert await router.call("ledger", "gate", Rows()) == ["0", "1", "2", "3", "4"]
    assert read_file(path) == ["0", "1", "2", "3", "4"]


# -- supervision ----------------------------------------------------------------------------


async def test_a_crash_fails_only_its_message_and_reloads_from_the_file(tmp_path: Path) -> None:
    config = RouterConfig(crash_backoff=0.001)
    async with open_router(tmp_path, KINDS, config) as router:
        assert await router.call("ledger", "c", Append("a"), create=True) == 1
        assert await router.call("ledger", "c", Count()) == 1
        with pytest.raises(ActorCrashedError, match="RuntimeError: crash on 'b'") as info:
            await router.call("ledger", "c", Append("b", fail="crash"))
        assert isinstance(info.value.__cause__, RuntimeError)
        stats = router.statistics()
        assert (stats.restarts, stats.activations, stats.broken) == (1, 1, 0)
        assert Ledger.loads == ["c", "c"]  # reloaded in place, not re-activated
        assert await router.call("ledger", "c", Count()) == 1  # not 1001: state from the file
        assert await router.call("ledger", "c", Append("c")) == 2
        assert await router.call("ledger", "c", Rows()) == ["a", "c"]
        assert router.statistics().restarts == 1
        assert ("c", "b") not in Ledger.committed
        row = router.registry.get("ledger", "c")
        assert row is not None and (row.owner, row.status) == (None, None)


async def test_crashes_back_off_exponentially_and_success_resets(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    config = RouterConfig(crash_backoff=0.1, crash_limit=5)
    async with open_router(tmp_path, KINDS, config, clock=trio.current_time) as router:
        await router.call("ledger", "b", Append(0), create=True)
        times = []
        for n in range(3):
            with pytest.raises(ActorCrashedError):
                await router.call("ledger", "b", Append(n, fail="crash"))
            times.append(trio.current_time())
        assert await router.call("ledger", "b", Append("ok")) == 2
        times.append(trio.current_time())
        with pytest.raises(ActorCrashedError):
            await router.call("ledger", "b", Append("again", fail="crash"))
        times.append(trio.current_time())
        assert await router.call("ledger", "b", Append("fine")) == 3
        times.append(trio.current_time())
    gaps = [round(b - a, 3) for a, b in itertools.pairwise(times)]
    # 0.1, 0.2, 0.4 after consecutive crashes; none after a success; 0.1 again.
    assert gaps == [0.1, 0.2, 0.4, 0.0, 0.1]


async def test_a_crash_loop_breaks_only_that_id_until_the_cooldown(
    tmp_path: Path, autojump_clock: MockClock
) -> None:
    config = RouterConfig(crash_limit=3, crash_backoff=0.001, broken_cooldown=0.5)
    async with open_router(tmp_path, ALL_KINDS, config) as router:
        await router.call("ledger", "healthy", Append(1), create=True)
        for _ in range(3):
            with pytest.raises(ActorCrashedError, match="ZeroDivisionError") as info:
                await router.call("always_crashes", "loop", "go", create=True)
            assert isinstance(info.value.__cause__, ZeroDivisionError)
        with pytest.raises(ActorBrokenError, match="unavailable"):
            await router.call("always_crashes", "loop", "go", create=True)
        stats = router.statistics()
        assert (stats.broken, stats.restarts) == (1, 3)
        with trio.fail_after(5):  # its loop ends at the next checkpoint
            while router.is_live("always_crashes", "loop"):
                await trio.sleep(0.001)
        # Never created (every write was rolled back): the file went with the actor.
        assert not router.store.exists("always_crashes", "loop")
        assert router.registry.get("always_crashes", "loop") is None
        # Other ids, of this kind and of others, are unaffected.
        with pytest.raises(ActorCrashedError):
            await router.call("always_crashes", "other", "go", create=True)
        assert await router.call("ledger", "healthy", Append(2)) == 2
        assert router.statistics().broken == 1
        # After the cool-down (virtual time) the id is activated again (and crashes again).
        await trio.sleep(0.55)
        assert router.statistics().broken == 0
        with pytest.raises(ActorCrashedError):
            await router.call("always_crashes", "loop", "go", create=True)


async def test_a_crashing_load_breaks_the_id_at_once_and_recovers(
    tmp_path: Path, autojump_clock: MockClock
) -> None:
    config = RouterConfig(broken_cooldown=0.5)
    async with open_router(tmp_path, KINDS, config) as router:
        await router.call("ledger", "fragile", Append("kept"), create=True)
        await router.call("ledger", "sturdy", Append("x"), create=True)
        assert await router.evict("ledger", "fragile")
        Ledger.load_crashes.add("fragile")
        with pytest.raises(ActorBrokenError, match="cannot load"):
            await router.call("ledger", "fragile", Rows())
        with pytest.raises(ActorBrokenError):  # refused during the cool-down, no new load
            await router.call("ledger", "fragile", Rows())
        assert Ledger.loads.count("fragile") == 2
        assert router.statistics().broken == 1
        assert await router.call("ledger", "sturdy", Rows()) == ["x"]
        Ledger.load_crashes.clear()
        await trio.sleep(0.55)  # virtual time: the cool-down ends
        assert await router.call("ledger", "fragile", Rows()) == ["kept"]  # data intact
        assert router.statistics().broken == 0


async def test_a_crash_whose_reload_fails_breaks_the_id(
    tmp_path: Path, autojump_clock: MockClock
) -> None:
    config = RouterConfig(crash_backoff=0.001, broken_cooldown=60)
    async with open_router(tmp_path, KINDS, config) as router:
        await router.call("ledger", "r", Append("a"), create=True)
        Ledger.load_crashes.add("r")
        with pytest.raises(ActorCrashedError):
            await router.call("ledger", "r", Append("b", fail="crash"))
        with pytest.raises(ActorBrokenError):
            await router.call("ledger", "r", Rows())
        assert router.statistics().broken == 1
    Ledger.load_crashes.clear()
    async with open_router(tmp_path, KINDS) as router:
        assert await router.call("ledger", "r", Rows()) == ["a"]


async def test_refusals_are_not_crashes(tmp_path: Path) -> None:
    config = RouterConfig(crash_limit=2, crash_backoff=0.001)
    async with open_router(tmp_path, KINDS, config) as router:
        await router.call("ledger", "picky", Append("a"), create=True)
        for n in range(6):
            with pytest.raises(Refused, match=f"refused {n}"):
                await router.call("ledger", "picky", Append(n, fail="reject"))
        stats = router.statistics()
        assert (stats.restarts, stats.broken) == (0, 0)
        assert Ledger.loads == ["picky"]  # no reload for a refusal
        assert await router.call("ledger", "picky", Rows()) == ["a"]
        assert await router.call("ledger", "picky", Count()) == 1


async def pile_up(router: Router, object_id: str, messages: list[object]) -> list[object]:
    """Send ``messages`` while the actor backs off after a crash, so they wait in its inbox
    together; answer each caller's outcome (value or exception), in sending order.

    Run it on the autojump clock: ``wait_all_tasks_blocked`` then wakes before virtual time
    moves, so the back-off cannot end before every message is queued.
    """
    with pytest.raises(ActorCrashedError):
        await router.call("ledger", object_id, Append("boom", fail="crash"))
    outcomes: list[object] = [None] * len(messages)

    async def call(index: int) -> None:
        try:
            outcomes[index] = await router.call("ledger", object_id, messages[index])
        except Exception as error:
            outcomes[index] = error

    async with trio.open_nursery() as nursery:
        for index in range(len(messages)):
            nursery.start_soon(call, index)
            await trio.testing.wait_all_tasks_blocked()  # enqueued, in this order
    return outcomes


async def test_max_batch_bounds_the_messages_of_one_turn(
    tmp_path: Path, autojump_clock: MockClock
) -> None:
    config = RouterConfig(max_batch=10, crash_backoff=0.5)
    async with open_router(tmp_path, KINDS, config) as router:
        await router.call("ledger", "mb", Append("first"), create=True)
        before = router.statistics()
        outcomes = await pile_up(router, "mb", [Append(n) for n in range(45)])
        after = router.statistics()
        assert outcomes == list(range(2, 47))  # in inbox order
        assert after.turns - before.turns == 1 + 5  # the crash, then 10+10+10+10+5
        assert after.messages - before.messages == 1 + 45


async def test_a_full_inbox_refuses_callers_as_overloaded(
    tmp_path: Path, autojump_clock: MockClock
) -> None:
    config = RouterConfig(inbox_size=5, crash_backoff=0.5)
    async with open_router(tmp_path, KINDS, config) as router:
        await router.call("ledger", "full", Append("first"), create=True)
        outcomes = await pile_up(router, "full", [Append(n) for n in range(8)])
        assert outcomes[:5] == [2, 3, 4, 5, 6]
        assert all(isinstance(o, ActorBrokenError) for o in outcomes[5:])
        assert "overloaded" in str(outcomes[5])
        assert router.statistics().broken == 0  # only those callers were refused
        assert await router.call("ledger", "full", Append("later")) == 7


async def test_a_failing_after_commit_callback_does_not_fail_the_message(tmp_path: Path) -> None:
    def explode(object_id: str, value: object) -> None:
        raise RuntimeError("callback bug")

    async with open_router(tmp_path, KINDS) as router:
        await router.call("ledger", "cb", Append(0), create=True)
        watcher = Watcher()
        router.sockets("ledger", "cb").attach(watcher)
        Ledger.on_commit = explode
        assert await router.call("ledger", "cb", Append(1)) == 2
        assert await router.call("ledger", "cb", Append(2)) == 3
        assert [await watcher.next(), await watcher.next()] == [1, 2]  # later callbacks ran
        stats = router.statistics()
        assert (stats.restarts, stats.broken) == (0, 0)
        assert await router.call("ledger", "cb", Rows()) == ["0", "1", "2"]
