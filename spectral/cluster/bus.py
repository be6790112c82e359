"""The fan-out bus: a task's home node publishes each committed message once; watchers'
nodes subscribe to the channels their local watchers need.

Publishing never blocks: :meth:`Bus.publish` appends to a bounded buffer that one writer
task drains, pipelining up to :data:`BATCH` PUBLISHes per round trip, in buffer order, so
the order per channel is the publish order. When the buffer is full (Redis down or slow)
the message is dropped and its channel marked; once Redis answers again the writer sends
a *marker* ("messages up to seq N were dropped") so subscribers resync instead of waiting
for the next message to reveal the gap.

Subscribing is reference counted per node: the first local subscriber of a channel sends
SUBSCRIBE, the last one leaving sends UNSUBSCRIBE. Each channel has a
:class:`~spectral.cluster.gaps.GapTracker`: duplicates are dropped, and a gap, a marker
or a reconnect calls the owner's ``resync(channel, after_seq)``, whose answer (the missing
messages, from the home node) is delivered before the live messages buffered meanwhile.
A lost connection is retried with back-off; every channel is subscribed again and resynced.

Messages reach subscribers as :class:`~spectral.cluster.gaps.Envelope` objects whose
``payload`` is the bytes the home node encoded: one decode per channel message, the same
object for every local subscriber. Callbacks run in the bus's receiving task and must not
block (``send_nowait`` into a socket set, as ``actors/sockets.py`` does).
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any, NoReturn

import coredis
import trio
from coredis.exceptions import ConnectionError as RedisConnectionError
from coredis.retry import NoRetryPolicy

from spectral.cluster.gaps import Envelope, GapTracker, Step, decode, encode

log = logging.getLogger("spectral.cluster.bus")

#: A local subscriber's callback: called in order with every message of its channel.
OnMessage = Callable[[Envelope], None]
#: The owner's gap filler: ``(channel, after_seq)`` -> (the messages after ``after_seq``,
#: the home node's latest seq when it read them); see :meth:`GapTracker.filled`.
Resync = Callable[[str, int], Awaitable[tuple[Sequence[Envelope], int]]]

#: PUBLISHes per pipelined round trip: batches of 100 kept p99 in single milliseconds in
#: the planning measurements (docs/cluster.md), while one-by-one publishing tops out near
#: 4k msgs/s.
BATCH = 100
#: Messages the publish buffer holds before dropping (a few seconds at 1k msgs/s).
BUFFER_SIZE = 10_000
#: Reconnect back-off: first retry, doubling up to the cap.
BACKOFF_MIN = 0.05
BACKOFF_MAX = 2.0
#: How long a (re)subscription of every channel may take to be acknowledged.
SUBSCRIBE_TIMEOUT = 10.0
#: Errors that mean "Redis is unreachable right now": reconnect, never crash the node.
TRANSIENT = (RedisConnectionError, OSError, TimeoutError)


@dataclass(frozen=True, slots=True)
class BusStatistics:
    """Counters for /health and tests."""

    #: Messages sent to Redis (markers not counted).
    published: int
    #: Messages lost on this side: buffer overflow, plus batches in flight at a disconnect.
    dropped: int
    #: Messages waiting for the writer.
    buffered: int
    #: Channels with at least one local subscriber.
    channels: int
    #: Times the subscriber connection was lost (or could not be opened).
    reconnects: int
    #: Resyncs asked of the owner.
    resyncs: int
    #: The subscriber connection is up.
    connected: bool


@dataclass(slots=True, eq=False)
class _Channel:
    name: str
    tracker: GapTracker
    subscribers: list[OnMessage] = field(default_factory=list)
    #: Set once the first subscriber's SUBSCRIBE was tried: later subscribers wait for it.
    ready: trio.Event = field(default_factory=trio.Event)
    #: SUBSCRIBE was answered, or is left to the reconnect (which subscribes every channel).
    subscribed: bool = False


class Bus:
    """Publish and subscribe over Redis pub/sub; see the module docstring. Use :func:`open_bus`."""

    def __init__(
        self, url: str, resync: Resync, *, buffer_size: int = BUFFER_SIZE, batch: int = BATCH
    ) -> None:
        self.url = url
        self._resync = resync
        self._buffer: deque[tuple[str, int, str, bytes]] = deque()
        self._buffer_size = buffer_size
        self._batch = batch
        self._wake = trio.Event()
        #: Channel -> (highest dropped seq, its epoch): markers still to send.
        self._dropped: dict[str, tuple[int, str]] = {}
        self._channels: dict[str, _Channel] = {}
        self._pubsub: Any = None
        self._sub_lock = trio.Lock()
        self._nursery: trio.Nursery | None = None
        self.published = 0
        self.dropped = 0
        self.reconnects = 0
        self.resyncs = 0

    def statistics(self) -> BusStatistics:
        """A snapshot of the bus's counters."""
        return BusStatistics(
            self.published,
            self.dropped,
            len(self._buffer),
            len(self._channels),
            self.reconnects,
            self.resyncs,
            self._pubsub is not None,
        )

    # -- publishing ---------------------------------------------------------------

    def publish(self, channel: str, seq: int, payload: bytes, epoch: str = "") -> bool:
        """Queue one message for ``channel``; never blocks. False if the buffer was full.

        Args:
            channel: ``task:{id}`` or ``room:{id}``.
            seq: the message's place in the channel (1, 2, ... per epoch).
            payload: the message as watchers receive it, already encoded.
            epoch: the channel's incarnation (a task's epoch).
        """
        if len(self._buffer) >= self._buffer_size:
            self._mark_dropped(channel, seq, epoch)
            return False
        self._buffer.append((channel, seq, epoch, payload))
        self._wake.set()
        return True

    def _mark_dropped(self, channel: str, seq: int, epoch: str) -> None:
        self.dropped += 1
        old = self._dropped.get(channel)
        if old is None or old[1] != epoch or old[0] < seq:
            self._dropped[channel] = (seq, epoch)
        self._wake.set()

    def _next_batch(self) -> list[tuple[str, int, str, bytes, bool]]:
        # Buffered messages first: a drop only happens when the buffer is full, so what it
        # holds precedes the drop, and a marker sent earlier would make subscribers resync
        # from before messages that are still on their way. Under sustained load markers
        # wait, but then the next message of the channel reveals the gap by itself.
        batch: list[tuple[str, int, str, bytes, bool]] = []
        buffer = self._buffer
        while buffer and len(batch) < self._batch:
            channel, seq, epoch, payload = buffer.popleft()
            batch.append((channel, seq, epoch, payload, False))
        while self._dropped and len(batch) < self._batch:
            channel, (seq, epoch) = self._dropped.popitem()
            batch.append((channel, seq, epoch, b"", True))
        return batch

    async def _serve_writer(self, *, task_status: trio.TaskStatus[None]) -> NoReturn:
        task_status.started()
        delay = BACKOFF_MIN
        while True:
            batch: list[tuple[str, int, str, bytes, bool]] = []
            try:
                async with _client(self.url) as client:
                    while True:
                        while not self._buffer and not self._dropped:
                            self._wake = trio.Event()
                            await self._wake.wait()
                        batch = self._next_batch()
                        async with client.pipeline(transaction=False) as pipe:
                            for channel, seq, epoch, payload, marker in batch:
                                envelope = Envelope(channel, seq, epoch, payload, marker)
                                pipe.publish(channel, encode(envelope))
                        self.published += sum(1 for item in batch if not item[4])
                        batch = []
                        delay = BACKOFF_MIN
            except* TRANSIENT as group:
                log.warning("bus publisher lost Redis, retrying in %.2fs: %r", delay, group)
                # At most once: what was in flight may or may not have been sent; markers
                # make every subscriber of those channels resync past it.
                for channel, seq, epoch, _payload, _marker in batch:
                    self._mark_dropped(channel, seq, epoch)
                    self.dropped -= 1  # counted as lost in flight, not as buffer overflow
            await trio.sleep(delay)
            delay = min(delay * 2, BACKOFF_MAX)

    # -- subscribing --------------------------------------------------------------

    @asynccontextmanager
    async def subscription(
        self, channel: str, on_message: OnMessage, *, after_seq: int | None = None
    ) -> AsyncIterator[None]:
        """Receive every later message of ``channel`` while inside the block.

        Args:
            channel: ``task:{id}`` or ``room:{id}``.
            on_message: called in order with each message; must not block or raise.
            after_seq: for the channel's first local subscriber, the seq it already has
                (e.g. its snapshot's): a first message past it triggers a resync. None
                takes the first message as the starting point.
        """
        state = self._channels.get(channel)
        first = state is None
        if state is None:
            state = self._channels[channel] = _Channel(channel, GapTracker(last=after_seq))
        state.subscribers.append(on_message)
        try:
            if first:
                try:
                    await self._redis_subscribe(state)
                finally:
                    state.ready.set()
            else:
                await state.ready.wait()
                if not state.subscribed:  # the first one was cancelled before it subscribed
                    await self._redis_subscribe(state)
            yield
        finally:
            state.subscribers.remove(on_message)
            if not state.subscribers and self._channels.get(channel) is state:
                del self._channels[channel]
                with trio.CancelScope(shield=True):
                    await self._redis_unsubscribe(channel)

    async def _redis_subscribe(self, state: _Channel) -> None:
        channel = state.name
        async with self._sub_lock:
            pubsub = self._pubsub
            if pubsub is None or self._channels.get(channel) is not state:
                state.subscribed = True  # the (re)connect subscribes every channel
                return
            try:
                await pubsub.subscribe(channel)
                state.subscribed = True
                _prune_waiters(pubsub, (channel,))
            except TRANSIENT as exc:
                log.warning("bus SUBSCRIBE %s failed (reconnect will retry): %r", channel, exc)

    async def _redis_unsubscribe(self, channel: str) -> None:
        async with self._sub_lock:
            pubsub = self._pubsub
            if pubsub is None or channel in self._channels:
                return  # disconnected (nothing to undo), or subscribed again meanwhile
            try:
                with trio.move_on_after(1):
                    await pubsub.unsubscribe(channel)
                _prune_waiters(pubsub, (channel,))
            except TRANSIENT as exc:
                log.warning("bus UNSUBSCRIBE %s failed: %r", channel, exc)

    async def _serve_subscriber(self, *, task_status: trio.TaskStatus[None]) -> NoReturn:
        started = False
        delay = BACKOFF_MIN
        while True:
            try:
                async with (
                    _client(self.url) as client,
                    client.pubsub(
                        retry_policy=NoRetryPolicy(),
                        ignore_subscribe_messages=True,
                        subscription_timeout=SUBSCRIBE_TIMEOUT,
                    ) as pubsub,
                    # ignore_subscribe_messages: acks still resolve coredis's waiters.
                ):
                    async with self._sub_lock:
                        if self._channels:
                            await pubsub.subscribe(*self._channels)
                            _prune_waiters(pubsub, tuple(self._channels))
                            for state in self._channels.values():
                                state.subscribed = True
                        self._pubsub = pubsub
                    if started:
                        for state in list(self._channels.values()):
                            self._apply(state, state.tracker.lost())
                    else:
                        started = True
                        task_status.started()
                    delay = BACKOFF_MIN
                    while True:
                        message = await pubsub.get_message()
                        if message is not None and message["type"] == "message":
                            self._dispatch(message["channel"], message["data"])
            except* TRANSIENT as group:
                log.warning("bus subscriber lost Redis, retrying in %.2fs: %r", delay, group)
            finally:
                self._pubsub = None
            self.reconnects += 1
            if not started:
                started = True
                task_status.started()  # open_bus returns; channels subscribe on connect
            await trio.sleep(delay)
            delay = min(delay * 2, BACKOFF_MAX)

    def _dispatch(self, name: bytes | str, data: bytes) -> None:
        channel = name.decode() if isinstance(name, bytes) else name
        state = self._channels.get(channel)
        if state is None:
            return  # unsubscribed while the message was on its way
        try:
            envelope = decode(channel, data)
        except ValueError:
            log.warning("bus: not an envelope on %s", channel)
            return
        self._apply(state, state.tracker.receive(envelope))

    def _apply(self, state: _Channel, step: Step) -> None:
        for envelope in step.deliver:
            for on_message in list(state.subscribers):
                try:
                    on_message(envelope)
                except Exception:
                    log.exception("bus subscriber failed", extra={"channel": envelope.channel})
        if step.resync_after is not None:
            assert self._nursery is not None
            self.resyncs += 1
            self._nursery.start_soon(self._run_resync, state, step.resync_after)

    async def _run_resync(self, state: _Channel, after_seq: int) -> None:
        channel = state.name
        delay = BACKOFF_MIN
        while self._channels.get(channel) is state:
            try:
                missing, latest = await self._resync(channel, after_seq)
            except Exception:
                log.exception("bus resync failed, retrying", extra={"channel": channel})
                state.tracker.failed()
                await trio.sleep(delay)
                delay = min(delay * 2, BACKOFF_MAX)
                continue
            self._apply(state, state.tracker.filled(list(missing), latest))
            return


def _prune_waiters(pubsub: Any, channels: Sequence[str]) -> None:
    # coredis 6.9's PubSub keeps an empty waiter list per channel ever (un)subscribed on
    # its connection: ~2 dict entries per distinct task watched, for the connection's
    # life. Drop the answered ones (private attributes: checked by a test).
    for name in ("_subscription_waiters", "_unsubscription_waiters"):
        waiters = getattr(pubsub, name, None)
        if not isinstance(waiters, dict):
            continue
        for channel in channels:
            key = channel.encode()
            if key in waiters and not waiters[key]:
                del waiters[key]


@asynccontextmanager
async def _client(url: str) -> AsyncIterator[Any]:
    client = coredis.Redis.from_url(url, connect_timeout=2, retry_policy=NoRetryPolicy())
    async with client:
        yield client


@asynccontextmanager
async def open_bus(url: str, resync: Resync, **options: Any) -> AsyncIterator[Bus]:
    """Run a :class:`Bus` (its writer and subscriber tasks) for the duration of the block.

    Args:
        url: ``redis://host:port/db``.
        resync: the owner's gap filler (see :data:`Resync`).
        **options: ``buffer_size``, ``batch`` (see :class:`Bus`).

    Raises:
        Whatever the block raises, as itself (not inside an ExceptionGroup); an
        unexpected Redis reply error from the bus's own tasks.
    """
    bus = Bus(url, resync, **options)
    try:
        async with trio.open_nursery() as nursery:
            bus._nursery = nursery
            await nursery.start(bus._serve_writer)
            await nursery.start(bus._serve_subscriber)
            try:
                yield bus
            finally:
                nursery.cancel_scope.cancel()
    except BaseExceptionGroup as group:
        # Keep the caller's own exception (raised in the block) out of our nursery's group.
        if len(group.exceptions) == 1 and not isinstance(group.exceptions[0], BaseExceptionGroup):
            raise group.exceptions[0] from None
        raise
