"""Node membership: a row per node with an epoch and a lease, renewed; self-fencing.

Theory of operation. A node joins by upserting its row in ``nodes`` with ``epoch + 1``
(a restarted process is a new incarnation) and a lease of ``ttl`` seconds. It renews every
``interval`` seconds with ``UPDATE ... WHERE node_id = me AND epoch = mine``: zero rows
means a newer incarnation took the id, and this one is SUPERSEDED for good.

PostgreSQL unreachable is not "node dead", but the node cannot know whether the others
still see its lease. So it keeps a local deadline: the trio time at which the last
successful renewal was *sent*, plus ``ttl - margin``. The server computed its
``lease_until`` from a later instant, so the local deadline always comes first (by at
least ``margin``, which absorbs clock-rate drift). Past it the node is FENCED: it must
refuse every turn and every placement write until a renewal succeeds again.

The pure part (:class:`Lease`) decides; :class:`Membership` does the I/O.
"""

from __future__ import annotations

import enum
import logging
from dataclasses import dataclass, replace
from typing import NoReturn

import psycopg
import trio

from spectral.cluster.pg import Database, DatabaseUnavailableError

log = logging.getLogger(__name__)

#: Lease length in PostgreSQL (docs/cluster.md: renew every 1 s, TTL 5 s).
DEFAULT_TTL = 5.0
#: Seconds between renewals; each attempt is also bounded by this.
DEFAULT_INTERVAL = 1.0
#: The node fences itself this long before its lease can expire in PostgreSQL.
DEFAULT_MARGIN = 1.0


class MemberStatus(enum.Enum):
    """Where a node stands with its own lease."""

    CURRENT = "current"  # renewed recently enough: may run turns
    FENCED = "fenced"  # renewal failing for ttl - margin: refuses work until renewed
    SUPERSEDED = "superseded"  # a newer epoch of this node id exists: must stop


@dataclass(frozen=True)
class NodeRef:
    """One incarnation of a node: its id and the epoch it joined with."""

    node_id: str
    epoch: int


@dataclass(frozen=True)
class Lease:
    """The local view of this node's lease (pure: times are arguments)."""

    ttl: float
    margin: float
    valid_until: float | None = None  # local clock; None: never renewed
    superseded: bool = False

    def renewed(self, sent_at: float) -> Lease:
        """The lease after a renewal sent at ``sent_at`` succeeded."""
        return replace(self, valid_until=sent_at + self.ttl - self.margin)

    def lost(self) -> Lease:
        """The lease after a renewal found a newer epoch."""
        return replace(self, superseded=True, valid_until=None)

    def status(self, now: float) -> MemberStatus:
        """CURRENT, FENCED or SUPERSEDED at local time ``now``."""
        if self.superseded:
            return MemberStatus.SUPERSEDED
        if self.valid_until is None or now >= self.valid_until:
            return MemberStatus.FENCED
        return MemberStatus.CURRENT


def join_tx(conn: psycopg.Connection, node_id: str, rpc_addr: str, ttl: float) -> NodeRef:
    """Insert or bump this node's row (epoch + 1, fresh lease); returns the new incarnation."""
    row = conn.execute(
        "INSERT INTO nodes (node_id, epoch, rpc_addr, lease_until)"
        " VALUES (%s, 1, %s, now() + make_interval(secs => %s))"
        " ON CONFLICT (node_id) DO UPDATE SET epoch = nodes.epoch + 1,"
        " rpc_addr = EXCLUDED.rpc_addr, lease_until = EXCLUDED.lease_until"
        " RETURNING epoch",
        (node_id, rpc_addr, ttl),
    ).fetchone()
    assert row is not None
    return NodeRef(node_id, row[0])


def renew_tx(conn: psycopg.Connection, node: NodeRef, ttl: float) -> bool:
    """Extend the lease of this incarnation; False if a newer epoch replaced it."""
    cur = conn.execute(
        "UPDATE nodes SET lease_until = now() + make_interval(secs => %s)"
        " WHERE node_id = %s AND epoch = %s",
        (ttl, node.node_id, node.epoch),
    )
    return cur.rowcount == 1


class Membership:
    """This node's membership: join, renew in the background, know when it is fenced."""

    def __init__(
        self,
        db: Database,
        node_id: str,
        rpc_addr: str,
        *,
        ttl: float = DEFAULT_TTL,
        interval: float = DEFAULT_INTERVAL,
        margin: float = DEFAULT_MARGIN,
    ) -> None:
        if not 0 < margin < ttl or interval >= ttl - margin:
            raise ValueError("need 0 < margin < ttl and interval < ttl - margin")
        self.db = db
        self.node_id = node_id
        self.rpc_addr = rpc_addr
        self.ttl = ttl
        self.interval = interval
        self.node: NodeRef | None = None
        self._lease = Lease(ttl, margin)
        self._changed = trio.Event()

    @property
    def status(self) -> MemberStatus:
        """The status now (from the local clock; exact even between renewals)."""
        return self._lease.status(trio.current_time())

    @property
    def fenced(self) -> bool:
        """True when this node must refuse work (FENCED or SUPERSEDED)."""
        return self.status is not MemberStatus.CURRENT

    def _set(self, lease: Lease) -> None:
        self._lease = lease
        self._changed.set()
        self._changed = trio.Event()

    async def join(self) -> NodeRef:
        """Join as a new incarnation (epoch + 1) and take a fresh lease."""
        sent_at = trio.current_time()
        node = await self.db.run(
            lambda c: join_tx(c, self.node_id, self.rpc_addr, self.ttl), transaction=False
        )
        self.node = node
        self._set(Lease(self._lease.ttl, self._lease.margin).renewed(sent_at))
        return node

    async def renew(self) -> bool:
        """One renewal, bounded by ``interval``; True if the lease was extended."""
        if self.node is None:
            raise RuntimeError("join first")
        if self._lease.superseded:
            return False
        node = self.node
        sent_at = trio.current_time()
        extended: bool | None = None
        with trio.move_on_after(self.interval):
            try:
                extended = await self.db.run(
                    lambda c: renew_tx(c, node, self.ttl), transaction=False
                )
            except (DatabaseUnavailableError, psycopg.Error) as exc:
                log.warning("node %s: lease renewal failed: %s", node.node_id, exc)
        if extended is None:
            self._set(self._lease)  # wake waiters: the deadline may have passed
            return False
        if not extended:
            log.error("node %s epoch %s superseded by a newer epoch", node.node_id, node.epoch)
            self._set(self._lease.lost())
            return False
        self._set(self._lease.renewed(sent_at))
        return True

    async def serve(
        self, *, task_status: trio.TaskStatus[NodeRef] = trio.TASK_STATUS_IGNORED
    ) -> NoReturn:
        """Join, report the incarnation, then renew every ``interval`` until cancelled."""
        node = await self.join()
        task_status.started(node)
        while True:
            await trio.sleep(self.interval)
            await self.renew()

    async def wait_status(self, *wanted: MemberStatus) -> None:
        """Return once the status is one of ``wanted`` (wrap in fail_after)."""
        while self.status not in wanted:
            changed = self._changed
            deadline = self._lease.valid_until
            if deadline is None or deadline <= trio.current_time():
                deadline = float("inf")  # already fenced: only a renewal changes that
            with trio.move_on_at(deadline):
                await changed.wait()
