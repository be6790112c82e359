"""The cluster-wide listing: each node copies its registry rows into PostgreSQL's ``objects``.

A node's own registry (SQLite, next to its files) stays the runtime's index of what is
on its disk: files, alarms, recovery after a crash. Listing, counts, tags and external
ids must see every node's objects, so each node mirrors the rows it commits into the
shared ``objects`` table (storage.Registry's ``mirror`` hook: after each flush, in one
PostgreSQL transaction), stamped with its node id. Triggers there keep the counts, tags
and external ids, as the SQLite triggers do locally.

A row is only ever written by its home node: an upsert leaves a row of another node
alone (``WHERE objects.node_id = excluded.node_id``), and deletions name this node.
At start-up :meth:`RegistryMirror.resync` makes PostgreSQL agree with the local
registry (rows a crash kept from being mirrored, rows deleted meanwhile).
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import partial

import psycopg

from spectral.cluster.pg import Database
from storage import ObjectRow, Registry

_COLUMNS = (
    "kind, id, owner, status, progress, created_at, updated_at, alarm_at, summary, file, node_id"
)
_UPSERT = (
    f"INSERT INTO objects ({_COLUMNS}) VALUES (%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s)"
    " ON CONFLICT (kind, id) DO UPDATE SET owner = excluded.owner, status = excluded.status,"
    " progress = excluded.progress, created_at = excluded.created_at,"
    " updated_at = excluded.updated_at, alarm_at = excluded.alarm_at,"
    " summary = excluded.summary, file = excluded.file"
    " WHERE objects.node_id = excluded.node_id"
)
_DELETE = "DELETE FROM objects WHERE kind = %s AND id = %s AND node_id = %s"
#: Rows per statement batch in a resync.
RESYNC_BATCH = 2000


class RegistryMirror:
    """Writes this node's registry changes into the shared ``objects`` table."""

    def __init__(self, db: Database, node_id: str) -> None:
        self.db = db
        self.node_id = node_id
        self.mirrored = 0

    async def __call__(self, upserts: list[ObjectRow], deletes: list[tuple[str, str]]) -> None:
        """Mirror one flush (storage.registry.Mirror)."""
        await self.db.run(lambda conn: self._write(conn, upserts, deletes))
        self.mirrored += len(upserts) + len(deletes)

    def _write(
        self,
        conn: psycopg.Connection,
        upserts: Sequence[ObjectRow] = (),
        deletes: Sequence[tuple[str, str]] = (),
    ) -> None:
        node = self.node_id
        # Nodes' flushes update shared count rows (per kind, owner, status): taking them in
        # one order everywhere keeps concurrent flushes from deadlocking on each other.
        ordered = sorted(upserts, key=lambda r: (r.kind, r.owner or "", r.status or "", r.id))
        with conn.cursor() as cursor:
            if upserts:
                cursor.executemany(_UPSERT, [(*row.as_params(), node) for row in ordered])
            if deletes:
                cursor.executemany(_DELETE, [(kind, id_, node) for kind, id_ in deletes])

    async def resync(self, registry: Registry) -> tuple[int, int]:
        """Make PostgreSQL hold exactly this node's registry rows; (written, removed)."""
        rows = [
            ObjectRow.from_sql(row)
            for row in registry.conn.execute(
                "SELECT kind, id, owner, status, progress, created_at, updated_at, alarm_at,"
                " summary, file FROM objects"
            )
        ]
        local = {(row.kind, row.id) for row in rows}
        for start in range(0, len(rows), RESYNC_BATCH):
            await self.db.run(partial(self._write, upserts=rows[start : start + RESYNC_BATCH]))
        remote = await self.db.run(self._listed, transaction=False)
        stale = [key for key in remote if key not in local]
        for start in range(0, len(stale), RESYNC_BATCH):
            await self.db.run(partial(self._write, deletes=stale[start : start + RESYNC_BATCH]))
        return len(rows), len(stale)

    def _listed(self, conn: psycopg.Connection) -> list[tuple[str, str]]:
        cursor = conn.execute("SELECT kind, id FROM objects WHERE node_id = %s", (self.node_id,))
        return [(str(kind), str(id_)) for kind, id_ in cursor.fetchall()]
