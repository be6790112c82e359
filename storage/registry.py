"""The registry: one database listing every object, written through one batching writer.

Every object has one row (kind, id, owner, status, progress, times, alarm, summary).
The object's own file is the source of truth; the registry is an index over all
files, kept in step by the runtime and repairable from the files (:mod:`storage.reconcile`).

Writes are staged in memory (latest row per object wins) and flushed by
:meth:`Registry.serve` in one transaction: at once when someone awaits durability
(:meth:`Registry.write`), otherwise every ``flush_interval`` seconds. Many actors'
durable writes that arrive together share one commit (group commit).

The registry runs in normal (not exclusive) locking mode, so that the CLI can read
it and add rows of its own tables while the server runs.
"""

from __future__ import annotations

import json
import logging
import sqlite3
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import trio

from storage.migrations import Migration, migrate
from storage.paths import named_path, object_path

log = logging.getLogger(__name__)

REGISTRY_MIGRATIONS: tuple[Migration, ...] = (
    Migration(
        1,
        """
        CREATE TABLE objects (
            kind TEXT NOT NULL,
            id TEXT NOT NULL,
            owner TEXT,
            status TEXT,
            progress REAL,
            created_at REAL NOT NULL,
            updated_at REAL NOT NULL,
            alarm_at REAL,
            summary TEXT,
            PRIMARY KEY (kind, id)
        ) WITHOUT ROWID;
        CREATE INDEX objects_by_created ON objects (kind, created_at DESC, id DESC);
        CREATE INDEX objects_by_owner ON objects (kind, owner, created_at DESC, id DESC);
        CREATE INDEX objects_by_status ON objects (kind, status, created_at DESC, id DESC);
        CREATE INDEX objects_by_owner_status
            ON objects (kind, owner, status, created_at DESC, id DESC);
        CREATE INDEX objects_by_alarm ON objects (alarm_at) WHERE alarm_at IS NOT NULL;
        """,
    ),
    Migration(
        2,
        """
        CREATE TABLE registry_state (key TEXT PRIMARY KEY, value) WITHOUT ROWID;
        """,
    ),
    # Listing answers a total with every page: count(*) over 100,000 rows took
    # 13-16 ms here, a lookup in these per-(kind, owner, status) counts none.
    Migration(
        3,
        """
        CREATE TABLE object_counts (
            kind TEXT NOT NULL,
            owner TEXT NOT NULL,
            status TEXT NOT NULL,
            n INTEGER NOT NULL,
            PRIMARY KEY (kind, owner, status)
        ) WITHOUT ROWID;
        INSERT INTO object_counts (kind, owner, status, n)
            SELECT kind, coalesce(owner, ''), coalesce(status, ''), count(*)
            FROM objects GROUP BY 1, 2, 3;
        CREATE TRIGGER objects_counted_insert AFTER INSERT ON objects BEGIN
            INSERT INTO object_counts (kind, owner, status, n)
                VALUES (new.kind, coalesce(new.owner, ''), coalesce(new.status, ''), 1)
                ON CONFLICT (kind, owner, status) DO UPDATE SET n = n + 1;
        END;
        CREATE TRIGGER objects_counted_delete AFTER DELETE ON objects BEGIN
            UPDATE object_counts SET n = n - 1
                WHERE kind = old.kind AND owner = coalesce(old.owner, '')
                AND status = coalesce(old.status, '');
        END;
        CREATE TRIGGER objects_counted_update AFTER UPDATE OF kind, owner, status ON objects
            WHEN old.kind IS NOT new.kind OR old.owner IS NOT new.owner
                OR old.status IS NOT new.status
        BEGIN
            UPDATE object_counts SET n = n - 1
                WHERE kind = old.kind AND owner = coalesce(old.owner, '')
                AND status = coalesce(old.status, '');
            INSERT INTO object_counts (kind, owner, status, n)
                VALUES (new.kind, coalesce(new.owner, ''), coalesce(new.status, ''), 1)
                ON CONFLICT (kind, owner, status) DO UPDATE SET n = n + 1;
        END;
        """,
    ),
    # The id -> file map: the name of an object's file when it is not the hash of its
    # id (files pre-created in a pool, see storage/pool.py). NULL: the hashed layout,
    # as every row written before this migration.
    Migration(4, "ALTER TABLE objects ADD COLUMN file TEXT"),
)

_COLUMNS = "kind, id, owner, status, progress, created_at, updated_at, alarm_at, summary, file"
_UPSERT = (
    f"INSERT INTO objects ({_COLUMNS}) VALUES (?,?,?,?,?,?,?,?,?,?)"
    " ON CONFLICT (kind, id) DO UPDATE SET owner = excluded.owner, status = excluded.status,"
    " progress = excluded.progress, created_at = excluded.created_at,"
    " updated_at = excluded.updated_at, alarm_at = excluded.alarm_at,"
    " summary = excluded.summary, file = excluded.file"
)


@dataclass(frozen=True, slots=True)
class ObjectRow:
    """One registry row: what listing needs to know about an object without opening it."""

    kind: str
    id: str
    created_at: float
    updated_at: float
    owner: str | None = None
    status: str | None = None
    progress: float | None = None
    alarm_at: float | None = None
    summary: Mapping[str, Any] | None = None
    #: The object's file name in the named layout; None: the hashed layout.
    file: str | None = None

    def as_params(self) -> tuple[Any, ...]:
        """The row as SQL parameters, in column order."""
        return (
            self.kind,
            self.id,
            self.owner,
            self.status,
            self.progress,
            self.created_at,
            self.updated_at,
            self.alarm_at,
            None if self.summary is None else json.dumps(self.summary, separators=(",", ":")),
            self.file,
        )

    @classmethod
    def from_sql(cls, row: Sequence[Any]) -> ObjectRow:
        """Build from a ``SELECT {_COLUMNS}`` row."""
        kind, id_, owner, status, progress, created, updated, alarm, summary, file = row
        return cls(
            kind=kind,
            id=id_,
            owner=owner,
            status=status,
            progress=progress,
            created_at=created,
            updated_at=updated,
            alarm_at=alarm,
            summary=None if summary is None else json.loads(summary),
            file=file,
        )


@dataclass(frozen=True, slots=True)
class Page:
    """One page of a listing, newest first, and the total that matched."""

    rows: list[ObjectRow]
    total: int


@dataclass
class _Flush:
    done: trio.Event = field(default_factory=trio.Event)


_DELETE = object()

#: Receives every committed change (upserted rows, deleted keys) after the flush that
#: committed it, e.g. to keep a shared copy of the listing (cluster mode). A change whose
#: mirroring raised is retried with the next flush (the latest row per object wins).
Mirror = Callable[[list[ObjectRow], list[tuple[str, str]]], Awaitable[None]]


def connect_registry(path: Path) -> sqlite3.Connection:
    """Open the registry database (WAL, normal locking, a busy timeout for the CLI)."""
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=5.0)
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("PRAGMA synchronous = NORMAL")
    return conn


class Registry:
    """The registry database and its batching writer.

    Args:
        path: the database file (created if missing).
        migrations: extra migration streams by name, e.g. the product's own tables.
        flush_interval: longest time a non-durable change stays staged, in seconds.
    """

    def __init__(
        self,
        path: Path,
        *,
        migrations: Mapping[str, Sequence[Migration]] | None = None,
        flush_interval: float = 0.2,
    ) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self.flush_interval = flush_interval
        self.conn = connect_registry(path)
        migrate(self.conn, REGISTRY_MIGRATIONS, stream="storage")
        for stream, steps in (migrations or {}).items():
            migrate(self.conn, steps, stream=stream)
        self._staged: dict[tuple[str, str], ObjectRow | object] = {}
        self._flush = _Flush()
        self._staged_event = trio.Event()
        self._urgent = trio.Event()
        self._serving = False
        self.flushes = 0
        #: See :data:`Mirror`; set before :meth:`serve` starts.
        self.mirror: Mirror | None = None
        self._unmirrored: dict[tuple[str, str], ObjectRow | object] = {}

    # -- writing ---------------------------------------------------------------

    def stage(self, row: ObjectRow) -> None:
        """Queue an upsert; it is committed within ``flush_interval``."""
        self._staged[(row.kind, row.id)] = row
        self._staged_event.set()

    def stage_delete(self, kind: str, object_id: str) -> None:
        """Queue a delete; it is committed within ``flush_interval``."""
        self._staged[(kind, object_id)] = _DELETE
        self._staged_event.set()

    async def write(self, row: ObjectRow) -> None:
        """Upsert ``row`` and wait until it is committed."""
        self.stage(row)
        await self._wait_flush()

    async def delete(self, kind: str, object_id: str) -> None:
        """Delete a row and wait until that is committed."""
        self.stage_delete(kind, object_id)
        await self._wait_flush()

    async def _wait_flush(self) -> None:
        if not self._serving:
            # No writer running (CLI use, or after shutdown): commit inline.
            self.flush_now()
            return
        flush = self._flush
        self._urgent.set()
        await flush.done.wait()

    def flush_now(self) -> int:
        """Commit everything staged, synchronously; returns the number of rows written."""
        if not self._staged:
            return 0
        staged, self._staged = self._staged, {}
        upserts = [row.as_params() for row in staged.values() if isinstance(row, ObjectRow)]
        deletes = [key for key, row in staged.items() if row is _DELETE]
        try:
            self.conn.execute("BEGIN IMMEDIATE")
            if upserts:
                # An upsert, not INSERT OR REPLACE: REPLACE's implicit delete fires no
                # trigger, and the triggers keep object_counts.
                self.conn.executemany(_UPSERT, upserts)
            if deletes:
                self.conn.executemany("DELETE FROM objects WHERE kind = ? AND id = ?", deletes)
            self._set_state("flushed_at", time.time())
            self.conn.execute("COMMIT")
        except sqlite3.Error:
            if self.conn.in_transaction:
                self.conn.execute("ROLLBACK")
            # Put back what we took, unless something newer was staged meanwhile.
            for key, row in staged.items():
                self._staged.setdefault(key, row)
            raise
        self.flushes += 1
        if self.mirror is not None:
            self._unmirrored.update(staged)
        return len(staged)

    async def _mirror(self) -> None:
        """Hand the committed changes not yet mirrored to :attr:`mirror`."""
        if self.mirror is None or not self._unmirrored:
            return
        changes, self._unmirrored = self._unmirrored, {}
        upserts = [row for row in changes.values() if isinstance(row, ObjectRow)]
        deletes = [key for key, row in changes.items() if row is _DELETE]
        try:
            await self.mirror(upserts, deletes)
        except Exception:
            log.exception("registry mirror failed; retrying with the next flush")
            for key, row in changes.items():
                self._unmirrored.setdefault(key, row)
            self._staged_event.set()

    async def serve(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Run the batching writer until cancelled; flushes what is left on the way out."""
        self._serving = True
        task_status.started()
        try:
            while True:
                await self._staged_event.wait()
                with trio.move_on_after(self.flush_interval):
                    await self._urgent.wait()
                self._staged_event = trio.Event()
                self._urgent = trio.Event()
                flush, self._flush = self._flush, _Flush()
                failed = False
                try:
                    self.flush_now()
                    await self._mirror()
                except sqlite3.Error:
                    log.exception("registry flush failed; retrying")
                    failed = True
                finally:
                    flush.done.set()
                if self._staged:
                    self._staged_event.set()
                if failed:
                    await trio.sleep(self.flush_interval)
        finally:
            self._serving = False
            try:
                self.flush_now()
            except sqlite3.Error:
                log.exception("final registry flush failed")
            self._flush.done.set()

    def close(self) -> None:
        """Flush and close the database."""
        self.flush_now()
        self.conn.close()

    # -- crash bookkeeping -------------------------------------------------------

    def _set_state(self, key: str, value: object) -> None:
        self.conn.execute("INSERT OR REPLACE INTO registry_state VALUES (?, ?)", (key, value))

    def _state(self, key: str) -> Any:
        row = self.conn.execute("SELECT value FROM registry_state WHERE key = ?", (key,)).fetchone()
        return None if row is None else row[0]

    def begin_run(self) -> float | None:
        """Mark the registry in use; return when the last run's final flush happened if
        that run did not end cleanly (its staged changes may be lost), else None.
        """
        unclean = self._state("running") == 1
        flushed_at = self._state("flushed_at")
        self.conn.execute("BEGIN IMMEDIATE")
        self._set_state("running", 1)
        self.conn.execute("COMMIT")
        if not unclean:
            return None
        return float(flushed_at) if flushed_at is not None else 0.0

    def end_run(self) -> None:
        """Flush and mark the run as ended cleanly (everything staged is written)."""
        self.flush_now()
        self.conn.execute("BEGIN IMMEDIATE")
        self._set_state("running", 0)
        # Every object file is closed by now: nothing before this moment can be stale,
        # so a later unclean run's recovery re-reads only files changed after it.
        self._set_state("flushed_at", time.time())
        self.conn.execute("COMMIT")

    def mark_consistent(self, at: float) -> None:
        """Record that every file changed before ``at`` is reflected in the registry."""
        self.conn.execute("BEGIN IMMEDIATE")
        self._set_state("flushed_at", at)
        self.conn.execute("COMMIT")

    # -- reading ---------------------------------------------------------------

    def get(self, kind: str, object_id: str) -> ObjectRow | None:
        """The committed-or-staged row of one object, or None."""
        staged = self._staged.get((kind, object_id))
        if staged is _DELETE:
            return None
        if isinstance(staged, ObjectRow):
            return staged
        row = self.conn.execute(
            f"SELECT {_COLUMNS} FROM objects WHERE kind = ? AND id = ?", (kind, object_id)
        ).fetchone()
        return None if row is None else ObjectRow.from_sql(row)

    def file_of(self, kind: str, object_id: str) -> tuple[bool, str | None]:
        """Whether the registry lists the object, and its file name (None: hashed layout).

        An indexed primary-key lookup (a few µs), staged changes first.
        """
        staged = self._staged.get((kind, object_id))
        if staged is _DELETE:
            return False, None
        if isinstance(staged, ObjectRow):
            return True, staged.file
        row = self.conn.execute(
            "SELECT file FROM objects WHERE kind = ? AND id = ?", (kind, object_id)
        ).fetchone()
        return (False, None) if row is None else (True, row[0])

    def files(self, kind: str) -> dict[str, str | None]:
        """Every id of ``kind`` in the registry and its file name (None: hashed layout)."""
        return dict(self.conn.execute("SELECT id, file FROM objects WHERE kind = ?", (kind,)))

    def list(
        self,
        kind: str,
        *,
        owner: str | None = None,
        status: str | None = None,
        id_prefix: str | None = None,
        limit: int = 20,
        offset: int = 0,
    ) -> Page:
        """One page of a kind's objects, newest first, with filters."""
        where, params = ["kind = ?"], [kind]
        if owner is not None:
            where.append("owner = ?")
            params.append(owner)
        if status is not None:
            where.append("status = ?")
            params.append(status)
        if id_prefix:
            # Range scan on the primary key: [prefix, prefix + U+10FFFF).
            where.append("id >= ? AND id < ?")
            params.extend([id_prefix, id_prefix + "\U0010ffff"])
        clause = " AND ".join(where)
        if id_prefix:
            total = self.conn.execute(
                f"SELECT count(*) FROM objects WHERE {clause}", params
            ).fetchone()
        else:
            total = self.conn.execute(
                f"SELECT coalesce(sum(n), 0) FROM object_counts WHERE {clause}", params
            ).fetchone()
        rows = self.conn.execute(
            f"SELECT {_COLUMNS} FROM objects WHERE {clause}"
            " ORDER BY created_at DESC, id DESC LIMIT ? OFFSET ?",
            [*params, limit, offset],
        ).fetchall()
        return Page(rows=[ObjectRow.from_sql(r) for r in rows], total=int(total[0]))

    def alarms(self) -> list[tuple[str, str, float]]:
        """Every (kind, id, alarm_at) with an alarm set."""
        return [
            (kind, id_, at)
            for kind, id_, at in self.conn.execute(
                "SELECT kind, id, alarm_at FROM objects WHERE alarm_at IS NOT NULL"
            )
        ]

    def ids(self, kind: str) -> set[str]:
        """Every id of ``kind`` in the registry."""
        return {r[0] for r in self.conn.execute("SELECT id FROM objects WHERE kind = ?", (kind,))}

    def count(self, kind: str | None = None) -> int:
        """How many objects (of ``kind``) the registry lists."""
        if kind is None:
            sql, params = "SELECT coalesce(sum(n), 0) FROM object_counts", ()
        else:
            sql, params = "SELECT coalesce(sum(n), 0) FROM object_counts WHERE kind = ?", (kind,)
        return int(self.conn.execute(sql, params).fetchone()[0])


def locate(root: Path, kind: str, object_id: str) -> Path:
    """Where the object's file is in the data directory ``root``, per its registry row
    (the named layout) or its id (the hashed layout); for tools and tests.
    """
    conn = sqlite3.connect(f"file:{root / 'registry.sqlite'}?mode=ro", uri=True, timeout=5.0)
    try:
        row = conn.execute(
            "SELECT file FROM objects WHERE kind = ? AND id = ?", (kind, object_id)
        ).fetchone()
    finally:
        conn.close()
    if row is not None and row[0]:
        return named_path(root, kind, row[0])
    return object_path(root, kind, object_id)
