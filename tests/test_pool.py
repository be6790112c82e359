"""The pool of pre-created files (storage/pool.py) and the registry's id -> file map.

Unit tests of FilePool (refill between its water marks, exhaustion, cancellation,
clearing), the router creating pooled objects (the map, eviction, deletion, the
synchronous fallback), the registry migration, and the doctor on the named layout.
Every wait is on an event (``wait_ready``), never on a sleep.
"""

from __future__ import annotations

import os
import shutil
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest
import trio

from actors import ObjectNotFoundError, Rejected, RouterConfig, open_router
from spectral.ops import doctor
from storage import (
    FilePool,
    ObjectRow,
    ObjectStore,
    Registry,
    is_file_name,
    named_path,
    object_digest,
    reconcile,
)
from storage.pool import BATCH
from tests.kinds import Append, Delete, Ledger, Rows, reset


class PooledLedger(Ledger):
    """The test ledger, with its files from a pool."""

    kind = "pledger"
    pooled = True


KINDS = [PooledLedger]


@pytest.fixture(autouse=True)
def _reset_kinds() -> Iterator[None]:
    reset()
    yield
    reset()


def make_store(root: Path) -> ObjectStore:
    """A store with the pooled kind registered."""
    store = ObjectStore(root)
    store.register_kind(PooledLedger.kind, PooledLedger.migrations)
    return store


def pool_files(pool: FilePool) -> list[str]:
    """Every database name in the pool's directory (each has an empty ``-wal`` beside it)."""
    names = sorted(os.listdir(pool.directory))
    databases = [name for name in names if not name.endswith("-wal")]
    assert names == sorted([*databases, *(f"{name}-wal" for name in databases)]), names
    return databases


def wal_bytes(path: Path) -> bytes:
    """The content of a database's ``-wal`` file."""
    return Path(f"{path}-wal").read_bytes()


# -- FilePool ----------------------------------------------------------------------


async def test_the_pool_fills_to_its_high_mark_and_refills_below_its_low_mark(
    tmp_path: Path,
) -> None:
    pool = FilePool(make_store(tmp_path), "pledger", low=3, high=5)
    async with trio.open_nursery() as nursery:
        await nursery.start(pool.serve)
        await pool.wait_ready(5)
        assert len(pool) == 5 and len(pool_files(pool)) == 5
        assert all(name.endswith(".sqlite") for name in pool_files(pool))

        taken = [pool.take(), pool.take()]  # 3 left: not below the low mark
        assert all(file is not None for file in taken)
        assert len(pool) == 3
        third = pool.take()  # 2 left: refill to 5
        assert third is not None
        await pool.wait_ready(5)
        assert pool.statistics().created == 8 and pool.statistics().taken == 3
        nursery.cancel_scope.cancel()
    for file in [*taken, third]:
        assert file is not None and file.name is not None and is_file_name(file.name)
        assert file.path == named_path(tmp_path, "pledger", file.name)
        assert file.path.read_bytes() == pool.store.template("pledger")
        assert wal_bytes(file.path) == b""  # made ahead too
        assert f"{file.name}.sqlite" not in pool_files(pool)


def test_an_empty_pool_hands_out_nothing_and_counts_a_miss(tmp_path: Path) -> None:
    pool = FilePool(make_store(tmp_path), "pledger", low=1, high=4)
    pool.clear()
    assert pool.take() is None
    assert pool.statistics().misses == 1


async def test_a_cancelled_refill_leaves_only_complete_files(tmp_path: Path) -> None:
    pool = FilePool(make_store(tmp_path), "pledger", low=0, high=100_000)
    async with trio.open_nursery() as nursery:
        await nursery.start(pool.serve)
        await pool.wait_ready(BATCH)
        nursery.cancel_scope.cancel()  # mid-fill: the batch in flight completes
    names = pool_files(pool)
    assert len(names) == len(pool) < 100_000
    assert all(name.endswith(".sqlite") for name in names)
    template = pool.store.template("pledger")
    assert all((pool.directory / name).read_bytes() == template for name in names)
    # The next run starts from an empty pool: nothing in it was ever handed out.
    assert pool.clear() == 2 * len(names)  # each with its -wal
    assert pool_files(pool) == [] and len(pool) == 0


def test_clear_removes_leftovers_of_an_earlier_run(tmp_path: Path) -> None:
    pool = FilePool(make_store(tmp_path), "pledger", low=0, high=1)
    pool.directory.mkdir(parents=True)
    (pool.directory / "0123.sqlite").write_bytes(b"old schema")
    (pool.directory / "4567.sqlite.99.tmp").write_bytes(b"half")
    assert pool.clear() == 2 and pool_files(pool) == []


def test_a_file_name_that_is_not_one_of_the_pool_s_never_becomes_a_path(tmp_path: Path) -> None:
    for name in ("../../etc/passwd", "ab" * 16 + "/..", "AB" * 16, "ab" * 32, ""):
        with pytest.raises(ValueError, match="invalid object file name"):
            named_path(tmp_path, "pledger", name)


def test_water_marks_are_checked() -> None:
    with pytest.raises(ValueError, match="low <= high"):
        FilePool(ObjectStore(Path("/nonexistent")), "pledger", low=5, high=2)


# -- the router: pooled creation and the id -> file map ------------------------------


def registry_file(root: Path, kind: str, object_id: str) -> tuple[str | None, ...] | None:
    """The registry row's ``file`` column, read from the database itself."""
    conn = sqlite3.connect(root / "registry.sqlite")
    try:
        return conn.execute(
            "SELECT file FROM objects WHERE kind = ? AND id = ?", (kind, object_id)
        ).fetchone()
    finally:
        conn.close()


async def test_a_pooled_object_lives_in_a_pool_file_found_through_the_registry(
    tmp_path: Path,
) -> None:
    config = RouterConfig(pool_low=2, pool_high=4)
    async with open_router(tmp_path, KINDS, config) as router:
        await router.pools["pledger"].wait_ready(4)
        assert await router.call("pledger", "p1", Append("a"), create=True) == 1
        path = router.file_of("pledger", "p1")
        assert path is not None and is_file_name(path.stem)
        assert path.stem != object_digest("pledger", "p1")  # not derived from the id
        row = router.registry.get("pledger", "p1")
        assert row is not None and row.file == path.stem
        assert router.statistics().pools[0].taken == 1

        # Evicted and re-activated: the map finds the same file.
        assert await router.evict("pledger", "p1")
        assert await router.call("pledger", "p1", Append("b")) == 2
        assert router.file_of("pledger", "p1") == path
        assert await router.call("pledger", "p1", Rows()) == ["a", "b"]

        # Deleted: file and row go; created again: another file.
        assert await router.call("pledger", "p1", Delete()) == "deleted"
        assert not path.exists() and router.registry.get("pledger", "p1") is None
        await router.call("pledger", "p1", Append("c"), create=True)
        again = router.file_of("pledger", "p1")
        assert again is not None and again != path
    assert registry_file(tmp_path, "pledger", "p1") == (again.stem,)


async def test_an_empty_pool_falls_back_to_creating_the_file_synchronously(
    tmp_path: Path,
) -> None:
    # low=0: taking the last file asks for no refill; only a miss does.
    config = RouterConfig(pool_low=0, pool_high=2)
    async with open_router(tmp_path, KINDS, config) as router:
        pool = router.pools["pledger"]
        await pool.wait_ready(2)
        for n in range(3):
            await router.call("pledger", f"p{n}", Append(n), create=True)
        stats = pool.statistics()
        assert (stats.taken, stats.misses) == (2, 1)
        files = {router.file_of("pledger", f"p{n}") for n in range(3)}
        assert None not in files and len(files) == 3
        assert all(is_file_name(path.stem) for path in files if path is not None)
        for n in range(3):
            assert await router.call("pledger", f"p{n}", Rows()) == [str(n)]


async def test_a_refused_creation_leaves_no_pool_file_behind(tmp_path: Path) -> None:
    config = RouterConfig(pool_low=1, pool_high=2)
    async with open_router(tmp_path, KINDS, config) as router:
        await router.pools["pledger"].wait_ready(2)
        with pytest.raises(Rejected):
            await router.call("pledger", "nope", Append("x", fail="reject"), create=True)
        assert router.registry.get("pledger", "nope") is None
        assert await router.evict("pledger", "nope")
    handed_out = [p for p in (tmp_path / "objects" / "pledger").rglob("*.sqlite")]
    assert handed_out == []


async def test_closing_the_router_cancels_a_refill_in_progress(tmp_path: Path) -> None:
    config = RouterConfig(pool_low=0, pool_high=1_000_000)
    async with open_router(tmp_path, KINDS, config) as router:
        await router.pools["pledger"].wait_ready(1)
    assert len(router.pools["pledger"]) < 1_000_000  # it stopped: the block ended
    async with open_router(tmp_path, KINDS, RouterConfig(pool_high=0)) as router:
        assert router.pools == {}  # pools off: the kind creates its files itself
        await router.call("pledger", "x", Append(1), create=True)
        path = router.file_of("pledger", "x")
        assert path is not None and path.stem == object_digest("pledger", "x")


async def test_a_row_whose_file_is_gone_is_unlisted_on_activation(tmp_path: Path) -> None:
    files = await make_objects(tmp_path, ["gone", "recreated"])
    for path in files.values():
        os.unlink(path)  # as a kill -9 between a deletion's file and row steps leaves it
    async with open_router(tmp_path, KINDS) as router:
        with pytest.raises(ObjectNotFoundError):
            await router.call("pledger", "gone", Rows())
        assert router.registry.get("pledger", "gone") is None
        assert await router.call("pledger", "recreated", Append("new"), create=True) == 1
        row = router.registry.get("pledger", "recreated")
        assert row is not None and row.file != files["recreated"].stem
    assert registry_file(tmp_path, "pledger", "gone") is None


# -- the registry's map ------------------------------------------------------------


def test_an_old_registry_migrates_its_rows_to_the_hashed_layout(tmp_path: Path) -> None:
    path = tmp_path / "registry.sqlite"
    registry = Registry(path)
    registry.stage(ObjectRow("task", "old", 1.0, 1.0, status="pending"))
    registry.flush_now()
    registry.conn.execute("ALTER TABLE objects DROP COLUMN file")  # as before migration 4
    registry.conn.execute("UPDATE _schema_versions SET version = 3 WHERE stream = 'storage'")
    registry.conn.close()
    migrated = Registry(path)
    assert migrated.file_of("task", "old") == (True, None)
    assert migrated.file_of("task", "new") == (False, None)
    migrated.stage(ObjectRow("task", "new", 2.0, 2.0, file="ab" * 16))
    assert migrated.file_of("task", "new") == (True, "ab" * 16)  # staged rows count
    migrated.flush_now()
    assert migrated.files("task") == {"old": None, "new": "ab" * 16}
    migrated.stage_delete("task", "new")
    assert migrated.file_of("task", "new") == (False, None)
    migrated.close()


# -- the doctor on the named layout --------------------------------------------------


async def make_objects(root: Path, ids: list[str]) -> dict[str, Path]:
    """Create pooled ledgers with one row each; their files by id."""
    async with open_router(root, KINDS, RouterConfig(pool_low=1, pool_high=8)) as router:
        await router.pools["pledger"].wait_ready(8)
        for object_id in ids:
            await router.call("pledger", object_id, Append(object_id), create=True)
        files = {object_id: router.file_of("pledger", object_id) for object_id in ids}
    assert all(path is not None for path in files.values())
    return files  # type: ignore[return-value]


async def test_the_doctor_rebuilds_the_map_and_reclaims_abandoned_files(tmp_path: Path) -> None:
    files = await make_objects(tmp_path, ["kept", "gone", "unlisted", "copied"])
    store = make_store(tmp_path)
    os.unlink(files["gone"])
    conn = sqlite3.connect(tmp_path / "registry.sqlite")
    conn.execute("DELETE FROM objects WHERE id = 'unlisted'")
    conn.commit()
    conn.close()
    abandoned = store.create_named("pledger")  # handed out, never committed
    duplicate = store.named("pledger", "f" * 32).path
    shutil.copy(files["copied"], duplicate)

    found = doctor.diagnose(tmp_path, ["pledger"], repair=False, now=0.0)
    problems = {(p.problem, p.id, p.path) for p in found.found.problems}
    rel = {k: str(v.relative_to(tmp_path)) for k, v in files.items()}
    assert problems == {
        ("missing", "gone", rel["gone"]),
        ("orphaned", "unlisted", rel["unlisted"]),
        ("abandoned", None, str(abandoned.path.relative_to(tmp_path))),
        ("duplicate", "copied", str(duplicate.relative_to(tmp_path))),
    }
    assert found.found.checked == {"pledger": 5}  # the pool directory is not checked

    repaired = doctor.diagnose(tmp_path, ["pledger"], repair=True, now=0.0)
    assert repaired.after is not None and repaired.after.healthy, repaired.after
    assert not abandoned.path.exists() and not duplicate.exists()
    assert list((tmp_path / "quarantine" / "pledger").glob(f"*{duplicate.name}"))
    registry = Registry(tmp_path / "registry.sqlite")
    assert registry.file_of("pledger", "unlisted") == (True, files["unlisted"].stem)
    assert registry.file_of("pledger", "copied") == (True, files["copied"].stem)
    assert registry.file_of("pledger", "gone") == (False, None)
    registry.close()

    async with open_router(tmp_path, KINDS) as router:  # and the runtime agrees
        assert await router.call("pledger", "unlisted", Rows()) == ["unlisted"]
        assert await router.call("pledger", "copied", Rows()) == ["copied"]


async def test_reconcile_points_a_row_at_the_file_that_holds_its_id(tmp_path: Path) -> None:
    files = await make_objects(tmp_path, ["moved"])
    store = make_store(tmp_path)
    elsewhere = store.named("pledger", "e" * 32).path
    os.rename(files["moved"], elsewhere)
    registry = Registry(tmp_path / "registry.sqlite")
    report = reconcile(store, registry, "pledger", repair=True)
    assert report.stale == ["moved"] and report.stale_fields["moved"] == ["file"]
    assert registry.file_of("pledger", "moved") == (True, "e" * 32)
    registry.close()


async def test_an_unclean_start_reclaims_files_of_creations_that_never_committed(
    tmp_path: Path,
) -> None:
    await make_objects(tmp_path, ["a"])
    store = make_store(tmp_path)
    abandoned = store.create_named("pledger")
    registry = Registry(tmp_path / "registry.sqlite")
    registry.begin_run()  # as if a server had started and been killed
    registry.close()
    async with open_router(tmp_path, KINDS) as router:
        assert not abandoned.path.exists()
        assert await router.call("pledger", "a", Rows()) == ["a"]
