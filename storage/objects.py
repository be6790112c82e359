"""One SQLite file per object: creation from a template, opening, deletion.

Connection settings and why:
- WAL journal (set once in the template, persisted in the file header).
- ``locking_mode=EXCLUSIVE`` before the first access: one actor is the file's only
  user, so no ``-shm`` file is created: 2 file descriptors per open object, not 3.
- ``synchronous=NORMAL``: a commit survives ``kill -9`` of the process (the WAL is
  in the OS page cache); FULL adds one fsync per commit (~200 µs here vs 15-40 µs)
  and only matters for power loss. Configurable.
- A small page cache (``cache_size``): objects are small; memory per live object
  matters more than re-reads.

Creating a fresh WAL database with its schema costs ~3 ms here (several fsyncs);
copying a pre-built template of the kind's schema and renaming it into place
costs a fraction of that and is atomic: a crash never leaves half a file. Kinds
with a pool (:mod:`storage.pool`) do even that ahead of demand.

Two layouts (:mod:`storage.paths`): a hashed file is found from its id alone; a
named file (pre-created, random name) through the registry's ``file`` column.
:class:`ObjectFile` says which one an object uses.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from storage.errors import MigrationError, ObjectCorruptError, ObjectMissingError
from storage.migrations import Migration, check_migrations, migrate
from storage.paths import (
    check_kind,
    kind_dir,
    named_path,
    new_file_name,
    object_path,
    shard_dirs,
)
from storage.tuning import tune_sqlite_memory

#: The runtime's own tables, present in every object file: the object's record
#: (id, owner, status, times, alarm...) as key/value rows, the source of truth
#: from which the registry can be rebuilt; the messages it sent that have not
#: reached their targets yet; and, per sender, the last message it applied
#: (actors/messaging.py).
SYSTEM_SCHEMA = """
CREATE TABLE IF NOT EXISTS _object (key TEXT PRIMARY KEY, value) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS _outbox (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    target_kind TEXT NOT NULL,
    target_id TEXT NOT NULL,
    key TEXT,
    body TEXT NOT NULL,
    create_target INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS _inbox (
    sender_kind TEXT NOT NULL,
    sender_id TEXT NOT NULL,
    incarnation REAL NOT NULL,
    seq INTEGER NOT NULL,
    PRIMARY KEY (sender_kind, sender_id)
) WITHOUT ROWID;
"""

# Pages of cache per object connection (negative = KiB). Objects are small.
_CACHE_KIB = 64
# Prepared statements kept per connection; a kind uses a handful.
_CACHED_STATEMENTS = 32


def connect(
    path: Path, *, synchronous: str = "NORMAL", exclusive: bool = True
) -> sqlite3.Connection:
    """Open an autocommit connection to ``path`` with the object settings above."""
    conn = sqlite3.connect(
        path,
        isolation_level=None,
        check_same_thread=False,
        cached_statements=_CACHED_STATEMENTS,
    )
    try:
        if exclusive:
            conn.execute("PRAGMA locking_mode = EXCLUSIVE")
        conn.execute(f"PRAGMA synchronous = {synchronous}")
        conn.execute(f"PRAGMA cache_size = -{_CACHE_KIB}")
    except sqlite3.Error:
        conn.close()
        raise
    return conn


@dataclass(frozen=True, slots=True)
class ObjectFile:
    """Where one object's file is."""

    kind: str
    path: Path
    #: Its name in the registry's id -> file map; None in the hashed layout.
    name: str | None = None


class ObjectStore:
    """Creates, opens and deletes object files under ``root/objects``.

    Args:
        root: the data directory.
        synchronous: SQLite ``synchronous`` setting for object files.
    """

    def __init__(self, root: Path, *, synchronous: str = "NORMAL") -> None:
        tune_sqlite_memory()
        self.root = Path(root)
        self.synchronous = synchronous
        self._migrations: dict[str, Sequence[Migration]] = {}
        self._templates: dict[str, bytes] = {}

    def register_kind(self, kind: str, migrations: Sequence[Migration]) -> None:
        """Declare a kind's schema and build its template file."""
        check_kind(kind)
        check_migrations(migrations)
        self._migrations[kind] = tuple(migrations)
        self._templates[kind] = self._build_template(kind)
        for directory in shard_dirs(self.root, kind):
            directory.mkdir(parents=True, exist_ok=True)

    def template(self, kind: str) -> bytes:
        """The bytes of a fresh file of ``kind`` (WAL, system table, every migration)."""
        return self._templates[kind]

    # -- where files are ---------------------------------------------------------------

    def hashed(self, kind: str, object_id: str) -> ObjectFile:
        """The file of ``(kind, object_id)`` in the hashed layout (no registry needed)."""
        return ObjectFile(kind, object_path(self.root, kind, object_id))

    def named(self, kind: str, name: str) -> ObjectFile:
        """The file called ``name`` in the named layout (the registry's ``file`` column)."""
        return ObjectFile(kind, named_path(self.root, kind, name), name)

    def path(self, kind: str, object_id: str) -> Path:
        """The hashed-layout file path of ``(kind, object_id)``."""
        return object_path(self.root, kind, object_id)

    def exists(self, kind: str, object_id: str) -> bool:
        """True if the object's hashed-layout file exists."""
        return self.path(kind, object_id).exists()

    # -- creating, opening, deleting -------------------------------------------------------

    def create(self, file: ObjectFile) -> None:
        """Write a fresh file (the kind's template) at ``file``: to a temporary name, then
        renamed into place, so a crash never leaves half a file under a real name."""
        write_atomically(file.path, self._templates[file.kind])

    def create_named(self, kind: str) -> ObjectFile:
        """Create a fresh file under a new random name, synchronously (no pool)."""
        file = self.named(kind, new_file_name())
        self.create(file)
        return file

    def open(self, kind: str, object_id: str, *, create: bool) -> sqlite3.Connection:
        """Open (and, if allowed, create) an object's hashed-layout file, migrated.

        Raises:
            ObjectMissingError: no file and ``create`` is false.
            ObjectCorruptError: the file cannot be opened, read or migrated.
        """
        file = self.hashed(kind, object_id)
        fresh = False
        if not file.path.exists():
            if not create:
                raise ObjectMissingError(f"{kind} {object_id!r} does not exist")
            self.create(file)
            fresh = True
        return self.open_file(file, fresh=fresh, label=f"{kind} {object_id!r}")

    def open_file(
        self, file: ObjectFile, *, fresh: bool, label: str | None = None
    ) -> sqlite3.Connection:
        """Open an existing object file, migrated to the current schema.

        Args:
            file: where the file is.
            fresh: the file was just made from this process's template (no migration
                needed; its first commit is deferred, see :meth:`settle`).
            label: how errors name the object (default: the file's path).

        Raises:
            ObjectMissingError: there is no file (checked unless ``fresh``).
            ObjectCorruptError: the file cannot be opened, read or migrated.
        """
        path = file.path
        label = label or str(path)
        if not fresh and not path.exists():
            raise ObjectMissingError(f"{label} does not exist")
        # A fresh file's first commit writes the WAL header, which SQLite fsyncs even
        # at synchronous=NORMAL (4 fdatasyncs, ~1.5 ms here, per new object). Under
        # NORMAL we defer that: the first commit runs with synchronous=OFF (still safe
        # against kill -9: the data is in the OS), then :func:`settle` restores NORMAL.
        deferred = fresh and self.synchronous.upper() == "NORMAL"
        try:
            conn = connect(path, synchronous="OFF" if deferred else self.synchronous)
        except sqlite3.Error as exc:
            raise ObjectCorruptError(f"{label}: cannot open: {exc}") from exc
        try:
            if not fresh:  # a template is already at the current schema
                conn.executescript(SYSTEM_SCHEMA)
                migrate(conn, self._migrations[file.kind])
            else:
                conn.execute("SELECT 1 FROM _object LIMIT 1").fetchall()
        except (sqlite3.Error, MigrationError) as exc:
            conn.close()
            raise ObjectCorruptError(f"{label}: unreadable: {exc}") from exc
        return conn

    def settle(self, conn: sqlite3.Connection) -> None:
        """Restore the configured ``synchronous`` after a fresh file's first commit."""
        conn.execute(f"PRAGMA synchronous = {self.synchronous}")

    def delete(self, kind: str, object_id: str) -> None:
        """Remove an object's hashed-layout file and its WAL; a missing file is no error."""
        self.delete_file(self.hashed(kind, object_id))

    def delete_file(self, file: ObjectFile) -> None:
        """Remove an object file and its WAL; a missing file is not an error."""
        remove_file(file.path)

    def iter_files(self, kind: str) -> Iterator[Path]:
        """Every object file of ``kind`` on disk (temporary files excluded)."""
        base = kind_dir(self.root, kind)
        if not base.is_dir():
            return
        for shard in sorted(os.scandir(base), key=lambda e: e.name):
            if not shard.is_dir():
                continue
            for entry in os.scandir(shard.path):
                if entry.name.endswith(".sqlite"):
                    yield Path(entry.path)

    def _build_template(self, kind: str) -> bytes:
        directory = self.root / "templates"
        directory.mkdir(parents=True, exist_ok=True)
        path = directory / f"{kind}.{os.getpid()}.sqlite"
        for suffix in ("", "-wal", "-shm"):
            Path(f"{path}{suffix}").unlink(missing_ok=True)
        conn = sqlite3.connect(path, isolation_level=None)
        try:
            conn.execute("PRAGMA journal_mode = WAL")
            conn.executescript(SYSTEM_SCHEMA)
            migrate(conn, self._migrations[kind])
            conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        finally:
            conn.close()
        data = path.read_bytes()
        for suffix in ("", "-wal", "-shm"):
            Path(f"{path}{suffix}").unlink(missing_ok=True)
        return data


def remove_file(path: Path) -> None:
    """Remove an SQLite file and its sidecars (WAL, shm, journal); missing ones are fine."""
    for suffix in ("", "-wal", "-shm", "-journal"):
        with contextlib.suppress(FileNotFoundError):
            os.unlink(f"{path}{suffix}")


def write_atomically(path: Path, data: bytes) -> None:
    """Write ``data`` to a temporary name beside ``path``, then rename it to ``path``."""
    tmp = f"{path}.{os.getpid()}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        os.write(fd, data)
    finally:
        os.close(fd)
    os.replace(tmp, path)


def read_record(conn: sqlite3.Connection) -> dict[str, object]:
    """The object's record (the ``_object`` table) as a dict."""
    return dict(conn.execute("SELECT key, value FROM _object").fetchall())


def write_record(conn: sqlite3.Connection, changes: dict[str, object]) -> None:
    """Upsert record keys inside the caller's transaction."""
    conn.executemany(
        "INSERT OR REPLACE INTO _object (key, value) VALUES (?, ?)", list(changes.items())
    )
