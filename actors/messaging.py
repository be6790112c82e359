"""Durable messages from one object to another: sent in a turn, applied once by the target.

Theory of operation
-------------------
Durable Objects call each other; here an object *sends* instead, because a turn
never awaits. :meth:`~actors.actor.Actor.send` writes the message into the
sender's own ``_outbox`` table inside the turn's transaction (so it exists exactly
when the sender's change does) and marks the record with ``send_at``. After the
commit the cell posts the new rows to the :class:`Courier`, which delivers them in
seq order per sender as :class:`Incoming` messages through the router. The
target's turn checks its ``_inbox`` table, which keeps the last seq applied per
sender, in the same transaction as the kind's :meth:`~actors.actor.Actor.receive`:
a message delivered twice is applied once. When a sender's queue is empty the
courier tells it :class:`Delivered` (one turn per drain, not per message), and the
sender deletes those rows and clears ``send_at``.

A message sent with a ``key`` replaces the sender's undelivered message to the same
target with the same key, in the outbox and in the courier's queue: a target that
only needs the latest value (a parent's view of a child) gets the latest, not every
step. Seqs only grow, so the replaced message can never arrive after its successor.

Crashes: the rows stay in the sender's file until a ``Delivered`` turn removes them,
and the registry row's alarm time is the earlier of the kind's alarm and
``send_at``. After a stop with messages undelivered (kill -9, or a target broken
until shutdown) the registry, repaired from the files after an unclean stop, wakes
the sender at start-up; activation reads its outbox back and the courier resumes.
A target that does not exist, or that refuses a message
(:class:`~actors.errors.Rejected`), drops it (logged); one that crashes or is broken
gets it again with back-off. Messages sent in the turn that deletes the sender are
delivered, but only from memory: a crash at that moment loses them.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import trio

from actors.errors import ObjectNotFoundError, Rejected, RouterClosedError

log = logging.getLogger("actors.messaging")

Key = tuple[str, str]

#: First retry delay of a message its target could not apply (doubles, capped).
RETRY_BASE = 0.05
RETRY_CAP = 5.0


@dataclass(frozen=True, slots=True)
class Address:
    """Who sent a message: the sending object's kind and id."""

    kind: str
    id: str


#: A message's place in its sender's history: (incarnation, seq). An object deleted and
#: made again under the same id starts a new outbox (seq 1 again) under a later
#: incarnation (the time of its first send), so stamps only grow per (kind, id).
Stamp = tuple[float, int]


@dataclass(frozen=True, slots=True)
class Outgoing:
    """One committed row of a sender's outbox."""

    seq: int
    incarnation: float
    target_kind: str
    target_id: str
    key: str | None
    body: Any
    #: Deliver even if the target does not exist yet (its ``receive`` may create it).
    create: bool = False

    @property
    def stamp(self) -> Stamp:
        """(incarnation, seq)."""
        return (self.incarnation, self.seq)


@dataclass(frozen=True, slots=True)
class Incoming:
    """Internal message: a durable message delivered to its target."""

    sender: Address
    incarnation: float
    seq: int
    body: Any


@dataclass(frozen=True, slots=True)
class Delivered:
    """Internal message: the sender's outbox rows up to ``through`` reached their targets
    (ignored by another incarnation of the sender: its rows are not these)."""

    incarnation: float
    through: int


class _Queue:
    """One sender's undelivered messages, in seq order, and who waits for them."""

    __slots__ = ("acked", "changed", "messages", "posted", "running")

    def __init__(self) -> None:
        self.messages: deque[Outgoing] = deque()
        self.posted: Stamp = (0.0, 0)  # the highest stamp posted
        self.acked: Stamp = (0.0, 0)  # the highest stamp delivered (or dropped)
        self.running = False
        self.changed = trio.Event()


class Courier:
    """Delivers outbox rows, one task per sender with messages waiting.

    Args:
        deliver: ``await deliver(target_kind, target_id, Incoming, create)``: the router's
            call.
        acknowledge: ``await acknowledge(sender, Delivered)``: the router's call too.
    """

    def __init__(
        self,
        deliver: Callable[[str, str, Incoming, bool], Awaitable[Any]],
        acknowledge: Callable[[Key, Delivered], Awaitable[Any]],
    ) -> None:
        self._deliver = deliver
        self._acknowledge = acknowledge
        self._queues: dict[Key, _Queue] = {}
        self._nursery: trio.Nursery | None = None
        #: Messages delivered (applied or found applied), dropped, retried (for tests).
        self.delivered = 0
        self.dropped = 0
        self.retried = 0

    def __len__(self) -> int:
        return sum(len(q.messages) for q in self._queues.values())

    async def serve(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Run the senders' delivery tasks until cancelled."""
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            for sender, queue in self._queues.items():
                if queue.messages and not queue.running:
                    queue.running = True
                    nursery.start_soon(self._drain, sender, queue)
            task_status.started()
            await trio.sleep_forever()

    def post(self, sender: Key, messages: list[Outgoing]) -> None:
        """Queue committed messages of ``sender`` (a keyed one replaces its waiting twin)."""
        queue = self._queues.get(sender)
        if queue is None:
            queue = self._queues[sender] = _Queue()
        for message in messages:
            if message.stamp <= queue.posted:
                continue  # already queued (an activation re-read what memory holds)
            if message.key is not None:
                twin = (message.target_kind, message.target_id, message.key)
                for old in list(queue.messages):
                    if (old.target_kind, old.target_id, old.key) == twin:
                        queue.messages.remove(old)
            queue.messages.append(message)
            queue.posted = message.stamp
        if queue.messages and not queue.running and self._nursery is not None:
            queue.running = True
            self._nursery.start_soon(self._drain, sender, queue)

    async def flushed(self, sender: Key) -> None:
        """Wait until every message ``sender`` has posted so far is delivered or dropped."""
        queue = self._queues.get(sender)
        if queue is None:
            return
        target = queue.posted
        while queue.acked < target and self._queues.get(sender) is queue:
            await queue.changed.wait()

    def _progress(self, queue: _Queue, stamp: Stamp) -> None:
        queue.acked = max(queue.acked, stamp)
        queue.changed.set()
        queue.changed = trio.Event()

    async def _drain(self, sender: Key, queue: _Queue) -> None:
        try:
            while queue.messages:
                message = queue.messages[0]
                if not await self._send_one(sender, message):
                    return  # the router is closing: the rows wait in the sender's file
                if queue.messages and queue.messages[0] is message:
                    queue.messages.popleft()
                self._progress(queue, message.stamp)
                if not queue.messages:
                    try:
                        delivered = Delivered(message.incarnation, message.seq)
                        await self._acknowledge(sender, delivered)
                    except ObjectNotFoundError:
                        pass  # the sender was deleted: its outbox went with it
                    except RouterClosedError:
                        return
                    except Exception as exc:  # the rows stay; a later drain or start acks
                        log.warning("sender %s %r: ack failed: %s", *sender, exc)
        finally:
            queue.running = False
            if queue.messages:
                queue.changed.set()
            elif self._queues.get(sender) is queue and queue.acked >= queue.posted:
                del self._queues[sender]
                queue.changed.set()

    async def _send_one(self, sender: Key, message: Outgoing) -> bool:
        """Deliver one message until applied, found applied, or dropped; False on shutdown."""
        delay = RETRY_BASE
        incoming = Incoming(Address(*sender), message.incarnation, message.seq, message.body)
        while True:
            try:
                await self._deliver(
                    message.target_kind, message.target_id, incoming, message.create
                )
            except RouterClosedError:
                return False
            except ObjectNotFoundError:
                self.dropped += 1
                log.info(
                    "message %d of %s %r dropped: %s %r does not exist",
                    message.seq,
                    *sender,
                    message.target_kind,
                    message.target_id,
                )
                return True
            except Rejected as exc:
                self.dropped += 1
                log.warning("message %d of %s %r refused: %s", message.seq, *sender, exc)
                return True
            except Exception as exc:
                self.retried += 1
                log.warning(
                    "message %d of %s %r to %s %r failed (%s); retrying in %.2f s",
                    message.seq,
                    *sender,
                    message.target_kind,
                    message.target_id,
                    exc,
                    delay,
                )
                await trio.sleep(delay)
                delay = min(delay * 2, RETRY_CAP)
                continue
            self.delivered += 1
            return True
