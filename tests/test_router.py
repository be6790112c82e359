"""The router: activation, per-id ordering, existence, corrupt files, deletion, hibernation.

Real files under tmp_path, real trio, real SQLite; the kinds are in tests/kinds.py. Tests
about time (idle timeout, cool-down, flush interval) run on pytest-trio's ``autojump_clock``:
the runtime does its SQLite work inline, so virtual time moves only when every task waits.
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest
import trio
from trio.testing import MockClock

from actors import (
    ActorBrokenError,
    ObjectNotFoundError,
    Router,
    RouterClosedError,
    RouterConfig,
    open_router,
)
from storage import ObjectRow, object_path, reconcile
from tests.kinds import (
    KINDS,
    Append,
    Count,
    Delete,
    GetRecord,
    Ledger,
    Note,
    Refused,
    Rows,
    SetRecord,
    Touch,
    reset,
)


@pytest.fixture(autouse=True)
def _reset_kinds() -> Iterator[None]:
    reset()
    yield
    reset()


def object_files(root: Path) -> list[Path]:
    """Every file (database, WAL, temporary) under the objects directory."""
    return sorted(p for p in (root / "objects").rglob("*") if p.is_file())


def registry_rows(root: Path) -> dict[tuple[str, str], tuple[object, ...]]:
    """Committed registry rows, read through a separate connection."""
    conn = sqlite3.connect(root / "registry.sqlite")
    try:
        return {
            (kind, id_): tuple(rest)
            for kind, id_, *rest in conn.execute(
                "SELECT kind, id, owner, status, progress, alarm_at FROM objects"
            )
        }
    finally:
        conn.close()


def has_wal(path: Path) -> bool:
    return Path(f"{path}-wal").exists()


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


async def wait_closed(router: Router, kind: str, object_id: str) -> None:
    """Wait until the object is no longer live and no evicted cell is still closing its file."""
    with trio.fail_after(30):
        while router.is_live(kind, object_id) or router.statistics().closing:
            await trio.sleep(0.01)


# -- activation ----------------------------------------------------------------------


async def test_a_thousand_callers_on_a_cold_id_share_one_activation(tmp_path: Path) -> None:
    answers: dict[int, int] = {}
    async with open_router(tmp_path, KINDS) as router:

        async def caller(n: int) -> None:
            answers[n] = await router.call("ledger", "hot", Append(n), create=True)

        async with trio.open_nursery() as nursery:
            for n in range(1000):
                nursery.start_soon(caller, n)
        stats = router.statistics()
        assert stats.activations == 1
        assert stats.live == 1
        assert Ledger.loads == ["hot"]
        assert stats.messages == 1000
        assert stats.turns < 100  # waiting messages were coalesced into few transactions
        assert sorted(answers.values()) == list(range(1, 1001))  # every caller, one seq each
        rows = await router.call("ledger", "hot", Rows())
        # The file's order is the order the answers say the messages were applied in.
        by_seq = sorted(answers, key=answers.__getitem__)
        assert rows == [str(n) for n in by_seq]
    assert registry_rows(tmp_path)[("ledger", "hot")][:2] == (None, None)
    assert len([p for p in object_files(tmp_path) if p.suffix == ".sqlite"]) == 1


async def test_per_id_order_is_send_order_for_200_concurrent_callers(tmp_path: Path) -> None:
    sent: list[str] = []
    answers: dict[str, int] = {}
    async with open_router(tmp_path, KINDS) as router:
        assert await router.call("ledger", "ordered", Append("start"), create=True) == 1

        async def sequential_caller(caller: int) -> None:
            for step in range(5):
                value = f"{caller}:{step}"
                # The actor is live: call() enqueues before its first checkpoint, so
                # the order of this list is the order messages entered the inbox.
                sent.append(value)
                answers[value] = await router.call("ledger", "ordered", Append(value))

        async with trio.open_nursery() as nursery:
            for caller in range(200):
                nursery.start_soon(sequential_caller, caller)
        rows = await router.call("ledger", "ordered", Rows())
        turns = router.statistics().turns
    assert len(sent) == 1000
    assert rows == ["start", *sent]  # arrival order, exactly
    seqs = [answers[v] for v in sent]
    assert seqs == list(range(2, 1002))  # answers agree with the file: no duplicates, no gaps
    for caller in range(200):
        mine = [answers[f"{caller}:{step}"] for step in range(5)]
        assert mine == sorted(mine) and len(set(mine)) == 5
    assert turns < 1000  # and many messages shared turns


async def test_an_unknown_id_without_create_is_not_found_and_creates_nothing(
    tmp_path: Path,
) -> None:
    async with open_router(tmp_path, KINDS) as router:
        for object_id in ("nobody", "../nobody", ""):
            with pytest.raises(ObjectNotFoundError, match="does not exist"):
                await router.call("ledger", object_id, Rows())
            assert not router.store.exists("ledger", object_id)
            assert not router.is_live("ledger", object_id)
        stats = router.statistics()
        assert (stats.activations, stats.live, stats.broken) == (0, 0, 0)
        assert object_files(tmp_path) == []
        with pytest.raises(ValueError, match="unknown kind"):
            await router.call("no_such_kind", "x", Rows(), create=True)
    assert registry_rows(tmp_path) == {}
    assert object_files(tmp_path) == []


async def test_an_invalid_id_is_refused_without_side_effects(tmp_path: Path) -> None:
    async with open_router(tmp_path, KINDS) as router:
        with pytest.raises(ValueError):  # a lone surrogate cannot be hashed (UnicodeEncodeError)
            await router.call("ledger", "bad\ud800", Append(1), create=True)
        assert object_files(tmp_path) == []
        assert router.statistics().broken == 0
        assert await router.call("ledger", "fine", Append(1), create=True) == 1


async def test_an_object_activated_for_creation_that_never_wrote_leaves_nothing(
    tmp_path: Path,
) -> None:
    async with open_router(tmp_path, KINDS) as router:
        assert await router.call("ledger", "reader", Touch(), create=True) == "reader"
        # While live the file exists (it was created from the template to serve the
        # message), but the object does not: no registry row, not listed.
        assert router.store.exists("ledger", "reader")
        assert router.registry.get("ledger", "reader") is None
        with pytest.raises(Refused):
            await router.call("ledger", "refused", Append("x", fail="reject"), create=True)
        assert router.registry.get("ledger", "refused") is None

        assert await router.evict("ledger", "reader")
        await wait_closed(router, "ledger", "reader")
        assert not router.store.exists("ledger", "reader")
        with pytest.raises(ObjectNotFoundError):
            await router.call("ledger", "reader", Touch())
        assert router.store.exists("ledger", "refused")  # still live
    # The router's exit closed "refused" too: its file went with it.
    assert object_files(tmp_path) == []
    assert registry_rows(tmp_path) == {}


async def test_a_failed_activation_for_creation_leaves_no_file(tmp_path: Path) -> None:
    Ledger.load_crashes.add("ghost")
    async with open_router(tmp_path, KINDS) as router:
        with pytest.raises(ActorBrokenError, match="cannot load"):
            await router.call("ledger", "ghost", Append(1), create=True)
        assert router.registry.get("ledger", "ghost") is None
        report = reconcile(router.store, router.registry, "ledger", repair=False)
        assert report.corrupt == []
        assert not router.store.exists("ledger", "ghost")


async def test_create_false_does_not_reach_an_uncreated_live_actor(tmp_path: Path) -> None:
    async with open_router(tmp_path, KINDS) as router:
        with pytest.raises(Refused):
            await router.call("ledger", "pending", Append("x", fail="reject"), create=True)
        assert router.registry.get("ledger", "pending") is None
        with pytest.raises(ObjectNotFoundError):
            await router.call("ledger", "pending", Append("sneaky"))
        assert router.registry.get("ledger", "pending") is None


async def test_a_corrupt_file_breaks_only_its_own_id(
    tmp_path: Path, autojump_clock: MockClock
) -> None:
    config = RouterConfig(broken_cooldown=0.5)
    async with open_router(tmp_path, KINDS, config) as router:
        for name in ("good", "bad", "other"):
            await router.call("ledger", name, Append(name), create=True)
    bad = object_path(tmp_path, "ledger", "bad")
    assert not has_wal(bad)  # a clean close checkpointed the WAL
    garbage = b"garbage, not SQLite " * 500
    bad.write_bytes(garbage)

    async with open_router(tmp_path, KINDS, config) as router:
        with pytest.raises(ActorBrokenError, match="unavailable"):
            await router.call("ledger", "bad", Rows())
        with pytest.raises(ActorBrokenError):  # create=True does not paper over it
            await router.call("ledger", "bad", Append(2), create=True)
        assert router.statistics().broken == 1
        assert await router.call("ledger", "good", Rows()) == ["good"]
        assert await router.call("ledger", "good", Append("more")) == 2
        assert await router.call("ledger", "other", Append("more")) == 2
        assert await router.call("ledger", "new", Append(1), create=True) == 1
        await trio.sleep(0.55)  # (virtual time) after the cool-down, activation is tried again
        assert router.statistics().broken == 0
        with pytest.raises(ActorBrokenError):
            await router.call("ledger", "bad", Rows())
        assert router.statistics().activations == 3
    assert bad.read_bytes() == garbage  # never overwritten or deleted
    assert registry_rows(tmp_path)[("ledger", "bad")] == (None, None, None, None)  # kept


async def test_delete_removes_the_file_and_the_registry_row(tmp_path: Path) -> None:
    async with open_router(tmp_path, KINDS) as router:
        await router.call("ledger", "doomed", Append(1), create=True)
        await router.call("ledger", "doomed", SetRecord(owner="o", status="s"))
        await router.call("ledger", "kept", Append(1), create=True)
        path = router.store.path("ledger", "doomed")
        assert path.exists() and router.registry.get("ledger", "doomed") is not None
        assert await router.call("ledger", "doomed", Delete()) == "deleted"
        # Before the answer: file and WAL gone, the registry row deleted and committed.
        assert not path.exists() and not has_wal(path)
        assert ("ledger", "doomed") not in registry_rows(tmp_path)
        assert router.registry.get("ledger", "doomed") is None
        assert router.registry.list("ledger").total == 1
        with pytest.raises(ObjectNotFoundError):
            await router.call("ledger", "doomed", Rows())
        # The id can be created afresh: nothing of the old object remains.
        assert await router.call("ledger", "doomed", Rows(), create=True) == []
        assert await router.call("ledger", "doomed", Append("new"), create=True) == 1
        assert await router.call("ledger", "kept", Rows()) == ["1"]
    assert set(registry_rows(tmp_path)) == {("ledger", "doomed"), ("ledger", "kept")}
    assert registry_rows(tmp_path)[("ledger", "doomed")][:2] == (None, None)  # new record


async def test_record_changes_reach_the_registry_durably_or_staged(
    tmp_path: Path, autojump_clock: MockClock
) -> None:
    config = RouterConfig(registry_flush_interval=0.3)
    async with open_router(tmp_path, KINDS, config) as router:
        await router.call("ledger", "r", Append(1), create=True)
        assert ("ledger", "r") in registry_rows(tmp_path)  # creation: durable before the answer
        before = await router.call("ledger", "r", SetRecord(owner="alice", status="open"))
        assert "owner" not in before and before["id"] == "r"  # the committed record
        record = await router.call("ledger", "r", GetRecord())
        assert (record["owner"], record["status"], record["kind"]) == ("alice", "open", "ledger")
        assert registry_rows(tmp_path)[("ledger", "r")] == ("alice", "open", None, None)
        await router.call("ledger", "r", SetRecord(progress=0.75))
        # Progress alone is staged: readers of the registry object see it at once ...
        assert router.registry.get("ledger", "r").progress == 0.75
        # ... the database within the flush interval (virtual time: no flush until we wait).
        assert registry_rows(tmp_path)[("ledger", "r")][2] is None
        staged_at = trio.current_time()
        with trio.fail_after(5):
            while registry_rows(tmp_path)[("ledger", "r")][2] != 0.75:
                await trio.sleep(0.01)
        assert trio.current_time() - staged_at < 0.3 + 0.05
        row = router.registry.get("ledger", "r")
        assert isinstance(row, ObjectRow) and row.updated_at >= row.created_at


async def test_calls_after_the_router_closed_are_refused(tmp_path: Path) -> None:
    async with open_router(tmp_path, KINDS) as router:
        await router.call("ledger", "x", Append(1), create=True)
    with pytest.raises(RouterClosedError):
        await router.call("ledger", "x", Rows())
    assert router.statistics().live == 0
    assert [p.name.endswith("-wal") for p in object_files(tmp_path)] == [False]


# -- hibernation ------------------------------------------------------------------------


async def test_idle_actors_are_evicted_and_state_survives_reactivation(
    tmp_path: Path, autojump_clock: MockClock
) -> None:
    config = RouterConfig(idle_timeout=0.05)
    async with open_router(tmp_path, KINDS, config) as router:
        for n in range(3):
            await router.call("ledger", "sleepy", Append(n), create=True)
        assert router.is_live("ledger", "sleepy")
        idle_since = trio.current_time()
        # Evicted by the reaper; its loop then closes the file (checkpointing the WAL).
        await wait_closed(router, "ledger", "sleepy")
        assert 0.05 - 1e-9 <= trio.current_time() - idle_since < 0.05 + 0.05  # + one sweep
        stats = router.statistics()
        assert (stats.live, stats.evicted, stats.activations) == (0, 1, 1)
        assert not has_wal(router.store.path("ledger", "sleepy"))
        # Re-activated from the file: load() read the three rows back.
        assert await router.call("ledger", "sleepy", Count()) == 3
        assert await router.call("ledger", "sleepy", Append(3)) == 4
        assert await router.call("ledger", "sleepy", Rows()) == ["0", "1", "2", "3"]
        assert router.statistics().activations == 2
        assert Ledger.loads == ["sleepy", "sleepy"]


async def test_a_busy_actor_is_not_evicted_while_messages_keep_coming(
    tmp_path: Path, autojump_clock: MockClock
) -> None:
    config = RouterConfig(idle_timeout=0.3)
    async with open_router(tmp_path, KINDS, config) as router:
        await router.call("ledger", "busy", Append(0), create=True)
        for n in range(1, 21):  # 0.6 s of virtual time in all, never 0.3 s idle
            await trio.sleep(0.03)
            await router.call("ledger", "busy", Append(n))
        stats = router.statistics()
        assert (stats.activations, stats.evicted) == (1, 0)
        await trio.sleep(0.3 + 0.1)  # then idle: the same reaper evicts it
        assert router.statistics().evicted == 1


async def test_cold_callers_beyond_max_live_all_get_answers(tmp_path: Path) -> None:
    config = RouterConfig(max_live=5)
    failures: list[BaseException] = []
    async with open_router(tmp_path, KINDS, config) as router:

        async def creator(n: int) -> None:
            try:
                await router.call("ledger", f"c{n}", Append(n), create=True)
            except ActorBrokenError as exc:
                failures.append(exc)

        async with trio.open_nursery() as nursery:
            for n in range(100):
                nursery.start_soon(creator, n)
        assert failures == []
        assert router.registry.count("ledger") == 100


async def test_max_live_bounds_live_actors_and_open_files_over_5000_objects(
    tmp_path: Path,
) -> None:
    objects, cap, workers = 5000, 500, 20
    # synchronous=OFF: this test is about live actors and descriptors; the fsyncs of
    # 5,000 WAL checkpoints on eviction would double its time without testing anything.
    config = RouterConfig(max_live=cap, synchronous="OFF")
    baseline = open_fds()
    peak_live = peak_fds = 0
    async with open_router(tmp_path, KINDS, config) as router:

        async def worker(first: int) -> None:
            nonlocal peak_live, peak_fds
            for n in range(first, objects, workers):
                assert await router.call("ledger", f"o{n}", Note(n), create=True) == 1
                peak_live = max(peak_live, router.statistics().live)
                if n % 25 == 0:
                    peak_fds = max(peak_fds, open_fds())

        async with trio.open_nursery() as nursery:
            for first in range(workers):
                nursery.start_soon(worker, first)
        stats = router.statistics()
        assert stats.activations == objects
        assert stats.evicted >= objects - cap
        assert router.registry.count("ledger") == objects
        # Touch all of them again (each is cold now, or among the 500 live).
        for n in range(0, objects, 10):
            assert await router.call("ledger", f"o{n}", Count()) == 1
            peak_live = max(peak_live, router.statistics().live)
        peak_fds = max(peak_fds, open_fds())
    assert peak_live <= cap + workers  # only busy actors can push past the cap
    # Exclusive locking: a live object holds its database and its WAL, no -shm.
    assert peak_fds <= baseline + 2 * cap + 50
    assert open_fds() <= baseline + 2
    assert not [p for p in object_files(tmp_path) if p.name.endswith(("-wal", "-shm", ".tmp"))]
    # How fast eviction is: bench/actors.py --scenario evict.
