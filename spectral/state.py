"""What the HTTP layer needs from the running server, in one object."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import trio

from actors import Router
from spectral.access.auth import Authenticator
from spectral.api.admin_feed import AdminFeed
from spectral.api.idempotency import IdempotencyStore
from spectral.front.websocket import Keepalive
from spectral.ops.logs import RequestLog
from spectral.settings import Settings
from spectral.sql import Sql
from spectral.tasks.events import EventBus

if TYPE_CHECKING:
    from spectral.cluster.serving import Cluster
    from spectral.integrations.service import IntegrationService
    from spectral.socketio.http import SocketIO
    from spectral.tasks.index import ExternalIds
    from spectral.webhooks.service import WebhookService


@dataclass
class ServerState:
    """The router, settings and lifecycle of one running server."""

    router: Router
    settings: Settings
    auth: Authenticator
    idempotency: IdempotencyStore
    #: Committed task events, for rooms and webhooks.
    events: EventBus
    #: The product's database (keys, idempotency, webhooks, integrations, the task index).
    sql: Sql
    started: float = field(default_factory=time.monotonic)
    #: Set when SIGINT/SIGTERM arrives: long-lived handlers close with 1001.
    shutting_down: trio.Event = field(default_factory=trio.Event)
    #: Pings idle WebSocket peers and drops dead ones.
    keepalive: Keepalive = field(default_factory=Keepalive)
    #: One line per request (HTTP and WebSocket), written in batches.
    requests: RequestLog = field(default_factory=RequestLog)
    #: Admins' live feed of every owner's task events (``GET /admin/feed``).
    admin_feed: AdminFeed = field(default_factory=AdminFeed)
    #: Webhook subscriptions, the outbox and delivery (set by ``serve``).
    webhooks: WebhookService | None = None
    #: Reservations of tasks' external ids, unique per owner (set by ``serve``).
    external_ids: ExternalIds | None = None
    #: Inbound integrations and their callbacks (set by ``serve``).
    integrations: IntegrationService | None = None
    #: The Socket.IO endpoint ``/socket.io/`` and its jobs feed (set by ``serve``).
    socketio: SocketIO | None = None
    #: This node's cluster parts, in cluster mode only (docs/cluster.md).
    cluster: Cluster | None = None

    def uptime(self) -> float:
        """Seconds since the server started."""
        return time.monotonic() - self.started
