"""Watchers on any node: the home publishes each watcher message once; other nodes relay it.

Theory of operation
-------------------
Home side (:class:`LivePublisher`): the Task and Room actors hand every message their
watchers get — encoded once, as local watchers get it — to ``EventBus.live``, which
queues it on the Redis bus (channel ``task:{id}`` or ``room:{id}``, with its seq and
the task's epoch). Publishing never waits (spectral/cluster/bus.py).

Watcher side (:class:`RemoteWatching`): a WebSocket or SSE watcher that reaches a node
which is not its task's home is still served there, from that node's socket set of
the task, fed by a *feed*: one bus subscription per object watched on this node.

Opening a watcher, in this order, so that nothing is lost or duplicated:

1. the feed subscribes (SUBSCRIBE acknowledged) if it is new;
2. the home answers where the watcher starts (``Watch``/``Subscribe`` with no watcher:
   the snapshot's seq, and what to replay), forwarded like any call;
3. the watcher joins the socket set only when the feed's position equals the
   snapshot's: if the bus is behind, wait for it (briefly); if it is ahead, ask the
   home again. Then every later bus message is exactly what follows the snapshot.

The bus drops duplicates and detects gaps (spectral/cluster/gaps.py). A gap — Redis
restarted, the publisher's buffer overflowed — cannot be filled with live messages
(the home keeps history, not the live form), so this node closes that object's
watchers with 1013 ("try again"): clients resume with ``since`` and ``epoch`` from
the history, as after a server restart, and the feed starts over.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import trio

from actors import ActorBrokenError, CloseReason, Router
from spectral.cluster.bus import Bus
from spectral.cluster.gaps import Envelope
from spectral.rooms.actor import Describe, Subscribe, SubscribeStart
from spectral.tasks.actor import Read, Watch, WatchStart
from spectral.wire import Outgoing

log = logging.getLogger("spectral.cluster.watching")

#: WebSocket close code asking the client to come back (it resumes with since/epoch).
CLOSE_TRY_AGAIN = 1013
#: Seconds a new watcher waits for the bus to reach its snapshot before asking again.
CATCH_UP = 1.0
#: Snapshots asked for before giving up on a task that changes faster than the bus.
ATTEMPTS = 8
#: Seconds between checks that a feed still has watchers on this node.
IDLE_CHECK = 5.0
_FINAL = b"F"
_LIVE = b"L"


def channel_of(kind: str, object_id: str) -> str:
    """The bus channel of an object's watcher messages."""
    return f"{kind}:{object_id}"


class LivePublisher:
    """``EventBus.live`` on a home node: every watcher message onto the bus."""

    def __init__(self, bus: Bus) -> None:
        self.bus = bus

    def __call__(self, kind: str, object_id: str, message: Outgoing, epoch: str) -> None:
        """Queue ``message`` for the object's channel (never blocks)."""
        flag = _FINAL if message.final else _LIVE
        self.bus.publish(
            channel_of(kind, object_id), message.seq, flag + message.text.encode(), epoch
        )


@dataclass
class _Feed:
    """One object's bus subscription on this node and the socket set it feeds."""

    kind: str
    object_id: str
    #: The seq of the last message the socket set got (None: no watcher attached yet).
    last: int | None = None
    #: The highest seq seen on the bus before any watcher was attached.
    seen: int = 0
    moved: trio.Event = field(default_factory=trio.Event)
    ready: trio.Event = field(default_factory=trio.Event)
    done: trio.Event = field(default_factory=trio.Event)

    def bump(self) -> None:
        self.moved.set()
        self.moved = trio.Event()


class RemoteWatching:
    """Serves watchers of objects homed on other nodes; see the module docstring."""

    def __init__(self, router: Router) -> None:
        self.router = router
        self.bus: Bus | None = None
        self._feeds: dict[tuple[str, str], _Feed] = {}
        self._nursery: trio.Nursery | None = None
        self.closed_for_gaps = 0

    async def serve(self, bus: Bus, *, task_status: trio.TaskStatus[None]) -> None:
        """Run feeds until cancelled (their subscriptions end with them)."""
        self.bus = bus
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            task_status.started()
            await trio.sleep_forever()

    # -- opening a watcher ------------------------------------------------------------------

    async def watch(
        self, kind: str, object_id: str, message: Watch | Subscribe, forward: Any
    ) -> Any:
        """Attach ``message.watcher`` here for an object homed elsewhere; answer its start.

        ``forward(kind, id, message)`` runs a call on the object's home.
        """
        watcher = message.watcher
        assert watcher is not None  # the node only hands over messages carrying one
        feed = await self._feed(kind, object_id)
        probe = replace(message, watcher=None)
        for _ in range(ATTEMPTS):
            start = await forward(kind, object_id, probe)
            position = _position(start)
            if feed.last is None:
                if feed.seen <= position:
                    feed.last = position
            elif feed.last < position:
                with trio.move_on_after(CATCH_UP):
                    while feed.last is not None and feed.last < position:
                        await feed.moved.wait()
            if feed.last == position and not feed.done.is_set():
                self.router.sockets(kind, object_id).attach(watcher)
                return start
        raise ActorBrokenError(f"{kind} {object_id!r} changes faster than its watchers catch up")

    async def _feed(self, kind: str, object_id: str) -> _Feed:
        key = (kind, object_id)
        feed = self._feeds.get(key)
        if feed is None or feed.done.is_set():
            feed = self._feeds[key] = _Feed(kind, object_id)
            assert self._nursery is not None
            self._nursery.start_soon(self._run_feed, feed)
        await feed.ready.wait()
        if feed.done.is_set():
            raise ActorBrokenError(f"{kind} {object_id!r}: cannot follow it from this node")
        return feed

    async def _run_feed(self, feed: _Feed) -> None:
        assert self.bus is not None
        key = (feed.kind, feed.object_id)
        channel = channel_of(*key)
        try:
            async with self.bus.subscription(channel, lambda e: self._on_message(feed, e)):
                feed.ready.set()
                while not feed.done.is_set():
                    with trio.move_on_after(IDLE_CHECK):
                        await feed.done.wait()
                    if not feed.done.is_set() and not self._watched(feed):
                        break
        except Exception:
            log.exception("feed of %s failed", channel)
        finally:
            feed.done.set()
            feed.ready.set()
            feed.bump()
            if self._feeds.get(key) is feed:
                del self._feeds[key]

    def _watched(self, feed: _Feed) -> bool:
        sockets = self.router.sockets(feed.kind, feed.object_id)
        if len(sockets):
            return True
        self.router.release_sockets(feed.kind, feed.object_id)
        return False

    # -- messages from the bus -----------------------------------------------------------------

    def _on_message(self, feed: _Feed, envelope: Envelope) -> None:
        if feed.last is None:
            feed.seen = max(feed.seen, envelope.seq)
            feed.bump()
            return
        if envelope.seq <= feed.last:
            return  # covered by the snapshots of the watchers attached so far
        payload = envelope.payload
        final = payload[:1] == _FINAL
        message = Outgoing(envelope.seq, payload[1:].decode(), final=final)
        sockets = self.router.sockets(feed.kind, feed.object_id)
        sockets.broadcast(message)
        feed.last = envelope.seq
        if final:
            sockets.close_all(CloseReason(1000, f"{feed.kind} deleted"))
            feed.done.set()
        feed.bump()

    async def resync(self, channel: str, after_seq: int) -> tuple[Sequence[Envelope], int]:
        """The bus lost messages of ``channel``: close its watchers here (they resume)."""
        kind, _, object_id = channel.partition(":")
        feed = self._feeds.get((kind, object_id))
        sockets = self.router.sockets(kind, object_id)
        closed = len(sockets)
        sockets.close_all(CloseReason(CLOSE_TRY_AGAIN, "missed messages: resume with since"))
        self.router.release_sockets(kind, object_id)
        self.closed_for_gaps += closed
        if closed:
            log.warning("bus gap on %s: %d watchers asked to resume", channel, closed)
        latest = await self._latest(kind, object_id)
        if feed is not None:
            feed.last = None
            feed.seen = latest
            feed.bump()
        return [], max(latest, after_seq)

    async def _latest(self, kind: str, object_id: str) -> int:
        """The object's current seq, from its home."""
        try:
            if kind == "task":
                task = await self.router.call(kind, object_id, Read(None))
                return int(task["seq"])
            info = await self.router.call(kind, object_id, Describe(None))
            return int(info.last_seq)
        except ActorBrokenError:
            raise
        except Exception:
            return 0


def _position(start: WatchStart | SubscribeStart) -> int:
    """The seq a new watcher's opening covers (its snapshot's, or the room's last)."""
    if isinstance(start, WatchStart):
        return start.snapshot.seq
    return start.last_seq
