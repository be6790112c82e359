"""The other nodes: their internal addresses, a pooled client each, and which are down.

:class:`Peers` keeps one :class:`~spectral.cluster.transport.TransportClient` per node
it has called (the address comes from ``nodes.rpc_addr``, learnt with a placement or
looked up), and looks at the ``nodes`` table every renewal interval: a node whose
lease has lapsed in PostgreSQL is *down*. Calls to a down node fail at once
(:meth:`check`), and the calls in flight to a node that goes down are cut
(:meth:`calling`), instead of waiting for a peer that may never answer (a paused
process keeps its sockets open).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import psycopg
import trio

from actors import RemoteUnavailableError
from spectral.cluster.pg import Database, DatabaseUnavailableError
from spectral.cluster.transport import TransportClient, TransportError

log = logging.getLogger("spectral.cluster")

#: Connections kept to each peer.
PEER_CONNECTIONS = 2
#: Seconds a call to another node may take before it counts as lost (the node is stuck).
CALL_TIMEOUT = 30.0


class Peers:
    """See the module docstring; :meth:`serve` runs the clients and the liveness look."""

    def __init__(self, db: Database) -> None:
        self.db = db
        self._addresses: dict[str, str] = {}
        self._clients: dict[str, TransportClient] = {}
        self._nursery: trio.Nursery | None = None
        #: Nodes whose lease has lapsed in PostgreSQL, as of the last look.
        self.down: set[str] = set()
        #: Every node's epoch, as of the last look (the admin feed follows them).
        self.epochs: dict[str, int] = {}
        self._in_flight: dict[str, set[trio.CancelScope]] = {}

    def learn(self, node_id: str, address: str) -> None:
        """Remember a node's internal address (e.g. read with a placement)."""
        self._addresses[node_id] = address

    async def serve(self, interval: float, *, task_status: trio.TaskStatus[None]) -> None:
        """Run the clients' connections and look at ``nodes`` every ``interval`` seconds."""
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            task_status.started()
            while True:
                try:
                    nodes = await self.db.run(_nodes_tx, transaction=False)
                except (DatabaseUnavailableError, psycopg.Error):
                    nodes = None  # cannot tell: keep calling (bounded by CALL_TIMEOUT)
                if nodes is not None:
                    self._update(nodes)
                await trio.sleep(interval)

    def _update(self, nodes: dict[str, tuple[int, bool]]) -> None:
        down = {node_id for node_id, (_, lapsed) in nodes.items() if lapsed}
        for node_id in down - self.down:
            log.warning("node %s lost its lease: its objects are unavailable", node_id)
            for scope in self._in_flight.get(node_id, ()):
                scope.cancel()
        self.down = down
        self.epochs = {node_id: epoch for node_id, (epoch, _) in nodes.items()}

    def check(self, node_id: str, what: str) -> None:
        """Raise RemoteUnavailableError if ``node_id`` is down (``what`` names the object)."""
        if node_id in self.down:
            raise RemoteUnavailableError(f"{what}: its node {node_id} is down", node_id=node_id)

    @contextmanager
    def calling(self, node_id: str) -> Iterator[trio.CancelScope]:
        """A scope around a call to ``node_id``, cancelled if that node goes down meanwhile."""
        scope = trio.CancelScope()
        calls = self._in_flight.setdefault(node_id, set())
        calls.add(scope)
        try:
            with scope:
                yield scope
        finally:
            calls.discard(scope)

    async def call(self, node_id: str, op: str, body: Any = None) -> Any:
        """Run ``op`` on ``node_id`` (raises TransportError, RemoteError)."""
        client = await self._client(node_id)
        try:
            return await client.call(op, body, timeout=CALL_TIMEOUT)
        except TransportError:
            self.forget(node_id)
            raise

    async def _client(self, node_id: str) -> TransportClient:
        client = self._clients.get(node_id)
        if client is not None:
            return client
        address = self._addresses.get(node_id)
        if address is None:
            address = await self.db.run(lambda c: _address_tx(c, node_id), transaction=False)
            if address is None:
                raise TransportError(f"node {node_id} is unknown", unprocessed=True)
            self._addresses[node_id] = address
        host, _, port = address.rpartition(":")
        client = TransportClient(
            host.strip("[]"), int(port), pool_size=PEER_CONNECTIONS, nursery=self._nursery
        )
        self._clients[node_id] = client
        return client

    def forget(self, node_id: str) -> None:
        """Drop a node's client and address (it may have restarted elsewhere)."""
        self._addresses.pop(node_id, None)
        client = self._clients.pop(node_id, None)
        if client is not None and self._nursery is not None:
            self._nursery.start_soon(client.aclose)


def _nodes_tx(conn: psycopg.Connection) -> dict[str, tuple[int, bool]]:
    """Every node: (its epoch, whether its lease has lapsed)."""
    rows = conn.execute("SELECT node_id, epoch, lease_until < now() FROM nodes").fetchall()
    return {str(node_id): (int(epoch), bool(lapsed)) for node_id, epoch, lapsed in rows}


def _address_tx(conn: psycopg.Connection, node_id: str) -> str | None:
    row = conn.execute("SELECT rpc_addr FROM nodes WHERE node_id = %s", (node_id,)).fetchone()
    return None if row is None else str(row[0])
