"""Webhooks, their deliveries and attempts, and the outbox cursors, in the product's database.

Every method is one unit of work of :class:`~spectral.sql.Sql`, committed before it
returns (on the registry's SQLite, inline: tens of microseconds each).

On a cluster (``node_id`` given, PostgreSQL shared by every node) each node turns only
its own tasks' events into deliveries and attempts only their deliveries: the recovery
queries (:meth:`WebhookStore.lagging`, :meth:`~WebhookStore.vanished`), the cursors and
the delivery queries (:meth:`~WebhookStore.due`, :meth:`~WebhookStore.next_due_at`)
keep the tasks whose home is this node (``objects.node_id``, or the ``placements`` row,
which outlives a deleted task). Webhooks themselves are shared: the cache of active ones
is read again once it is :data:`CACHE_TTL` seconds old, so another node's change takes
effect here within that.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from spectral.sql import Conn, Sql
from spectral.webhooks.signing import new_secret
from spectral.wire import iso
from storage import Migration

#: The registry migration stream of these tables.
STREAM = "spectral.webhooks"

MIGRATIONS = (
    Migration(
        1,
        """
        CREATE TABLE webhooks (
            id TEXT PRIMARY KEY,
            owner TEXT NOT NULL,
            url TEXT NOT NULL,
            event_type TEXT NOT NULL,
            description TEXT,
            task_id_prefix TEXT,
            active INTEGER NOT NULL DEFAULT 1,
            secret TEXT NOT NULL,
            created_at REAL NOT NULL,
            updated_at REAL NOT NULL
        ) WITHOUT ROWID;
        CREATE INDEX webhooks_by_owner ON webhooks (owner, created_at);
        CREATE TABLE webhook_deliveries (
            id TEXT PRIMARY KEY,
            webhook_id TEXT NOT NULL,
            task_id TEXT NOT NULL,
            seq INTEGER NOT NULL,
            event_type TEXT NOT NULL,
            body BLOB NOT NULL,
            status TEXT NOT NULL,
            attempts INTEGER NOT NULL DEFAULT 0,
            next_attempt_at REAL,
            response_code INTEGER,
            error TEXT,
            created_at REAL NOT NULL,
            updated_at REAL NOT NULL
        );
        CREATE INDEX deliveries_due ON webhook_deliveries (next_attempt_at)
            WHERE status = 'pending';
        CREATE INDEX deliveries_by_webhook ON webhook_deliveries (webhook_id, created_at DESC);
        CREATE INDEX deliveries_by_age ON webhook_deliveries (updated_at)
            WHERE status != 'pending';
        CREATE TABLE webhook_attempts (
            delivery_id TEXT NOT NULL,
            attempt INTEGER NOT NULL,
            at REAL NOT NULL,
            response_code INTEGER,
            error TEXT,
            duration_ms REAL NOT NULL,
            PRIMARY KEY (delivery_id, attempt)
        ) WITHOUT ROWID;
        -- The outbox cursor: the last seq of each task turned into deliveries.
        CREATE TABLE webhook_cursors (
            task_id TEXT PRIMARY KEY,
            owner TEXT NOT NULL,
            seq INTEGER NOT NULL
        ) WITHOUT ROWID;
        -- Tasks that exist before webhooks do: nothing of their past is owed.
        INSERT INTO webhook_cursors (task_id, owner, seq)
            SELECT id, coalesce(owner, ''), coalesce(json_extract(summary, '$.seq'), 0)
            FROM objects WHERE kind = 'task';
        """,
    ),
    # Due deliveries per webhook: with one webhook paused and 10,000 of its deliveries
    # due, the single due query walked all of them on every wake-up (~9 ms a mutation).
    Migration(
        2,
        """
        CREATE INDEX deliveries_due_by_webhook
            ON webhook_deliveries (webhook_id, next_attempt_at) WHERE status = 'pending';
        """,
    ),
    # The bodies' shape (spectral/webhooks/payload.py FORMATS); every earlier webhook's
    # is spectral's.
    Migration(
        3,
        """
        ALTER TABLE webhooks ADD COLUMN format TEXT NOT NULL DEFAULT 'spectral';
        """,
    ),
)

PENDING, DELIVERED, DEAD = "pending", "delivered", "dead"
#: Seconds the cache of active webhooks is trusted where another process may change them
#: unseen (not SQLite: a cluster's PostgreSQL).
CACHE_TTL = 1.0

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Webhook:
    """One subscription."""

    id: str
    owner: str
    url: str
    event_type: str
    description: str | None
    task_id_prefix: str | None
    active: bool
    secret: str
    created_at: float
    updated_at: float
    #: The bodies' shape: ``spectral`` or ``seed-jobs`` (spectral/webhooks/payload.py).
    format: str = "spectral"

    def public(self) -> dict[str, Any]:
        """The webhook as the API answers it (never the secret)."""
        return {
            "id": self.id,
            "owner": self.owner,
            "url": self.url,
            "eventType": self.event_type,
            "description": self.description,
            "taskIdPrefix": self.task_id_prefix,
            "active": self.active,
            "format": self.format,
            "createdAt": iso(self.created_at),
            "updatedAt": iso(self.updated_at),
        }


@dataclass(frozen=True, slots=True)
class Due:
    """A delivery to attempt now, with what the attempt needs."""

    id: str
    webhook_id: str
    url: str
    secret: str
    body: bytes
    attempts: int


@dataclass(frozen=True, slots=True)
class NewDelivery:
    """A delivery the outbox is about to write."""

    id: str
    webhook_id: str
    task_id: str
    seq: int
    event_type: str
    body: bytes


_WEBHOOK_COLUMNS = (
    "id, owner, url, event_type, description, task_id_prefix, active, secret,"
    " created_at, updated_at, format"
)


def new_webhook_id() -> str:
    """A fresh webhook id."""
    return "wh_" + secrets.token_hex(8)


def new_delivery_id() -> str:
    """A fresh delivery id (the ``webhook-id`` header, stable across retries)."""
    return "msg_" + secrets.token_hex(12)


class WebhookStore:
    """The webhook tables over the product's database.

    Args:
        sql: the product's database (migrated with :data:`MIGRATIONS`).
        clock: wall-clock seconds.
        node_id: this cluster node's id (see the module docstring); None in a single
            process, where every task is this process's.
        cache_ttl: seconds the active webhooks are trusted (not on SQLite, where only
            this process changes them).
        monotonic: monotonic seconds, for the cache's age.
    """

    def __init__(
        self,
        sql: Sql,
        clock: Callable[[], float] = time.time,
        *,
        node_id: str | None = None,
        cache_ttl: float = CACHE_TTL,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.sql = sql
        self.clock = clock
        self.node_id = node_id
        self.cache_ttl = cache_ttl
        self.monotonic = monotonic
        #: Active webhooks by owner, reloaded after every change made here and, outside
        #: SQLite, by :meth:`fresh` once older than ``cache_ttl``; empty until loaded.
        self.active: dict[str, list[Webhook]] = {}
        self._loaded_at: float | None = None

    async def reload(self) -> None:
        """Read the active webhooks again (done after every change made here)."""
        self._loaded(await self.sql.run(_active))

    async def fresh(self) -> dict[str, list[Webhook]]:
        """The active webhooks by owner, read again first if the cache may be stale."""
        shared = self.sql.dialect != "sqlite"
        if self._loaded_at is None or (
            shared and self.monotonic() - self._loaded_at >= self.cache_ttl
        ):
            await self.reload()
        return self.active

    def _loaded(self, active: dict[str, list[Webhook]]) -> None:
        self.active = active
        self._loaded_at = self.monotonic()

    async def _change(self, fn: Callable[[Conn], T]) -> T:
        """Run ``fn`` in a write transaction, then reload the active webhooks in the same."""

        def change(conn: Conn) -> tuple[T, dict[str, list[Webhook]]]:
            return fn(conn), _active(conn)

        result, active = await self.sql.run(change, write=True)
        self._loaded(active)
        return result

    def _homed(self, task_id: str) -> tuple[str, tuple[Any, ...]]:
        """A JOIN keeping rows whose task ``task_id`` (an SQL expression) is homed here,
        and its parameters; nothing in a single process."""
        if self.node_id is None:
            return "", ()
        return (
            f" JOIN placements p ON p.kind = 'task' AND p.id = {task_id} AND p.node_id = ?",
            (self.node_id,),
        )

    # -- webhooks ------------------------------------------------------------------

    async def create(
        self,
        owner: str,
        url: str,
        event_type: str,
        description: str | None = None,
        task_id_prefix: str | None = None,
        format: str = "spectral",
    ) -> Webhook:
        """Add an active webhook with a new secret."""
        now = self.clock()
        webhook = Webhook(
            new_webhook_id(),
            owner,
            url,
            event_type,
            description,
            task_id_prefix,
            True,
            new_secret(),
            now,
            now,
            format,
        )
        row = (
            webhook.id, owner, url, event_type, description, task_id_prefix, 1,
            webhook.secret, now, now, format,
        )  # fmt: skip
        await self._change(
            lambda conn: conn.execute(
                f"INSERT INTO webhooks ({_WEBHOOK_COLUMNS}) VALUES (?,?,?,?,?,?,?,?,?,?,?)", row
            )
        )
        return webhook

    async def get(self, webhook_id: str, owner: str | None = None) -> Webhook | None:
        """One webhook (None if missing, or another owner's when ``owner`` is given)."""
        found = await self.sql.run(lambda conn: _one(conn, webhook_id))
        if found is None or (owner is not None and found.owner != owner):
            return None
        return found

    async def list(self, owner: str | None = None) -> list[Webhook]:
        """Webhooks of ``owner`` (every owner's with None), oldest first."""
        if owner is None:
            return await self.sql.run(lambda conn: _select(conn, "", ()))
        return await self.sql.run(lambda conn: _select(conn, "WHERE owner = ?", (owner,)))

    async def update(self, webhook_id: str, changes: dict[str, Any]) -> Webhook | None:
        """Change some of url, event_type, description, active, task_id_prefix, format;
        None if missing."""
        allowed = {"url", "event_type", "description", "active", "task_id_prefix", "format"}
        if not set(changes) <= allowed:
            raise ValueError(f"cannot change {sorted(set(changes) - allowed)}")
        assignments = ", ".join(f"{column} = ?" for column in changes)
        params = [int(v) if isinstance(v, bool) else v for v in changes.values()]
        params += [self.clock(), webhook_id]

        def update(conn: Conn) -> Webhook | None:
            cursor = conn.execute(
                f"UPDATE webhooks SET {assignments}, updated_at = ? WHERE id = ?"
                if changes
                else "UPDATE webhooks SET updated_at = ? WHERE id = ?",
                params,
            )
            return _one(conn, webhook_id) if cursor.rowcount else None

        return await self._change(update)

    async def delete(self, webhook_id: str) -> bool:
        """Remove a webhook, its deliveries and their attempts; False if missing."""

        def delete(conn: Conn) -> bool:
            conn.execute(
                "DELETE FROM webhook_attempts WHERE delivery_id IN"
                " (SELECT id FROM webhook_deliveries WHERE webhook_id = ?)",
                (webhook_id,),
            )
            conn.execute("DELETE FROM webhook_deliveries WHERE webhook_id = ?", (webhook_id,))
            return conn.execute("DELETE FROM webhooks WHERE id = ?", (webhook_id,)).rowcount > 0

        return await self._change(delete)

    # -- the outbox ----------------------------------------------------------------

    async def cursors(self) -> dict[str, int]:
        """The last seq of each task (homed here) already turned into deliveries."""
        join, params = self._homed("c.task_id")
        query = f"SELECT c.task_id, c.seq FROM webhook_cursors c{join}"
        rows = await self.sql.run(lambda conn: conn.execute(query, params).fetchall())
        return {task_id: int(seq) for task_id, seq in rows}

    async def lagging(self) -> list[tuple[str, str, int, int]]:
        """Tasks (homed here) whose registry seq is past their cursor:
        (task id, owner, cursor, seq)."""
        # The summary is JSON in a text column: SQLite's json_extract, PostgreSQL's ->>.
        if self.sql.dialect == "sqlite":
            seq = "json_extract(o.summary, '$.seq')"
        else:
            seq = "(o.summary::jsonb ->> 'seq')::bigint"
        query = (
            f"SELECT o.id, o.owner, coalesce(c.seq, 0), {seq}"
            " FROM objects o LEFT JOIN webhook_cursors c ON c.task_id = o.id"
            f" WHERE o.kind = 'task' AND {seq} > coalesce(c.seq, 0)"
        )
        params: tuple[Any, ...] = ()
        if self.node_id is not None:
            query += " AND o.node_id = ?"
            params = (self.node_id,)
        rows = await self.sql.run(lambda conn: conn.execute(query, params).fetchall())
        return [(row[0], row[1] or "", int(row[2]), int(row[3])) for row in rows]

    async def vanished(self) -> list[tuple[str, str, int]]:
        """Cursors of tasks (homed here) the registry no longer lists:
        (task id, owner, cursor)."""
        join, params = self._homed("c.task_id")
        query = (
            f"SELECT c.task_id, c.owner, c.seq FROM webhook_cursors c{join}"
            " WHERE NOT EXISTS (SELECT 1 FROM objects o"
            " WHERE o.kind = 'task' AND o.id = c.task_id)"
        )
        rows = await self.sql.run(lambda conn: conn.execute(query, params).fetchall())
        return [(task_id, owner, int(seq)) for task_id, owner, seq in rows]

    async def write_batch(
        self,
        deliveries: Iterable[NewDelivery],
        cursors: dict[str, tuple[str, int]],
        removed: Iterable[str] = (),
    ) -> None:
        """Insert deliveries and move cursors (task id → (owner, seq)) in one transaction."""
        now = self.clock()
        new = [
            (d.id, d.webhook_id, d.task_id, d.seq, d.event_type, d.body, now, now, now)
            for d in deliveries
        ]
        moved = [(task_id, owner, seq) for task_id, (owner, seq) in cursors.items()]
        gone = [(task_id,) for task_id in removed]

        def write(conn: Conn) -> None:
            conn.executemany(
                "INSERT INTO webhook_deliveries (id, webhook_id, task_id, seq, event_type, body,"
                " status, attempts, next_attempt_at, created_at, updated_at)"
                " VALUES (?, ?, ?, ?, ?, ?, 'pending', 0, ?, ?, ?)",
                new,
            )
            conn.executemany(
                "INSERT INTO webhook_cursors (task_id, owner, seq) VALUES (?, ?, ?)"
                " ON CONFLICT (task_id) DO UPDATE SET seq = excluded.seq",
                moved,
            )
            conn.executemany("DELETE FROM webhook_cursors WHERE task_id = ?", gone)

        await self.sql.run(write, write=True)

    # -- deliveries ----------------------------------------------------------------

    async def due(
        self, now: float, limit: int, exclude: set[str], paused: Iterable[str] = ()
    ) -> list[Due]:
        """Pending deliveries (of tasks homed here) of active, unpaused webhooks due by
        ``now``, soonest first."""
        held = set(paused)
        join, homed = self._homed("d.task_id")
        query = (
            f"SELECT d.id, d.body, d.attempts, d.next_attempt_at FROM webhook_deliveries d{join}"
            " WHERE d.webhook_id = ? AND d.status = 'pending' AND d.next_attempt_at <= ?"
            " ORDER BY d.next_attempt_at LIMIT ?"
        )

        def due(conn: Conn) -> list[Due]:
            hooks = [
                (hook_id, url, secret)
                for hook_id, url, secret in conn.execute(
                    "SELECT id, url, secret FROM webhooks WHERE active = 1"
                ).fetchall()
                if hook_id not in held
            ]
            found: list[tuple[float, Due]] = []
            for hook_id, url, secret in hooks:  # one index range per webhook
                rows = conn.execute(query, (*homed, hook_id, now, limit + len(exclude))).fetchall()
                found.extend(
                    (r[3], Due(r[0], hook_id, url, secret, bytes(r[1]), int(r[2])))
                    for r in rows
                    if r[0] not in exclude
                )
            found.sort(key=lambda item: item[0])  # soonest first, across webhooks
            return [delivery for _, delivery in found[:limit]]

        return await self.sql.run(due)

    async def next_due_at(self, after: float) -> float | None:
        """When the soonest pending delivery (of a task homed here) of an active webhook
        due after ``after`` is due."""
        join, homed = self._homed("d.task_id")
        query = (
            "SELECT min(d.next_attempt_at) FROM webhook_deliveries d"
            f" JOIN webhooks w ON w.id = d.webhook_id{join}"
            " WHERE d.status = 'pending' AND d.next_attempt_at > ? AND w.active = 1"
        )
        row = await self.sql.run(lambda conn: conn.execute(query, (*homed, after)).fetchone())
        return None if row[0] is None else float(row[0])

    async def record_attempts(self, results: Sequence[AttemptResult]) -> None:
        """Store attempts and each delivery's new status, in one transaction."""
        attempts = [
            (r.delivery_id, r.attempt, r.at, r.response_code, r.error, r.duration_ms)
            for r in results
        ]
        statuses = [
            (r.status, r.attempt, r.next_attempt_at, r.response_code, r.error, r.at, r.delivery_id)
            for r in results
        ]

        def record(conn: Conn) -> None:
            conn.executemany(
                "INSERT INTO webhook_attempts"
                " (delivery_id, attempt, at, response_code, error, duration_ms)"
                " VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (delivery_id, attempt) DO UPDATE SET"
                " at = excluded.at, response_code = excluded.response_code,"
                " error = excluded.error, duration_ms = excluded.duration_ms",
                attempts,
            )
            conn.executemany(
                "UPDATE webhook_deliveries SET status = ?, attempts = ?, next_attempt_at = ?,"
                " response_code = ?, error = ?, updated_at = ? WHERE id = ?",
                statuses,
            )

        await self.sql.run(record, write=True)

    async def redeliver(self, webhook_id: str, delivery_id: str) -> bool:
        """Make a delivery (dead or delivered included) due at once; False if missing."""
        params = (self.clock(), self.clock(), delivery_id, webhook_id)
        changed = await self.sql.run(
            lambda conn: (
                conn.execute(
                    "UPDATE webhook_deliveries SET status = 'pending', next_attempt_at = ?,"
                    " updated_at = ? WHERE id = ? AND webhook_id = ?",
                    params,
                ).rowcount
            ),
            write=True,
        )
        return changed > 0

    async def deliveries(self, webhook_id: str, limit: int) -> list[dict[str, Any]]:
        """A webhook's latest deliveries, newest first, each with its attempts."""
        # Deliveries written in one batch share created_at: SQLite breaks the tie by
        # insertion order (rowid); PostgreSQL has no rowid, so by seq, then id.
        tie = "rowid DESC" if self.sql.dialect == "sqlite" else "seq DESC, id DESC"
        return await self.sql.run(lambda conn: _deliveries(conn, webhook_id, limit, tie))

    async def counts(self) -> dict[str, int]:
        """Deliveries by status."""
        rows = await self.sql.run(
            lambda conn: conn.execute(
                "SELECT status, count(*) FROM webhook_deliveries GROUP BY status"
            ).fetchall()
        )
        return {status: int(n) for status, n in rows}

    async def prune(self, older_than: float) -> int:
        """Forget finished deliveries (and attempts) last changed before ``older_than``."""

        def prune(conn: Conn) -> int:
            conn.execute(
                "DELETE FROM webhook_attempts WHERE delivery_id IN (SELECT id FROM"
                " webhook_deliveries WHERE status != 'pending' AND updated_at < ?)",
                (older_than,),
            )
            return conn.execute(
                "DELETE FROM webhook_deliveries WHERE status != 'pending' AND updated_at < ?",
                (older_than,),
            ).rowcount

        return await self.sql.run(prune, write=True)


def _select(conn: Conn, where: str, params: Sequence[Any]) -> list[Webhook]:
    rows = conn.execute(
        f"SELECT {_WEBHOOK_COLUMNS} FROM webhooks {where} ORDER BY created_at, id", params
    ).fetchall()
    return [_webhook(row) for row in rows]


def _one(conn: Conn, webhook_id: str) -> Webhook | None:
    found = _select(conn, "WHERE id = ?", (webhook_id,))
    return found[0] if found else None


def _active(conn: Conn) -> dict[str, list[Webhook]]:
    active: dict[str, list[Webhook]] = {}
    for webhook in _select(conn, "WHERE active = 1", ()):
        active.setdefault(webhook.owner, []).append(webhook)
    return active


def _deliveries(conn: Conn, webhook_id: str, limit: int, tie: str) -> list[dict[str, Any]]:
    rows = conn.execute(
        "SELECT id, task_id, seq, event_type, status, attempts, next_attempt_at,"
        " response_code, error, created_at, updated_at FROM webhook_deliveries"
        f" WHERE webhook_id = ? ORDER BY created_at DESC, {tie} LIMIT ?",
        (webhook_id, limit),
    ).fetchall()
    attempts: dict[str, list[dict[str, Any]]] = {row[0]: [] for row in rows}
    if rows:
        marks = ",".join("?" * len(rows))
        for delivery_id, attempt, at, code, error, duration in conn.execute(
            "SELECT delivery_id, attempt, at, response_code, error, duration_ms"
            f" FROM webhook_attempts WHERE delivery_id IN ({marks}) ORDER BY attempt",
            list(attempts),
        ):
            attempts[delivery_id].append(
                {
                    "attempt": attempt,
                    "at": iso(at),
                    "responseCode": code,
                    "error": error,
                    "durationMs": round(duration, 3),
                }
            )
    return [
        {
            "id": row[0],
            "taskId": row[1],
            "seq": row[2],
            "eventType": row[3],
            "status": row[4],
            "attempt": row[5],
            "nextRetryAt": iso(row[6]) if row[4] == PENDING else None,
            "responseCode": row[7],
            "error": row[8],
            "createdAt": iso(row[9]),
            "updatedAt": iso(row[10]),
            "attempts": attempts[row[0]],
        }
        for row in rows
    ]


@dataclass(frozen=True, slots=True)
class AttemptResult:
    """What one attempt did, and the delivery's status after it."""

    delivery_id: str
    attempt: int
    at: float
    response_code: int | None
    error: str | None
    duration_ms: float
    status: str
    next_attempt_at: float | None


def _webhook(row: Sequence[Any]) -> Webhook:
    return Webhook(
        id=row[0],
        owner=row[1],
        url=row[2],
        event_type=row[3],
        description=row[4],
        task_id_prefix=row[5],
        active=bool(row[6]),
        secret=row[7],
        created_at=float(row[8]),
        updated_at=float(row[9]),
        format=row[10],
    )
