"""The Task object kind in-process: ownership, history cap, watch ordering, alarms, wire shapes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import trio
import trio.testing

from actors import ObjectNotFoundError, RouterConfig, Watcher, open_router
from spectral import wire
from spectral.tasks.actor import (
    Mutate,
    MutateEach,
    Read,
    ReadHistory,
    Remove,
    Task,
    TaskRejected,
    Watch,
)
from spectral.tasks.state import Complete, Create, Progress


def create(task_id: str, owner: str = "alice", **fields: object) -> Mutate:
    """A Create message."""
    return Mutate(Create(task_id=task_id, owner=owner, epoch=f"epoch-{task_id}", **fields))


async def test_another_owner_sees_a_missing_task(tmp_path: Path) -> None:
    async with open_router(tmp_path, [Task]) as router:
        await router.call("task", "mine", create("mine"), create=True)
        for message in (
            Read(owner="bob"),
            Mutate(Progress(progress=5), owner="bob"),
            ReadHistory(owner="bob"),
            Remove(owner="bob"),
            Watch(Watcher(), owner="bob"),
        ):
            with pytest.raises(TaskRejected) as info:
                await router.call("task", "mine", message)
            assert info.value.reason.code == "TASK_NOT_FOUND"
        assert (await router.call("task", "mine", Read(owner="alice")))["seq"] == 1
        assert (await router.call("task", "mine", Read()))["owner"] == "alice"  # admin
        with pytest.raises(TaskRejected) as info:
            await router.call("task", "mine", create("mine", owner="bob"))
        assert info.value.reason.code == "TASK_EXISTS"


async def test_history_keeps_the_last_cap_events(tmp_path: Path) -> None:
    class SmallTask(Task):
        history_cap = 5

    async with open_router(tmp_path, [SmallTask]) as router:
        await router.call("task", "t", create("t"), create=True)
        for value in range(1, 10):
            answer = await router.call("task", "t", Mutate(Progress(progress=value)))
        assert [e["seq"] for e in answer.latest_history] == [10, 9, 8, 7, 6]
        page = await router.call("task", "t", ReadHistory(after=0, limit=100))
        assert [e.seq for e in page.events] == [6, 7, 8, 9, 10]
        # A watcher resuming from before the oldest kept event is told it did not recover.
        start = await router.call("task", "t", Watch(Watcher(), since=2, epoch="epoch-t"))
        assert (start.recovered, start.replay_after) == (False, None)
        start = await router.call("task", "t", Watch(Watcher(), since=5, epoch="epoch-t"))
        assert (start.recovered, start.replay_after) == (True, 5)


async def test_latest_history_survives_reactivation(tmp_path: Path) -> None:
    async with open_router(tmp_path, [Task]) as router:
        await router.call("task", "t", create("t"), create=True)
        await router.call("task", "t", Mutate(Progress(progress=10)))
        await router.evict("task", "t")
        answer = await router.call("task", "t", Mutate(Progress(progress=20)))
        assert [e["seq"] for e in answer.latest_history] == [3, 2, 1]


async def test_a_watch_in_a_coalesced_batch_gets_exactly_the_later_updates(
    tmp_path: Path,
) -> None:
    async with open_router(tmp_path, [Task]) as router:
        await router.call("task", "t", create("t"), create=True)
        watcher = Watcher()
        results: dict[str, object] = {}

        async def update(value: int) -> None:
            await router.call("task", "t", Mutate(Progress(progress=value)))

        async def watch() -> None:
            results["start"] = await router.call("task", "t", Watch(watcher))

        # All queued before the actor's next turn: one batch, the watch in the middle.
        turns = router.statistics().turns
        async with trio.open_nursery() as nursery:
            for value in range(1, 6):
                nursery.start_soon(update, value)
            nursery.start_soon(watch)
            for value in range(6, 11):
                nursery.start_soon(update, value)
        assert router.statistics().turns == turns + 1
        start = results["start"]
        queued: list[int] = []
        while watcher.queued:
            queued.append((await watcher.next()).seq)
        assert queued == list(range(start.snapshot.seq + 1, 12))
        # trio may run the callers in either order: wherever the watch fell in the batch,
        # it got exactly the updates after its snapshot.
        assert 1 <= start.snapshot.seq <= 11


async def test_timeout_and_retention_alarms(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    async with open_router(tmp_path, [Task], RouterConfig(), clock=trio.current_time) as router:
        await router.call("task", "hb", create("hb", timeout_seconds=10), create=True)
        await router.call("task", "ttl", create("ttl", ttl_seconds=5), create=True)
        await trio.sleep(8)
        await router.call("task", "hb", Mutate(Progress(progress=50)))  # heartbeat
        await router.call("task", "ttl", Mutate(Complete()))
        await trio.sleep(9)
        assert (await router.call("task", "hb", Read()))["status"] == "in-progress"
        with pytest.raises(ObjectNotFoundError):
            await router.call("task", "ttl", Read())  # deleted 5 s after completing
        await trio.sleep(2)
        task = await router.call("task", "hb", Read())
        assert (task["status"], task["error"], task["seq"]) == ("failed", "timed out", 3)
        assert router.registry.get("task", "ttl") is None


def test_iso_timestamps_have_milliseconds_and_z() -> None:
    assert wire.iso(0) == "1970-01-01T00:00:00.000Z"
    assert wire.iso(1795547599.6789) == "2026-11-24T19:13:19.678Z"
    assert wire.iso(None) is None


def test_outgoing_frames_are_shared_and_valid() -> None:
    message = wire.deleted_message("t", 7, 0)
    assert message.frame is message.frame  # encoded once
    assert message.frame[0] == 0x81 and message.frame[1] == len(message.text.encode())
    assert json.loads(message.frame[2:]) == {
        "type": "deleted",
        "taskId": "t",
        "seq": 7,
        "timestamp": "1970-01-01T00:00:00.000Z",
    }
    assert message.sse.startswith(b"id: 7\ndata: {") and message.sse.endswith(b"\n\n")
    long_text = "x" * 70_000
    frame = wire.Outgoing(1, long_text).frame
    assert frame[1] == 127 and int.from_bytes(frame[2:10], "big") == 70_000
    medium = wire.Outgoing(1, "y" * 300).frame
    assert medium[1] == 126 and int.from_bytes(medium[2:4], "big") == 300


async def test_idempotency_records_live_in_the_task_file_for_24_hours(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    async with open_router(tmp_path, [Task], RouterConfig(), clock=trio.current_time) as router:
        await router.call("task", "t", create("t"), create=True)
        once = ("stored-key", "fingerprint")
        first = await router.call("task", "t", Mutate(Progress(progress=1), idempotency=once))
        again = await router.call("task", "t", Mutate(Progress(progress=1), idempotency=once))
        assert (first.replayed_at, again.replayed_at) == (None, trio.current_time())
        assert again.task == first.task and again.event["seq"] == 2
        with pytest.raises(TaskRejected) as info:
            await router.call("task", "t", Mutate(Progress(progress=2), idempotency=(once[0], "x")))
        assert info.value.reason.code == "IDEMPOTENCY_KEY_REUSED"
        await router.evict("task", "t")  # the record is in the file, not in memory
        await trio.sleep(24 * 3600 - 1)
        kept = await router.call("task", "t", Mutate(Progress(progress=1), idempotency=once))
        assert kept.replayed_at is not None
        await trio.sleep(2)
        fresh = await router.call("task", "t", Mutate(Progress(progress=1), idempotency=once))
        assert (fresh.replayed_at, fresh.event["seq"]) == (None, 3)


async def test_a_batch_part_is_recorded_with_its_items(tmp_path: Path) -> None:
    """A batch's items of one task and their record commit together: a repeat with the
    same key is answered from the file (refusals included), never applied again."""
    async with open_router(tmp_path, [Task]) as router:
        await router.call("task", "t", create("t"), create=True)
        once = ("stored-key", "fingerprint")
        items = (Progress(progress=10), Progress(progress=500), Progress(progress=20))
        first = await router.call("task", "t", MutateEach(items, idempotency=once))
        await router.evict("task", "t")  # the record is in the file, not in memory
        again = await router.call("task", "t", MutateEach(items, idempotency=once))
        assert [type(o).__name__ for o in again] == [type(o).__name__ for o in first]
        assert [o.task["seq"] for o in (again[0], again[2])] == [2, 3]
        assert again[0].replayed_at is not None and first[0].replayed_at is None
        assert (again[1].code, again[1].field) == ("VALIDATION_ERROR", "progress")
        assert str(again[1]) == str(first[1])
        page = await router.call("task", "t", ReadHistory(after=0, limit=100))
        assert [e.seq for e in page.events] == [1, 2, 3]
        with pytest.raises(TaskRejected) as info:
            await router.call("task", "t", MutateEach(items, idempotency=(once[0], "other")))
        assert info.value.reason.code == "IDEMPOTENCY_KEY_REUSED"
        with pytest.raises(TaskRejected) as info:  # a single mutation reusing a batch's key
            await router.call("task", "t", Mutate(Progress(progress=1), idempotency=once))
        assert info.value.reason.code == "IDEMPOTENCY_KEY_REUSED"


async def test_committed_changes_are_published_to_the_event_bus(tmp_path: Path) -> None:
    from spectral.tasks.events import EventBus, TaskEvent
    from spectral.tasks.state import Cancel, Fail, Log

    bus = EventBus()
    seen: list[TaskEvent] = []
    bus.subscribe(seen.append)
    bus.subscribe(lambda event: 1 / 0)  # a failing listener harms nobody
    async with open_router(tmp_path, [Task], context=bus) as router:
        await router.call("task", "t", create("t"), create=True)
        await router.call("task", "t", Mutate(Progress(progress=5)))
        await router.call("task", "t", Mutate(Log(message="m")))
        with pytest.raises(TaskRejected):  # refused: nothing published
            await router.call("task", "t", Mutate(Progress(progress=5), owner="bob"))
        await router.call("task", "t", Mutate(Complete()))
        await router.call("task", "u", create("u"), create=True)
        await router.call("task", "u", Mutate(Fail(error="e")))
        await router.call("task", "v", create("v"), create=True)
        await router.call("task", "v", Mutate(Cancel()))
        await router.call("task", "t", Remove())
    assert [(e.task_id, e.seq, e.event_type) for e in seen] == [
        ("t", 1, "created"),
        ("t", 2, "progress"),
        ("t", 3, "event"),
        ("t", 4, "completed"),
        ("u", 1, "created"),
        ("u", 2, "failed"),
        ("v", 1, "created"),
        ("v", 2, "canceled"),
        ("t", 5, "deleted"),
    ]
    assert all(e.owner == "alice" for e in seen)
    assert seen[3].task is not None and seen[3].task["status"] == "success"
    assert seen[-1].task is None


async def test_tags_and_external_id_live_in_the_task_file(tmp_path: Path) -> None:
    async with open_router(tmp_path, [Task]) as router:
        made = await router.call(
            "task", "tagged", create("tagged", tags=("x", "y"), external_id="E"), create=True
        )
        assert made.task["tags"] == ["x", "y"] and made.task["externalId"] == "E"
        await router.call("task", "tagged", Mutate(Progress(progress=5)))
        await router.call("task", "plain", create("plain"), create=True)
    async with open_router(tmp_path, [Task]) as router:  # reactivated from the files
        task = await router.call("task", "tagged", Read())
        assert task["tags"] == ["x", "y"] and task["externalId"] == "E"
        assert task["progress"] == 5
        plain = await router.call("task", "plain", Read())
        assert plain["tags"] == [] and plain["externalId"] is None


def test_a_task_row_of_the_old_schema_loads_without_tags() -> None:
    import sqlite3

    from spectral.tasks import actor
    from storage.migrations import migrate

    conn = sqlite3.connect(":memory:", isolation_level=None)
    migrate(conn, actor.MIGRATIONS[:2])  # the schema before tags
    created_state = (
        '["old","alice","ep","in-progress",40.0,null,3,1.0,2.0,1.5,null,null,null,null,null]'
    )
    conn.execute("INSERT INTO task (id, state, metadata) VALUES (1, ?, '{\"n\": 1}')",
                 (created_state,))  # fmt: skip
    migrate(conn, actor.MIGRATIONS)
    row = conn.execute("SELECT state, metadata, tags, external_id FROM task").fetchone()
    state = actor._state_from_row(*row)
    assert state.tags == () and state.external_id is None
    assert state.task_id == "old" and state.progress == 40 and state.metadata == {"n": 1}
    assert wire.task_json(state)["tags"] == []
