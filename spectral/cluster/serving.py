"""``spectral serve --cluster``: what a node runs besides the single-server parts.

Order matters:

1. PostgreSQL: migrate the schema, agree on the shared secrets, learn this node's id.
2. The node joins (its lease) and serves the internal transport *before* the router
   opens, because opening schedules alarms, and an activation needs the lease.
3. The Redis bus runs.
4. Once the router is open (:func:`attach`): the router asks the node where objects
   live; the registry mirrors its rows into PostgreSQL (after a full resync); watcher
   messages go onto the bus; watchers of objects homed elsewhere are served here.

On the way out the router closes first (its last turns still commit under the lease),
then the bus, then the node leaves.
"""

from __future__ import annotations

import logging
import re
import secrets as random
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import trio

from actors import Router
from spectral.cluster import schema
from spectral.cluster.admin_feed import PREFIX as ADMIN_PREFIX
from spectral.cluster.admin_feed import ClusterAdminFeed
from spectral.cluster.bus import Bus, open_bus
from spectral.cluster.mirror import RegistryMirror
from spectral.cluster.node import ClusterNode
from spectral.cluster.pg import Database, open_database
from spectral.cluster.secrets import SharedSecrets, shared_secrets
from spectral.cluster.sql import PgSql
from spectral.cluster.watching import LivePublisher, RemoteWatching

if TYPE_CHECKING:
    from spectral.api.admin_feed import AdminFeed
    from spectral.settings import Settings
    from spectral.socketio.feed import JobsFeed
    from spectral.tasks.events import EventBus

log = logging.getLogger("spectral.cluster")

#: PostgreSQL connections per node: placement and activations, the registry mirror,
#: the product's stores (keys, idempotency, webhooks, listing).
POOL_SIZE = 8
NODE_ID_FILE = "node.id"
_NODE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$")


class NodeIdentityError(RuntimeError):
    """The data directory belongs to another node id than the one asked for."""


@dataclass
class Cluster:
    """A running node's cluster parts (see the module docstring)."""

    db: Database
    node: ClusterNode
    bus: Bus
    secrets: SharedSecrets
    sql: PgSql
    mirror: RegistryMirror
    watching: RemoteWatching | None = None
    admin_feed: ClusterAdminFeed | None = None


def node_identity(data_dir: Path, wanted: str | None) -> str:
    """This node's id: kept in ``<data-dir>/node.id`` (its files are that node's tasks)."""
    path = data_dir / NODE_ID_FILE
    try:
        recorded = path.read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        recorded = None
    if recorded is not None and not _NODE_ID.match(recorded):
        raise NodeIdentityError(f"{path} does not hold a valid node id")
    if recorded is not None and wanted is not None and recorded != wanted:
        raise NodeIdentityError(
            f"{data_dir} holds node {recorded!r}'s tasks; it cannot serve as {wanted!r}"
        )
    node_id = recorded or wanted or f"node-{random.token_hex(4)}"
    if recorded is None:
        data_dir.mkdir(parents=True, exist_ok=True)
        path.write_text(node_id + "\n", encoding="utf-8")
    return node_id


@asynccontextmanager
async def open_cluster(settings: Settings) -> AsyncIterator[Cluster]:
    """Steps 1-3 of the module docstring, undone on exit."""
    assert settings.cluster is not None and settings.redis is not None
    async with open_database(settings.cluster, size=POOL_SIZE) as db:
        await db.run(schema.migrate)
        node_id = node_identity(settings.data_dir, settings.node_id)
        shared = await shared_secrets(
            db, settings.data_dir, settings.admin_key_path, settings.admin_key
        )
        node = ClusterNode(
            db,
            node_id,
            internal_host=settings.internal_host,
            internal_port=settings.internal_port,
            membership_ttl=settings.cluster_lease,
        )
        async with trio.open_nursery() as nursery:
            await nursery.start(node.serve)
            holder: list[Cluster] = []

            async def resync(channel: str, after_seq: int) -> tuple[list, int]:
                parts = holder[0] if holder else None
                if (
                    parts is not None
                    and parts.admin_feed is not None
                    and channel.startswith(ADMIN_PREFIX)
                ):
                    missing, latest = await parts.admin_feed.resync(channel, after_seq)
                elif parts is not None and parts.watching is not None:
                    missing, latest = await parts.watching.resync(channel, after_seq)
                else:
                    return [], after_seq
                return list(missing), latest

            async with open_bus(settings.redis, resync) as bus:
                cluster = Cluster(db, node, bus, shared, PgSql(db), RegistryMirror(db, node_id))
                holder.append(cluster)
                yield cluster
            nursery.cancel_scope.cancel()


async def attach(
    cluster: Cluster,
    router: Router,
    events: EventBus,
    services: trio.Nursery,
    admin_feed: AdminFeed,
    jobs_feed: JobsFeed | None = None,
) -> None:
    """Step 4 of the module docstring, once the router is open."""
    cluster.node.router = router
    router.remote = cluster.node
    router.registry.mirror = cluster.mirror
    written, removed = await cluster.mirror.resync(router.registry)
    watching = cluster.watching = RemoteWatching(router)
    await services.start(watching.serve, cluster.bus)
    cluster.node.watching = watching
    events.live = LivePublisher(cluster.bus)
    feed = cluster.admin_feed = ClusterAdminFeed(cluster.node, cluster.bus, admin_feed, jobs_feed)
    events.subscribe(feed.listener)
    await services.start(feed.serve)
    log.info(
        "cluster node ready",
        extra={"node": cluster.node.node_id, "mirrored": written, "unlisted": removed},
    )
