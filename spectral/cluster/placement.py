"""Placement: which node is a task's home, and the fencing token of its activations.

A ``placements`` row per (kind, id) names the home node, fixed at creation: the primary
key is the race arbiter, so when two nodes create the same id exactly one insert wins
and the other learns the winner. Activation (home only) bumps the token in the same
statement that checks the node's membership is current (epoch and unexpired lease), so
a node whose lease lapsed cannot obtain a token; tokens only ever grow. Commits check
their token (``check``) so a node that lost its lease can never commit.

The ``*_tx`` functions take a connection, so the create path can insert the placement
and the registry row in one transaction (one thread hop). The :class:`Placements`
methods run each alone in autocommit: each decision is one atomic statement (the
follow-up SELECT only explains a refusal), so BEGIN and COMMIT would only add two round
trips.
"""

from __future__ import annotations

from dataclasses import dataclass

import psycopg

from spectral.cluster.membership import NodeRef
from spectral.cluster.pg import Database


class PlacementError(Exception):
    """Base class of placement refusals."""


class NotHomeError(PlacementError):
    """This node is not the home of the object (``home`` is, or None if unplaced)."""

    def __init__(self, kind: str, id: str, home: str | None) -> None:
        super().__init__(f"{kind}/{id}: home is {home!r}")
        self.home = home


class NodeNotCurrentError(PlacementError):
    """The node's epoch is stale or its lease expired: it may not place or activate."""


@dataclass(frozen=True)
class Placed:
    """The outcome of a create: the home node, and whether this call made it home."""

    home: str
    created: bool


@dataclass(frozen=True)
class Home:
    """Where an object lives: the node and its internal address."""

    node_id: str
    rpc_addr: str


_CURRENT = "SELECT 1 FROM nodes WHERE node_id = %s AND epoch = %s AND lease_until > now()"


def place_tx(conn: psycopg.Connection, kind: str, id: str, node: NodeRef) -> Placed:
    """Make ``node`` the home of (kind, id) unless another node already is.

    Raises:
        NodeNotCurrentError: ``node`` is not current and nobody placed the object.
    """
    row = conn.execute(
        "INSERT INTO placements (kind, id, node_id, token)"
        " SELECT %s, %s, node_id, 0 FROM nodes"
        " WHERE node_id = %s AND epoch = %s AND lease_until > now()"
        " ON CONFLICT (kind, id) DO NOTHING RETURNING node_id",
        (kind, id, node.node_id, node.epoch),
    ).fetchone()
    if row is not None:
        return Placed(row[0], created=True)
    # Lost the race (the winner's row is visible: READ COMMITTED, new snapshot), or not current.
    row = conn.execute(
        "SELECT node_id FROM placements WHERE kind = %s AND id = %s", (kind, id)
    ).fetchone()
    if row is not None:
        return Placed(row[0], created=False)
    raise NodeNotCurrentError(f"node {node.node_id} epoch {node.epoch} is not current")


def home_tx(conn: psycopg.Connection, kind: str, id: str) -> Home | None:
    """The home of (kind, id), or None if it was never placed."""
    row = conn.execute(
        "SELECT p.node_id, n.rpc_addr FROM placements p JOIN nodes n USING (node_id)"
        " WHERE p.kind = %s AND p.id = %s",
        (kind, id),
    ).fetchone()
    return Home(row[0], row[1]) if row is not None else None


def activate_tx(conn: psycopg.Connection, kind: str, id: str, node: NodeRef) -> int:
    """Bump and return the token of (kind, id) if ``node`` is its home and current.

    Raises:
        NotHomeError: another node is home, or the object was never placed.
        NodeNotCurrentError: ``node`` is home but its epoch is stale or its lease expired.
    """
    row = conn.execute(
        "UPDATE placements SET token = token + 1"
        " WHERE kind = %s AND id = %s AND node_id = %s AND EXISTS (" + _CURRENT + ")"
        " RETURNING token",
        (kind, id, node.node_id, node.node_id, node.epoch),
    ).fetchone()
    if row is not None:
        return row[0]
    home = home_tx(conn, kind, id)
    if home is None or home.node_id != node.node_id:
        raise NotHomeError(kind, id, home.node_id if home else None)
    raise NodeNotCurrentError(f"node {node.node_id} epoch {node.epoch} is not current")


def check_tx(conn: psycopg.Connection, kind: str, id: str, token: int) -> bool:
    """True if ``token`` is still the latest activation of (kind, id)."""
    row = conn.execute(
        "SELECT token = %s FROM placements WHERE kind = %s AND id = %s", (token, kind, id)
    ).fetchone()
    return bool(row and row[0])


class Placements:
    """Placement operations, each one thread hop in autocommit."""

    def __init__(self, db: Database) -> None:
        self.db = db

    async def place(self, kind: str, id: str, node: NodeRef) -> Placed:
        """Create-time arbiter: see :func:`place_tx`."""
        return await self.db.run(lambda c: place_tx(c, kind, id, node), transaction=False)

    async def home_of(self, kind: str, id: str) -> Home | None:
        """The home node of (kind, id), or None (one autocommit statement)."""
        return await self.db.run(lambda c: home_tx(c, kind, id), transaction=False)

    async def activate(self, kind: str, id: str, node: NodeRef) -> int:
        """Take the next fencing token: see :func:`activate_tx`."""
        return await self.db.run(lambda c: activate_tx(c, kind, id, node), transaction=False)

    async def check(self, kind: str, id: str, token: int) -> bool:
        """Whether ``token`` is current: see :func:`check_tx` (one autocommit statement)."""
        return await self.db.run(lambda c: check_tx(c, kind, id, token), transaction=False)
