"""The actor runtime with real files, real trio and real SQLite (issue: the Durable Object core)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import trio
import trio.testing

from actors import (
    CLOSE_TOO_SLOW,
    ActorBrokenError,
    ActorCrashedError,
    CloseReason,
    ObjectNotFoundError,
    RouterConfig,
    Watcher,
    open_router,
)
from storage import object_path
from tests.runtime_kinds import (
    Alarm as SetAlarm,
)
from tests.runtime_kinds import (
    AlwaysCrashes,
    Append,
    CrashOnLoad,
    Entries,
    Ledger,
    Refused,
)

KINDS = [Ledger, CrashOnLoad, AlwaysCrashes]


@pytest.fixture(autouse=True)
def _reset_ledger() -> None:
    Ledger.committed.clear()
    Ledger.fired.clear()
    Ledger.alarm_failures.clear()


def open_fds() -> int:
    """File descriptors this process holds now."""
    return len(os.listdir("/proc/self/fd"))


async def test_a_thousand_callers_on_a_cold_id_activate_one_actor(tmp_path: Path) -> None:
    async with open_router(tmp_path, KINDS) as router:
        answers: list[int] = []

        async def caller(n: int) -> None:
            answers.append(await router.call("ledger", "hot", Append(n), create=True))

        async with trio.open_nursery() as nursery:
            for n in range(1000):
                nursery.start_soon(caller, n)
        stats = router.statistics()
        assert stats.activations == 1
        assert stats.live == 1
        assert sorted(answers) == list(range(1, 1001))
        assert stats.turns < 100  # waiting messages were coalesced into few transactions
        assert len(await router.call("ledger", "hot", Entries())) == 1000


async def test_per_id_order_is_arrival_order(tmp_path: Path) -> None:
    async with open_router(tmp_path, KINDS) as router:
        await router.call("ledger", "ordered", Append("start"), create=True)

        async def sequential_caller(name: str) -> None:
            for step in range(20):
                await router.call("ledger", "ordered", Append(f"{name}:{step}"))

        async with trio.open_nursery() as nursery:
            for index in range(10):
                nursery.start_soon(sequential_caller, f"c{index}")
        entries = await router.call("ledger", "ordered", Entries())
        assert len(entries) == 201 and len(set(entries)) == 201
        for index in range(10):
            mine = [e for e in entries if e.startswith(f"'c{index}:")]
            assert mine == [f"'c{index}:{step}'" for step in range(20)]
        # Answers (counts) and the file agree: committed order = applied order.
        assert [v for _, v in Ledger.committed][1:] == [e.strip("'") for e in entries[1:]]


async def test_a_failing_message_rolls_back_alone_inside_a_coalesced_batch(tmp_path: Path) -> None:
    async with open_router(tmp_path, KINDS) as router:
        await router.call("ledger", "batch", Append("first"), create=True)
        turns_before = router.statistics().turns
        outcomes: dict[int, object] = {}

        async def caller(n: int) -> None:
            fail = {10: "reject", 30: "crash"}.get(n)
            try:
                outcomes[n] = await router.call("ledger", "batch", Append(n, fail))
            except (Refused, ActorCrashedError) as error:
                outcomes[n] = error

        async with trio.open_nursery() as nursery:
            for n in range(50):
                nursery.start_soon(caller, n)
        assert isinstance(outcomes[10], Refused)
        assert isinstance(outcomes[30], ActorCrashedError)
        assert router.statistics().turns - turns_before <= 5  # one batch, or very few
        entries = await router.call("ledger", "batch", Entries())
        applied = {int(e) for e in entries[1:]}
        assert applied == set(range(50)) - {10, 30}
        # The refused and crashed messages' after_commit callbacks never ran.
        notified = {v for _, v in Ledger.committed}
        assert 10 not in notified and 30 not in notified
        assert set(range(50)) - {10, 30} <= notified
        assert router.statistics().restarts == 1


async def test_crash_restarts_the_actor_from_its_file(tmp_path: Path) -> None:
    async with open_router(tmp_path, KINDS) as router:
        assert await router.call("ledger", "c", Append("a"), create=True) == 1
        with pytest.raises(ActorCrashedError) as info:
            await router.call("ledger", "c", Append("b", "crash"))
        assert isinstance(info.value.__cause__, RuntimeError)
        assert await router.call("ledger", "c", Append("c")) == 2  # count reloaded from file
        assert await router.call("ledger", "c", Entries()) == ["'a'", "'c'"]
        assert router.statistics().restarts == 1


async def test_a_crash_loop_marks_only_that_id_broken(tmp_path: Path) -> None:
    config = RouterConfig(crash_limit=3, crash_backoff=0.001, broken_cooldown=60)
    async with open_router(tmp_path, KINDS, config) as router:
        for _ in range(3):
            with pytest.raises(ActorCrashedError):
                await router.call("always_crashes", "x", "go", create=True)
        with trio.fail_after(5):
            while not router.is_broken(("always_crashes", "x")):
                await trio.sleep(0.001)
        with pytest.raises(ActorBrokenError):
            await router.call("always_crashes", "x", "go", create=True)
        assert await router.call("ledger", "fine", Append(1), create=True) == 1
        with pytest.raises(ActorBrokenError):
            await router.call("crash_on_load", "y", "go", create=True)
        assert await router.call("ledger", "fine", Append(2)) == 2
        assert router.statistics().broken == 2


async def test_unknown_id_without_create_leaves_no_file(tmp_path: Path) -> None:
    async with open_router(tmp_path, KINDS) as router:
        with pytest.raises(ObjectNotFoundError):
            await router.call("ledger", "nobody", Entries())
        assert not object_path(tmp_path, "ledger", "nobody").exists()
        # Activated to be created but never written: no file once it is evicted.
        assert await router.call("ledger", "empty", Entries(), create=True) == []
        assert await router.evict("ledger", "empty")
    assert not object_path(tmp_path, "ledger", "empty").exists()
    async with open_router(tmp_path, KINDS) as router:
        assert router.registry.count("ledger") == 0


async def test_a_corrupt_file_is_isolated_to_its_id(tmp_path: Path) -> None:
    async with open_router(tmp_path, KINDS) as router:
        for name in ("good", "bad"):
            await router.call("ledger", name, Append(name), create=True)
    object_path(tmp_path, "ledger", "bad").write_bytes(b"this is not a database" * 100)
    async with open_router(tmp_path, KINDS) as router:
        with pytest.raises(ActorBrokenError, match="unavailable"):
            await router.call("ledger", "bad", Entries())
        assert await router.call("ledger", "good", Entries()) == ["'good'"]
        assert await router.call("ledger", "good", Append("more")) == 2


async def test_paths_never_contain_the_raw_id(tmp_path: Path) -> None:
    ids = ["../escape", "a/b", "ünïcødé", "x" * 300, ".", ""]
    async with open_router(tmp_path, KINDS) as router:
        for object_id in ids:
            await router.call("ledger", object_id, Append(object_id), create=True)
        files = sorted(p for p in (tmp_path / "objects").rglob("*.sqlite"))
        assert len(files) == len(ids)
        for path in files:
            assert path.is_relative_to(tmp_path / "objects" / "ledger")
            assert len(path.stem) == 64 and all(c in "0123456789abcdef" for c in path.stem)
        for object_id in ids:
            assert await router.call("ledger", object_id, Entries()) == [repr(object_id)]


async def test_eviction_keeps_watchers_attached_and_receiving(tmp_path: Path) -> None:
    config = RouterConfig(idle_timeout=0.05)
    received: list[object] = []
    async with open_router(tmp_path, KINDS, config) as router:
        await router.call("ledger", "w", Append("before"), create=True)
        watcher = Watcher()
        router.sockets("ledger", "w").attach(watcher)

        async def send(message: object) -> None:
            received.append(message)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(watcher.serve_writer, send)
            await router.call("ledger", "w", Append(1))
            with trio.fail_after(5):  # the idle reaper evicts it
                while router.is_live("ledger", "w"):
                    await trio.sleep(0.01)
            evicted = router.statistics().evicted
            assert evicted >= 1
            await router.call("ledger", "w", Append(2))  # re-activation
            assert await router.evict("ledger", "w")
            await router.call("ledger", "w", Append(3))
            assert router.statistics().activations >= 3
            with trio.fail_after(5):
                while len(received) < 3:
                    await trio.sleep(0.01)
            watcher.close(CloseReason(1000))
    assert received == [1, 2, 3]


async def test_open_fds_stay_bounded_with_5000_objects_and_a_cap_of_500(tmp_path: Path) -> None:
    config = RouterConfig(max_live=500)
    baseline = open_fds()
    peak = baseline
    async with open_router(tmp_path, KINDS, config) as router:
        for start in range(0, 5000, 250):

            async def touch(n: int) -> None:
                await router.call("ledger", f"obj-{n}", Append(n), create=True)

            async with trio.open_nursery() as nursery:
                for n in range(start, start + 250):
                    nursery.start_soon(touch, n)
            peak = max(peak, open_fds())
            assert router.statistics().live <= 500 + 250
        assert router.registry.count("ledger") == 5000
    # Each live object holds 2 fds (database and WAL, exclusive locking: no -shm).
    assert peak - baseline <= 2 * 750 + 50
    assert open_fds() <= baseline + 5


async def test_alarm_fires_once_and_survives_a_restart(tmp_path: Path) -> None:
    async with open_router(tmp_path, KINDS) as router:
        now = router.clock()
        await router.call("ledger", "soon", SetAlarm(now + 0.2), create=True)
        await router.call("ledger", "later", SetAlarm(now + 1.0), create=True)
        await router.call("ledger", "cleared", SetAlarm(now + 0.3), create=True)
        await router.call("ledger", "cleared", SetAlarm(None))
        with trio.fail_after(5):
            while not Ledger.fired:
                await trio.sleep(0.01)
        assert [name for name, _ in Ledger.fired] == ["soon"]
    # "later" is due while no router runs; a new one fires it from the file's record.
    await trio.sleep(max(0.0, now + 1.0 - router.clock()))
    async with open_router(tmp_path, KINDS) as router:
        with trio.fail_after(5):
            while len(Ledger.fired) < 2:
                await trio.sleep(0.01)
        await trio.sleep(0.3)
        entries = await router.call("ledger", "later", Entries())
        assert entries.count("alarm fired") == 1
        assert "cleared" not in {name for name, _ in Ledger.fired}
    assert [name for name, _ in Ledger.fired] == ["soon", "later"]


async def test_a_failing_alarm_is_retried_with_backoff(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    config = RouterConfig(alarm_retry_base=1.0)
    Ledger.alarm_failures["flaky"] = 3
    async with open_router(tmp_path, KINDS, config, clock=trio.current_time) as router:
        start = trio.current_time()
        await router.call("ledger", "flaky", SetAlarm(start + 10), create=True)
        with trio.fail_after(60):
            while not Ledger.fired:
                await trio.sleep(0.5)
        fired_at = Ledger.fired[0][1]
        # Due at +10, then retried after 1, 2 and 4 s of backoff.
        assert fired_at == pytest.approx(start + 10 + 1 + 2 + 4, abs=0.5)
        await trio.sleep(30)
        assert len(Ledger.fired) == 1


async def test_an_overflowing_watcher_is_closed_4008_and_others_keep_every_message(
    tmp_path: Path,
) -> None:
    async with open_router(tmp_path, KINDS) as router:
        await router.call("ledger", "fan", Append(0), create=True)
        sockets = router.sockets("ledger", "fan")
        slow, fast = Watcher(queue_size=5), Watcher(queue_size=1000)
        sockets.attach(slow)
        sockets.attach(fast)
        got: list[object] = []

        async def send(message: object) -> None:
            got.append(message)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(fast.serve_writer, send)
            for n in range(1, 51):
                await router.call("ledger", "fan", Append(n))
            with trio.fail_after(5):
                while len(got) < 50:
                    await trio.sleep(0.01)
            fast.close(CloseReason(1000))
        assert slow.close_reason == CloseReason(CLOSE_TOO_SLOW, "too slow")
        assert slow not in list(sockets)
        assert got == list(range(1, 51))
        assert sockets.dropped == 1
