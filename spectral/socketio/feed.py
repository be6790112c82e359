"""The Socket.IO jobs feed: committed task events as the seed's ``job:*`` events
(docs/api.md, "Socket.IO (the seeds' jobs system)").

One :class:`~spectral.tasks.events.EventBus` listener, built like the admin feed
(:mod:`spectral.api.admin_feed`): sockets are :class:`~actors.Watcher` objects kept
in :class:`~actors.SocketSet` objects, by owner (every task of the owner), for
admins (every task), and by subscription (one task, ``job:<jobId>:<kind>``). Per
event, the seed's event is computed once (:func:`spectral.seed_jobs.job_event`) and
each frame kind (``job:<kind>``, ``job:<jobId>:<kind>``) is encoded once, as a
:class:`~spectral.wire.Outgoing` whose text a long-poll sends and whose WebSocket
frame every upgraded socket shares; ``SocketSet.broadcast`` offers it to each socket
without waiting (a socket that falls its queue behind is closed, as any watcher).

A subscription is kept under ``(owner, jobId)`` (``owner`` None for an admin), and an
event reaches only the subscriptions of its own owner and the admins': another
owner's id never fires, and nothing is looked up, so nothing reveals whether it exists.
"""

from __future__ import annotations

from typing import Any

from actors import SocketSet, Watcher
from spectral import seed_jobs
from spectral.api.context import Principal
from spectral.socketio import engineio, packets
from spectral.tasks.events import TaskEvent
from spectral.wire import Outgoing


def job_message(name: str, payload: dict[str, object], seq: int = 0) -> Outgoing:
    """One server event as an Engine.IO MESSAGE, encoded once for every socket."""
    return Outgoing(seq, engineio.message(packets.event(name, payload)))


class JobsFeed:
    """The Socket.IO sockets following tasks, by owner and by subscription."""

    def __init__(self) -> None:
        self.owners: dict[str, SocketSet] = {}
        #: Admins' sockets: every owner's tasks.
        self.everyone = SocketSet()
        self.jobs: dict[tuple[str | None, str], SocketSet] = {}

    @property
    def followed(self) -> bool:
        """Whether any socket follows anything (cluster mode then relays other nodes' events)."""
        return bool(self.owners or self.jobs or len(self.everyone))

    def follow(self, who: Principal, watcher: Watcher) -> None:
        """Deliver every later event of ``who``'s tasks (every owner's for an admin)."""
        if who.is_admin:
            self.everyone.attach(watcher)
        else:
            self.owners.setdefault(who.owner, SocketSet()).attach(watcher)

    def unfollow(self, who: Principal, watcher: Watcher) -> None:
        """Stop :meth:`follow` (idempotent)."""
        if who.is_admin:
            self.everyone.detach(watcher)
        else:
            _detach(self.owners, who.owner, watcher)

    def subscribe(self, who: Principal, job_id: str, watcher: Watcher) -> None:
        """Also deliver ``job:<jobId>:<kind>`` for ``job_id`` (if ``who`` may see it)."""
        self.jobs.setdefault((who.owner_filter, job_id), SocketSet()).attach(watcher)

    def unsubscribe(self, who: Principal, job_id: str, watcher: Watcher) -> None:
        """Stop :meth:`subscribe` (idempotent)."""
        _detach(self.jobs, (who.owner_filter, job_id), watcher)

    def listener(self, event: TaskEvent) -> None:
        """EventBus listener: broadcast the event's seed frames; never blocks."""
        owners = self.owners.get(event.owner)
        everyone = self.everyone if len(self.everyone) else None
        own = self.jobs.get((event.owner, event.task_id))
        admins = self.jobs.get((None, event.task_id))
        if owners is None and everyone is None and own is None and admins is None:
            return  # nobody listens: one dict lookup per set, nothing encoded
        seen = seed_jobs.job_event(event)
        if seen is None:
            return
        kind, payload = seen
        if owners is not None or everyone is not None:
            message = job_message(f"job:{kind}", payload, event.seq)
            for sockets in (owners, everyone):
                if sockets is not None:
                    sockets.broadcast(message)
        if own is not None or admins is not None:
            message = job_message(f"job:{event.task_id}:{kind}", payload, event.seq)
            for sockets in (own, admins):
                if sockets is not None:
                    sockets.broadcast(message)
        # A socket dropped as too slow leaves its sets; an emptied set goes too.
        if owners is not None and not len(owners):
            self.owners.pop(event.owner, None)
        for key, sockets in (((event.owner, event.task_id), own), ((None, event.task_id), admins)):
            if sockets is not None and not len(sockets):
                self.jobs.pop(key, None)


def _detach(sets: dict[Any, SocketSet], key: Any, watcher: Watcher) -> None:
    sockets = sets.get(key)
    if sockets is not None:
        sockets.detach(watcher)
        if not len(sockets):
            del sets[key]
