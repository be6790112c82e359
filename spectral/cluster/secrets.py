"""Secrets every node of a cluster must share: the server secret and the bootstrap admin key.

API keys are stored as peppered digests and watch tokens are signed, both with keys
derived from the server secret; a key made on one node must work on every node, so
the secret lives in PostgreSQL (``cluster_secrets``). The first node to start offers
its own (from its data directory, created if missing) and whoever wins the insert sets
it for good; the others adopt it. The admin key likewise, unless a node is given one
explicitly (``--admin-key`` / ``SPECTRAL_ADMIN_KEY``), which then applies to that node.
Each node also keeps the cluster's admin key in its ``admin.key`` so the command line
finds it; a different key already in that file is left alone and reported.
"""

from __future__ import annotations

import logging
import os
import secrets as random
from dataclasses import dataclass
from pathlib import Path

import psycopg

from spectral.access import secret as server_secret
from spectral.access.adminkey import AdminKey, ensure_admin_key
from spectral.cluster.pg import Database

log = logging.getLogger("spectral.cluster")


@dataclass(frozen=True)
class SharedSecrets:
    """The cluster's server secret and the admin key this node accepts."""

    server: bytes
    admin: AdminKey


def _offer_tx(conn: psycopg.Connection, name: str, value: str) -> str:
    conn.execute(
        "INSERT INTO cluster_secrets (name, value) VALUES (%s, %s) ON CONFLICT (name) DO NOTHING",
        (name, value),
    )
    row = conn.execute("SELECT value FROM cluster_secrets WHERE name = %s", (name,)).fetchone()
    assert row is not None
    return str(row[0])


async def shared_secrets(
    db: Database, data_dir: Path, admin_key_path: Path, override: str | None
) -> SharedSecrets:
    """Agree with the cluster on the server secret and the admin key (see the module doc)."""
    path = data_dir / server_secret.FILE_NAME
    local = server_secret.load_or_create(data_dir) if path.exists() else None
    offered = local if local is not None else random.token_bytes(32)
    server_hex = await db.run(lambda c: _offer_tx(c, "server", offered.hex()))
    server = bytes.fromhex(server_hex)
    if local is not None and server != local:
        log.warning("using the cluster's server secret, not %s", path)
    if override:
        return SharedSecrets(server, AdminKey(override, "environment"))
    mine = ensure_admin_key(admin_key_path)
    admin = await db.run(lambda c: _offer_tx(c, "admin", mine.secret))
    if admin == mine.secret:
        return SharedSecrets(server, mine)
    if mine.source == "created":
        _replace(admin_key_path, admin)
        return SharedSecrets(server, AdminKey(admin, "cluster"))
    log.warning("%s holds another key than the cluster's admin key: refused", admin_key_path)
    return SharedSecrets(server, AdminKey(admin, "cluster"))


def _replace(path: Path, secret: str) -> None:
    """Overwrite the admin key file this start just created with the cluster's key."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as file:
        file.write(secret + "\n")
        file.flush()
        os.fsync(file.fileno())
    os.replace(tmp, path)
