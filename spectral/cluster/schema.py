"""The cluster's PostgreSQL schema as numbered migrations, recorded in ``cluster_schema``.

Every node runs :func:`migrate` when it starts; an advisory lock makes concurrent nodes
apply each migration once, and the whole run is one transaction (PostgreSQL's DDL is
transactional), so a crash mid-way leaves the previous version.
"""

from __future__ import annotations

import psycopg

#: (version, SQL). Append only; never edit a released entry.
MIGRATIONS: tuple[tuple[int, str], ...] = (
    (
        1,
        """
        CREATE TABLE nodes (
            node_id     text PRIMARY KEY,
            epoch       bigint NOT NULL,
            rpc_addr    text NOT NULL,
            lease_until timestamptz NOT NULL
        );
        CREATE TABLE placements (
            kind    text NOT NULL,
            id      text NOT NULL,
            node_id text NOT NULL REFERENCES nodes (node_id),
            token   bigint NOT NULL DEFAULT 0 CHECK (token >= 0),
            PRIMARY KEY (kind, id)
        );
        CREATE INDEX placements_node ON placements (node_id);
        """,
    ),
)

#: Key of the transaction-level advisory lock that serialises migrations across nodes.
_LOCK_KEY = 0x5EC7_C105


def migrate(conn: psycopg.Connection) -> list[int]:
    """Apply the missing migrations (call inside a transaction); returns the versions applied."""
    conn.execute("SELECT pg_advisory_xact_lock(%s)", (_LOCK_KEY,))
    conn.execute(
        "CREATE TABLE IF NOT EXISTS cluster_schema ("
        " version int PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())"
    )
    row = conn.execute("SELECT coalesce(max(version), 0) FROM cluster_schema").fetchone()
    current = row[0] if row else 0
    applied = []
    for version, sql in MIGRATIONS:
        if version <= current:
            continue
        conn.execute(sql)  # type: ignore[arg-type]  # trusted, constant DDL
        conn.execute("INSERT INTO cluster_schema (version) VALUES (%s)", (version,))
        applied.append(version)
    return applied


def version(conn: psycopg.Connection) -> int:
    """The schema version of the database (0 before the first migration)."""
    row = conn.execute("SELECT to_regclass('cluster_schema') IS NOT NULL").fetchone()
    if not row or not row[0]:
        return 0
    row = conn.execute("SELECT coalesce(max(version), 0) FROM cluster_schema").fetchone()
    return row[0] if row else 0
