"""Compare the registry with the object files, and repair the registry from the files.

The registry's ``file`` column (the id -> file map) is rebuilt from the files too:
every file's ``_object`` table names its kind and id, and a named file's own name is
the ``file`` value of its row.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from storage.objects import ObjectStore, connect, remove_file
from storage.paths import is_file_name, kind_dir, object_digest
from storage.registry import ObjectRow, Registry


@dataclass
class Report:
    """What a reconcile pass found (ids per problem) and whether it repaired them."""

    checked: int = 0
    missing: list[str] = field(default_factory=list)  # in the registry, no file
    orphaned: list[str] = field(default_factory=list)  # a file, not in the registry
    stale: list[str] = field(default_factory=list)  # registry row differs from the file
    corrupt: list[str] = field(default_factory=list)  # unreadable files (paths)
    #: Named files without a record (paths): creations that never committed. A repair
    #: removes them (they hold nothing).
    abandoned: list[str] = field(default_factory=list)
    #: Files (paths) holding the record of an id that another file holds too, the one
    #: the registry names (or, with no row, the most recently updated one).
    duplicates: list[str] = field(default_factory=list)
    #: Why each corrupt file (by path) is unusable.
    corrupt_reasons: dict[str, str] = field(default_factory=dict)
    #: The fields in which each stale row (by id) differs from its file.
    stale_fields: dict[str, list[str]] = field(default_factory=dict)
    #: The id each duplicate file (by path) claims.
    duplicate_ids: dict[str, str] = field(default_factory=dict)
    #: The file (path) of each missing, orphaned or stale id.
    paths: dict[str, str] = field(default_factory=dict)
    repaired: bool = False

    @property
    def ok(self) -> bool:
        """True when nothing was found wrong."""
        return not (
            self.missing
            or self.orphaned
            or self.stale
            or self.corrupt
            or self.abandoned
            or self.duplicates
        )


def row_from_record(kind: str, record: dict[str, object]) -> ObjectRow | None:
    """Build a registry row from an object file's record, or None if it was never created."""
    if record.get("created_at") is None or record.get("id") is None:
        return None
    summary = record.get("summary")
    return ObjectRow(
        kind=kind,
        id=str(record["id"]),
        owner=record.get("owner"),  # type: ignore[arg-type]
        status=record.get("status"),  # type: ignore[arg-type]
        progress=record.get("progress"),  # type: ignore[arg-type]
        created_at=float(record["created_at"]),  # type: ignore[arg-type]
        updated_at=float(record.get("updated_at") or record["created_at"]),  # type: ignore[arg-type]
        alarm_at=wake_time(record),
        summary=None if summary is None else json.loads(str(summary)),
    )


def wake_time(record: dict[str, Any]) -> float | None:
    """When the runtime must wake the object: its alarm or its oldest unsent message."""
    times = [t for t in (record.get("alarm_at"), record.get("send_at")) if t is not None]
    return min(float(t) for t in times) if times else None


def differing_fields(a: ObjectRow, b: ObjectRow) -> list[str]:
    """Names of the fields in which two rows differ, in column order."""
    return [f.name for f in dataclasses.fields(a) if getattr(a, f.name) != getattr(b, f.name)]


def read_file_row(kind: str, path: Path) -> ObjectRow | None:
    """Read one object file's record without migrating or writing it.

    Raises:
        sqlite3.Error: the file is unreadable.
    """
    conn = connect(path, exclusive=False)
    try:
        record = dict(conn.execute("SELECT key, value FROM _object").fetchall())
    finally:
        conn.close()
    return row_from_record(kind, record)


def file_row(kind: str, path: Path) -> ObjectRow | None:
    """The registry row an object file stands for (its record, plus its file name in the
    named layout), or None if it holds no record.

    Raises:
        sqlite3.Error: the file is unreadable.
    """
    row = read_file_row(kind, path)
    if row is not None and is_file_name(path.stem):
        return dataclasses.replace(row, file=path.stem)
    return row


def located(store: ObjectStore, kind: str, object_id: str, name: str | None) -> Path:
    """The path of an object's file given its registry ``file`` value (None: hashed)."""
    return (store.named(kind, name) if name else store.hashed(kind, object_id)).path


def reconcile(store: ObjectStore, registry: Registry, kind: str, *, repair: bool) -> Report:
    """Check every file of ``kind`` against the registry; with ``repair``, fix the registry.

    Files are the source of truth: an orphaned or stale file's record (and its file
    name: the id -> file map) is written to the registry, a registry row without a
    file is removed, and a named file that never got a record (an aborted creation)
    is removed. Corrupt and duplicate files are reported, never deleted. Run it while
    no server holds the files (objects lock them).
    """
    report = Report()
    listed = registry.files(kind)
    claims: dict[str, list[tuple[Path, ObjectRow]]] = {}
    for path in store.iter_files(kind):
        report.checked += 1
        try:
            row = file_row(kind, path)
        except sqlite3.Error as exc:
            report.corrupt.append(str(path))
            report.corrupt_reasons[str(path)] = f"unreadable: {exc}"
            continue
        named = is_file_name(path.stem)
        if row is None and named:
            report.abandoned.append(str(path))
            continue
        if row is None or (not named and object_digest(kind, row.id) != path.stem):
            # Never created (an aborted create) or a file in the wrong place.
            report.corrupt.append(str(path))
            report.corrupt_reasons[str(path)] = (
                "no object record (never created: an aborted create)"
                if row is None
                else f"holds the record of {row.id!r}, whose file belongs at another path"
            )
            continue
        claims.setdefault(row.id, []).append((path, row))
    fixes: list[ObjectRow] = []
    for object_id, candidates in claims.items():
        path, row = _choose(candidates, listed.get(object_id, ""))
        for other, _ in candidates:
            if other != path:
                report.duplicates.append(str(other))
                report.duplicate_ids[str(other)] = object_id
        report.paths[object_id] = str(path)
        current = registry.get(kind, object_id)
        if current is None:
            report.orphaned.append(object_id)
            fixes.append(row)
        elif current != row:
            report.stale.append(object_id)
            report.stale_fields[object_id] = differing_fields(current, row)
            fixes.append(row)
    for object_id in sorted(set(listed) - set(claims)):
        path = located(store, kind, object_id, listed[object_id])
        if not path.exists():  # present but unreadable: already reported
            report.missing.append(object_id)
            report.paths[object_id] = str(path)
    if repair:
        for row in fixes:
            registry.stage(row)
        for object_id in report.missing:
            registry.stage_delete(kind, object_id)
        registry.flush_now()
        for path in report.abandoned:
            remove_file(Path(path))
        report.repaired = True
    return report


def _choose(
    candidates: list[tuple[Path, ObjectRow]], listed_file: str | None
) -> tuple[Path, ObjectRow]:
    # The file the registry names, else the most recently updated one.
    if len(candidates) > 1:
        for candidate in candidates:
            if candidate[1].file == listed_file:
                return candidate
    return max(candidates, key=lambda c: (c[1].updated_at, str(c[0])))


#: Seconds of slack for file timestamps (coarse mtime, clock adjustments).
MTIME_SLACK = 2.0


def refresh_changed(store: ObjectStore, registry: Registry, kind: str, since: float) -> list[str]:
    """After an unclean stop: re-read every file of ``kind`` changed since ``since``
    (its database or WAL modified, or renamed into place) and write its record to the
    registry; remove named files that never got a record (creations cut short).

    Only fields staged but never flushed can be stale (creation, deletion and status
    changes are written before their answers), so files untouched since the last
    flush are skipped by their timestamps. Returns the ids that were refreshed.
    """
    threshold = since - MTIME_SLACK
    refreshed: list[str] = []
    for path in _changed_files(store, kind, threshold):
        try:
            row = file_row(kind, path)
        except sqlite3.Error:
            continue  # unreadable: activation reports it for that id alone
        named = is_file_name(path.stem)
        if row is None:
            if named:
                remove_file(path)  # handed out by the pool, never committed: reclaim it
            continue
        if not named and object_digest(kind, row.id) != path.stem:
            continue
        current = registry.get(kind, row.id)
        if (
            current is not None
            and current.file != row.file
            and located(store, kind, row.id, current.file).exists()
        ):
            continue  # another file holds this id: the doctor reports it
        if current != row:
            registry.stage(row)
            refreshed.append(row.id)
    registry.flush_now()
    return refreshed


def _changed_files(store: ObjectStore, kind: str, threshold: float) -> Iterator[Path]:
    # One directory listing per shard and one stat per existing file: a WAL is only
    # stat'ed when the listing shows one (100,000 objects: ~6 s before, see
    # docs/performance.md).
    base = kind_dir(store.root, kind)
    if not base.is_dir():
        return
    for shard in os.scandir(base):
        if not shard.is_dir():
            continue
        entries = {entry.name: entry for entry in os.scandir(shard.path)}
        for name, entry in entries.items():
            if not name.endswith(".sqlite"):
                continue
            with contextlib.suppress(FileNotFoundError):
                stat = entry.stat()
                # ctime too: a pool file renamed into place keeps its old mtime.
                latest = max(stat.st_mtime, stat.st_ctime)
                wal = entries.get(name + "-wal")
                if wal is not None:
                    latest = max(latest, wal.stat().st_mtime)
                if latest >= threshold:
                    yield Path(entry.path)
