"""Numbered schema migrations, applied on open and tracked with ``PRAGMA user_version``."""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass

from storage.errors import MigrationError


@dataclass(frozen=True, slots=True)
class Migration:
    """One schema step: ``version`` (1, 2, ...) and the SQL script that reaches it."""

    version: int
    sql: str


def check_migrations(migrations: Sequence[Migration]) -> None:
    """Raise ValueError unless versions run 1, 2, 3, ... without gaps."""
    for expected, migration in enumerate(migrations, start=1):
        if migration.version != expected:
            raise ValueError(
                f"migration versions must be 1..N in order; got {migration.version} "
                f"at position {expected}"
            )


def schema_version(conn: sqlite3.Connection, stream: str | None = None) -> int:
    """The file's current version: ``user_version``, or a named stream's row."""
    if stream is None:
        return int(conn.execute("PRAGMA user_version").fetchone()[0])
    conn.execute(
        "CREATE TABLE IF NOT EXISTS _schema_versions"
        " (stream TEXT PRIMARY KEY, version INTEGER NOT NULL) WITHOUT ROWID"
    )
    row = conn.execute(
        "SELECT version FROM _schema_versions WHERE stream = ?", (stream,)
    ).fetchone()
    return int(row[0]) if row else 0


def migrate(
    conn: sqlite3.Connection, migrations: Sequence[Migration], stream: str | None = None
) -> int:
    """Apply every migration newer than the file, each in its own transaction.

    Args:
        conn: an autocommit connection (``isolation_level=None``).
        migrations: the kind's migrations, versions 1..N.
        stream: None tracks the version in ``PRAGMA user_version`` (one schema per
            file); a name tracks it in ``_schema_versions``, so that several owners
            (storage's registry tables, the product's tables) share one database.

    Returns:
        The schema version after migrating.

    Raises:
        MigrationError: a step failed; it was rolled back, earlier steps stay.
    """
    check_migrations(migrations)
    current = schema_version(conn, stream)
    if current > len(migrations):
        raise MigrationError(
            f"file is at schema version {current}, newer than this code ({len(migrations)})"
        )
    for migration in migrations[current:]:
        try:
            conn.execute("BEGIN IMMEDIATE")
            for statement in _statements(migration.sql):
                conn.execute(statement)
            _set_version(conn, stream, migration.version)
            conn.execute("COMMIT")
        except sqlite3.Error as exc:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise MigrationError(f"migration {migration.version} failed: {exc}") from exc
        current = migration.version
    return current


def _set_version(conn: sqlite3.Connection, stream: str | None, version: int) -> None:
    if stream is None:
        conn.execute(f"PRAGMA user_version = {int(version)}")
    else:
        conn.execute(
            "INSERT OR REPLACE INTO _schema_versions (stream, version) VALUES (?, ?)",
            (stream, version),
        )


def _statements(script: str) -> list[str]:
    # executescript() would COMMIT our transaction first; split on complete statements.
    # Pieces end at every ";"; a piece inside a string literal is not complete yet.
    statements, buffer = [], ""
    pieces = script.split(";")
    for index, piece in enumerate(pieces):
        buffer += piece if index == len(pieces) - 1 else piece + ";"
        if sqlite3.complete_statement(buffer):
            if buffer.strip():
                statements.append(buffer.strip())
            buffer = ""
    if buffer.strip():
        statements.append(buffer.strip())
    return statements
