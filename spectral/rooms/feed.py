"""Every committed task event, published to the room ``user_{owner}``.

The Task actor's ``after_commit`` hands each event to :meth:`RoomFeed.listener`,
which only queues it (``send_nowait``): the task's turn never waits for a room.
:meth:`RoomFeed.serve` drains the queue in batches, one ``Publish`` per room per
batch (a room commits a batch in one turn), rooms in parallel, batches in order,
so each room sees its owner's events in commit order. If the queue is full (rooms
far behind), events are dropped for rooms only, counted and logged — tasks, their
watchers and webhooks are not affected.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from typing import Any

import trio

from actors import ActorError, Router
from spectral.ops import metrics
from spectral.rooms.actor import KIND, USER_PREFIX, Publish
from spectral.tasks.events import TaskEvent

log = logging.getLogger("spectral.rooms.actor")

#: Events that may wait for their rooms (a burst of 100,000 is absorbed).
QUEUE_SIZE = 100_000
#: Events taken per batch at most.
MAX_BATCH = 1_000


def room_message(event: TaskEvent) -> dict[str, Any]:
    """The room message of a task event (the watcher shape, typed like webhooks)."""
    body: dict[str, Any] = {"type": event.event_type, "taskId": event.task_id, "seq": event.seq}
    if event.task is not None:
        body["task"] = event.task
    if event.event is not None:
        body["event"] = event.event
    return body


class RoomFeed:
    """Queue of task events on their way to ``user_{owner}`` rooms."""

    def __init__(self, router: Router, queue_size: int = QUEUE_SIZE) -> None:
        self.router = router
        self._send, self._receive = trio.open_memory_channel[TaskEvent](queue_size)
        self.dropped = 0

    def listener(self, event: TaskEvent) -> None:
        """EventBus listener: queue the event, never block."""
        try:
            self._send.send_nowait(event)
        except trio.WouldBlock:
            self.dropped += 1
            metrics.ROOM_EVENTS_DROPPED.inc()
            if self.dropped % 1000 == 1:
                log.warning(
                    "room feed full: task events dropped for rooms", extra={"dropped": self.dropped}
                )

    async def serve(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Publish queued events until cancelled."""
        task_status.started()
        while True:
            batch = [await self._receive.receive()]
            while len(batch) < MAX_BATCH:
                try:
                    batch.append(self._receive.receive_nowait())
                except trio.WouldBlock:
                    break
            by_room: dict[str, list[dict[str, Any]]] = defaultdict(list)
            for event in batch:
                by_room[USER_PREFIX + event.owner].append(room_message(event))
            async with trio.open_nursery() as nursery:
                for room_id, bodies in by_room.items():
                    nursery.start_soon(self._publish, room_id, tuple(bodies))

    async def _publish(self, room_id: str, bodies: tuple[dict[str, Any], ...]) -> None:
        try:
            await self.router.call(KIND, room_id, Publish(bodies), create=True)
        except ActorError as error:
            log.warning(
                "task events not published to their room",
                extra={"roomId": room_id, "events": len(bodies), "error": str(error)},
            )
        except Exception:
            # Never let one room take the feed (and with it the server) down.
            log.exception("room feed failed", extra={"roomId": room_id})
