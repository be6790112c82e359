"""SqliteSql: a write commits on return and rolls back on an exception; reads run inline;
database errors leave as SqlError (constraint, unavailable, other), the original chained."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
import trio

from spectral.sql import Conn, SqlConstraintError, SqlError, SqliteSql, SqlUnavailableError


@pytest.fixture
def sql(tmp_path: Path) -> SqliteSql:
    conn = sqlite3.connect(tmp_path / "db.sqlite", isolation_level=None)
    conn.execute("CREATE TABLE t (k TEXT PRIMARY KEY, v INTEGER NOT NULL)")
    return SqliteSql(conn)


def _other(tmp_path: Path) -> list[tuple[str, int]]:
    """What another connection sees (only committed rows)."""
    with sqlite3.connect(tmp_path / "db.sqlite") as other:
        return other.execute("SELECT k, v FROM t ORDER BY k").fetchall()


async def test_a_write_commits_when_the_function_returns(sql: SqliteSql, tmp_path: Path) -> None:
    def insert(conn: Conn) -> int:
        conn.execute("INSERT INTO t VALUES (?, ?)", ("a", 1))
        conn.executemany("INSERT INTO t VALUES (?, ?)", [("b", 2), ("c", 3)])
        assert sql.conn.in_transaction
        return conn.execute("SELECT count(*) FROM t").fetchone()[0]

    assert await sql.run(insert, write=True) == 3
    assert not sql.conn.in_transaction
    assert _other(tmp_path) == [("a", 1), ("b", 2), ("c", 3)]


async def test_a_write_rolls_back_when_the_function_raises(sql: SqliteSql, tmp_path: Path) -> None:
    await sql.run(lambda conn: conn.execute("INSERT INTO t VALUES ('a', 1)"), write=True)

    def half_done(conn: Conn) -> None:
        conn.execute("UPDATE t SET v = 2 WHERE k = 'a'")
        conn.execute("INSERT INTO t VALUES ('b', 1)")
        raise KeyError("boom")

    with pytest.raises(KeyError, match="boom"):
        await sql.run(half_done, write=True)
    assert not sql.conn.in_transaction
    assert _other(tmp_path) == [("a", 1)]
    # An SQL error rolls back the same way, and the connection stays usable.
    with pytest.raises(SqlConstraintError) as caught:
        await sql.run(
            lambda conn: conn.executemany("INSERT INTO t VALUES (?, ?)", [("c", 1), ("a", 9)]),
            write=True,
        )
    assert isinstance(caught.value.__cause__, sqlite3.IntegrityError)
    assert _other(tmp_path) == [("a", 1)]
    assert await sql.run(lambda conn: conn.execute("SELECT v FROM t").fetchall()) == [(1,)]


async def test_a_read_runs_without_a_transaction(sql: SqliteSql) -> None:
    await sql.run(lambda conn: conn.execute("INSERT INTO t VALUES ('a', 1)"), write=True)

    def read(conn: Conn) -> list[tuple[str, int]]:
        assert not sql.conn.in_transaction
        rows = conn.execute("SELECT k, v FROM t WHERE k = ?", ("a",))
        return list(rows)

    assert await sql.run(read) == [("a", 1)]
    assert sql.dialect == "sqlite"


async def test_units_of_work_run_inline_without_a_checkpoint(sql: SqliteSql) -> None:
    """No other task runs between a check and an insert (single-process semantics)."""
    order: list[str] = []

    async def other() -> None:
        order.append("other")

    async with trio.open_nursery() as nursery:
        nursery.start_soon(other)
        await sql.run(lambda conn: order.append("read"))
        await sql.run(lambda conn: order.append("write"), write=True)
        order.append("done")
    assert order == ["read", "write", "done", "other"]


async def test_writes_do_not_nest(sql: SqliteSql) -> None:
    sql.conn.execute("BEGIN")
    with pytest.raises(RuntimeError, match="inside another transaction"):
        await sql.run(lambda conn: None, write=True)
    sql.conn.execute("ROLLBACK")


async def test_database_errors_are_sql_errors(sql: SqliteSql, tmp_path: Path) -> None:
    # A bad statement: an SqlError, neither "unavailable" nor a constraint.
    with pytest.raises(SqlError) as caught:
        await sql.run(lambda conn: conn.execute("SELECT * FROM nowhere"))
    assert type(caught.value) is SqlError
    assert isinstance(caught.value.__cause__, sqlite3.OperationalError)
    # Another connection holds the write lock: unavailable (busy), rolled back, usable.
    other = sqlite3.connect(tmp_path / "db.sqlite", isolation_level=None, timeout=0)
    sql.conn.execute("PRAGMA busy_timeout = 0")
    other.execute("BEGIN IMMEDIATE")
    try:
        with pytest.raises(SqlUnavailableError, match="locked"):
            await sql.run(lambda conn: conn.execute("INSERT INTO t VALUES ('x', 1)"), write=True)
    finally:
        other.execute("ROLLBACK")
        other.close()
    assert not sql.conn.in_transaction
    await sql.run(lambda conn: conn.execute("INSERT INTO t VALUES ('x', 1)"), write=True)
    assert _other(tmp_path) == [("x", 1)]
    # What the function raises by itself passes unchanged.
    with pytest.raises(KeyError):
        await sql.run(lambda conn: {}["missing"])
