"""Integrations and their processed deliveries, in the product's database.

Every method is one unit of work of :class:`~spectral.sql.Sql`, committed before it
returns (as :mod:`spectral.webhooks.store` does). A processed delivery is
kept :data:`RETENTION_SECONDS` with the answer it got, so that a provider's retry of
it is answered the same without being applied twice; older ones are deleted in
passes at most every :data:`CLEANUP_EVERY` seconds, as new ones are recorded.
"""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from spectral.integrations.mapping import Mapping, Step
from spectral.integrations.verify import new_secret
from spectral.sql import Conn, Sql
from spectral.wire import iso
from storage import Migration

#: The registry migration stream of these tables.
STREAM = "spectral.integrations"
#: How long a processed delivery is remembered: providers retry for hours to a day
#: or two (Stripe: 3 days), and a Standard Webhooks replay older than 5 min is refused
#: by its timestamp anyway.
RETENTION_SECONDS = 3 * 86400
#: Old deliveries are deleted at most this often (a pass is one indexed DELETE).
CLEANUP_EVERY = 60.0

MIGRATIONS = (
    Migration(
        1,
        """
        CREATE TABLE integrations (
            id TEXT PRIMARY KEY,
            owner TEXT NOT NULL,
            name TEXT NOT NULL,
            signing TEXT NOT NULL,
            header TEXT,
            delivery_id_header TEXT, -- unused: only the body is signed, it names a delivery
            external_id_path TEXT NOT NULL,
            status_path TEXT NOT NULL,
            status_map TEXT NOT NULL,
            progress_path TEXT,
            error_path TEXT,
            secret TEXT NOT NULL,
            created_at REAL NOT NULL,
            updated_at REAL NOT NULL
        ) WITHOUT ROWID;
        CREATE INDEX integrations_by_owner ON integrations (owner, created_at);
        CREATE TABLE integration_deliveries (
            integration_id TEXT NOT NULL,
            delivery_id TEXT NOT NULL,
            status INTEGER NOT NULL,
            answer TEXT NOT NULL,
            created_at REAL NOT NULL,
            PRIMARY KEY (integration_id, delivery_id)
        ) WITHOUT ROWID;
        CREATE INDEX integration_deliveries_by_age ON integration_deliveries (created_at);
        """,
    ),
)

_COLUMNS = (
    "id, owner, name, signing, header, external_id_path, status_path,"
    " status_map, progress_path, error_path, secret, created_at, updated_at"
)
#: Columns an update may change.
UPDATABLE = frozenset(
    {
        "name",
        "header",
        "external_id_path",
        "status_path",
        "status_map",
        "progress_path",
        "error_path",
    }
)


@dataclass(frozen=True, slots=True)
class Integration:
    """One inbound integration."""

    id: str
    owner: str
    name: str
    signing: str
    header: str | None
    mapping: Mapping
    secret: str
    created_at: float
    updated_at: float

    def public(self) -> dict[str, Any]:
        """The integration as the API answers it (never the secret)."""
        mapping = self.mapping
        return {
            "id": self.id,
            "owner": self.owner,
            "name": self.name,
            "signing": self.signing,
            "header": self.header,
            "externalIdPath": mapping.external_id_path,
            "statusPath": mapping.status_path,
            "statusMap": {k: str(v) for k, v in mapping.status_map.items()},
            "progressPath": mapping.progress_path,
            "errorPath": mapping.error_path,
            "callbackPath": f"/callbacks/{self.id}",
            "createdAt": iso(self.created_at),
            "updatedAt": iso(self.updated_at),
        }


@dataclass(frozen=True, slots=True)
class Recorded:
    """The answer a processed delivery got."""

    status: int
    answer: Any
    created_at: float


def new_integration_id() -> str:
    """A fresh integration id."""
    return "int_" + secrets.token_hex(8)


def _row(row: Sequence[Any]) -> Integration:
    (id_, owner, name, signing, header, external_id_path, status_path,
     status_map, progress_path, error_path, secret, created_at, updated_at) = row  # fmt: skip
    mapping = Mapping(
        external_id_path,
        status_path,
        {k: Step(v) for k, v in json.loads(status_map).items()},
        progress_path,
        error_path,
    )
    return Integration(id_, owner, name, signing, header, mapping, secret, created_at, updated_at)


class IntegrationStore:
    """The integration tables over the product's database.

    Args:
        sql: the product's database (migrated with :data:`MIGRATIONS`).
        clock: wall-clock seconds.
    """

    def __init__(self, sql: Sql, clock: Callable[[], float] = time.time) -> None:
        self.sql = sql
        self.clock = clock
        self._last_cleanup = float("-inf")

    async def create(
        self,
        owner: str,
        name: str,
        signing: str,
        header: str | None,
        mapping: Mapping,
    ) -> Integration:
        """Register an integration with a fresh secret."""
        now = self.clock()
        integration = Integration(
            new_integration_id(), owner, name, signing, header, mapping,
            new_secret(signing), now, now,
        )  # fmt: skip
        row = (
            integration.id, owner, name, signing, header,
            mapping.external_id_path, mapping.status_path, _map_json(mapping.status_map),
            mapping.progress_path, mapping.error_path, integration.secret, now, now,
        )  # fmt: skip
        await self.sql.run(
            lambda conn: conn.execute(
                f"INSERT INTO integrations ({_COLUMNS}) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)", row
            ),
            write=True,
        )
        return integration

    async def get(self, integration_id: str, owner: str | None = None) -> Integration | None:
        """The integration (of ``owner``, unless None), or None."""
        return await self.sql.run(lambda conn: _get(conn, integration_id, owner))

    async def list(self, owner: str | None) -> list[Integration]:
        """The integrations of ``owner`` (None: every owner's), oldest first."""
        if owner is None:
            query = f"SELECT {_COLUMNS} FROM integrations ORDER BY created_at, id"
            params: tuple[str, ...] = ()
        else:
            query = f"SELECT {_COLUMNS} FROM integrations WHERE owner = ? ORDER BY created_at, id"
            params = (owner,)
        rows = await self.sql.run(lambda conn: conn.execute(query, params).fetchall())
        return [_row(row) for row in rows]

    async def update(self, integration_id: str, changes: dict[str, Any]) -> Integration | None:
        """Change some of :data:`UPDATABLE`; the updated integration, or None if gone."""
        unknown = set(changes) - UPDATABLE
        if unknown:
            raise ValueError(f"not updatable: {sorted(unknown)}")
        values = {
            column: _map_json(value) if column == "status_map" else value
            for column, value in changes.items()
        }
        assignments = ", ".join(f"{column} = ?" for column in values)
        params = (*values.values(), self.clock(), integration_id)

        def update(conn: Conn) -> Integration | None:
            cursor = conn.execute(
                f"UPDATE integrations SET {assignments}, updated_at = ? WHERE id = ?", params
            )
            return _get(conn, integration_id, None) if cursor.rowcount else None

        return await self.sql.run(update, write=True)

    async def delete(self, integration_id: str) -> bool:
        """Remove an integration and its processed deliveries."""

        def delete(conn: Conn) -> bool:
            cursor = conn.execute("DELETE FROM integrations WHERE id = ?", (integration_id,))
            conn.execute(
                "DELETE FROM integration_deliveries WHERE integration_id = ?", (integration_id,)
            )
            return cursor.rowcount > 0

        return await self.sql.run(delete, write=True)

    # -- processed deliveries ------------------------------------------------------------------

    async def recorded(self, integration_id: str, delivery_id: str) -> Recorded | None:
        """The answer of a delivery processed within the retention, or None."""
        params = (integration_id, delivery_id, self.clock() - RETENTION_SECONDS)
        row = await self.sql.run(
            lambda conn: conn.execute(
                "SELECT status, answer, created_at FROM integration_deliveries"
                " WHERE integration_id = ? AND delivery_id = ? AND created_at > ?",
                params,
            ).fetchone()
        )
        if row is None:
            return None
        return Recorded(int(row[0]), json.loads(row[1]), float(row[2]))

    async def record(self, integration_id: str, delivery_id: str, status: int, answer: Any) -> None:
        """Remember a processed delivery's answer (and delete expired ones now and then)."""
        now = self.clock()
        row = (integration_id, delivery_id, status, json.dumps(answer), now)
        await self.sql.run(
            lambda conn: conn.execute(
                "INSERT INTO integration_deliveries"
                " (integration_id, delivery_id, status, answer, created_at) VALUES (?,?,?,?,?)"
                " ON CONFLICT (integration_id, delivery_id) DO UPDATE SET"
                " status = excluded.status, answer = excluded.answer,"
                " created_at = excluded.created_at",
                row,
            ),
            write=True,
        )
        if now - self._last_cleanup >= CLEANUP_EVERY:
            self._last_cleanup = now
            await self.cleanup()

    async def cleanup(self) -> int:
        """Delete deliveries older than the retention; how many went."""
        expired = self.clock() - RETENTION_SECONDS
        deleted: int = await self.sql.run(
            lambda conn: (
                conn.execute(
                    "DELETE FROM integration_deliveries WHERE created_at <= ?", (expired,)
                ).rowcount
            ),
            write=True,
        )
        return deleted

    async def delivery_count(self, integration_id: str) -> int:
        """Processed deliveries remembered for an integration."""
        row = await self.sql.run(
            lambda conn: conn.execute(
                "SELECT count(*) FROM integration_deliveries WHERE integration_id = ?",
                (integration_id,),
            ).fetchone()
        )
        return int(row[0])


def _get(conn: Conn, integration_id: str, owner: str | None) -> Integration | None:
    where, params = "WHERE id = ?", [integration_id]
    if owner is not None:
        where += " AND owner = ?"
        params.append(owner)
    row = conn.execute(f"SELECT {_COLUMNS} FROM integrations {where}", params).fetchone()
    return None if row is None else _row(row)


def _map_json(status_map: dict[str, Step]) -> str:
    return json.dumps({k: str(v) for k, v in status_map.items()}, sort_keys=True)
