"""Compare the registry with the object files, and repair the registry from the files."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from storage.objects import ObjectStore, connect
from storage.paths import kind_dir, object_digest
from storage.registry import ObjectRow, Registry


@dataclass
class Report:
    """What a reconcile pass found (ids per problem) and whether it repaired them."""

    checked: int = 0
    missing: list[str] = field(default_factory=list)  # in the registry, no file
    orphaned: list[str] = field(default_factory=list)  # a file, not in the registry
    stale: list[str] = field(default_factory=list)  # registry row differs from the file
    corrupt: list[str] = field(default_factory=list)  # unreadable files (paths)
    #: Why each corrupt file (by path) is unusable.
    corrupt_reasons: dict[str, str] = field(default_factory=dict)
    #: The fields in which each stale row (by id) differs from its file.
    stale_fields: dict[str, list[str]] = field(default_factory=dict)
    repaired: bool = False

    @property
    def ok(self) -> bool:
        """True when nothing was found wrong."""
        return not (self.missing or self.orphaned or self.stale or self.corrupt)


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
        alarm_at=record.get("alarm_at"),  # type: ignore[arg-type]
        summary=None if summary is None else json.loads(str(summary)),
    )


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


def reconcile(store: ObjectStore, registry: Registry, kind: str, *, repair: bool) -> Report:
    """Check every file of ``kind`` against the registry; with ``repair``, fix the registry.

    Files are the source of truth: an orphaned or stale file's record is written to the
    registry, a registry row without a file is removed. Corrupt files are reported,
    never deleted. Run it while no server holds the files (objects lock them).
    """
    report = Report()
    listed = registry.ids(kind)
    seen: set[str] = set()
    fixes: list[ObjectRow] = []
    for path in store.iter_files(kind):
        report.checked += 1
        try:
            row = read_file_row(kind, path)
        except sqlite3.Error as exc:
            report.corrupt.append(str(path))
            report.corrupt_reasons[str(path)] = f"unreadable: {exc}"
            continue
        if row is None or object_digest(kind, row.id) != path.stem:
            # Never created (an aborted create) or a file in the wrong place.
            report.corrupt.append(str(path))
            report.corrupt_reasons[str(path)] = (
                "no object record (never created: an aborted create)"
                if row is None
                else f"holds the record of {row.id!r}, whose file belongs at another path"
            )
            continue
        seen.add(row.id)
        current = registry.get(kind, row.id)
        if current is None:
            report.orphaned.append(row.id)
            fixes.append(row)
        elif current != row:
            report.stale.append(row.id)
            report.stale_fields[row.id] = differing_fields(current, row)
            fixes.append(row)
    for object_id in sorted(listed - seen):
        if not store.exists(kind, object_id):  # present but unreadable: already reported
            report.missing.append(object_id)
    if repair:
        for row in fixes:
            registry.stage(row)
        for object_id in report.missing:
            registry.stage_delete(kind, object_id)
        registry.flush_now()
        report.repaired = True
    return report


#: Seconds of slack for file timestamps (coarse mtime, clock adjustments).
MTIME_SLACK = 2.0


def refresh_changed(store: ObjectStore, registry: Registry, kind: str, since: float) -> list[str]:
    """After an unclean stop: re-read every file of ``kind`` changed since ``since``
    (its database or WAL modified) and write its record to the registry.

    Only fields staged but never flushed can be stale (creation, deletion and status
    changes are written before their answers), so files untouched since the last
    flush are skipped by their timestamps. Returns the ids that were refreshed.
    """
    threshold = since - MTIME_SLACK
    refreshed: list[str] = []
    for path in _changed_files(store, kind, threshold):
        try:
            row = read_file_row(kind, path)
        except sqlite3.Error:
            continue  # unreadable: activation reports it for that id alone
        if row is None or object_digest(kind, row.id) != path.stem:
            continue
        if registry.get(kind, row.id) != row:
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
                latest = entry.stat().st_mtime
                wal = entries.get(name + "-wal")
                if wal is not None:
                    latest = max(latest, wal.stat().st_mtime)
                if latest >= threshold:
                    yield Path(entry.path)
