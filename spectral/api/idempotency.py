"""Idempotent mutations: one answer per (owner, ``Idempotency-Key``), kept 24 h.

Theory of operation
-------------------
A mutating request that carries ``Idempotency-Key`` is run under a lock held per
(owner, key), so concurrent duplicates are serialized in this process: exactly
one of them is applied, the others wait and are answered from its record.

Where the record lives decides what a crash can do. For a mutation of one task,
the task's actor writes the record (key, request fingerprint, the answer) into
the task's own file **in the same transaction as the change**: the change and
its record are committed together or not at all, whatever moment ``kill -9``
strikes. A repeat that reaches the actor finds the record there and is answered
from it, with no new event. The registry keeps a copy of each answer (written
after the commit, before the answer is sent), which serves repeats without
waking the task, detects a key reused for another task, and holds the answers
of the operations that are not one task's transaction (``batchUpdateProgress``,
``delete``).

A repeat is the same request when its fingerprint matches: SHA-256 over the
route and the canonical JSON of the body (keys sorted), so re-serialising the
same body differently is still a repeat. Another body under a used key is 422
``IDEMPOTENCY_KEY_REUSED``. Only answers that applied something are recorded: a
refused request (400, 404, 409 ...) changed nothing, and its retry is judged
afresh.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from typing import Any

from spectral.errors import ApiError
from spectral.locks import KeyedLocks
from spectral.sql import Conn, Sql
from storage import Migration

HEADER = "Idempotency-Key"
REPLAYED_HEADER = "Idempotent-Replayed"
#: Longest key accepted (docs/api.md, "Idempotency").
MAX_KEY_LENGTH = 255
#: How long an answer is kept.
RETENTION_SECONDS = 24 * 3600
#: The registry migration stream of this module's table.
STREAM = "spectral.api.idempotency"

MIGRATIONS = (
    Migration(
        1,
        """
        CREATE TABLE idempotency (
            owner TEXT NOT NULL,
            key TEXT NOT NULL,
            fingerprint TEXT NOT NULL,
            status INTEGER NOT NULL,
            answer TEXT NOT NULL,
            created_at REAL NOT NULL,
            PRIMARY KEY (owner, key)
        ) WITHOUT ROWID;
        CREATE INDEX idempotency_by_age ON idempotency (created_at);
        """,
    ),
)


def reused_error() -> ApiError:
    """The 422 answer for a key already used with another request."""
    return ApiError(
        422,
        "IDEMPOTENCY_KEY_REUSED",
        "this Idempotency-Key was already used with a different request",
    )


def check_key(value: str | None) -> str | None:
    """The request's key, validated (400 naming the header), or None."""
    if value is None:
        return None
    if not value or len(value) > MAX_KEY_LENGTH or not value.isprintable():
        raise ApiError(
            400,
            "VALIDATION_ERROR",
            f"{HEADER}: 1-{MAX_KEY_LENGTH} printable characters",
            [{"field": HEADER, "message": f"1-{MAX_KEY_LENGTH} printable characters"}],
        )
    return value


def fingerprint(route: str, body: Any) -> str:
    """SHA-256 of the route and the canonical JSON of the body."""
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(f"{route}\n{canonical}".encode()).hexdigest()


def task_key(owner: str, key: str) -> str:
    """The key as a task file stores it: bounded, and never another owner's."""
    return hashlib.sha256(f"{owner}\x00{key}".encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class Record:
    """A stored answer."""

    fingerprint: str
    status: int
    answer: Any
    created_at: float


@dataclass
class IdempotencyStore:
    """Answers by (owner, key) in the product's database, and the per-key locks.

    Args:
        sql: the product's database (migrated with :data:`MIGRATIONS`).
        clock: wall-clock seconds.
    """

    sql: Sql
    clock: Callable[[], float] = time.time
    _locks: KeyedLocks = field(default_factory=KeyedLocks)

    def locked(self, owner: str, key: str) -> AbstractAsyncContextManager[None]:
        """Hold the lock of (owner, key): concurrent duplicates run one after another."""
        return self._locks.hold((owner, key))

    async def get(self, owner: str, key: str) -> Record | None:
        """The live record of (owner, key), or None."""
        params = (owner, key, self.clock() - RETENTION_SECONDS)
        row = await self.sql.run(
            lambda conn: conn.execute(
                "SELECT fingerprint, status, answer, created_at FROM idempotency"
                " WHERE owner = ? AND key = ? AND created_at > ?",
                params,
            ).fetchone()
        )
        if row is None:
            return None
        return Record(row[0], int(row[1]), json.loads(row[2]), float(row[3]))

    async def put(self, owner: str, key: str, record: Record) -> None:
        """Store an answer (committed before the caller answers); drops expired ones."""
        answer = json.dumps(record.answer, separators=(",", ":"), ensure_ascii=False)
        row = (owner, key, record.fingerprint, record.status, answer, record.created_at)
        expired = self.clock() - RETENTION_SECONDS

        def put(conn: Conn) -> None:
            conn.execute(
                "INSERT INTO idempotency (owner, key, fingerprint, status, answer, created_at)"
                " VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (owner, key) DO UPDATE SET"
                " fingerprint = excluded.fingerprint, status = excluded.status,"
                " answer = excluded.answer, created_at = excluded.created_at",
                row,
            )
            conn.execute("DELETE FROM idempotency WHERE created_at <= ?", (expired,))

        await self.sql.run(put, write=True)
