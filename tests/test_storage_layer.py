"""storage/: migrations, object files, the registry and reconcile, without the runtime."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from storage import (
    Migration,
    MigrationError,
    ObjectCorruptError,
    ObjectMissingError,
    ObjectRow,
    ObjectStore,
    Registry,
    migrate,
    reconcile,
    schema_version,
    write_record,
)

V1 = Migration(1, "CREATE TABLE a (x INTEGER)")
V2 = Migration(2, "ALTER TABLE a ADD COLUMN y TEXT; CREATE TABLE b (z)")


def test_migrations_apply_in_order_and_set_user_version(tmp_path: Path) -> None:
    conn = sqlite3.connect(tmp_path / "m.sqlite", isolation_level=None)
    migrate(conn, [V1])
    assert schema_version(conn) == 1
    migrate(conn, [V1, V2])
    assert schema_version(conn) == 2
    assert conn.execute("PRAGMA user_version").fetchone()[0] == 2
    conn.execute("INSERT INTO a (x, y) VALUES (1, 'one')")
    migrate(conn, [V1, V2])  # nothing newer: a no-op
    assert conn.execute("SELECT count(*) FROM a").fetchone()[0] == 1


def test_a_failing_migration_rolls_back_entirely(tmp_path: Path) -> None:
    conn = sqlite3.connect(tmp_path / "m.sqlite", isolation_level=None)
    migrate(conn, [V1])
    broken = Migration(2, "CREATE TABLE c (q); INSERT INTO nowhere VALUES (1)")
    with pytest.raises(MigrationError, match="migration 2"):
        migrate(conn, [V1, broken])
    assert schema_version(conn) == 1
    tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    assert "c" not in tables


def test_object_files_are_wal_created_from_templates_and_migrated(tmp_path: Path) -> None:
    store = ObjectStore(tmp_path)
    store.register_kind("thing", [V1])
    with pytest.raises(ObjectMissingError):
        store.open("thing", "t1", create=False)
    conn = store.open("thing", "t1", create=True)
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    conn.execute("INSERT INTO a (x) VALUES (1)")
    conn.close()
    # A newer schema is applied when the file is next opened.
    store = ObjectStore(tmp_path)
    store.register_kind("thing", [V1, V2])
    conn = store.open("thing", "t1", create=False)
    assert schema_version(conn) == 2
    assert conn.execute("SELECT x, y FROM a").fetchall() == [(1, None)]
    conn.close()


def test_a_garbage_file_is_a_storage_error(tmp_path: Path) -> None:
    store = ObjectStore(tmp_path)
    store.register_kind("thing", [V1])
    store.open("thing", "bad", create=True).close()
    store.path("thing", "bad").write_bytes(b"\x00garbage" * 512)
    with pytest.raises(ObjectCorruptError):
        store.open("thing", "bad", create=False)


def row(object_id: str, created: float, **fields: object) -> ObjectRow:
    """A registry row of kind "thing"."""
    return ObjectRow(kind="thing", id=object_id, created_at=created, updated_at=created, **fields)


async def test_registry_lists_newest_first_with_filters_and_totals(tmp_path: Path) -> None:
    registry = Registry(tmp_path / "registry.sqlite")
    for n in range(30):
        owner = "alice" if n % 2 else "bob"
        status = "done" if n % 3 == 0 else "open"
        await registry.write(row(f"t{n:02d}", float(n), owner=owner, status=status))
    page = registry.list("thing", limit=5)
    assert page.total == 30
    assert [r.id for r in page.rows] == ["t29", "t28", "t27", "t26", "t25"]
    alice_done = registry.list("thing", owner="alice", status="done", limit=100)
    assert {r.id for r in alice_done.rows} == {f"t{n:02d}" for n in range(30) if n % 6 == 3}
    assert alice_done.total == 5
    assert registry.list("thing", id_prefix="t1", limit=1).rows[0].id == "t19"
    assert registry.list("thing", id_prefix="t1").total == 10
    assert registry.list("thing", limit=5, offset=28).total == 30
    await registry.delete("thing", "t29")
    assert registry.get("thing", "t29") is None
    assert registry.count("thing") == 29
    registry.conn.close()


def test_reconcile_finds_and_repairs_registry_drift(tmp_path: Path) -> None:
    store = ObjectStore(tmp_path)
    store.register_kind("thing", [V1])
    registry = Registry(tmp_path / "registry.sqlite")
    for name in ("kept", "orphan", "stale"):
        conn = store.open("thing", name, create=True)
        write_record(conn, {"id": name, "created_at": 1.0, "updated_at": 2.0, "status": "open"})
        conn.close()
    registry.stage(row("kept", 1.0, status="open"))
    registry.stage(ObjectRow("thing", "kept", 1.0, 2.0, status="open"))
    registry.stage(ObjectRow("thing", "stale", 1.0, 1.5, status="old"))
    registry.stage(ObjectRow("thing", "missing", 1.0, 1.0))
    registry.flush_now()
    store.open("thing", "junk", create=True).close()
    store.path("thing", "junk").write_bytes(b"junk" * 1000)

    report = reconcile(store, registry, "thing", repair=False)
    assert report.orphaned == ["orphan"]
    assert report.stale == ["stale"]
    assert report.missing == ["missing"]
    assert report.corrupt == [str(store.path("thing", "junk"))]
    assert not report.ok and registry.get("thing", "orphan") is None

    repaired = reconcile(store, registry, "thing", repair=True)
    assert repaired.repaired
    assert registry.get("thing", "orphan") is not None
    stale = registry.get("thing", "stale")
    assert stale is not None and stale.status == "open"
    assert registry.get("thing", "missing") is None
    again = reconcile(store, registry, "thing", repair=False)
    assert (again.orphaned, again.stale, again.missing) == ([], [], [])
    registry.conn.close()
