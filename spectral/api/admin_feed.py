"""The admin feed: every owner's committed task events, live, for admins' WebSockets
(``GET /admin/feed``; docs/api.md, "The admin feed").

It listens on the :class:`~spectral.tasks.events.EventBus` like the rooms and the
webhooks do, but keeps nothing: with no admin watching, an event costs one length
check; with some, it is encoded once and offered to each watcher without waiting
(a watcher that falls more than its queue behind is closed with 4008, as a task's
watcher is). There is no replay: a client that reconnects re-reads the list.
"""

from __future__ import annotations

from actors import CloseReason, SocketSet
from spectral import wire
from spectral.rooms.feed import room_message
from spectral.tasks.events import TaskEvent

#: What the feed route is called, and the watch-token scope that opens it.
ROUTE = "/admin/feed"
SCOPE = "feed:admin"


def admin_message(event: TaskEvent) -> wire.Outgoing:
    """The feed's message for one task event (encoded once)."""
    body = room_message(event)
    body["owner"] = event.owner
    body["timestamp"] = wire.iso(event.timestamp)
    return wire.Outgoing(event.seq, wire.dumps(body))


class AdminFeed:
    """The admins' watchers of every task event."""

    def __init__(self) -> None:
        self.watchers = SocketSet()

    def listener(self, event: TaskEvent) -> None:
        """EventBus listener: offer the event to every admin watcher; never blocks."""
        if not len(self.watchers):
            return
        self.watchers.broadcast(admin_message(event))

    def close(self, reason: CloseReason) -> int:
        """Close every watcher (server shutting down); returns how many there were."""
        count = len(self.watchers)
        self.watchers.close_all(reason)
        return count
