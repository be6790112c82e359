"""Alarms: fire once, persist across restarts, retry with backoff, clear, move.

The router runs on trio's clock (``clock=trio.current_time``) with pytest-trio's
``autojump_clock``: virtual time jumps ahead whenever every task is blocked, so
alarms tens of seconds away fire instantly and at exact times.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import AbstractAsyncContextManager
from pathlib import Path

import pytest
import trio
from trio.testing import MockClock

from actors import ActorBrokenError, Router, RouterConfig, open_router
from storage import object_path
from tests.kinds import KINDS, Append, Delete, GetRecord, Ledger, Rows, SetAlarm, reset


@pytest.fixture(autouse=True)
def _reset_kinds() -> Iterator[None]:
    reset()
    yield
    reset()


def registry_alarm(root: Path, object_id: str) -> float | None:
    """The alarm the registry database holds (committed), read by another connection."""
    conn = sqlite3.connect(root / "registry.sqlite")
    try:
        row = conn.execute(
            "SELECT alarm_at FROM objects WHERE kind = 'ledger' AND id = ?", (object_id,)
        ).fetchone()
    finally:
        conn.close()
    assert row is not None, f"no registry row for {object_id!r}"
    return row[0]


def file_alarm(root: Path, object_id: str) -> float | None:
    """The alarm the object's own file holds (the router must be closed)."""
    conn = sqlite3.connect(object_path(root, "ledger", object_id))
    try:
        row = conn.execute("SELECT value FROM _object WHERE key = 'alarm_at'").fetchone()
    finally:
        conn.close()
    return None if row is None else row[0]


def open_clocked(
    root: Path, config: RouterConfig | None = None
) -> AbstractAsyncContextManager[Router]:
    """A router over ``root`` whose wall clock is trio's (virtual) clock."""
    return open_router(root, KINDS, config or RouterConfig(), clock=trio.current_time)


async def test_an_alarm_fires_once_at_its_time(tmp_path: Path, autojump_clock: MockClock) -> None:
    async with open_clocked(tmp_path) as router:
        t0 = trio.current_time()
        assert await router.call("ledger", "a", SetAlarm(t0 + 10), create=True) == t0 + 10
        assert router.statistics().alarms == 1
        assert registry_alarm(tmp_path, "a") == t0 + 10  # a new alarm is durable at once
        assert (await router.call("ledger", "a", GetRecord()))["alarm_at"] == t0 + 10

        await trio.sleep_until(t0 + 9.99)
        assert Ledger.alarm_calls == []
        await trio.sleep_until(t0 + 10.5)
        assert Ledger.fired == [("a", t0 + 10)]
        assert (await router.call("ledger", "a", GetRecord()))["alarm_at"] is None
        assert router.statistics().alarms == 0

        await trio.sleep_until(t0 + 500)
        assert Ledger.alarm_calls == [("a", t0 + 10)]  # once, and never again
        assert await router.call("ledger", "a", Rows()) == ["set alarm", "alarm"]
        assert registry_alarm(tmp_path, "a") is None  # the clearing reached the registry


async def test_alarms_survive_a_router_restart(tmp_path: Path, autojump_clock: MockClock) -> None:
    async with open_clocked(tmp_path) as router:
        t0 = trio.current_time()
        await router.call("ledger", "early", SetAlarm(t0 + 2), create=True)
        await router.call("ledger", "later", SetAlarm(t0 + 20), create=True)
        await router.call("ledger", "cleared", SetAlarm(t0 + 5), create=True)
        await router.call("ledger", "cleared", SetAlarm(None))
        await trio.sleep_until(t0 + 1)
        assert Ledger.alarm_calls == []
    assert file_alarm(tmp_path, "early") == t0 + 2
    assert file_alarm(tmp_path, "later") == t0 + 20
    assert file_alarm(tmp_path, "cleared") is None

    await trio.sleep_until(t0 + 3)  # "early" falls due while no router runs
    async with open_clocked(tmp_path) as router:
        # Loaded from the registry: nothing is activated until an alarm is due.
        stats = router.statistics()
        assert (stats.alarms, stats.live, stats.activations) == (2, 0, 0)
        await trio.sleep_until(t0 + 3.5)
        assert Ledger.fired == [("early", t0 + 3)]  # overdue: fired as the router started
        await trio.sleep_until(t0 + 30)
        assert Ledger.fired == [("early", t0 + 3), ("later", t0 + 20)]
        assert router.statistics().activations == 2
        assert await router.call("ledger", "later", Rows()) == ["set alarm", "alarm"]
    async with open_clocked(tmp_path) as router:
        assert router.statistics().alarms == 0
        await trio.sleep_until(t0 + 100)
    assert len(Ledger.alarm_calls) == 2


async def test_a_failing_alarm_is_retried_with_backoff_then_succeeds_once(
    tmp_path: Path, autojump_clock: MockClock
) -> None:
    config = RouterConfig(alarm_retry_base=0.01, crash_backoff=0.001)
    Ledger.alarm_failures["flaky"] = 3
    async with open_clocked(tmp_path, config) as router:
        t0 = trio.current_time()
        await router.call("ledger", "flaky", SetAlarm(t0 + 1), create=True)
        await trio.sleep_until(t0 + 5)
        calls = [round(at - t0, 6) for _, at in Ledger.alarm_calls]
        assert calls == [1.0, 1.01, 1.03, 1.07]  # base 0.01, doubling
        assert Ledger.fired == [("flaky", Ledger.alarm_calls[-1][1])]
        stats = router.statistics()
        assert (stats.restarts, stats.broken, stats.alarms) == (3, 0, 0)
        # The failed attempts wrote nothing; the success wrote once.
        assert await router.call("ledger", "flaky", Rows()) == ["set alarm", "alarm"]
        await trio.sleep_until(t0 + 600)
        assert len(Ledger.alarm_calls) == 4


async def test_clearing_an_alarm_stops_it(tmp_path: Path, autojump_clock: MockClock) -> None:
    config = RouterConfig(registry_flush_interval=0.5)
    async with open_clocked(tmp_path, config) as router:
        t0 = trio.current_time()
        await router.call("ledger", "c", SetAlarm(t0 + 10), create=True)
        assert await router.call("ledger", "c", SetAlarm(None)) is None
        assert router.statistics().alarms == 0
        await trio.sleep_until(t0 + 60)
        assert Ledger.alarm_calls == []
        assert (await router.call("ledger", "c", GetRecord()))["alarm_at"] is None
        assert registry_alarm(tmp_path, "c") is None


async def test_moving_an_alarm_later_or_earlier_fires_only_the_new_time(
    tmp_path: Path, autojump_clock: MockClock
) -> None:
    config = RouterConfig(registry_flush_interval=0.5)
    async with open_clocked(tmp_path, config) as router:
        t0 = trio.current_time()
        await router.call("ledger", "later", SetAlarm(t0 + 10), create=True)
        await router.call("ledger", "later", SetAlarm(t0 + 20))
        await router.call("ledger", "earlier", SetAlarm(t0 + 30), create=True)
        await router.call("ledger", "earlier", SetAlarm(t0 + 5))
        # An earlier alarm is in the registry before the answer (a restart must not miss it).
        assert registry_alarm(tmp_path, "earlier") == t0 + 5
        assert router.statistics().alarms == 2
        await trio.sleep_until(t0 + 100)
        assert Ledger.alarm_calls == [("earlier", t0 + 5), ("later", t0 + 20)]


async def test_an_alarm_activates_an_evicted_object(
    tmp_path: Path, autojump_clock: MockClock
) -> None:
    async with open_clocked(tmp_path) as router:
        t0 = trio.current_time()
        await router.call("ledger", "sleeper", SetAlarm(t0 + 10), create=True)
        assert await router.evict("ledger", "sleeper")
        await trio.sleep_until(t0 + 1)
        assert not router.is_live("ledger", "sleeper")
        await trio.sleep_until(t0 + 11)
        assert Ledger.fired == [("sleeper", t0 + 10)]
        assert router.statistics().activations == 2
        assert Ledger.loads == ["sleeper", "sleeper"]


async def test_deleting_an_object_drops_its_alarm(
    tmp_path: Path, autojump_clock: MockClock
) -> None:
    async with open_clocked(tmp_path) as router:
        t0 = trio.current_time()
        await router.call("ledger", "gone", SetAlarm(t0 + 10), create=True)
        await router.call("ledger", "gone", Append("x"))
        assert await router.call("ledger", "gone", Delete()) == "deleted"
        assert router.statistics().alarms == 0
        await trio.sleep_until(t0 + 60)
        assert Ledger.alarm_calls == []
        assert not router.store.exists("ledger", "gone")
        assert router.registry.alarms() == []


async def test_an_alarm_that_keeps_failing_breaks_the_id_then_fires_after_the_cooldown(
    tmp_path: Path, autojump_clock: MockClock
) -> None:
    config = RouterConfig(
        alarm_retry_base=1.0, crash_backoff=0.001, crash_limit=3, broken_cooldown=10
    )
    Ledger.alarm_failures["stubborn"] = 3
    async with open_clocked(tmp_path, config) as router:
        t0 = trio.current_time()
        await router.call("ledger", "stubborn", SetAlarm(t0 + 1), create=True)
        await trio.sleep_until(t0 + 5)
        assert [round(at - t0, 6) for _, at in Ledger.alarm_calls] == [1.0, 2.0, 4.0]
        # Three crashing alarm turns in a row: the object is broken for its cool-down.
        assert router.statistics().broken == 1
        with pytest.raises(ActorBrokenError):
            await router.call("ledger", "stubborn", Rows())
        await trio.sleep_until(t0 + 60)
        # The re-armed alarm was kept in the file and fired once the cool-down ended.
        assert len(Ledger.fired) == 1
        fired_at = Ledger.fired[0][1] - t0
        assert 4 + 10 <= fired_at <= 4 + 10 + 5
        assert await router.call("ledger", "stubborn", Rows()) == ["set alarm", "alarm"]
        assert router.statistics().alarms == 0
