"""PgSql raises the product's SqlError kinds, the psycopg error chained, as SqliteSql does
(tests/test_sql.py): unreachable or stopped PostgreSQL, constraints, other errors."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import psycopg
import pytest
import trio

from spectral.cluster import schema
from spectral.cluster.pg import DatabaseUnavailableError, open_database
from spectral.cluster.sql import PgSql
from spectral.sql import SqlConstraintError, SqlError, SqlUnavailableError
from tests.engines import Postgres, free_port


@pytest.fixture
async def sql(pg_url: str) -> AsyncIterator[PgSql]:
    """PgSql on a fresh, migrated database."""
    async with open_database(pg_url, size=2) as db:
        await db.run(schema.migrate)
        yield PgSql(db)


def _insert_cursor(task_id: str) -> Any:
    return lambda conn: conn.execute(
        "INSERT INTO webhook_cursors (task_id, owner, seq) VALUES (?, ?, ?)", (task_id, "o", 1)
    )


async def test_a_closed_port_is_unavailable() -> None:
    url = f"postgresql://postgres@127.0.0.1:{free_port()}/postgres"
    async with open_database(url, size=1) as db:
        with trio.fail_after(30), pytest.raises(SqlUnavailableError) as caught:
            await PgSql(db).run(lambda conn: conn.execute("SELECT 1").fetchone())
    assert isinstance(caught.value.__cause__, DatabaseUnavailableError)


async def test_a_stopped_server_is_unavailable_then_serves_again(
    postgres: Postgres, sql: PgSql
) -> None:
    await sql.run(_insert_cursor("before"), write=True)  # a pooled connection exists
    async with postgres.stopped():
        with trio.fail_after(30):
            for _ in range(2):  # the broken pooled connection, then a refused connect
                with pytest.raises(SqlUnavailableError) as caught:
                    await sql.run(lambda conn: conn.execute("SELECT 1").fetchone())
                assert isinstance(
                    caught.value.__cause__, DatabaseUnavailableError | psycopg.OperationalError
                )
    with trio.fail_after(30):
        while True:  # the server may still be starting up
            try:
                await sql.run(_insert_cursor("after"), write=True)
                break
            except SqlUnavailableError:
                await trio.sleep(0.1)
    rows = await sql.run(
        lambda conn: conn.execute("SELECT task_id FROM webhook_cursors ORDER BY 1").fetchall()
    )
    assert rows == [("after",), ("before",)]


async def test_constraints_and_other_errors(sql: PgSql) -> None:
    await sql.run(_insert_cursor("t"), write=True)
    with pytest.raises(SqlConstraintError) as constraint:
        await sql.run(_insert_cursor("t"), write=True)
    assert isinstance(constraint.value.__cause__, psycopg.errors.UniqueViolation)
    with pytest.raises(SqlError) as bad:
        await sql.run(lambda conn: conn.execute("SELECT * FROM nowhere"))
    assert type(bad.value) is SqlError
    assert isinstance(bad.value.__cause__, psycopg.errors.UndefinedTable)
    # NUL cannot travel in a text parameter (hence the API's refusal, spectral/nul.py).
    with pytest.raises(SqlError) as nul:
        await sql.run(_insert_cursor("a\x00b"), write=True)
    assert type(nul.value) is SqlError
    # Errors of the function itself pass unchanged; the pool stays usable.
    with pytest.raises(ZeroDivisionError):
        await sql.run(lambda conn: 1 / 0)
    assert await sql.run(
        lambda conn: conn.execute("SELECT count(*) FROM webhook_cursors").fetchone()
    ) == (1,)


async def test_jsonb_refuses_an_escaped_nul(sql: PgSql) -> None:
    """Why metadata may not hold NUL: the objects triggers cast the summary to jsonb."""
    with pytest.raises(SqlError, match=r"unsupported Unicode escape|cannot be converted"):
        await sql.run(
            lambda conn: conn.execute("SELECT CAST(? AS text)::jsonb", ('{"k": "a\\u0000b"}',))
        )


async def test_a_database_pool_error_is_not_swallowed(sql: PgSql) -> None:
    """A cancelled call stays a cancellation, not an SqlError."""
    with trio.move_on_after(0.2) as scope:
        await sql.run(lambda conn: conn.execute("SELECT pg_sleep(5)"))
    assert scope.cancelled_caught
