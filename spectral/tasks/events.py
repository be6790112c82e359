"""Committed task events, handed to whoever listens (rooms, webhooks) after each commit.

The Task actor publishes one :class:`TaskEvent` per committed change from its
``after_commit`` callback: listeners run synchronously in the actor's turn, after
the commit, so they must only queue work (``send_nowait``), never await. A
listener that raises is logged and does not affect the task or other listeners.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, NamedTuple

log = logging.getLogger("spectral.tasks.events")

#: Webhook/room event types (docs/api.md, "Webhooks"), by the task's live message type.
EVENT_TYPES = {
    "created": "created",
    "progress": "progress",
    "event": "event",
    "complete": "completed",
    "fail": "failed",
    "timeout": "failed",
    "cancel": "canceled",
    "deleted": "deleted",
}


class TaskEvent(NamedTuple):
    """One committed change of a task.

    A named tuple, not a dataclass: one is made per committed change, batches make
    thousands per second, and a tuple is built ~4x faster than a frozen dataclass.
    """

    owner: str
    task_id: str
    seq: int
    #: ``created``, ``progress``, ``event``, ``completed``, ``failed``, ``canceled``, ``deleted``.
    event_type: str
    timestamp: float
    #: The task after the change (None once deleted) and the appended event.
    task: dict[str, Any] | None
    event: dict[str, Any] | None


Listener = Callable[[TaskEvent], None]

#: Cluster mode's tap on watcher messages: ``(kind, id, message, epoch)`` for every
#: message an object's watchers get, whether or not it has watchers on this node, so
#: that watchers on other nodes get it too (spectral/cluster/watching.py).
LiveTap = Callable[[str, str, Any, str], None]


@dataclass
class EventBus:
    """Listeners of committed task events (the router's ``context`` for the Task kind)."""

    listeners: list[Listener] = field(default_factory=list)
    #: Set in cluster mode only (see :data:`LiveTap`).
    live: LiveTap | None = None

    def subscribe(self, listener: Listener) -> None:
        """Call ``listener`` with every later event."""
        self.listeners.append(listener)

    def publish(self, event: TaskEvent) -> None:
        """Hand ``event`` to every listener; never raises."""
        for listener in self.listeners:
            try:
                listener(event)
            except Exception:
                log.exception("task event listener failed", extra={"taskId": event.task_id})
