"""The cluster's shared tables (schema.py migration 2) and PgSql (spectral/cluster/sql.py).

The PostgreSQL tables must be the SQLite registry's twins: same columns, keys and indexes,
and triggers that leave task_tags, task_tag_counts, task_external_ids and object_counts
exactly as SQLite's do. The strongest check runs the same statements on both databases
and compares every derived table.
"""

from __future__ import annotations

import json
import random
import sqlite3
from collections.abc import AsyncIterator, Iterator, Sequence
from pathlib import Path
from typing import Any

import psycopg
import pytest
import trio

from spectral.access import keys
from spectral.api import idempotency
from spectral.cluster import schema
from spectral.cluster.pg import Database, open_database
from spectral.cluster.sql import PgSql, translate
from spectral.integrations import store as integration_store
from spectral.sql import SqlConstraintError, SqlError
from spectral.tasks import index as task_index
from spectral.webhooks import store as webhook_store
from storage import migrate
from storage.registry import _UPSERT, REGISTRY_MIGRATIONS, connect_registry

#: The registry's migration streams, as spectral/server.py serve() passes them.
STREAMS = {
    keys.STREAM: keys.MIGRATIONS,
    idempotency.STREAM: idempotency.MIGRATIONS,
    webhook_store.STREAM: webhook_store.MIGRATIONS,
    task_index.STREAM: task_index.MIGRATIONS,
    integration_store.STREAM: integration_store.MIGRATIONS,
}
#: Every migration's version, in order.
VERSIONS = [version for version, _ in schema.MIGRATIONS]
#: SQLite tables that stay node-local, or are SQLite's own bookkeeping.
LOCAL = {"registry_state", "_schema_versions"}
#: Columns PostgreSQL adds: the writer's node and fencing token; SQLite's implicit rowid.
EXTRA = {"objects": ["node_id", "token"], "webhook_deliveries": ["rowid"]}
TYPES = {"TEXT": "text", "REAL": "double precision", "INTEGER": "bigint", "BLOB": "bytea"}
DERIVED = {
    "objects": "kind, id, owner, status, progress, created_at, updated_at, alarm_at, summary, file",
    "object_counts": "kind, owner, status, n",
    "task_tags": "owner, tag, created_at, id, status",
    "task_tag_counts": "tag, owner, status, n",
    "task_external_ids": "owner, external_id, task_id",
}


@pytest.fixture
def lite(tmp_path: Path) -> Iterator[sqlite3.Connection]:
    """A SQLite registry with every migration stream applied."""
    conn = connect_registry(tmp_path / "registry.sqlite")
    migrate(conn, REGISTRY_MIGRATIONS, stream="storage")
    for stream, steps in STREAMS.items():
        migrate(conn, steps, stream=stream)
    yield conn
    conn.close()


@pytest.fixture
async def db(pg_url: str) -> AsyncIterator[Database]:
    """A pool on a fresh, migrated database."""
    async with open_database(pg_url, size=2) as database:
        await database.run(schema.migrate)
        yield database


# --- parity -----------------------------------------------------------------------------


def _lite_tables(conn: sqlite3.Connection) -> list[str]:
    rows = conn.execute(
        "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'"
    )
    return sorted(name for (name,) in rows if name not in LOCAL)


def _pg_columns(conn: psycopg.Connection, table: str) -> list[tuple[str, str, bool]]:
    rows = conn.execute(
        "SELECT column_name, data_type, is_nullable = 'NO' FROM information_schema.columns"
        " WHERE table_schema = 'public' AND table_name = %s ORDER BY ordinal_position",
        (table,),
    )
    return [(name, kind, notnull) for name, kind, notnull in rows]


def _pg_primary_key(conn: psycopg.Connection, table: str) -> list[str]:
    rows = conn.execute(
        "SELECT a.attname FROM pg_index x"
        " CROSS JOIN unnest(x.indkey) WITH ORDINALITY k (attnum, ord)"
        " JOIN pg_attribute a ON a.attrelid = x.indrelid AND a.attnum = k.attnum"
        " WHERE x.indrelid = %s::regclass AND x.indisprimary ORDER BY k.ord",
        (table,),
    )
    return [name for (name,) in rows]


def _pg_indexes(conn: psycopg.Connection, table: str) -> dict[str, tuple[list[Any], bool]]:
    rows = conn.execute(
        "SELECT i.relname, array_agg(ARRAY[a.attname, (x.indoption[k.ord - 1] & 1)::text]"
        " ORDER BY k.ord), x.indpred IS NOT NULL"
        " FROM pg_index x JOIN pg_class i ON i.oid = x.indexrelid"
        " CROSS JOIN unnest(x.indkey) WITH ORDINALITY k (attnum, ord)"
        " JOIN pg_attribute a ON a.attrelid = x.indrelid AND a.attnum = k.attnum"
        " WHERE x.indrelid = %s::regclass AND NOT x.indisprimary"
        " GROUP BY i.relname, x.indpred IS NOT NULL",
        (table,),
    )
    return {name: ([(c, d == "1") for c, d in cols], partial) for name, cols, partial in rows}


def _lite_indexes(conn: sqlite3.Connection, table: str) -> dict[str, tuple[list[Any], bool]]:
    found = {}
    for _, name, _, origin, partial in conn.execute(f"PRAGMA index_list({table})"):
        if origin != "c":
            continue  # a primary key's or UNIQUE's automatic index
        xinfo = conn.execute(f"PRAGMA index_xinfo({name})")
        cols = [(col, bool(desc)) for _, _, col, desc, _, key in xinfo if key]
        found[name] = (cols, bool(partial))
    return found


async def test_every_sqlite_table_has_a_postgresql_twin(
    lite: sqlite3.Connection, db: Database
) -> None:
    tables = _lite_tables(lite)
    assert {"objects", "object_counts", "task_tags", "api_keys", "webhook_cursors"} <= set(tables)

    def check(conn: psycopg.Connection) -> None:
        for table in tables:
            info = list(lite.execute(f"PRAGMA table_info({table})"))
            pk = [row[1] for row in sorted(info, key=lambda row: row[5]) if row[5]]
            expected = [(row[1], TYPES[row[2]], bool(row[3]) or row[1] in pk) for row in info]
            columns = _pg_columns(conn, table)
            assert [c[0] for c in columns] == [c[0] for c in expected] + EXTRA.get(table, []), table
            assert columns[: len(expected)] == expected, table
            assert _pg_primary_key(conn, table) == pk, table
            # Every SQLite index exists under its name, on the same leading columns and
            # directions, partial where SQLite's is.
            pg_indexes = _pg_indexes(conn, table)
            for name, (cols, partial) in _lite_indexes(lite, table).items():
                assert name in pg_indexes, (table, name)
                pg_cols, pg_partial = pg_indexes[name]
                assert pg_cols[: len(cols)] == cols, (table, name)
                assert pg_partial == partial, (table, name)
        # Every SQLite trigger has a namesake.
        lite_triggers = {
            n for (n,) in lite.execute("SELECT name FROM sqlite_master WHERE type = 'trigger'")
        }
        pg_triggers = {
            n for (n,) in conn.execute("SELECT tgname FROM pg_trigger WHERE NOT tgisinternal")
        }
        assert lite_triggers and lite_triggers <= pg_triggers
        node = _pg_columns(conn, "objects")[-2:]
        assert node == [("node_id", "text", False), ("token", "bigint", False)]
        assert "objects_by_node" in _pg_indexes(conn, "objects")

    await db.run(check)


# --- triggers: the same statements on both databases --------------------------------------

Step = tuple[str, Sequence[Any]]
DELETE = "DELETE FROM objects WHERE kind = ? AND id = ?"


def row(
    object_id: str,
    *,
    kind: str = "task",
    owner: str | None = "alice",
    status: str | None = "queued",
    created: float = 1.0,
    summary: dict[str, Any] | None = None,
) -> tuple[Any, ...]:
    """Parameters of the registry's upsert (storage/registry.py _UPSERT)."""
    text = None if summary is None else json.dumps(summary, separators=(",", ":"))
    return (kind, object_id, owner, status, 0.5, created, created + 1, None, text, None)


def apply(conn: Any, steps: Sequence[Step]) -> None:
    """Run the steps on a SQLite or PgSql connection (a list of rows: executemany)."""
    for sql, params in steps:
        if params and isinstance(params[0], tuple):
            conn.executemany(sql, params)
        else:
            conn.execute(sql, params)


def lite_run(conn: sqlite3.Connection, steps: Sequence[Step]) -> None:
    """The steps in one SQLite transaction, rolled back if one fails."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        apply(conn, steps)
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")


def lite_tables(conn: sqlite3.Connection) -> dict[str, list[tuple[Any, ...]]]:
    """Every derived table's rows, sorted."""
    return {t: sorted(conn.execute(f"SELECT {c} FROM {t}"), key=repr) for t, c in DERIVED.items()}


def pg_tables(conn: Any) -> dict[str, list[tuple[Any, ...]]]:
    """Every derived table's rows, sorted (on a PgSql connection)."""
    return {t: sorted(conn.execute(f"SELECT {c} FROM {t}"), key=repr) for t, c in DERIVED.items()}


class Twins:
    """One SQLite registry and one PostgreSQL database, fed the same transactions."""

    def __init__(self, lite: sqlite3.Connection, sql: PgSql) -> None:
        self.lite, self.sql = lite, sql

    async def run(self, *steps: Step) -> None:
        """Run the steps on both; both must succeed, or both fail."""
        lite_error: Exception | None = None
        try:
            lite_run(self.lite, steps)
        except sqlite3.Error as exc:
            lite_error = exc
        try:
            await self.sql.run(lambda c: apply(c, steps), write=True)
        except SqlError as exc:
            assert lite_error is not None, f"PostgreSQL failed alone: {exc}"
            return
        assert lite_error is None, f"SQLite failed alone: {lite_error}"

    async def same(self) -> dict[str, list[tuple[Any, ...]]]:
        """Assert every derived table holds the same rows on both; returns them."""
        mine = await self.sql.run(pg_tables)
        theirs = lite_tables(self.lite)
        for table in DERIVED:
            assert mine[table] == theirs[table], table
        return theirs


@pytest.fixture
def twins(lite: sqlite3.Connection, db: Database) -> Twins:
    """SQLite and PostgreSQL, both migrated and empty."""
    return Twins(lite, PgSql(db))


def upsert(*rows: tuple[Any, ...]) -> Step:
    """The registry's own upsert, for these rows."""
    return (_UPSERT, list(rows))


async def test_triggers_derive_what_sqlites_derive(twins: Twins) -> None:
    tagged = {"tags": ["a", "b", "a"], "parentId": "p1", "externalId": "x1", "seq": 1}
    with trio.fail_after(60):
        await twins.run(
            upsert(
                row("t1", summary=tagged),
                row("t2", summary={"tags": ["a"], "externalId": "x1"}),  # x1 is t1's
                row("t3", owner=None, status=None, summary={"tags": ["c"], "parentId": "t1"}),
                row("t4", summary=None),
                row("r1", kind="room", summary={"tags": ["a"], "externalId": "x9"}),
                row("t5", summary={"tags": "solo", "parentId": 7, "externalId": 5}),
                row("t6", summary={"tags": {"k": "v", "n": 2}}),
                row("t7", summary={"tags": [1, 2.5, True, False], "parentId": True}),
                row("t8", summary={"tags": [], "externalId": None, "parentId": None}),
            )
        )
        state = await twins.same()
        assert ("alice", "\x1fparent:p1", 1.0, "t1", "queued") in state["task_tags"]
        assert ("alice", "x1", "t1") in state["task_external_ids"]
        # A status change re-derives the tags (and their counts) with the new status.
        await twins.run(upsert(row("t1", status="running", summary=tagged)))
        state = await twins.same()
        assert ("a", "alice", "running", 1) in state["task_tag_counts"]
        # A summary change alone does not (SQLite's trigger only watches status, owner,
        # created_at and the summary's presence).
        await twins.run(("UPDATE objects SET summary = ? WHERE id = ?", ('{"tags":["z"]}', "t2")))
        await twins.same()
        # Summary gone: the tags go; back: they come back (from the new summary).
        await twins.run(("UPDATE objects SET summary = NULL WHERE id = ?", ("t1",)))
        await twins.run(
            (
                "UPDATE objects SET summary = ? WHERE id = ?",
                ('{"tags":["d"],"externalId":"x2"}', "t1"),
            )
        )
        await twins.same()
        # Owner and created_at changes move the rows; a kind change is a new task.
        await twins.run(
            ("UPDATE objects SET owner = 'bob' WHERE id = ?", ("t3",)),
            ("UPDATE objects SET created_at = 9.5 WHERE id = ?", ("t5",)),
            ("UPDATE objects SET kind = 'task' WHERE id = ?", ("r1",)),
        )
        await twins.same()
        # Deletes drop tags, and external ids only where the task holds them.
        await twins.run((DELETE, [("task", "t1"), ("task", "t2"), ("task", "t5"), ("task", "r1")]))
        state = await twins.same()
        # t1's current external id went with it; x1, from its first summary, stays (stale).
        assert ("alice", "x2", "t1") not in state["task_external_ids"]
        assert ("alice", "x1", "t1") in state["task_external_ids"]
        # A JSON null tag violates NOT NULL on both: the whole transaction rolls back.
        await twins.run(upsert(row("t9")), upsert(row("t10", summary={"tags": [None]})))
        state = await twins.same()
        assert not any(r[1] == "t9" for r in state["objects"])


def random_steps(rng: random.Random) -> list[Step]:
    """A transaction of 1-4 random changes over a few ids, owners, statuses and tags."""
    ids = [f"t{i}" for i in range(8)]
    steps: list[Step] = []
    for _ in range(rng.randint(1, 4)):
        op = rng.random()
        object_id = rng.choice(ids)
        if op < 0.5:
            rows = []
            for other in rng.sample(ids, rng.randint(1, 3)):
                summary = None
                if rng.random() > 0.15:
                    summary = {"tags": rng.sample(["a", "b", "c", "d"], rng.randint(0, 3))}
                    if rng.random() < 0.4:
                        summary["parentId"] = rng.choice(ids)
                    if rng.random() < 0.5:
                        summary["externalId"] = rng.choice(["x0", "x1", "x2"])
                rows.append(
                    row(
                        other,
                        kind="task" if rng.random() > 0.1 else "room",
                        owner=rng.choice([None, "alice", "bob"]),
                        status=rng.choice([None, "queued", "running", "done"]),
                        created=rng.choice([1.0, 2.0, 3.5]),
                        summary=summary,
                    )
                )
            steps.append(upsert(*rows))
        elif op < 0.65:
            steps.append((DELETE, ("task", object_id)))
        elif op < 0.75:
            status = rng.choice([None, "queued", "done"])
            steps.append(("UPDATE objects SET status = ? WHERE id = ?", (status, object_id)))
        elif op < 0.85:
            tags = json.dumps({"tags": ["e"], "externalId": "x3"})
            steps.append(("UPDATE objects SET summary = ? WHERE id = ?", (tags, object_id)))
        elif op < 0.92:
            steps.append(("UPDATE objects SET summary = NULL WHERE id = ?", (object_id,)))
        else:
            owner = rng.choice([None, "alice", "carol"])
            steps.append(("UPDATE objects SET owner = ? WHERE id = ?", (owner, object_id)))
    return steps


async def test_random_histories_derive_the_same_tables(twins: Twins) -> None:
    rng = random.Random(20240615)
    with trio.fail_after(120):
        for turn in range(300):
            await twins.run(*random_steps(rng))
            if turn % 10 == 9:
                await twins.same()
        state = await twins.same()
    assert state["task_tags"] and state["task_external_ids"]  # the history did index things


# --- PgSql -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("sqlite", "psycopg_sql"),
    [
        ("SELECT ? , ?", "SELECT %s , %s"),
        ("SELECT '?', ? WHERE x LIKE 'a%'", "SELECT '?', %s WHERE x LIKE 'a%%'"),
        ("SELECT 'it''s ?', \"odd?col\", ?", "SELECT 'it''s ?', \"odd?col\", %s"),
        ("SELECT ? -- why?\n, 5 % 2 /* 50%? */", "SELECT %s -- why?\n, 5 %% 2 /* 50%%? */"),
    ],
)
def test_translate(sqlite: str, psycopg_sql: str) -> None:
    assert translate(sqlite) == psycopg_sql
    assert translate(sqlite) is translate(sqlite)  # cached


def test_translate_refuses_numbered_placeholders() -> None:
    with pytest.raises(ValueError, match="numbered"):
        translate("SELECT ?1")


async def test_pgsql_placeholders_percent_and_like(db: Database) -> None:
    sql = PgSql(db)
    assert sql.dialect == "postgresql"

    def work(conn: Any) -> list[Any]:
        conn.executemany(
            "INSERT INTO webhook_cursors (task_id, owner, seq) VALUES (?, ?, ?)",
            [("a%b", "o", 1), ("a_b", "o", 2), ("zz", "o?", 3)],
        )
        return [
            conn.execute("SELECT ?, '?', 'x%'", ("50%",)).fetchone(),
            conn.execute("SELECT task_id FROM webhook_cursors WHERE task_id LIKE 'a%'").fetchall(),
            conn.execute(
                "SELECT task_id FROM webhook_cursors WHERE task_id LIKE ?", ("a%",)
            ).fetchall(),
            conn.execute("SELECT seq FROM webhook_cursors WHERE owner = 'o?'").fetchall(),
            [r for r in conn.execute("SELECT count(*) FROM webhook_cursors WHERE seq > ?", (1,))],
        ]

    got = await sql.run(work, write=True)
    assert got[0] == ("50%", "?", "x%")
    assert sorted(got[1]) == sorted(got[2]) == [("a%b",), ("a_b",)]
    assert got[3] == [(3,)]
    assert got[4] == [(2,)]


async def test_pgsql_rolls_back_on_exception(db: Database) -> None:
    sql = PgSql(db)

    def fails(conn: Any) -> None:
        conn.execute(
            "INSERT INTO webhook_cursors (task_id, owner, seq) VALUES (?, ?, ?)", ("t", "o", 1)
        )
        raise ValueError("boom")

    with pytest.raises(ValueError, match="boom"):
        await sql.run(fails, write=True)

    def count(conn: Any) -> Any:
        return conn.execute("SELECT count(*) FROM webhook_cursors").fetchone()

    assert await sql.run(count) == (0,)
    with pytest.raises(SqlConstraintError) as caught:
        await sql.run(
            lambda c: c.executemany(
                "INSERT INTO webhook_cursors (task_id, owner, seq) VALUES (?, ?, ?)",
                [("t", "o", 1), ("t", "o", 2)],
            ),
            write=True,
        )
    assert isinstance(caught.value.__cause__, psycopg.errors.UniqueViolation)
    assert await sql.run(count) == (0,)


async def test_pgsql_bytea_bools_and_rowcount(db: Database) -> None:
    sql = PgSql(db)
    digest = bytes(range(256))

    def work(conn: Any) -> list[Any]:
        conn.execute(
            "INSERT INTO api_keys (id, name, owner, role, hash, created_at) VALUES (?,?,?,?,?,?)",
            ("k1", None, "alice", "service", digest, 1.0),
        )
        conn.execute(
            "INSERT INTO webhooks (id, owner, url, event_type, active, secret, created_at,"
            " updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            ("w1", "alice", "http://127.0.0.1/", "task.updated", True, "s", 1.0, 1.0),
        )
        inserted = conn.executemany(
            "INSERT INTO webhook_cursors (task_id, owner, seq) VALUES (?, ?, ?)",
            [(f"t{i}", "o", i) for i in range(5)],
        ).rowcount
        updated = conn.execute("UPDATE webhook_cursors SET seq = seq + 1 WHERE seq >= ?", (2,))
        deleted = conn.executemany(
            "DELETE FROM webhook_cursors WHERE task_id = ?", [("t0",), ("t1",), ("nope",)]
        )
        return [
            conn.execute("SELECT hash FROM api_keys WHERE id = ?", ("k1",)).fetchone()[0],
            conn.execute("SELECT active FROM webhooks WHERE active = ?", (True,)).fetchall(),
            inserted,
            updated.rowcount,
            deleted.rowcount,
        ]

    stored, active, inserted, updated, deleted = await sql.run(work, write=True)
    assert type(stored) is bytes and stored == digest
    assert active == [(1,)]
    assert (inserted, updated, deleted) == (5, 3, 2)


# --- migrations ----------------------------------------------------------------------------


async def test_migration_applies_once_from_two_connections(pg_url: str) -> None:
    with trio.fail_after(60):
        async with open_database(pg_url, size=1) as one, open_database(pg_url, size=1) as two:
            results: list[list[int]] = []

            async def migrate_on(db: Database) -> None:
                results.append(await db.run(schema.migrate))

            for _ in range(3):  # the second and third rounds are no-ops
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(migrate_on, one)
                    nursery.start_soon(migrate_on, two)
            assert sorted(results, key=len) == [[]] * 5 + [VERSIONS]
            assert await one.run(schema.version) == VERSIONS[-1]


async def test_migration_2_upgrades_a_version_1_database(
    pg_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    with trio.fail_after(60):
        async with open_database(pg_url, size=1) as db:
            with monkeypatch.context() as patch:
                patch.setattr(schema, "MIGRATIONS", schema.MIGRATIONS[:1])
                assert await db.run(schema.migrate) == [1]
            assert await db.run(schema.migrate) == VERSIONS[1:]
            assert await db.run(schema.migrate) == []


async def test_migration_4_keeps_external_ids_as_old_reservations(
    pg_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Rows from before reserved_at read NULL (old); the trigger's rows stay valid."""
    with trio.fail_after(60):
        async with open_database(pg_url, size=1) as db:
            with monkeypatch.context() as patch:
                patch.setattr(schema, "MIGRATIONS", schema.MIGRATIONS[:3])
                assert await db.run(schema.migrate) == [1, 2, 3]
            sql = PgSql(db)
            await sql.run(
                lambda c: c.execute(
                    "INSERT INTO task_external_ids VALUES ('alice', 'x0', 'before')"
                ),
                write=True,
            )
            assert 4 in await db.run(schema.migrate)
            await sql.run(
                lambda c: apply(c, [upsert(row("t1", summary={"externalId": "x1"}))]),
                write=True,
            )
            rows = await sql.run(
                lambda c: c.execute(
                    "SELECT external_id, task_id, reserved_at FROM task_external_ids ORDER BY 1"
                ).fetchall()
            )
            assert rows == [("x0", "before", None), ("x1", "t1", None)]
