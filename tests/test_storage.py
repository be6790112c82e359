"""storage/ on its own: hashed paths, migrations, object files, the registry, reconcile.

Real files under pytest's tmp_path and real SQLite; no runtime involved.
"""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
from pathlib import Path

import pytest
import trio
from trio.testing import MockClock

from storage import (
    Migration,
    MigrationError,
    ObjectCorruptError,
    ObjectMissingError,
    ObjectRow,
    ObjectStore,
    Registry,
    StorageError,
    migrate,
    object_digest,
    object_path,
    read_record,
    reconcile,
    schema_version,
    write_record,
)

NASTY_IDS = [
    "../x",
    "../../etc/passwd",
    "a/b",
    "/abs",
    "C:\\windows",
    "ünïcødé",
    "日本語/タスク",
    "emoji 🚀",
    "",
    ".",
    "..",
    "nul\x00byte",
    "x" * 1000,
    "same",
    "SAME",
]


def sha(kind: str, object_id: str) -> str:
    """The documented file name: sha256 of kind NUL id."""
    return hashlib.sha256(kind.encode() + b"\x00" + object_id.encode()).hexdigest()


def tables(conn: sqlite3.Connection) -> set[str]:
    return {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}


# -- paths -------------------------------------------------------------------------


@pytest.mark.parametrize("object_id", NASTY_IDS)
def test_object_path_is_sharded_hashed_and_never_contains_the_id(
    tmp_path: Path, object_id: str
) -> None:
    path = object_path(tmp_path, "ledger", object_id)
    digest = sha("ledger", object_id)
    assert object_digest("ledger", object_id) == digest
    assert path == tmp_path / "objects" / "ledger" / digest[:2] / f"{digest}.sqlite"
    relative = path.relative_to(tmp_path)
    assert relative.parts == ("objects", "ledger", digest[:2], f"{digest}.sqlite")
    assert path.resolve().is_relative_to(tmp_path.resolve())
    if len(object_id) > 2:
        assert object_id not in str(relative)


def test_paths_differ_per_id_and_per_kind(tmp_path: Path) -> None:
    paths = {object_path(tmp_path, "ledger", i) for i in NASTY_IDS}
    assert len(paths) == len(NASTY_IDS)
    assert object_path(tmp_path, "ledger", "x") != object_path(tmp_path, "notes", "x")
    # Stable: the same (kind, id) always maps to the same file.
    assert object_path(tmp_path, "ledger", "x") == object_path(tmp_path, "ledger", "x")
    # kind NUL id: a NUL in the id cannot collide with another (kind, id) split.
    assert object_digest("ab", "c") != object_digest("a", "bc")


@pytest.mark.parametrize("kind", ["", "Ledger", "../x", "a/b", "1abc", "a-b", "a" * 33, "ü"])
def test_invalid_kinds_are_refused(tmp_path: Path, kind: str) -> None:
    with pytest.raises(ValueError, match="invalid object kind"):
        object_path(tmp_path, kind, "x")
    with pytest.raises(ValueError):
        ObjectStore(tmp_path).register_kind(kind, [])


def test_a_lone_surrogate_id_is_a_value_error_not_a_path(tmp_path: Path) -> None:
    with pytest.raises(ValueError):  # UnicodeEncodeError is a ValueError
        object_path(tmp_path, "ledger", "\ud800")


def test_nasty_ids_create_files_only_at_their_hashed_paths(tmp_path: Path) -> None:
    store = ObjectStore(tmp_path)
    store.register_kind("ledger", [Migration(1, "CREATE TABLE t (x)")])
    shards = sorted(p.name for p in (tmp_path / "objects" / "ledger").iterdir())
    assert shards == [f"{i:02x}" for i in range(256)]
    for object_id in NASTY_IDS:
        conn = store.open("ledger", object_id, create=True)
        conn.execute("INSERT INTO t VALUES (?)", (object_id,))
        conn.close()
    files = sorted(store.iter_files("ledger"))
    assert files == sorted(store.path("ledger", i) for i in NASTY_IDS)
    # Nothing escaped the objects directory; no stray temporary files remain.
    everything = {p for p in tmp_path.rglob("*") if p.is_file()}
    assert everything == set(files)
    for object_id in NASTY_IDS:
        conn = store.open("ledger", object_id, create=False)
        assert conn.execute("SELECT x FROM t").fetchall() == [(object_id,)]
        conn.close()


# -- migrations ----------------------------------------------------------------------

ORDERED = [
    Migration(1, "CREATE TABLE log (step INTEGER); INSERT INTO log VALUES (1)"),
    Migration(2, "CREATE TABLE a (x INTEGER); INSERT INTO log VALUES (2)"),
    # Depends on 2; two statements on one line; a ';' inside a string literal; a trigger.
    Migration(
        3,
        "ALTER TABLE a ADD COLUMN y TEXT; INSERT INTO log VALUES (3);\n"
        "CREATE TABLE audit (v TEXT);\n"
        "CREATE TRIGGER a_audit AFTER INSERT ON a BEGIN\n"
        "  INSERT INTO audit VALUES ('x;' || new.x); INSERT INTO audit VALUES ('second');\n"
        "END; -- a comment; with a semicolon\n"
        "INSERT INTO log VALUES (30)",
    ),
]


def test_migrate_applies_steps_in_order_and_sets_user_version(tmp_path: Path) -> None:
    conn = sqlite3.connect(tmp_path / "m.sqlite", isolation_level=None)
    assert migrate(conn, ORDERED[:1]) == 1
    assert conn.execute("PRAGMA user_version").fetchone()[0] == 1
    assert migrate(conn, ORDERED) == 3
    assert conn.execute("PRAGMA user_version").fetchone()[0] == 3
    assert schema_version(conn) == 3
    assert [r[0] for r in conn.execute("SELECT step FROM log ORDER BY rowid")] == [1, 2, 3, 30]
    conn.execute("INSERT INTO a (x, y) VALUES (7, 'seven')")
    assert [r[0] for r in conn.execute("SELECT v FROM audit ORDER BY rowid")] == ["x;7", "second"]
    # Already current: nothing runs again.
    assert migrate(conn, ORDERED) == 3
    assert conn.execute("SELECT count(*) FROM log").fetchone()[0] == 4
    conn.close()


def test_migrate_with_a_stream_tracks_versions_in_a_table(tmp_path: Path) -> None:
    conn = sqlite3.connect(tmp_path / "shared.sqlite", isolation_level=None)
    migrate(conn, ORDERED[:2], stream="mine")
    migrate(conn, [Migration(1, "CREATE TABLE theirs (z)")], stream="theirs")
    assert schema_version(conn, "mine") == 2
    assert schema_version(conn, "theirs") == 1
    assert conn.execute("PRAGMA user_version").fetchone()[0] == 0
    assert dict(conn.execute("SELECT stream, version FROM _schema_versions")) == {
        "mine": 2,
        "theirs": 1,
    }
    conn.close()


def test_a_failing_migration_rolls_back_and_raises(tmp_path: Path) -> None:
    conn = sqlite3.connect(tmp_path / "m.sqlite", isolation_level=None)
    bad = Migration(
        2, "CREATE TABLE half (q); INSERT INTO half VALUES (1); INSERT INTO nope VALUES (1)"
    )
    with pytest.raises(MigrationError, match="migration 2 failed") as info:
        migrate(conn, [ORDERED[0], bad])
    assert isinstance(info.value, StorageError)
    assert isinstance(info.value.__cause__, sqlite3.Error)
    # Step 1 stays, step 2 left nothing behind, and the connection is usable.
    assert conn.execute("PRAGMA user_version").fetchone()[0] == 1
    assert "half" not in tables(conn)
    assert not conn.in_transaction
    assert [r[0] for r in conn.execute("SELECT step FROM log")] == [1]
    assert migrate(conn, ORDERED[:2]) == 2
    conn.close()


def test_migrations_must_be_numbered_without_gaps(tmp_path: Path) -> None:
    conn = sqlite3.connect(tmp_path / "m.sqlite", isolation_level=None)
    with pytest.raises(ValueError, match=r"1\.\.N in order; got 3 at position 2"):
        migrate(conn, [Migration(1, "SELECT 1"), Migration(3, "SELECT 1")])
    with pytest.raises(ValueError):
        migrate(conn, [Migration(2, "SELECT 1")])
    assert conn.execute("PRAGMA user_version").fetchone()[0] == 0
    conn.close()


def test_a_file_newer_than_the_code_is_refused(tmp_path: Path) -> None:
    conn = sqlite3.connect(tmp_path / "m.sqlite", isolation_level=None)
    migrate(conn, ORDERED)
    with pytest.raises(MigrationError, match="newer than this code"):
        migrate(conn, ORDERED[:2])
    assert conn.execute("PRAGMA user_version").fetchone()[0] == 3
    conn.close()


# -- object files ----------------------------------------------------------------------


def test_new_object_files_are_wal_with_the_full_schema(tmp_path: Path) -> None:
    store = ObjectStore(tmp_path)
    store.register_kind("notes", ORDERED)
    with pytest.raises(ObjectMissingError):
        store.open("notes", "n1", create=False)
    assert not store.exists("notes", "n1")
    conn = store.open("notes", "n1", create=True)
    assert store.exists("notes", "n1")
    assert conn.execute("PRAGMA user_version").fetchone()[0] == 3
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert conn.execute("PRAGMA locking_mode").fetchone()[0] == "exclusive"
    assert {"_object", "log", "a", "audit"} <= tables(conn)
    assert [r[0] for r in conn.execute("SELECT step FROM log ORDER BY rowid")] == [1, 2, 3, 30]
    assert read_record(conn) == {}
    conn.close()


def test_opening_an_old_file_applies_newer_migrations_in_order(tmp_path: Path) -> None:
    old = ObjectStore(tmp_path)
    old.register_kind("notes", ORDERED[:1])
    conn = old.open("notes", "n1", create=True)
    conn.execute("INSERT INTO log VALUES (100)")
    conn.close()

    new = ObjectStore(tmp_path)
    new.register_kind("notes", ORDERED)
    conn = new.open("notes", "n1", create=False)
    assert conn.execute("PRAGMA user_version").fetchone()[0] == 3
    steps = [r[0] for r in conn.execute("SELECT step FROM log ORDER BY rowid")]
    assert steps == [1, 100, 2, 3, 30]
    conn.close()


def test_a_failing_migration_on_open_leaves_the_file_at_its_version(tmp_path: Path) -> None:
    v1 = Migration(1, "CREATE TABLE a (x INTEGER)")
    old = ObjectStore(tmp_path)
    old.register_kind("notes", [v1])
    conn = old.open("notes", "dup", create=True)
    conn.executemany("INSERT INTO a VALUES (?)", [(1,), (1,)])
    conn.close()
    # Fine on the (empty) template, fails on this file's duplicate rows.
    v2 = Migration(2, "CREATE TABLE side (z); CREATE UNIQUE INDEX a_x ON a (x)")
    new = ObjectStore(tmp_path)
    new.register_kind("notes", [v1, v2])
    with pytest.raises(ObjectCorruptError) as info:
        new.open("notes", "dup", create=False)
    assert isinstance(info.value.__cause__, MigrationError)
    check = sqlite3.connect(new.path("notes", "dup"))
    assert check.execute("PRAGMA user_version").fetchone()[0] == 1
    assert "side" not in tables(check)
    assert check.execute("SELECT x FROM a").fetchall() == [(1,), (1,)]
    check.close()
    # Other objects of the kind are created at version 2.
    conn = new.open("notes", "fresh", create=True)
    assert conn.execute("PRAGMA user_version").fetchone()[0] == 2
    conn.close()


def test_a_kind_whose_migrations_fail_cannot_be_registered(tmp_path: Path) -> None:
    store = ObjectStore(tmp_path)
    with pytest.raises(MigrationError):
        store.register_kind("notes", [Migration(1, "CREATE TABLE oops (")])


def test_a_garbage_file_is_corrupt_and_left_in_place(tmp_path: Path) -> None:
    store = ObjectStore(tmp_path)
    store.register_kind("notes", ORDERED)
    store.open("notes", "bad", create=True).close()
    garbage = os.urandom(8192)
    store.path("notes", "bad").write_bytes(garbage)
    with pytest.raises(ObjectCorruptError, match="bad"):
        store.open("notes", "bad", create=False)
    with pytest.raises(ObjectCorruptError):
        store.open("notes", "bad", create=True)  # never overwritten by a fresh file
    assert store.path("notes", "bad").read_bytes() == garbage


def test_delete_removes_the_file_and_its_wal(tmp_path: Path) -> None:
    store = ObjectStore(tmp_path)
    store.register_kind("notes", ORDERED)
    conn = store.open("notes", "gone", create=True)
    conn.execute("INSERT INTO log VALUES (5)")
    path = store.path("notes", "gone")
    assert Path(f"{path}-wal").exists()
    conn.close()
    store.delete("notes", "gone")
    assert not path.exists() and not Path(f"{path}-wal").exists()
    store.delete("notes", "gone")  # idempotent
    assert list(store.iter_files("notes")) == []


# -- registry ----------------------------------------------------------------------------


def row(object_id: str, created: float, kind: str = "ledger", **fields: object) -> ObjectRow:
    return ObjectRow(kind=kind, id=object_id, created_at=created, updated_at=created, **fields)


async def test_registry_write_get_and_persistence(tmp_path: Path) -> None:
    registry = Registry(tmp_path / "registry.sqlite")
    written = row(
        "a/../ü",
        10.0,
        owner="alice",
        status="open",
        progress=0.5,
        alarm_at=99.0,
        summary={"title": "t", "n": [1, 2]},
    )
    await registry.write(written)
    assert registry.get("ledger", "a/../ü") == written
    assert registry.get("ledger", "other") is None
    assert registry.get("notes", "a/../ü") is None
    assert registry.count() == 1 and registry.count("ledger") == 1 and registry.count("x") == 0
    assert registry.alarms() == [("ledger", "a/../ü", 99.0)]
    # The upsert replaces the row.
    await registry.write(row("a/../ü", 10.0, owner="bob"))
    assert registry.get("ledger", "a/../ü") == row("a/../ü", 10.0, owner="bob")
    assert registry.alarms() == []
    registry.close()

    # Committed: another connection and a reopened registry see it.
    other = sqlite3.connect(tmp_path / "registry.sqlite")
    assert other.execute("SELECT owner FROM objects WHERE id = 'a/../ü'").fetchall() == [("bob",)]
    other.close()
    reopened = Registry(tmp_path / "registry.sqlite")
    assert reopened.get("ledger", "a/../ü") == row("a/../ü", 10.0, owner="bob")
    reopened.close()


async def test_registry_lists_newest_first_with_filters_and_totals(tmp_path: Path) -> None:
    registry = Registry(tmp_path / "registry.sqlite")
    for n in range(40):
        owner = ["alice", "bob", "carol", "dave"][n % 4]
        status = "done" if n % 5 == 0 else "open"
        registry.stage(row(f"task-{n}", 1000.0 + n, owner=owner, status=status))
    registry.stage(row("same-time-a", 500.0))
    registry.stage(row("same-time-b", 500.0))
    registry.stage(row("task-99", 5000.0, kind="notes"))  # another kind: never listed
    registry.flush_now()

    page = registry.list("ledger", limit=3)
    assert page.total == 42
    assert [r.id for r in page.rows] == ["task-39", "task-38", "task-37"]
    tail = registry.list("ledger", limit=5, offset=39)
    assert tail.total == 42
    assert [r.id for r in tail.rows] == ["task-0", "same-time-b", "same-time-a"]  # id DESC ties

    alice = registry.list("ledger", owner="alice", limit=100)
    assert alice.total == 10
    assert [r.id for r in alice.rows] == [f"task-{n}" for n in range(36, -1, -4)]
    done = registry.list("ledger", status="done", limit=100)
    assert [r.id for r in done.rows] == [f"task-{n}" for n in range(35, -1, -5)]
    both = registry.list("ledger", owner="alice", status="done", limit=100)
    assert [r.id for r in both.rows] == ["task-20", "task-0"] and both.total == 2
    assert registry.list("ledger", owner="nobody").total == 0

    prefixed = registry.list("ledger", id_prefix="task-1", limit=100)
    assert {r.id for r in prefixed.rows} == {"task-1", *(f"task-{n}" for n in range(10, 20))}
    assert prefixed.total == 11
    assert registry.list("ledger", id_prefix="task-1", owner="bob", limit=100).total == 3
    # The prefix is a prefix, not a LIKE pattern.
    assert registry.list("ledger", id_prefix="task-%").total == 0
    assert registry.list("ledger", id_prefix="task_").total == 0
    assert registry.list("ledger", id_prefix="same").total == 2
    registry.close()


async def test_registry_unicode_prefix_and_summary_round_trip(tmp_path: Path) -> None:
    registry = Registry(tmp_path / "registry.sqlite")
    for n, object_id in enumerate(["ü1", "ü2", "üü", "u1", "日本", "日本語", "z"]):
        registry.stage(row(object_id, float(n), summary={"id": object_id}))
    registry.flush_now()
    assert {r.id for r in registry.list("ledger", id_prefix="ü").rows} == {"ü1", "ü2", "üü"}
    assert [r.id for r in registry.list("ledger", id_prefix="日本").rows] == ["日本語", "日本"]
    assert registry.get("ledger", "日本語").summary == {"id": "日本語"}
    registry.close()


async def test_registry_delete_removes_only_that_row(tmp_path: Path) -> None:
    registry = Registry(tmp_path / "registry.sqlite")
    await registry.write(row("x", 1.0))
    await registry.write(row("y", 2.0))
    await registry.write(row("x", 1.0, kind="notes"))
    await registry.delete("ledger", "x")
    assert registry.get("ledger", "x") is None
    assert registry.get("notes", "x") == row("x", 1.0, kind="notes")
    assert registry.ids("ledger") == {"y"}
    assert registry.list("ledger").total == 1
    await registry.delete("ledger", "never-there")  # not an error
    registry.close()
    reopened = Registry(tmp_path / "registry.sqlite")
    assert reopened.ids("ledger") == {"y"}
    reopened.close()


async def test_registry_writer_stages_then_flushes_and_groups_durable_writes(
    tmp_path: Path, autojump_clock: MockClock
) -> None:
    registry = Registry(tmp_path / "registry.sqlite", flush_interval=0.1)
    outside = sqlite3.connect(tmp_path / "registry.sqlite")

    def seen() -> set[str]:
        return {r[0] for r in outside.execute("SELECT id FROM objects")}

    async with trio.open_nursery() as nursery:
        await nursery.start(registry.serve)
        registry.stage(row("staged", 1.0))
        assert registry.get("ledger", "staged") == row("staged", 1.0)  # readers see staged rows
        assert seen() == set()  # ... but it is not committed yet
        staged_at = trio.current_time()
        with trio.fail_after(5):  # virtual time: the flush interval, exactly
            while "staged" not in seen():
                await trio.sleep(0.01)
        assert 0.1 - 1e-9 <= trio.current_time() - staged_at < 0.1 + 0.05

        flushes = registry.flushes
        async with trio.open_nursery() as writers:
            for n in range(50):
                writers.start_soon(registry.write, row(f"durable-{n}", float(n)))
        assert seen() >= {f"durable-{n}" for n in range(50)}  # committed before write returned
        assert registry.flushes - flushes <= 5  # 50 durable writes shared a few commits

        registry.stage_delete("ledger", "staged")
        assert registry.get("ledger", "staged") is None
        nursery.cancel_scope.cancel()
    assert "staged" not in seen()  # the writer flushed on its way out
    outside.close()
    registry.close()


# -- reconcile ------------------------------------------------------------------------------


def make_object(store: ObjectStore, object_id: str, **record: object) -> None:
    """A created object file with its record (as the runtime would write it)."""
    conn = store.open("notes", object_id, create=True)
    conn.execute("BEGIN")
    conn.execute("INSERT INTO log VALUES (42)")
    full = {"kind": "notes", "id": object_id, "created_at": 1.0, "updated_at": 2.0, **record}
    if isinstance(full.get("summary"), dict):
        full["summary"] = json.dumps(full["summary"])
    write_record(conn, full)
    conn.execute("COMMIT")
    conn.close()


def file_row(object_id: str, **fields: object) -> ObjectRow:
    return ObjectRow(kind="notes", id=object_id, created_at=1.0, updated_at=2.0, **fields)


def test_reconcile_reports_and_repair_fixes_the_registry_from_files(tmp_path: Path) -> None:
    store = ObjectStore(tmp_path)
    store.register_kind("notes", ORDERED)
    registry = Registry(tmp_path / "registry.sqlite")

    make_object(store, "good", owner="o", status="open", progress=0.25, summary={"t": 1})
    make_object(store, "orphan", owner="o", status="open", alarm_at=50.0)
    make_object(store, "stale", owner="o", status="done")
    make_object(store, "../weird/ü", status="open")
    make_object(store, "corrupt")
    make_object(store, "misplaced")
    store.open("notes", "never-created", create=True).close()  # an aborted create
    garbage = b"\x13garbage" * 1000
    store.path("notes", "corrupt").write_bytes(garbage)
    # A valid file sitting at another id's path.
    os.replace(store.path("notes", "misplaced"), store.path("notes", "elsewhere"))

    registry.stage(file_row("good", owner="o", status="open", progress=0.25, summary={"t": 1}))
    registry.stage(file_row("stale", owner="o", status="open"))
    registry.stage(file_row("../weird/ü", status="open"))
    registry.stage(file_row("missing", owner="o"))
    registry.stage(file_row("corrupt"))
    registry.flush_now()
    before = {r.id: r for r in registry.list("notes", limit=100).rows}

    report = reconcile(store, registry, "notes", repair=False)
    assert report.checked == 7
    assert report.orphaned == ["orphan"]
    assert report.stale == ["stale"]
    assert report.missing == ["missing"]
    assert sorted(report.corrupt) == sorted(
        str(store.path("notes", i)) for i in ("corrupt", "elsewhere", "never-created")
    )
    assert not report.ok and not report.repaired
    assert {r.id: r for r in registry.list("notes", limit=100).rows} == before  # untouched

    repaired = reconcile(store, registry, "notes", repair=True)
    assert repaired.repaired
    assert (repaired.orphaned, repaired.stale, repaired.missing) == (
        ["orphan"],
        ["stale"],
        ["missing"],
    )
    assert registry.get("notes", "orphan") == file_row(
        "orphan", owner="o", status="open", alarm_at=50.0
    )
    assert registry.get("notes", "stale") == file_row("stale", owner="o", status="done")
    assert registry.get("notes", "missing") is None
    assert registry.get("notes", "corrupt") == file_row("corrupt")  # a corrupt file's row stays
    assert registry.get("notes", "misplaced") is None
    assert registry.ids("notes") == {"good", "orphan", "stale", "../weird/ü", "corrupt"}
    assert store.path("notes", "corrupt").read_bytes() == garbage  # never deleted
    assert store.exists("notes", "elsewhere") and store.exists("notes", "never-created")

    again = reconcile(store, registry, "notes", repair=False)
    assert (again.orphaned, again.stale, again.missing) == ([], [], [])
    assert len(again.corrupt) == 3
    registry.close()


def test_reconcile_of_a_consistent_kind_is_ok(tmp_path: Path) -> None:
    store = ObjectStore(tmp_path)
    store.register_kind("notes", ORDERED)
    registry = Registry(tmp_path / "registry.sqlite")
    for n in range(5):
        make_object(store, f"n{n}", status="open")
        registry.stage(file_row(f"n{n}", status="open"))
    registry.flush_now()
    report = reconcile(store, registry, "notes", repair=True)
    assert report.ok and report.checked == 5
    assert registry.count("notes") == 5
    empty = reconcile(store, registry, "other_kind", repair=False)
    assert empty.ok and empty.checked == 0
    registry.close()
