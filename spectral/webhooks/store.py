"""Webhooks, their deliveries and attempts, and the outbox cursors, in the registry database.

Every method runs on the trio thread over the registry's connection and commits
before it returns (``synchronous=NORMAL``, WAL: tens of microseconds each).
"""

from __future__ import annotations

import secrets
import sqlite3
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

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
)

PENDING, DELIVERED, DEAD = "pending", "delivered", "dead"


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
    " created_at, updated_at"
)


def new_webhook_id() -> str:
    """A fresh webhook id."""
    return "wh_" + secrets.token_hex(8)


def new_delivery_id() -> str:
    """A fresh delivery id (the ``webhook-id`` header, stable across retries)."""
    return "msg_" + secrets.token_hex(12)


class WebhookStore:
    """The webhook tables over the registry connection.

    Args:
        conn: the registry connection (migrated with :data:`MIGRATIONS`).
        clock: wall-clock seconds.
    """

    def __init__(self, conn: sqlite3.Connection, clock: Callable[[], float] = time.time) -> None:
        self.conn = conn
        self.clock = clock
        #: Active webhooks by owner, reloaded after every change (read per event).
        self.active: dict[str, list[Webhook]] = {}
        self._reload()

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        self.conn.execute("BEGIN IMMEDIATE")
        try:
            yield self.conn
            self.conn.execute("COMMIT")
        except BaseException:
            if self.conn.in_transaction:
                self.conn.execute("ROLLBACK")
            raise

    def _reload(self) -> None:
        active: dict[str, list[Webhook]] = {}
        for webhook in self._select("WHERE active = 1", ()):
            active.setdefault(webhook.owner, []).append(webhook)
        self.active = active

    def _select(self, where: str, params: Sequence[Any]) -> list[Webhook]:
        rows = self.conn.execute(
            f"SELECT {_WEBHOOK_COLUMNS} FROM webhooks {where} ORDER BY created_at, id", params
        ).fetchall()
        return [_webhook(row) for row in rows]

    # -- webhooks ------------------------------------------------------------------

    def create(
        self,
        owner: str,
        url: str,
        event_type: str,
        description: str | None = None,
        task_id_prefix: str | None = None,
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
        )
        with self._transaction() as db:
            db.execute(
                f"INSERT INTO webhooks ({_WEBHOOK_COLUMNS}) VALUES (?,?,?,?,?,?,?,?,?,?)",
                (
                    webhook.id,
                    owner,
                    url,
                    event_type,
                    description,
                    task_id_prefix,
                    1,
                    webhook.secret,
                    now,
                    now,
                ),
            )
        self._reload()
        return webhook

    def get(self, webhook_id: str, owner: str | None = None) -> Webhook | None:
        """One webhook (None if missing, or another owner's when ``owner`` is given)."""
        found = self._select("WHERE id = ?", (webhook_id,))
        if not found or (owner is not None and found[0].owner != owner):
            return None
        return found[0]

    def list(self, owner: str | None = None) -> list[Webhook]:
        """Webhooks of ``owner`` (every owner's with None), oldest first."""
        if owner is None:
            return self._select("", ())
        return self._select("WHERE owner = ?", (owner,))

    def update(self, webhook_id: str, changes: dict[str, Any]) -> Webhook | None:
        """Change some of url, event_type, description, active; None if missing."""
        allowed = {"url", "event_type", "description", "active", "task_id_prefix"}
        if not set(changes) <= allowed:
            raise ValueError(f"cannot change {sorted(set(changes) - allowed)}")
        assignments = ", ".join(f"{column} = ?" for column in changes)
        params = [int(v) if isinstance(v, bool) else v for v in changes.values()]
        with self._transaction() as db:
            cursor = db.execute(
                f"UPDATE webhooks SET {assignments}, updated_at = ? WHERE id = ?"
                if changes
                else "UPDATE webhooks SET updated_at = ? WHERE id = ?",
                [*params, self.clock(), webhook_id],
            )
        self._reload()
        return self.get(webhook_id) if cursor.rowcount else None

    def delete(self, webhook_id: str) -> bool:
        """Remove a webhook, its deliveries and their attempts; False if missing."""
        with self._transaction() as db:
            db.execute(
                "DELETE FROM webhook_attempts WHERE delivery_id IN"
                " (SELECT id FROM webhook_deliveries WHERE webhook_id = ?)",
                (webhook_id,),
            )
            db.execute("DELETE FROM webhook_deliveries WHERE webhook_id = ?", (webhook_id,))
            cursor = db.execute("DELETE FROM webhooks WHERE id = ?", (webhook_id,))
        self._reload()
        return cursor.rowcount > 0

    # -- the outbox ----------------------------------------------------------------

    def cursors(self) -> dict[str, int]:
        """The last seq of each task already turned into deliveries."""
        return dict(self.conn.execute("SELECT task_id, seq FROM webhook_cursors"))

    def lagging(self) -> list[tuple[str, str, int, int]]:
        """Tasks whose registry seq is past their cursor: (task id, owner, cursor, seq)."""
        return [
            (row[0], row[1] or "", int(row[2]), int(row[3]))
            for row in self.conn.execute(
                "SELECT o.id, o.owner, coalesce(c.seq, 0), json_extract(o.summary, '$.seq')"
                " FROM objects o LEFT JOIN webhook_cursors c ON c.task_id = o.id"
                " WHERE o.kind = 'task' AND json_extract(o.summary, '$.seq') > coalesce(c.seq, 0)"
            )
        ]

    def vanished(self) -> list[tuple[str, str, int]]:
        """Cursors of tasks the registry no longer lists: (task id, owner, cursor)."""
        return list(
            self.conn.execute(
                "SELECT c.task_id, c.owner, c.seq FROM webhook_cursors c"
                " WHERE NOT EXISTS (SELECT 1 FROM objects o"
                " WHERE o.kind = 'task' AND o.id = c.task_id)"
            )
        )

    def write_batch(
        self,
        deliveries: Iterable[NewDelivery],
        cursors: dict[str, tuple[str, int]],
        removed: Iterable[str] = (),
    ) -> None:
        """Insert deliveries and move cursors (task id → (owner, seq)) in one transaction."""
        now = self.clock()
        with self._transaction() as db:
            db.executemany(
                "INSERT INTO webhook_deliveries (id, webhook_id, task_id, seq, event_type, body,"
                " status, attempts, next_attempt_at, created_at, updated_at)"
                " VALUES (?, ?, ?, ?, ?, ?, 'pending', 0, ?, ?, ?)",
                [
                    (d.id, d.webhook_id, d.task_id, d.seq, d.event_type, d.body, now, now, now)
                    for d in deliveries
                ],
            )
            db.executemany(
                "INSERT INTO webhook_cursors (task_id, owner, seq) VALUES (?, ?, ?)"
                " ON CONFLICT (task_id) DO UPDATE SET seq = excluded.seq",
                [(task_id, owner, seq) for task_id, (owner, seq) in cursors.items()],
            )
            db.executemany("DELETE FROM webhook_cursors WHERE task_id = ?", [(t,) for t in removed])

    # -- deliveries ----------------------------------------------------------------

    def due(
        self, now: float, limit: int, exclude: set[str], paused: Iterable[str] = ()
    ) -> list[Due]:
        """Pending deliveries of active, unpaused webhooks due by ``now``, soonest first."""
        held = set(paused)
        hooks = [
            (hook_id, url, secret)
            for hook_id, url, secret in self.conn.execute(
                "SELECT id, url, secret FROM webhooks WHERE active = 1"
            )
            if hook_id not in held
        ]
        due: list[tuple[float, Due]] = []
        for hook_id, url, secret in hooks:  # one index range per webhook
            rows = self.conn.execute(
                "SELECT id, body, attempts, next_attempt_at FROM webhook_deliveries"
                " WHERE webhook_id = ? AND status = 'pending' AND next_attempt_at <= ?"
                " ORDER BY next_attempt_at LIMIT ?",
                (hook_id, now, limit + len(exclude)),
            ).fetchall()
            due.extend(
                (r[3], Due(r[0], hook_id, url, secret, bytes(r[1]), int(r[2])))
                for r in rows
                if r[0] not in exclude
            )
        due.sort(key=lambda item: item[0])  # soonest first, across webhooks
        return [delivery for _, delivery in due[:limit]]

    def next_due_at(self, after: float) -> float | None:
        """When the soonest pending delivery of an active webhook due after ``after`` is due."""
        row = self.conn.execute(
            "SELECT min(d.next_attempt_at) FROM webhook_deliveries d"
            " JOIN webhooks w ON w.id = d.webhook_id"
            " WHERE d.status = 'pending' AND d.next_attempt_at > ? AND w.active = 1",
            (after,),
        ).fetchone()
        return None if row[0] is None else float(row[0])

    def record_attempts(self, results: Sequence[AttemptResult]) -> None:
        """Store attempts and each delivery's new status, in one transaction."""
        with self._transaction() as db:
            db.executemany(
                "INSERT OR REPLACE INTO webhook_attempts"
                " (delivery_id, attempt, at, response_code, error, duration_ms)"
                " VALUES (?, ?, ?, ?, ?, ?)",
                [
                    (r.delivery_id, r.attempt, r.at, r.response_code, r.error, r.duration_ms)
                    for r in results
                ],
            )
            db.executemany(
                "UPDATE webhook_deliveries SET status = ?, attempts = ?, next_attempt_at = ?,"
                " response_code = ?, error = ?, updated_at = ? WHERE id = ?",
                [
                    (
                        r.status,
                        r.attempt,
                        r.next_attempt_at,
                        r.response_code,
                        r.error,
                        r.at,
                        r.delivery_id,
                    )
                    for r in results
                ],
            )

    def redeliver(self, webhook_id: str, delivery_id: str) -> bool:
        """Make a delivery (dead or delivered included) due at once; False if missing."""
        with self._transaction() as db:
            cursor = db.execute(
                "UPDATE webhook_deliveries SET status = 'pending', next_attempt_at = ?,"
                " updated_at = ? WHERE id = ? AND webhook_id = ?",
                (self.clock(), self.clock(), delivery_id, webhook_id),
            )
        return cursor.rowcount > 0

    def deliveries(self, webhook_id: str, limit: int) -> list[dict[str, Any]]:
        """A webhook's latest deliveries, newest first, each with its attempts."""
        rows = self.conn.execute(
            "SELECT id, task_id, seq, event_type, status, attempts, next_attempt_at,"
            " response_code, error, created_at, updated_at FROM webhook_deliveries"
            " WHERE webhook_id = ? ORDER BY created_at DESC, rowid DESC LIMIT ?",
            (webhook_id, limit),
        ).fetchall()
        attempts: dict[str, list[dict[str, Any]]] = {row[0]: [] for row in rows}
        if rows:
            marks = ",".join("?" * len(rows))
            for delivery_id, attempt, at, code, error, duration in self.conn.execute(
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

    def counts(self) -> dict[str, int]:
        """Deliveries by status."""
        return dict(
            self.conn.execute("SELECT status, count(*) FROM webhook_deliveries GROUP BY status")
        )

    def prune(self, older_than: float) -> int:
        """Forget finished deliveries (and attempts) last changed before ``older_than``."""
        with self._transaction() as db:
            db.execute(
                "DELETE FROM webhook_attempts WHERE delivery_id IN (SELECT id FROM"
                " webhook_deliveries WHERE status != 'pending' AND updated_at < ?)",
                (older_than,),
            )
            cursor = db.execute(
                "DELETE FROM webhook_deliveries WHERE status != 'pending' AND updated_at < ?",
                (older_than,),
            )
        return cursor.rowcount


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
    )
