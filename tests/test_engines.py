"""The private PostgreSQL and Redis of tests/engines.py: reachable from trio, restartable."""

from __future__ import annotations

import coredis
import psycopg
import pytest
import trio

from tests import engines
from tests.engines import Postgres, Redis


def _pg_select(url: str, value: int) -> int:
    with psycopg.connect(url, connect_timeout=5) as conn:
        row = conn.execute("SELECT %s::int + 1", (value,)).fetchone()
        assert row is not None
        return row[0]


async def test_postgres_from_trio(postgres: Postgres) -> None:
    with trio.fail_after(30):
        assert await trio.to_thread.run_sync(_pg_select, postgres.url, 41) == 42


async def test_postgres_data_survives_a_restart(postgres: Postgres, pg_url: str) -> None:
    def write(conn_url: str) -> None:
        with psycopg.connect(conn_url) as conn:
            conn.execute("CREATE TABLE kept (v int)")
            conn.execute("INSERT INTO kept VALUES (7)")

    def read(conn_url: str) -> int:
        with psycopg.connect(conn_url) as conn:
            row = conn.execute("SELECT v FROM kept").fetchone()
            assert row is not None
            return row[0]

    with trio.fail_after(120):
        await trio.to_thread.run_sync(write, pg_url)
        async with postgres.stopped():
            with pytest.raises(psycopg.OperationalError):
                await trio.to_thread.run_sync(read, pg_url)
        assert await trio.to_thread.run_sync(read, pg_url) == 7


async def test_redis_from_trio(redis: Redis) -> None:
    with trio.fail_after(30):
        client = coredis.Redis.from_url(redis.url, decode_responses=True)
        async with client:
            await client.set("greeting", "hello")
            assert await client.get("greeting") == "hello"


async def test_redis_restart_forgets_and_the_client_reconnects(redis: Redis) -> None:
    with trio.fail_after(120):
        client = coredis.Redis.from_url(redis.url, decode_responses=True)
        async with client:
            await client.set("volatile", "1")
            await redis.arestart()
            # The same client works again (coredis reconnects); --save '': nothing survived.
            assert await client.get("volatile") is None
            await client.set("volatile", "2")
            assert await client.get("volatile") == "2"


def test_a_missing_engine_fails_instead_of_skipping(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(engines.glob, "glob", lambda _pattern: [])
    monkeypatch.setattr(engines.shutil, "which", lambda _name: None)
    with pytest.raises(pytest.fail.Exception, match="initdb was not found"):  # noqa: SIM117
        with engines._session_engine(engines.start_postgres):
            raise AssertionError("started without initdb")
    with pytest.raises(pytest.fail.Exception, match="redis-server was not found"):  # noqa: SIM117
        with engines._session_engine(engines.start_redis):
            raise AssertionError("started without redis-server")
