"""The tasks' own tables in the registry: tags and external ids, for listing and lookups.

Theory of operation
-------------------
The registry's ``objects`` table keeps one row per task with its summary (the task's
JSON, ``tags`` and ``externalId`` included). Two tables of this stream index what
that summary holds, kept in step by triggers on ``objects`` in the same
transaction as the row, so they are exactly as current as the listing itself and
a registry rebuilt from the files (storage/reconcile.py) rebuilds them too:

- ``task_tags(owner, tag, created_at, id, status)``: one row per tag of a task;
  its primary key serves ``?tag=`` for one owner, newest first, with a created_at
  range, and ``task_tags_by_tag`` the same for an admin across owners. The status
  is copied so that ``?status=`` needs no lookup of the object row (tags never
  change; a status change rewrites the task's few tag rows).
- ``task_external_ids(owner, external_id, task_id, reserved_at)``: the unique index
  that makes an external id unique per owner. A create with an external id reserves
  it here *before* the task exists (:class:`ExternalIds`): an ``INSERT ... ON CONFLICT
  DO NOTHING``, or an ``UPDATE`` that replaces a stale reservation only if it is still
  the one that was judged stale (same task id, same ``reserved_at``: a
  compare-and-set), so that of concurrent creates exactly one wins and the losers see
  its reservation. A reservation is judged by its age and its task:

  - younger than :data:`RESERVATION_GRACE`: a create under way (on any node; its task
    does not exist until it commits), so the external id is taken, unless the
    reservation is for the same task id (a retry of the same create: "mine");
  - older, and its task holds that external id: taken (or the same task's);
  - older, and its task does not hold it (its create failed, the server died before it
    ran, the task was deleted): stale, taken over.

  Within one process, creates under way are also known in memory (``pending``).
"""

from __future__ import annotations

import functools
import json
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

import trio

from spectral.sql import Conn, Sql
from storage import Migration

STREAM = "spectral.tasks"
KIND = "task"

MIGRATIONS = (
    Migration(
        1,
        """
        CREATE TABLE task_tags (
            owner TEXT NOT NULL,
            tag TEXT NOT NULL,
            created_at REAL NOT NULL,
            id TEXT NOT NULL,
            status TEXT,
            PRIMARY KEY (owner, tag, created_at, id)
        ) WITHOUT ROWID;
        CREATE INDEX task_tags_by_tag ON task_tags (tag, created_at, id, status);
        CREATE TABLE task_external_ids (
            owner TEXT NOT NULL,
            external_id TEXT NOT NULL,
            task_id TEXT NOT NULL,
            PRIMARY KEY (owner, external_id)
        ) WITHOUT ROWID;
        CREATE INDEX task_external_ids_by_id ON task_external_ids (external_id);
        INSERT OR IGNORE INTO task_tags (owner, tag, created_at, id, status)
            SELECT coalesce(o.owner, ''), t.value, o.created_at, o.id, o.status
            FROM objects o, json_each(o.summary, '$.tags') t
            WHERE o.kind = 'task' AND o.summary IS NOT NULL;
        INSERT OR IGNORE INTO task_external_ids (owner, external_id, task_id)
            SELECT coalesce(owner, ''), json_extract(summary, '$.externalId'), id
            FROM objects WHERE kind = 'task' AND summary IS NOT NULL
            AND json_extract(summary, '$.externalId') IS NOT NULL;
        CREATE TRIGGER task_index_insert AFTER INSERT ON objects
            WHEN new.kind = 'task' AND new.summary IS NOT NULL
        BEGIN
            INSERT INTO task_tags (owner, tag, created_at, id, status)
                SELECT DISTINCT coalesce(new.owner, ''), value, new.created_at, new.id, new.status
                FROM json_each(new.summary, '$.tags') WHERE NOT EXISTS (
                    SELECT 1 FROM task_tags WHERE owner = coalesce(new.owner, '') AND tag = value
                    AND created_at = new.created_at AND id = new.id);
            INSERT INTO task_external_ids (owner, external_id, task_id)
                SELECT coalesce(new.owner, ''), json_extract(new.summary, '$.externalId'), new.id
                WHERE json_extract(new.summary, '$.externalId') IS NOT NULL AND NOT EXISTS (
                    SELECT 1 FROM task_external_ids WHERE owner = coalesce(new.owner, '')
                    AND external_id = json_extract(new.summary, '$.externalId'));
        END;
        CREATE TRIGGER task_index_delete AFTER DELETE ON objects
            WHEN old.kind = 'task' AND old.summary IS NOT NULL
        BEGIN
            DELETE FROM task_tags WHERE owner = coalesce(old.owner, '')
                AND tag IN (SELECT value FROM json_each(old.summary, '$.tags'))
                AND created_at = old.created_at AND id = old.id;
            DELETE FROM task_external_ids WHERE owner = coalesce(old.owner, '')
                AND external_id = json_extract(old.summary, '$.externalId')
                AND task_id = old.id;
        END;
        CREATE TRIGGER task_index_update AFTER UPDATE ON objects
            WHEN new.kind = 'task' AND (old.status IS NOT new.status
                OR old.owner IS NOT new.owner OR old.created_at IS NOT new.created_at
                OR (old.summary IS NULL) IS NOT (new.summary IS NULL))
        BEGIN
            DELETE FROM task_tags WHERE owner = coalesce(old.owner, '')
                AND tag IN (SELECT value FROM json_each(old.summary, '$.tags'))
                AND created_at = old.created_at AND id = old.id;
            INSERT INTO task_tags (owner, tag, created_at, id, status)
                SELECT DISTINCT coalesce(new.owner, ''), value, new.created_at, new.id, new.status
                FROM json_each(new.summary, '$.tags') WHERE NOT EXISTS (
                    SELECT 1 FROM task_tags WHERE owner = coalesce(new.owner, '') AND tag = value
                    AND created_at = new.created_at AND id = new.id);
            INSERT INTO task_external_ids (owner, external_id, task_id)
                SELECT coalesce(new.owner, ''), json_extract(new.summary, '$.externalId'), new.id
                WHERE json_extract(new.summary, '$.externalId') IS NOT NULL AND NOT EXISTS (
                    SELECT 1 FROM task_external_ids WHERE owner = coalesce(new.owner, '')
                    AND external_id = json_extract(new.summary, '$.externalId'));
        END;
        """,
    ),
    # Per-(owner, tag, status) counts, kept by triggers as storage keeps object_counts:
    # the total of a one-tag listing is a lookup, and a listing with several tags is
    # driven by the rarest.
    Migration(
        2,
        """
        CREATE TABLE task_tag_counts (
            tag TEXT NOT NULL,
            owner TEXT NOT NULL,
            status TEXT NOT NULL,
            n INTEGER NOT NULL,
            PRIMARY KEY (tag, owner, status)
        ) WITHOUT ROWID;
        INSERT INTO task_tag_counts (tag, owner, status, n)
            SELECT tag, owner, coalesce(status, ''), count(*) FROM task_tags GROUP BY 1, 2, 3;
        CREATE TRIGGER task_tags_counted_insert AFTER INSERT ON task_tags BEGIN
            INSERT INTO task_tag_counts (tag, owner, status, n)
                VALUES (new.tag, new.owner, coalesce(new.status, ''), 1)
                ON CONFLICT (tag, owner, status) DO UPDATE SET n = n + 1;
        END;
        CREATE TRIGGER task_tags_counted_delete AFTER DELETE ON task_tags BEGIN
            UPDATE task_tag_counts SET n = n - 1
                WHERE tag = old.tag AND owner = old.owner AND status = coalesce(old.status, '');
        END;
        """,
    ),
    # Task trees: a child is indexed under its parent's id as one more "tag", a
    # pseudo-tag no real tag can equal (it starts with a control character), so that
    # ``?parentId=`` and the children listing ride the tag machinery (index range,
    # counts, time bounds, combined with real tags).
    Migration(
        3,
        """
        DROP TRIGGER task_index_insert;
        DROP TRIGGER task_index_delete;
        DROP TRIGGER task_index_update;
        INSERT OR IGNORE INTO task_tags (owner, tag, created_at, id, status)
            SELECT coalesce(owner, ''),
                char(31) || 'parent:' || json_extract(summary, '$.parentId'),
                created_at, id, status
            FROM objects WHERE kind = 'task' AND summary IS NOT NULL
            AND json_extract(summary, '$.parentId') IS NOT NULL;
        CREATE TRIGGER task_index_insert AFTER INSERT ON objects
            WHEN new.kind = 'task' AND new.summary IS NOT NULL
        BEGIN
            INSERT INTO task_tags (owner, tag, created_at, id, status)
                SELECT DISTINCT coalesce(new.owner, ''), value, new.created_at, new.id, new.status
                FROM (SELECT value FROM json_each(new.summary, '$.tags')
                      UNION ALL
                      SELECT char(31) || 'parent:' || json_extract(new.summary, '$.parentId')
                      WHERE json_extract(new.summary, '$.parentId') IS NOT NULL)
                WHERE NOT EXISTS (
                    SELECT 1 FROM task_tags WHERE owner = coalesce(new.owner, '') AND tag = value
                    AND created_at = new.created_at AND id = new.id);
            INSERT INTO task_external_ids (owner, external_id, task_id)
                SELECT coalesce(new.owner, ''), json_extract(new.summary, '$.externalId'), new.id
                WHERE json_extract(new.summary, '$.externalId') IS NOT NULL AND NOT EXISTS (
                    SELECT 1 FROM task_external_ids WHERE owner = coalesce(new.owner, '')
                    AND external_id = json_extract(new.summary, '$.externalId'));
        END;
        CREATE TRIGGER task_index_delete AFTER DELETE ON objects
            WHEN old.kind = 'task' AND old.summary IS NOT NULL
        BEGIN
            DELETE FROM task_tags WHERE owner = coalesce(old.owner, '')
                AND tag IN (SELECT value FROM json_each(old.summary, '$.tags')
                    UNION ALL
                    SELECT char(31) || 'parent:' || json_extract(old.summary, '$.parentId'))
                AND created_at = old.created_at AND id = old.id;
            DELETE FROM task_external_ids WHERE owner = coalesce(old.owner, '')
                AND external_id = json_extract(old.summary, '$.externalId')
                AND task_id = old.id;
        END;
        CREATE TRIGGER task_index_update AFTER UPDATE ON objects
            WHEN new.kind = 'task' AND (old.status IS NOT new.status
                OR old.owner IS NOT new.owner OR old.created_at IS NOT new.created_at
                OR (old.summary IS NULL) IS NOT (new.summary IS NULL))
        BEGIN
            DELETE FROM task_tags WHERE owner = coalesce(old.owner, '')
                AND tag IN (SELECT value FROM json_each(old.summary, '$.tags')
                    UNION ALL
                    SELECT char(31) || 'parent:' || json_extract(old.summary, '$.parentId'))
                AND created_at = old.created_at AND id = old.id;
            INSERT INTO task_tags (owner, tag, created_at, id, status)
                SELECT DISTINCT coalesce(new.owner, ''), value, new.created_at, new.id, new.status
                FROM (SELECT value FROM json_each(new.summary, '$.tags')
                      UNION ALL
                      SELECT char(31) || 'parent:' || json_extract(new.summary, '$.parentId')
                      WHERE json_extract(new.summary, '$.parentId') IS NOT NULL)
                WHERE NOT EXISTS (
                    SELECT 1 FROM task_tags WHERE owner = coalesce(new.owner, '') AND tag = value
                    AND created_at = new.created_at AND id = new.id);
            INSERT INTO task_external_ids (owner, external_id, task_id)
                SELECT coalesce(new.owner, ''), json_extract(new.summary, '$.externalId'), new.id
                WHERE json_extract(new.summary, '$.externalId') IS NOT NULL AND NOT EXISTS (
                    SELECT 1 FROM task_external_ids WHERE owner = coalesce(new.owner, '')
                    AND external_id = json_extract(new.summary, '$.externalId'));
        END;
        """,
    ),
    # When a reservation was written (wall-clock seconds): younger than
    # RESERVATION_GRACE, a reservation whose task does not hold the external id yet is
    # a create under way on some node, not a stale one (see ExternalIds). Rows from
    # before, and the triggers' rows (a task that holds its external id), are NULL: old.
    Migration(
        4,
        """
        ALTER TABLE task_external_ids ADD COLUMN reserved_at REAL;
        """,
    ),
)


def parent_tag(parent_id: str) -> str:
    """The pseudo-tag under which a task's children are indexed (see migration 3)."""
    return "\x1fparent:" + parent_id


async def descendants(sql: Sql, owner: str, task_id: str, max_depth: int = 8) -> list[list[str]]:
    """The ids below ``task_id`` by level (its children first), from the parent index."""

    def walk(conn: Conn) -> list[list[str]]:
        levels: list[list[str]] = []
        current = [task_id]
        for _ in range(max_depth):
            below = [
                row[0]
                for parent in current
                for row in conn.execute(
                    "SELECT id FROM task_tags WHERE owner = ? AND tag = ?",
                    (owner, parent_tag(parent)),
                )
            ]
            if not below:
                break
            levels.append(below)
            current = below
        return levels

    return await sql.run(walk)


@dataclass(frozen=True, slots=True)
class TaskPage:
    """One page of task summaries, newest first, and the total that matched."""

    summaries: list[dict[str, Any]]
    total: int


#: A range's matches are counted up to this many; past it, the total is the filter's
#: kept count minus what lies outside the range (whichever side is smaller is cheap).
COUNT_CAP = 5_000


#: A listing's status filter: one status, any of several, or None (any).
Statuses = str | tuple[str, ...] | None


async def list_tasks(
    sql: Sql,
    *,
    owner: str | None,
    status: Statuses,
    id_prefix: str | None,
    tags: Sequence[str],
    created_after: float | None,
    created_before: float | None,
    limit: int,
    offset: int,
) -> TaskPage:
    """A page of tasks with tags and/or a creation-time range (newest first).

    ``created_after <= created_at < created_before`` (the caller turns the request's
    bounds, which exclude, into these). ``status``: one status, a tuple of them (any
    of them; an empty tuple matches nothing), or None (any status).

    With tags, the rarest tag's rows drive (an index range in created_at order; the
    per-tag counts say which is rarest) and every other tag is a primary-key probe;
    without, the ``objects`` indexes do. The total comes from the kept counts when
    there is no range and no prefix (one tag, or none); with a range, it is counted
    up to :data:`COUNT_CAP` and past that taken as the kept count minus the tasks
    outside the range.
    """
    # SQLite's CROSS JOIN fixes the join order (the tag rows drive); PostgreSQL has no
    # CROSS JOIN ... ON, and its planner needs no such hint.
    join = "CROSS JOIN" if sql.dialect == "sqlite" else "JOIN"
    return await sql.run(
        lambda conn: _page(
            conn, join, owner, status, id_prefix, tags, created_after, created_before, limit, offset
        )
    )


def _status_part(column: str, status: str | tuple[str, ...]) -> tuple[str, list[Any]]:
    """The condition on ``column`` of a status filter (never true for no status)."""
    if isinstance(status, str):
        return f"{column} = ?", [status]
    if not status:
        return "1 = 0", []
    return f"{column} IN ({', '.join('?' * len(status))})", list(status)


def _page(
    conn: Conn,
    join: str,
    owner: str | None,
    status: Statuses,
    id_prefix: str | None,
    tags: Sequence[str],
    created_after: float | None,
    created_before: float | None,
    limit: int,
    offset: int,
) -> TaskPage:
    if tags:
        tags = sorted(tags, key=lambda tag: _tag_count(conn, tag, owner, status))
        table, prefix = "task_tags t", "t."
        base: list[tuple[str, list[Any]]] = [("t.tag = ?", [tags[0]])]
        kept = _tag_count(conn, tags[0], owner, status) if len(tags) == 1 else None
    else:
        table, prefix = "objects t", "t."
        base = [("t.kind = 'task'", [])]
        kept = _object_count(conn, owner, status)
    if owner is not None:
        base.append((f"{prefix}owner = ?", [owner]))
    if status is not None:
        base.append(_status_part(f"{prefix}status", status))
    if id_prefix:
        base.append((f"{prefix}id >= ? AND {prefix}id < ?", [id_prefix, id_prefix + "\U0010ffff"]))
        kept = None
    for tag in tags[1:]:
        base.append(
            (
                "EXISTS (SELECT 1 FROM task_tags x WHERE x.owner = t.owner AND x.tag = ?"
                " AND x.created_at = t.created_at AND x.id = t.id)",
                [tag],
            )
        )
    ranged = list(base)
    if created_after is not None:
        ranged.append(("t.created_at >= ?", [created_after]))
    if created_before is not None:
        ranged.append(("t.created_at < ?", [created_before]))
    clause, params = _where(ranged)
    if kept is not None and len(ranged) == len(base):
        total = kept
    else:
        total = _capped_count(conn, table, clause, params)
        if total > COUNT_CAP and kept is not None:
            outside = 0
            for bound, value in (("<", created_after), (">=", created_before)):
                if value is not None:
                    where, values = _where([*base, (f"t.created_at {bound} ?", [value])])
                    outside += _count(conn, table, where, values)
            total = kept - outside
        elif total > COUNT_CAP:
            total = _count(conn, table, clause, params)
    if tags:
        sql = (
            f"SELECT o.summary FROM task_tags t {join} objects o ON o.kind = 'task' AND o.id = t.id"
            f" WHERE {clause} ORDER BY t.created_at DESC, t.id DESC LIMIT ? OFFSET ?"
        )
    else:
        sql = (
            f"SELECT t.summary FROM objects t WHERE {clause}"
            " ORDER BY t.created_at DESC, t.id DESC LIMIT ? OFFSET ?"
        )
    rows = conn.execute(sql, [*params, limit, offset]).fetchall()
    return TaskPage([json.loads(r[0]) for r in rows if r[0] is not None], int(total))


def _where(parts: list[tuple[str, list[Any]]]) -> tuple[str, list[Any]]:
    return " AND ".join(sql for sql, _ in parts), [v for _, values in parts for v in values]


def _count(conn: Conn, table: str, clause: str, params: list[Any]) -> int:
    return int(conn.execute(f"SELECT count(*) FROM {table} WHERE {clause}", params).fetchone()[0])


def _capped_count(conn: Conn, table: str, clause: str, params: list[Any]) -> int:
    """How many rows match, exactly up to COUNT_CAP; COUNT_CAP + 1 means more."""
    sql = f"SELECT count(*) FROM (SELECT 1 FROM {table} WHERE {clause} LIMIT ?) AS capped"
    return int(conn.execute(sql, [*params, COUNT_CAP + 1]).fetchone()[0])


def _tag_count(conn: Conn, tag: str, owner: str | None, status: Statuses) -> int:
    where, params = _where(
        [("tag = ?", [tag])]
        + ([("owner = ?", [owner])] if owner is not None else [])
        + ([_status_part("status", status)] if status is not None else [])
    )
    sql = f"SELECT coalesce(sum(n), 0) FROM task_tag_counts WHERE {where}"
    return int(conn.execute(sql, params).fetchone()[0])


def _object_count(conn: Conn, owner: str | None, status: Statuses) -> int:
    where, params = _where(
        [("kind = 'task'", [])]
        + ([("owner = ?", [owner])] if owner is not None else [])
        + ([_status_part("status", status)] if status is not None else [])
    )
    sql = f"SELECT coalesce(sum(n), 0) FROM object_counts WHERE {where}"
    return int(conn.execute(sql, params).fetchone()[0])


class ExternalIdExistsError(Exception):
    """The owner already has a task with this external id."""


#: A task's registry summary (staged or committed) by id, or None.
SummaryOf = Callable[[str], Awaitable[dict[str, Any] | None]]

#: Seconds a reservation is a create under way even though its task does not hold the
#: external id (yet): longer than any create lasts. A create forwarded to the task's
#: home gives up after 30 s (spectral/cluster/node.py FORWARD_TIMEOUT), so twice that.
#: It is compared across nodes' wall clocks, which must agree to well within it.
RESERVATION_GRACE = 60.0

#: (task id, reserved_at) of a reservation as read; reserved_at 0 for an old row (NULL).
Seen = tuple[str, float]


class ExternalIds:
    """Reservations of external ids, unique per owner (see the module docstring).

    Args:
        sql: the product's database (migrated with :data:`MIGRATIONS`).
        summary_of: the task's registry summary (staged or committed), or None.
        grace: seconds a reservation stays a create under way (:data:`RESERVATION_GRACE`).
        clock: wall-clock seconds (``time.time``), written as ``reserved_at``.
    """

    def __init__(
        self,
        sql: Sql,
        summary_of: SummaryOf,
        *,
        grace: float = RESERVATION_GRACE,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.sql = sql
        self.summary_of = summary_of
        self.grace = grace
        self.clock = clock
        #: (owner, external id) of creates under way in this process.
        self.pending: set[tuple[str, str]] = set()

    async def _holds(self, owner: str, external_id: str, task_id: str) -> bool:
        summary = await self.summary_of(task_id)
        return (
            summary is not None
            and summary.get("owner") == owner
            and summary.get("externalId") == external_id
        )

    async def reserve(self, owner: str, external_id: str, task_id: str) -> bool:
        """Reserve ``external_id`` of ``owner`` for ``task_id``.

        The reservation is written only where there is none, or in place of a stale one
        that is still the same (a compare-and-set on its task id and ``reserved_at``): of
        concurrent reservations exactly one wins, whatever interleaves between the
        statements, on one node or several.

        A reservation for ``task_id`` itself is this create's own (an earlier attempt of
        it, e.g. the same Idempotency-Key on another node): it is not refused, and not
        written again unless it is stale (then it is renewed, as a take-over would).

        Returns:
            True if a reservation was written (release it if the create fails); False if
            the create may go on under an existing one of the same task id.

        Raises:
            ExternalIdExistsError: another task holds it, or a create under way (a
                reservation younger than the grace period) of another task id.
        """
        key = (owner, external_id)
        if key in self.pending:
            raise ExternalIdExistsError(external_id)
        self.pending.add(key)  # held while we look: a concurrent create here is refused
        reserved = False
        try:
            now = self.clock()
            seen = await self.sql.run(lambda conn: _claim(conn, key, task_id, now), write=True)
            while seen is not None:
                holder, reserved_at = seen
                if self.clock() - reserved_at < self.grace:
                    if holder == task_id:
                        return False  # mine: an attempt of this same create is under way
                    raise ExternalIdExistsError(external_id)
                if await self._holds(owner, external_id, holder):
                    if holder == task_id:
                        return False  # the same task: its create answers TASK_EXISTS (or a replay)
                    raise ExternalIdExistsError(external_id)
                take_over = functools.partial(
                    _take_over, key=key, stale=seen, task_id=task_id, now=self.clock()
                )
                seen = await self.sql.run(take_over, write=True)
            reserved = True
            return True
        finally:
            if not reserved:
                self.pending.discard(key)

    async def done(self, owner: str, external_id: str, task_id: str, *, reserved: bool) -> None:
        """The create is over: drop the reservation unless the task now holds it."""
        self.pending.discard((owner, external_id))
        if not reserved:
            return
        with trio.CancelScope(shield=True):  # a cancelled create must still release it
            if not await self._holds(owner, external_id, task_id):
                await self.sql.run(
                    lambda conn: conn.execute(
                        "DELETE FROM task_external_ids"
                        " WHERE owner = ? AND external_id = ? AND task_id = ?",
                        (owner, external_id, task_id),
                    ),
                    write=True,
                )

    async def find(self, external_id: str, owner: str | None) -> list[tuple[str, str]]:
        """(owner, task id) of the live tasks with this external id (of ``owner``, or any)."""
        if owner is not None:
            query = (
                "SELECT owner, task_id FROM task_external_ids WHERE owner = ? AND external_id = ?"
            )
            params: tuple[str, ...] = (owner, external_id)
        else:
            query = "SELECT owner, task_id FROM task_external_ids WHERE external_id = ?"
            params = (external_id,)
        rows = await self.sql.run(lambda conn: conn.execute(query, params).fetchall())
        return [(o, t) for o, t in rows if await self._holds(o, external_id, t)]


#: Rounds of insert-or-read before a reservation that keeps vanishing is an error.
_CLAIM_ROUNDS = 100


def _claim(conn: Conn, key: tuple[str, str], task_id: str, now: float) -> Seen | None:
    """Reserve where there is no reservation (None), else the reservation found.

    On PostgreSQL the row that made the insert do nothing may be deleted (released)
    before it is read: then the insert is tried again.
    """
    for _ in range(_CLAIM_ROUNDS):
        inserted = conn.execute(
            "INSERT INTO task_external_ids (owner, external_id, task_id, reserved_at)"
            " VALUES (?, ?, ?, ?)"
            " ON CONFLICT (owner, external_id) DO NOTHING RETURNING task_id",
            (*key, task_id, now),
        ).fetchall()  # all: SQLite finishes the statement only once its rows are read
        if inserted:
            return None
        row = conn.execute(
            "SELECT task_id, coalesce(reserved_at, 0) FROM task_external_ids"
            " WHERE owner = ? AND external_id = ?",
            key,
        ).fetchone()
        if row is not None:
            return str(row[0]), float(row[1])
    raise RuntimeError(f"external id {key!r}: the reservation keeps vanishing")


def _take_over(
    conn: Conn, key: tuple[str, str], stale: Seen, task_id: str, now: float
) -> Seen | None:
    """Replace a stale reservation if it is still ``stale`` (None), else claim again."""
    updated = conn.execute(
        "UPDATE task_external_ids SET task_id = ?, reserved_at = ?"
        " WHERE owner = ? AND external_id = ? AND task_id = ? AND coalesce(reserved_at, 0) = ?",
        (task_id, now, *key, *stale),
    )
    if updated.rowcount == 1:
        return None
    return _claim(conn, key, task_id, now)
