"""The webhook service: the outbox and the delivery workers, in one nursery it owns."""

from __future__ import annotations

import trio

from actors import Router
from spectral.settings import Settings
from spectral.sql import Sql
from spectral.tasks.events import EventBus
from spectral.webhooks.delivery import CLUSTER_POLL_SECONDS, Deliverer
from spectral.webhooks.outbox import Outbox
from spectral.webhooks.store import WebhookStore


class WebhookService:
    """Everything webhooks need at run time.

    Args:
        sql: the product's database (it holds the tables).
        router: the running router (tasks' history).
        events: the bus of committed task events.
        settings: retry schedule, SSRF switch, worker count.
        node_id: this cluster node's id: only tasks homed here are handled, and the
            deliveries are looked for every second too (another node may make one due).
            None in a single process.
    """

    def __init__(
        self,
        sql: Sql,
        router: Router,
        events: EventBus,
        settings: Settings,
        *,
        node_id: str | None = None,
    ) -> None:
        self.store = WebhookStore(sql, node_id=node_id)
        self.settings = settings
        self.deliverer = Deliverer(
            self.store,
            settings.webhook_retry_schedule,
            allow_private=settings.webhook_allow_private,
            workers=settings.webhook_workers,
            poll=None if node_id is None else CLUSTER_POLL_SECONDS,
        )
        self.outbox = Outbox(self.store, router, on_written=self.deliverer.wake)
        events.subscribe(self.outbox.listener)

    async def serve(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Run the outbox writer and the delivery workers until cancelled."""
        await self.store.reload()
        async with trio.open_nursery() as nursery:
            await nursery.start(self.outbox.serve)
            await nursery.start(self.deliverer.serve)
            task_status.started()
