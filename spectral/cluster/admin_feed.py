"""The admin feed across nodes: every node's task events reach admins on every node.

A node's :class:`~spectral.api.admin_feed.AdminFeed` hears the events of the tasks
homed on it (its EventBus). On a cluster each node also publishes those messages on
its own bus channel, ``admin:{node_id}``, numbered 1, 2, ... per incarnation (the
node's epoch is the channel's epoch), and a node whose feed has admin watchers
subscribes to every other node's channel, checked every second as nodes come and go.

The Socket.IO jobs feed (spectral/socketio/feed.py) rides the same channels: a node
whose Socket.IO sockets follow anything follows every other node's channel too, and
hands each relayed message to that feed as the task event it was made from, so a
socket gets ``job:*`` events of its owner's tasks wherever they are homed.

The feed has no replay (docs/api.md, "The admin feed": a client that reconnects
re-reads the list), so a gap the bus detects closes this node's admin watchers with
1013: the dashboard reconnects and re-reads. The channel then starts again after the
publishing node's current position, which it answers over the internal transport.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import datetime

import orjson
import trio

from actors import CloseReason
from spectral.api.admin_feed import AdminFeed, admin_message
from spectral.cluster.bus import Bus
from spectral.cluster.gaps import Envelope
from spectral.cluster.node import ClusterNode
from spectral.cluster.transport import RemoteError, TransportError
from spectral.socketio.feed import JobsFeed
from spectral.tasks.events import TaskEvent
from spectral.wire import Outgoing

log = logging.getLogger("spectral.cluster.admin_feed")

PREFIX = "admin:"
#: Seconds between looks at which nodes to follow.
CHECK = 1.0
#: The internal operation answering this node's position on its channel.
POSITION = "admin_feed_position"


class ClusterAdminFeed:
    """Publishes this node's admin messages; relays other nodes' to local admins."""

    def __init__(
        self, node: ClusterNode, bus: Bus, feed: AdminFeed, jobs: JobsFeed | None = None
    ) -> None:
        self.node = node
        self.bus = bus
        self.feed = feed
        self.jobs = jobs
        self.seq = 0
        self.relayed = 0
        self._following: dict[str, trio.CancelScope] = {}
        node.operations[POSITION] = self._position

    def listener(self, event: TaskEvent) -> None:
        """EventBus listener: this node's events onto its channel (never blocks)."""
        membership = self.node.membership
        if membership is None or membership.node is None:
            return
        message = admin_message(event)
        self.seq += 1
        channel = PREFIX + self.node.node_id
        self.bus.publish(channel, self.seq, message.text.encode(), str(membership.node.epoch))

    async def _position(self, body: object) -> dict[str, int]:
        return {"seq": self.seq}

    async def serve(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Follow the other nodes' channels while local admins watch, until cancelled."""
        async with trio.open_nursery() as nursery:
            task_status.started()
            while True:
                wanted = set()
                if len(self.feed.watchers) or (self.jobs is not None and self.jobs.followed):
                    wanted = {n for n in self.node.peers.epochs if n != self.node.node_id}
                for node_id in set(self._following) - wanted:
                    self._following.pop(node_id).cancel()
                for node_id in wanted - set(self._following):
                    scope = self._following[node_id] = trio.CancelScope()
                    nursery.start_soon(self._follow, node_id, scope)
                await trio.sleep(CHECK)

    async def _follow(self, node_id: str, scope: trio.CancelScope) -> None:
        with scope:
            async with self.bus.subscription(PREFIX + node_id, self._relay):
                await trio.sleep_forever()

    def _relay(self, envelope: Envelope) -> None:
        self.relayed += 1
        text = envelope.payload.decode()
        if len(self.feed.watchers):
            self.feed.watchers.broadcast(Outgoing(envelope.seq, text))
        if self.jobs is not None and self.jobs.followed:
            self.jobs.listener(task_event(text))

    async def resync(self, channel: str, after_seq: int) -> tuple[Sequence[Envelope], int]:
        """Messages of another node were lost: local admins re-read; start after its position."""
        closed = self.feed.close(CloseReason(1013, "missed events: reconnect and re-read"))
        if closed:
            log.warning(
                "admin feed gap on %s: %d admin watchers asked to reconnect", channel, closed
            )
        node_id = channel.removeprefix(PREFIX)
        try:
            answer = await self.node.ask(node_id, POSITION)
        except (TransportError, RemoteError):
            return [], after_seq  # that node is gone: a new incarnation starts a new epoch
        return [], max(int(answer["seq"]), after_seq)


def task_event(text: str) -> TaskEvent:
    """The task event an admin message was made from (:func:`admin_message`'s inverse)."""
    body = orjson.loads(text)
    stamp = datetime.fromisoformat(body["timestamp"]).timestamp()
    return TaskEvent(
        body["owner"],
        body["taskId"],
        body["seq"],
        body["type"],
        stamp,
        body.get("task"),
        body.get("event"),
    )
