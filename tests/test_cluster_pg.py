"""spectral/cluster/pg.py and schema.py against the private PostgreSQL of tests/engines.py."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import AsyncIterator, Callable

import psycopg
import pytest
import trio

from spectral.cluster import schema
from spectral.cluster.pg import Database, DatabaseUnavailableError, open_database
from tests.engines import Postgres


@pytest.fixture
async def db(pg_url: str) -> AsyncIterator[Database]:
    """A pool of 2 on a fresh database."""
    async with open_database(pg_url, size=2) as database:
        yield database


def _active(url: str, needle: str) -> int:
    with psycopg.connect(url, autocommit=True) as conn:
        row = conn.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE state = 'active' AND query LIKE %s",
            (f"%{needle}%",),
        ).fetchone()
        assert row is not None
        return row[0]


async def _until(predicate: Callable[[], bool]) -> None:
    """Poll a sync predicate in a thread until true (callers bound it with fail_after)."""
    while not await trio.to_thread.run_sync(predicate):
        await trio.sleep(0.02)


async def test_run_is_one_transaction(db: Database) -> None:
    with trio.fail_after(30):
        await db.run(lambda c: c.execute("CREATE TABLE t (v int UNIQUE)"))

        def two_inserts(conn: psycopg.Connection) -> None:
            conn.execute("INSERT INTO t VALUES (1)")
            conn.execute("INSERT INTO t VALUES (1)")  # unique violation: all rolled back

        with pytest.raises(psycopg.errors.UniqueViolation):
            await db.run(two_inserts)
        count = await db.run(lambda c: c.execute("SELECT count(*) FROM t").fetchone())
        assert count == (0,)
        assert db.statistics().idle >= 1  # the connection survived the failed transaction


async def test_cancelled_call_leaves_the_pool_usable(db: Database, pg_url: str) -> None:
    with trio.fail_after(60):
        await db.run(lambda c: c.execute("CREATE TABLE t (v int)"))
        async with trio.open_nursery() as nursery:
            scope = trio.CancelScope()

            def write_then_sleep(conn: psycopg.Connection) -> None:
                conn.execute("INSERT INTO t VALUES (1)")
                conn.execute("SELECT pg_sleep(600) -- spectral-cancel")

            async def sleeper() -> None:
                with scope:
                    await db.run(write_then_sleep)
                    raise AssertionError("not cancelled")

            nursery.start_soon(sleeper)
            await _until(lambda: _active(pg_url, "spectral-cancel") == 1)
            scope.cancel()
        # The server-side query is cancelled, and every later call works (size 2: both slots).
        await _until(lambda: _active(pg_url, "spectral-cancel") == 0)
        for _ in range(4):
            assert await db.run(lambda c: c.execute("SELECT 1").fetchone()) == (1,)
        await _until(lambda: db.statistics().busy == 0)
        # The cancelled transaction's write was rolled back.
        assert await db.run(lambda c: c.execute("SELECT count(*) FROM t").fetchone()) == (0,)


async def test_unreachable_server_is_an_error_not_a_hang(postgres: Postgres, db: Database) -> None:
    with trio.fail_after(120):
        assert await db.run(lambda c: c.execute("SELECT 1").fetchone()) == (1,)
        async with postgres.stopped():
            with pytest.raises(DatabaseUnavailableError):
                await db.run(lambda c: c.execute("SELECT 1").fetchone())  # pooled, now broken
            with pytest.raises(DatabaseUnavailableError):
                await db.run(lambda c: c.execute("SELECT 1").fetchone())  # connect refused
        assert await db.run(lambda c: c.execute("SELECT 1").fetchone()) == (1,)


async def test_migrations_apply_once_even_concurrently(db: Database) -> None:
    with trio.fail_after(60):
        results: list[list[int]] = []

        async def migrate() -> None:
            results.append(await db.run(schema.migrate))

        async with trio.open_nursery() as nursery:
            for _ in range(4):
                nursery.start_soon(migrate)
        assert sorted(results, key=len) == [[], [], [], [v for v, _ in schema.MIGRATIONS]]
        assert await db.run(schema.version) == schema.MIGRATIONS[-1][0]


def test_single_process_mode_imports_no_cluster_code() -> None:
    code = (
        "import sys, spectral.server, spectral.ops.cli;"
        "names = ('psycopg', 'coredis', 'spectral.cluster');"
        "bad = [m for m in sys.modules if m.startswith(names)];"
        "print(bad); sys.exit(1 if bad else 0)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
