"""The durable outbox: every committed task event that a webhook takes becomes a delivery row.

Theory of operation
-------------------
Two paths feed the same writer, and a cursor per task makes them agree.

*Live*: the Task actor publishes each committed event on the
:class:`~spectral.tasks.events.EventBus` from its turn; :meth:`Outbox.listener` only
``send_nowait``\\ s it into a bounded channel (it never blocks a turn). The
drain task takes every event waiting (up to :data:`BATCH`), turns each one that
matches an active webhook of the task's owner into a delivery, and writes the
deliveries **and** each task's cursor (the last seq handled) in one registry
transaction.

*Recovery*: events a crash took away (the process died between the
mutation's answer and that transaction) or the channel dropped (it was full)
are still in the task's file. At start-up the outbox compares every task's seq
in the registry (repaired from the files after an unclean stop) with its
cursor and reads the missing events back from the task's history; a live event
whose seq is past its cursor + 1 does the same for the gap; a dropped event
marks its task for the same. A cursor whose task the registry no longer lists
is a delete the crash took away: the outbox sends ``deleted`` for it.

What can still be lost: events of a task deleted before its earlier events
were written (its history is gone with its file), and the whole life of a task
created and deleted within one such instant. A recovered event carries the
task as it is when recovered, not as it was after that event.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable

import trio

from actors import ActorError, ObjectNotFoundError, Router, RouterClosedError
from spectral.sql import SqlError, SqlUnavailableError
from spectral.tasks.actor import Read, ReadHistory
from spectral.tasks.events import TaskEvent
from spectral.webhooks import payload
from spectral.webhooks.payload import Outgoing
from spectral.webhooks.store import NewDelivery, Webhook, WebhookStore, new_delivery_id

log = logging.getLogger("spectral.webhooks")

#: Events waiting for the writer before the overflow path (re-read from history) kicks in.
BUFFER = 10_000
#: Events per registry transaction (100-row transactions ran at 500k+ rows/s here).
BATCH = 1_000
#: Events read per history page during recovery.
HISTORY_PAGE = 500
#: Tries of a batch the database refuses for another reason than being unavailable.
REFUSALS = 3


class Outbox:
    """Turns committed task events into delivery rows (see the module docstring).

    Args:
        store: the webhook tables.
        router: to read tasks' history back during recovery.
        on_written: called after each batch that added deliveries.
    """

    def __init__(
        self, store: WebhookStore, router: Router, on_written: Callable[[], None] = lambda: None
    ) -> None:
        self.store = store
        self.router = router
        self.on_written = on_written
        self._send, self._receive = trio.open_memory_channel[Outgoing](BUFFER)
        #: Tasks whose live events were dropped (channel full): task id → owner.
        self._dirty: dict[str, str] = {}
        #: ``deleted`` events that found the channel full (history cannot bring them back).
        self._late: list[Outgoing] = []
        self._cursors: dict[str, int] = {}
        #: Events written, deliveries created (for tests and the benchmark).
        self.events = 0
        self.deliveries = 0
        self.recovered = 0

    def listener(self, event: TaskEvent) -> None:
        """The EventBus listener: queue ``event``; never blocks, never raises."""
        try:
            self._send.send_nowait(event)
        except trio.WouldBlock:
            if event.event_type == "deleted":
                self._late.append(event)
            else:
                self._dirty[event.task_id] = event.owner
        except trio.ClosedResourceError:
            pass  # shutting down: the cursors let the next start recover it

    async def serve(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Recover what earlier runs left, then write live events until cancelled."""
        self._cursors = await self.store.cursors()
        task_status.started()
        while True:
            try:
                await self._recover()
                break
            except SqlError:
                log.exception("webhook outbox: database unavailable; recovering again in 1 s")
                await trio.sleep(1.0)
        with self._receive:
            while True:
                batch = [await self._receive.receive()] if not self._pending() else []
                while len(batch) < BATCH:
                    try:
                        batch.append(self._receive.receive_nowait())
                    except trio.WouldBlock:
                        break
                batch.extend(self._late)
                self._late = []
                outgoing = await self._expand(batch) + await self._drain_dirty()
                await self._write_retrying(outgoing)

    async def _write_retrying(self, outgoing: list[Outgoing]) -> None:
        """:meth:`_write`, again every second while the database is unavailable (busy:
        the CLI holds the registry; unreachable). A batch the database keeps refusing
        otherwise is dropped after :data:`REFUSALS` tries rather than blocking every later
        one: its tasks' cursors did not move, so their next event (or the next start's
        recovery) reads the missing events back from history."""
        refused = 0
        while True:
            try:
                await self._write(outgoing)
                return
            except SqlUnavailableError:
                log.exception("webhook outbox: database unavailable; retrying in 1 s")
            except SqlError:
                refused += 1
                if refused >= REFUSALS:
                    log.exception(
                        "webhook outbox: the database refuses a batch; dropped",
                        extra={"events": len(outgoing)},
                    )
                    return
                log.exception("webhook outbox: the database refused a batch; retrying in 1 s")
            await trio.sleep(1.0)

    def _pending(self) -> bool:
        return bool(self._dirty or self._late)

    async def _recover(self) -> None:
        outgoing: list[Outgoing] = []
        lagging = await self.store.lagging()
        for task_id, owner, cursor, seq in lagging:
            self._cursors.setdefault(task_id, cursor)
            outgoing.extend(await self._fill(task_id, owner, cursor, seq))
            outgoing.append(_marker(owner, task_id, seq))
        for task_id, owner, cursor in await self.store.vanished():
            outgoing.append(_deleted(owner, task_id, cursor + 1))
        if outgoing:
            log.warning(
                "webhook outbox recovering events",
                extra={"tasks": len(lagging), "events": len(outgoing)},
            )
        await self._write(outgoing, recovered=True)

    async def _expand(self, batch: Iterable[Outgoing]) -> list[Outgoing]:
        """The batch, each gap before an event filled from the task's history."""
        expanded: list[Outgoing] = []
        seen: dict[str, int] = {}
        for event in batch:
            cursor = seen.get(event.task_id, self._cursors.get(event.task_id, 0))
            if event.event_type != "deleted":
                if event.seq <= cursor:
                    continue
                if event.seq > cursor + 1:
                    filled = await self._fill(event.task_id, event.owner, cursor, event.seq - 1)
                    self.recovered += len(filled)
                    expanded.extend(filled)
            expanded.append(event)
            # After a delete the id may be created again, from seq 1.
            seen[event.task_id] = 0 if event.event_type == "deleted" else event.seq
        return expanded

    async def _drain_dirty(self) -> list[Outgoing]:
        dirty, self._dirty = self._dirty, {}
        outgoing: list[Outgoing] = []
        for task_id, owner in dirty.items():
            cursor = self._cursors.get(task_id, 0)
            try:
                task = await self.router.call("task", task_id, Read(owner=None))
            except ObjectNotFoundError:
                continue  # deleted: its ``deleted`` event is on its way (never dropped)
            except (ActorError, RouterClosedError):
                log.exception("webhook outbox could not read a task", extra={"taskId": task_id})
                continue
            filled = await self._fill(task_id, owner, cursor, int(task["seq"]))
            self.recovered += len(filled)
            outgoing.extend(filled)
            outgoing.append(_marker(owner, task_id, int(task["seq"])))
        return outgoing

    async def _fill(self, task_id: str, owner: str, after: int, upto: int) -> list[Outgoing]:
        """Events ``(after, upto]`` of a task, read from its history (none if no webhook)."""
        if after >= upto or not (await self._active()).get(owner):
            return []
        try:
            task = await self.router.call("task", task_id, Read(owner=None))
            events = []
            while True:
                page = await self.router.call(
                    "task", task_id, ReadHistory(after, HISTORY_PAGE, upto=upto, owner=None)
                )
                events.extend(page.events)
                if page.next_after is None:
                    break
                after = page.next_after
        except ObjectNotFoundError:
            return []
        except (ActorError, RouterClosedError):
            log.exception("webhook outbox could not read history", extra={"taskId": task_id})
            return []
        return [payload.from_history(owner, task_id, event, task) for event in events]

    async def _active(self) -> dict[str, list[Webhook]]:
        """The active webhooks by owner; the last ones known if they cannot be read now."""
        try:
            return await self.store.fresh()
        except SqlError:
            log.exception("webhook outbox: cannot read the webhooks; using the last known")
            return self.store.active

    async def _write(self, outgoing: list[Outgoing], *, recovered: bool = False) -> None:
        deliveries: list[NewDelivery] = []
        cursors: dict[str, tuple[str, int]] = {}
        removed: list[str] = []
        active = await self._active() if outgoing else self.store.active
        for event in outgoing:
            if event.event_type == _MARK:
                cursors[event.task_id] = (event.owner, event.seq)
                continue
            for webhook in active.get(event.owner, ()):
                if payload.takes(webhook.format, webhook.event_type, webhook.task_id_prefix, event):
                    delivery_id = new_delivery_id()
                    deliveries.append(
                        NewDelivery(
                            delivery_id,
                            webhook.id,
                            event.task_id,
                            event.seq,
                            event.event_type,
                            payload.render(webhook.format, delivery_id, event),
                        )
                    )
            if event.event_type == "deleted":
                cursors.pop(event.task_id, None)
                removed.append(event.task_id)
            else:
                cursors[event.task_id] = (event.owner, event.seq)
                if event.task_id in removed:
                    removed.remove(event.task_id)
        if not (deliveries or cursors or removed):
            return
        await self.store.write_batch(deliveries, cursors, removed)
        for task_id, (_owner, seq) in cursors.items():
            self._cursors[task_id] = seq
        for task_id in removed:
            self._cursors.pop(task_id, None)
        self.events += len(outgoing)
        self.deliveries += len(deliveries)
        if recovered:
            self.recovered += len(deliveries)
        if deliveries:
            self.on_written()


#: A pseudo event type: "the cursor of this task is now ``seq``" (nothing is delivered).
_MARK = "_cursor"


def _marker(owner: str, task_id: str, seq: int) -> Outgoing:
    return Outgoing(owner, task_id, seq, _MARK, 0.0, None, None)


def _deleted(owner: str, task_id: str, seq: int) -> Outgoing:
    return Outgoing(owner, task_id, seq, "deleted", time.time(), None, None)
