"""API keys: created, listed, revoked and checked; stored hashed in the registry database.

A key reads ``spk_<id>_<secret>``: the id finds the row at once, the secret (256
random bits) is what proves possession. The database keeps only
HMAC-SHA256(pepper, key), compared in constant time. A keyed fast hash rather
than argon2/scrypt: those exist to slow down guessing of low-entropy passwords;
a 256-bit random key cannot be guessed however fast the hash, and a slow hash
would cost every request tens of milliseconds. The pepper lives in
``<data-dir>/server.secret``, outside the database, so a copy of the database
alone cannot even check a guess.

The table is in ``registry.sqlite`` so that ``spectral keys`` works on a data
directory whether or not the server runs. The server caches what it looked up
and drops the cache whenever another connection (the CLI) has committed
(``PRAGMA data_version``): new keys and revocations take effect at the next request.
On a database shared by a cluster (PostgreSQL) a cached entry is trusted for
:data:`CACHE_TTL` seconds instead.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import re
import secrets
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from spectral.access.roles import ROLES, Role
from spectral.sql import Conn, Sql, SqlError, SqliteSql
from spectral.wire import iso
from storage import Migration, Registry

#: Owners appear in room names (``user_{owner}``): the same alphabet as ids.
OWNER_PATTERN = r"^[A-Za-z0-9._:-]{1,128}$"
KEY_PREFIX = "spk_"
#: How often ``last_used_at`` is written per key at most (it is a hint, not an audit log).
TOUCH_INTERVAL = 60.0
#: Seconds a looked-up key is trusted where commits cannot be detected (not SQLite):
#: a revocation on another node takes effect within this.
CACHE_TTL = 1.0
#: The registry migration stream of this module's table.
STREAM = "spectral.access.keys"

MIGRATIONS = (
    Migration(
        1,
        """
        CREATE TABLE api_keys (
            id TEXT PRIMARY KEY,
            name TEXT,
            owner TEXT NOT NULL,
            role TEXT NOT NULL,
            hash BLOB NOT NULL,
            created_at REAL NOT NULL,
            last_used_at REAL,
            revoked_at REAL
        ) WITHOUT ROWID;
        """,
    ),
)

_KEY_RE = re.compile(r"^spk_([0-9a-f]{16})_[A-Za-z0-9_-]{43}$")
_OWNER_RE = re.compile(OWNER_PATTERN)


class KeyRequestError(ValueError):
    """A key cannot be created as asked (the message names the field)."""


@dataclass(frozen=True, slots=True)
class ApiKey:
    """A stored key, without its secret."""

    id: str
    name: str | None
    owner: str
    role: Role
    created_at: float
    last_used_at: float | None = None
    revoked_at: float | None = None

    def public(self) -> dict[str, object]:
        """The JSON shape shown by ``GET /admin/keys`` and ``spectral keys list``."""
        return {
            "id": self.id,
            "name": self.name,
            "owner": self.owner,
            "role": self.role,
            "createdAt": iso(self.created_at),
            "lastUsedAt": iso(self.last_used_at),
            "revokedAt": iso(self.revoked_at),
        }


@dataclass(frozen=True, slots=True)
class _Row:
    key: ApiKey
    digest: bytes


def check_owner(owner: str) -> str:
    """Validate an owner name."""
    if not isinstance(owner, str) or not _OWNER_RE.match(owner) or not owner.strip("."):
        raise KeyRequestError("owner: 1-128 characters of A-Z a-z 0-9 . _ : - (not only dots)")
    return owner


def check_role(role: str) -> Role:
    """Validate a role name."""
    if role not in ROLES:
        raise KeyRequestError(f"role: must be one of {', '.join(ROLES)}")
    return role  # type: ignore[return-value]


class KeyStore:
    """The ``api_keys`` table and a cache of what was looked up.

    The cache follows the database's dialect. On SQLite it is dropped whenever another
    connection (the CLI) has committed (``PRAGMA data_version``). Elsewhere (PostgreSQL,
    shared by a cluster) an entry, a revocation included, is looked up again once it is
    ``cache_ttl`` seconds old: another node's revocation takes effect within that.

    Args:
        sql: the product's database, migrated with :data:`MIGRATIONS`.
        pepper: the secret mixed into every stored hash.
        clock: wall-clock seconds.
        cache_ttl: seconds a cached entry is trusted (not on SQLite, see above).
        monotonic: monotonic seconds, for the cache's ages.
    """

    def __init__(
        self,
        sql: Sql,
        pepper: bytes,
        clock: Callable[[], float] = time.time,
        *,
        cache_ttl: float = CACHE_TTL,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.sql = sql
        self.pepper = pepper
        self.clock = clock
        self.cache_ttl = cache_ttl
        self.monotonic = monotonic
        #: key id → (its row or None, monotonic time it was read).
        self._cache: dict[str, tuple[_Row | None, float]] = {}
        self._touched: dict[str, float] = {}
        self._data_version: int | None = None

    def digest(self, key: str) -> bytes:
        """The stored form of a key."""
        return hmac.new(self.pepper, key.encode(), hashlib.sha256).digest()

    async def create(self, owner: str, role: str, name: str | None = None) -> tuple[ApiKey, str]:
        """Create a key; returns it and its secret (shown once, never stored)."""
        owner = check_owner(owner)
        role = check_role(role)
        if name is not None and (not isinstance(name, str) or len(name) > 200):
            raise KeyRequestError("name: at most 200 characters")
        key_id = secrets.token_hex(8)
        secret = f"{KEY_PREFIX}{key_id}_{secrets.token_urlsafe(32)}"
        api_key = ApiKey(key_id, name, owner, role, self.clock())
        params = (key_id, name, owner, role, self.digest(secret), api_key.created_at)

        def insert(conn: Conn) -> None:
            conn.execute(
                "INSERT INTO api_keys (id, name, owner, role, hash, created_at)"
                " VALUES (?, ?, ?, ?, ?, ?)",
                params,
            )

        await self.sql.run(insert, write=True)
        self._cache.pop(key_id, None)
        return api_key, secret

    async def list(self, owner: str | None = None) -> list[ApiKey]:
        """Every key (of ``owner``), oldest first."""
        query = f"SELECT {_COLUMNS} FROM api_keys"
        params: tuple[str, ...] = ()
        if owner is not None:
            query += " WHERE owner = ?"
            params = (owner,)
        query += " ORDER BY created_at, id"
        rows = await self.sql.run(lambda conn: conn.execute(query, params).fetchall())
        return [_row(r).key for r in rows]

    async def get(self, key_id: str) -> ApiKey | None:
        """One key by id (revoked ones included)."""
        found = await self.sql.run(lambda conn: _select(conn, key_id))
        return None if found is None else found.key

    async def revoke(self, key_id: str) -> ApiKey | None:
        """Revoke a key at once; None if there is no such key. Revoking twice is harmless."""
        now = self.clock()

        def revoke(conn: Conn) -> _Row | None:
            conn.execute(
                "UPDATE api_keys SET revoked_at = coalesce(revoked_at, ?) WHERE id = ?",
                (now, key_id),
            )
            return _select(conn, key_id)

        found = await self.sql.run(revoke, write=True)
        self._cache.pop(key_id, None)
        return None if found is None else found.key

    async def authenticate(self, secret: str) -> ApiKey | None:
        """The live (not revoked) key whose secret this is, or None."""
        match = _KEY_RE.match(secret)
        if match is None:
            return None
        key_id = match.group(1)
        row = await self._cached(key_id)
        if row is None or row.key.revoked_at is not None:
            return None
        if not hmac.compare_digest(row.digest, self.digest(secret)):
            return None
        await self._touch(key_id)
        return row.key

    async def is_live(self, key_id: str) -> bool:
        """True if the key exists and is not revoked (watch tokens die with their key)."""
        row = await self._cached(key_id)
        return row is not None and row.key.revoked_at is None

    async def _cached(self, key_id: str) -> _Row | None:
        # One lookup path for both checks; the cache is bounded.
        by_version = self.sql.dialect == "sqlite"
        if by_version:
            version = await self.sql.run(_data_version)
            if version != self._data_version:
                self._data_version = version
                self._cache.clear()
        now = self.monotonic()
        entry = self._cache.get(key_id)
        if entry is None or (not by_version and now - entry[1] >= self.cache_ttl):
            found = await self.sql.run(lambda conn: _select(conn, key_id))
            if len(self._cache) > 10_000:
                self._cache.clear()
            entry = self._cache[key_id] = (found, now)
        return entry[0]

    async def _touch(self, key_id: str) -> None:
        now = self.clock()
        if now - self._touched.get(key_id, 0.0) < TOUCH_INTERVAL:
            return
        self._touched[key_id] = now
        # Busy (the CLI holds the lock) or unreachable: it is a hint, tried again next minute.
        with contextlib.suppress(SqlError):
            await self.sql.run(
                lambda conn: conn.execute(
                    "UPDATE api_keys SET last_used_at = ? WHERE id = ?", (now, key_id)
                ),
                write=True,
            )


def open_store(data_dir: Path) -> tuple[KeyStore, Callable[[], None]]:
    """A key store on ``<data-dir>/registry.sqlite`` for the CLI, and its closer."""
    from spectral.access import secret as server_secret

    registry = Registry(Path(data_dir) / "registry.sqlite", migrations={STREAM: MIGRATIONS})
    pepper = server_secret.derive(server_secret.load_or_create(Path(data_dir)), "api-keys")
    return KeyStore(SqliteSql(registry.conn), pepper), registry.conn.close


_COLUMNS = "id, name, owner, role, hash, created_at, last_used_at, revoked_at"


def _row(found: Sequence[Any]) -> _Row:
    key_id, name, owner, role, digest, created, used, revoked = found
    return _Row(ApiKey(key_id, name, owner, role, created, used, revoked), bytes(digest))


def _select(conn: Conn, key_id: str) -> _Row | None:
    found = conn.execute(f"SELECT {_COLUMNS} FROM api_keys WHERE id = ?", (key_id,)).fetchone()
    return None if found is None else _row(found)


def _data_version(conn: Conn) -> int:
    return int(conn.execute("PRAGMA data_version").fetchone()[0])
