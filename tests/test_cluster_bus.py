"""The fan-out bus (spectral/cluster/bus.py) against a real redis-server, and its pure gap tracker.

Every wait is an event polled in a bounded loop under ``fail_after``; no test asserts timing.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import pytest
import trio
import trio.testing
from hypothesis import given, settings
from hypothesis import strategies as st

from spectral.cluster.bus import Bus, open_bus
from spectral.cluster.gaps import Envelope, GapTracker, Step, decode, encode
from tests.redis_fixture import RedisServer, running_redis


@pytest.fixture
def redis(tmp_path: Path) -> Iterator[RedisServer]:
    with running_redis(tmp_path / "redis") as server:
        yield server


def env(seq: int, epoch: str = "e1", channel: str = "task:a", marker: bool = False) -> Envelope:
    return Envelope(channel, seq, epoch, b"" if marker else b"p%d" % seq, marker)


def seqs(envelopes: Sequence[Envelope]) -> list[int]:
    return [e.seq for e in envelopes]


# -- the pure tracker -----------------------------------------------------------------


def test_tracker_in_order_and_duplicates() -> None:
    tracker = GapTracker()
    assert seqs(tracker.receive(env(5)).deliver) == [5]  # first message is the start
    assert seqs(tracker.receive(env(6)).deliver) == [6]
    step = tracker.receive(env(6))
    assert step.deliver == () and step.resync_after is None
    assert tracker.receive(env(3)).deliver == ()
    assert tracker.last == 6


def test_tracker_gap_buffers_until_filled() -> None:
    tracker = GapTracker(last=2)
    step = tracker.receive(env(5))
    assert step.deliver == () and step.resync_after == 2
    assert tracker.receive(env(6)) == tracker.receive(env(6))  # buffered, nothing to do
    assert tracker.receive(env(4)).resync_after is None  # no second resync while one runs
    step = tracker.filled([env(4), env(3), env(5)], 6)  # answer up to the home's latest
    assert seqs(step.deliver) == [3, 4, 5, 6] and step.resync_after is None
    assert seqs(tracker.receive(env(7)).deliver) == [7]


def test_tracker_authoritative_answer_skips_what_home_lacks() -> None:
    tracker = GapTracker(last=1)
    assert tracker.receive(env(4)).resync_after == 1
    assert seqs(tracker.filled([], 4).deliver) == [4]
    assert tracker.last == 4 and not tracker.resyncing


def test_tracker_marker() -> None:
    tracker = GapTracker(last=3)
    assert tracker.receive(env(3, marker=True)).resync_after is None  # nothing lost
    step = tracker.receive(env(6, marker=True))
    assert step.resync_after == 3 and step.deliver == ()
    assert seqs(tracker.filled([env(4), env(5), env(6)], 6).deliver) == [4, 5, 6]
    assert GapTracker().receive(env(9, marker=True)).deliver == ()


def test_tracker_lost_connection() -> None:
    assert GapTracker().lost().resync_after is None  # no position yet
    tracker = GapTracker(last=10)
    assert tracker.lost().resync_after == 10
    assert tracker.lost().resync_after is None  # one in flight: asked again after it
    step = tracker.filled([env(11)], 11)
    assert seqs(step.deliver) == [11] and step.resync_after == 11
    assert tracker.filled([], 11).resync_after is None


def test_tracker_new_epoch_restarts() -> None:
    tracker = GapTracker(last=40, epoch="e1")
    assert seqs(tracker.receive(env(1, epoch="e2")).deliver) == [1]
    assert tracker.receive(env(3, epoch="e2")).resync_after == 1


def test_tracker_pending_is_bounded() -> None:
    tracker = GapTracker(last=0, max_pending=2)
    tracker.receive(env(2))
    tracker.receive(env(3))
    tracker.receive(env(4))
    assert seqs(tracker.pending) == [2, 3]


def test_envelope_codec() -> None:
    for original in (env(7), env(8, marker=True), Envelope("room:x", 1, "", b"a\nb")):
        assert decode(original.channel, encode(original)) == original
    with pytest.raises(ValueError):
        decode("task:a", b"X1 e\n")


def test_gaps_module_is_pure() -> None:
    import spectral.cluster.gaps as gaps

    source = Path(gaps.__file__).read_text()
    assert "import trio" not in source and "coredis" not in source


# -- against redis-server -------------------------------------------------------------


class Recorder:
    """A subscriber callback that keeps what it got, with an event per arrival."""

    def __init__(self) -> None:
        self.got: list[Envelope] = []
        self.changed = trio.Event()

    def __call__(self, envelope: Envelope) -> None:
        self.got.append(envelope)
        self.changed.set()

    async def wait_for(self, count: int, seconds: float = 10) -> None:
        with trio.fail_after(seconds):
            while len(self.got) < count:
                self.changed = trio.Event()
                await self.changed.wait()


class History:
    """A fake home node: every message published, and the resync calls it answered."""

    def __init__(self) -> None:
        self.messages: dict[str, list[Envelope]] = {}
        self.calls: list[tuple[str, int]] = []
        self.called = trio.Event()

    def publish(self, bus: Bus, channel: str, seq: int, epoch: str = "e1") -> bool:
        envelope = Envelope(channel, seq, epoch, b"x" * 300)
        self.messages.setdefault(channel, []).append(envelope)
        return bus.publish(channel, seq, envelope.payload, epoch)

    async def resync(self, channel: str, after_seq: int) -> tuple[Sequence[Envelope], int]:
        self.calls.append((channel, after_seq))
        self.called.set()
        history = self.messages.get(channel, [])
        latest = max((e.seq for e in history), default=0)
        return [e for e in history if e.seq > after_seq], latest


async def until(predicate: Callable[[], bool], seconds: float = 10) -> None:
    """Poll ``predicate`` (a condition outside trio, e.g. Redis state) in a bounded loop."""
    with trio.fail_after(seconds):
        while not predicate():
            await trio.sleep(0.01)


async def subscribed(server: RedisServer, channel: str, count: int = 1) -> None:
    await until(lambda: server.numsub(channel) == count)


async def test_order_per_channel_many_messages(redis: RedisServer) -> None:
    home = History()
    async with open_bus(redis.url, home.resync) as bus:
        a, b = Recorder(), Recorder()
        async with bus.subscription("task:a", a), bus.subscription("room:b", b):
            await subscribed(redis, "task:a")
            await subscribed(redis, "room:b")
            for seq in range(1, 5001):
                home.publish(bus, "task:a", seq)
                home.publish(bus, "room:b", seq)
                if seq % 500 == 0:
                    await trio.lowlevel.checkpoint()
            await a.wait_for(5000)
            await b.wait_for(5000)
    assert seqs(a.got) == list(range(1, 5001))
    assert seqs(b.got) == list(range(1, 5001))
    assert {e.channel for e in a.got} == {"task:a"} and a.got[0].payload == b"x" * 300
    assert home.calls == []


async def test_two_local_subscribers_share_one_redis_subscription(
    redis: RedisServer,
) -> None:
    home = History()
    async with open_bus(redis.url, home.resync) as bus:
        first, second = Recorder(), Recorder()
        async with bus.subscription("task:a", first):
            async with bus.subscription("task:a", second):
                await subscribed(redis, "task:a")
                assert redis.numsub("task:a") == 1
                home.publish(bus, "task:a", 1)
                home.publish(bus, "task:a", 2)
                await first.wait_for(2)
                await second.wait_for(2)
                assert first.got == second.got and first.got[0] is second.got[0]
            assert redis.numsub("task:a") == 1  # one local subscriber left
            home.publish(bus, "task:a", 3)
            await first.wait_for(3)
        await subscribed(redis, "task:a", 0)  # the last one left: UNSUBSCRIBE
        assert bus.statistics().channels == 0
    assert seqs(second.got) == [1, 2]


async def test_gap_calls_resync_and_fills(redis: RedisServer) -> None:
    home = History()
    async with open_bus(redis.url, home.resync) as bus:
        got = Recorder()
        async with bus.subscription("task:a", got, after_seq=0):
            await subscribed(redis, "task:a")
            home.publish(bus, "task:a", 1)
            await got.wait_for(1)
            # 2 and 3 "lost": recorded at home, never published.
            home.messages["task:a"] += [Envelope("task:a", s, "e1", b"x" * 300) for s in (2, 3)]
            home.publish(bus, "task:a", 4)
            home.publish(bus, "task:a", 5)
            await got.wait_for(5)
            home.publish(bus, "task:a", 3)  # a late duplicate
            home.publish(bus, "task:a", 6)
            await got.wait_for(6)
    assert home.calls == [("task:a", 1)]
    assert seqs(got.got) == [1, 2, 3, 4, 5, 6]


async def test_duplicates_dropped(redis: RedisServer) -> None:
    home = History()
    async with open_bus(redis.url, home.resync) as bus:
        got = Recorder()
        async with bus.subscription("task:a", got):
            await subscribed(redis, "task:a")
            for seq in (1, 2, 2, 1, 3, 3, 4):
                bus.publish("task:a", seq, b"p", "e1")
            await got.wait_for(4)
            bus.publish("task:a", 5, b"p", "e1")
            await got.wait_for(5)
    assert seqs(got.got) == [1, 2, 3, 4, 5]
    assert home.calls == []


async def test_redis_restart_reconnects_resubscribes_resyncs(redis: RedisServer) -> None:
    home = History()
    async with open_bus(redis.url, home.resync) as bus:
        got, room = Recorder(), Recorder()
        async with bus.subscription("task:a", got), bus.subscription("room:b", room):
            await subscribed(redis, "task:a")
            await subscribed(redis, "room:b")
            for seq in range(1, 11):
                home.publish(bus, "task:a", seq)
            home.publish(bus, "room:b", 1)
            await got.wait_for(10)
            await room.wait_for(1)
            redis.stop()
            # Committed while Redis is down: only a resync can bring these.
            for seq in range(11, 21):
                home.publish(bus, "task:a", seq)
            await until(lambda: bus.statistics().reconnects >= 1)
            redis.start()
            await subscribed(redis, "task:a")
            await subscribed(redis, "room:b")
            await got.wait_for(20)
            await until(lambda: ("room:b", 1) in home.calls)
            for seq in range(21, 31):
                home.publish(bus, "task:a", seq)
            await got.wait_for(30)
    assert seqs(got.got) == list(range(1, 31))
    assert ("task:a", 10) in home.calls


async def test_publish_never_blocks_when_redis_is_down(redis: RedisServer) -> None:
    home = History()
    async with open_bus(redis.url, home.resync, buffer_size=50, batch=10) as bus:
        got = Recorder()
        async with bus.subscription("task:a", got):
            await subscribed(redis, "task:a")
            home.publish(bus, "task:a", 1)
            await got.wait_for(1)
            redis.stop()
            await until(lambda: not bus.statistics().connected)
            accepted = [home.publish(bus, "task:a", seq) for seq in range(2, 1002)]  # no await
            stats = bus.statistics()
            assert stats.buffered <= 50 and stats.dropped >= 1000 - 50
            assert accepted.count(True) <= 50 + 10
            redis.start()
            await got.wait_for(1001)  # buffered ones, then a marker -> resync fills the rest
            home.publish(bus, "task:a", 1002)
            await got.wait_for(1002)
    assert seqs(got.got) == list(range(1, 1003))
    assert home.calls and all(after >= 1 for _, after in home.calls)


async def test_resync_failure_is_retried(redis: RedisServer) -> None:
    home = History()
    failures = [RuntimeError("home unreachable")]

    async def flaky(channel: str, after_seq: int) -> tuple[Sequence[Envelope], int]:
        if failures:
            raise failures.pop()
        return await home.resync(channel, after_seq)

    async with open_bus(redis.url, flaky) as bus:
        got = Recorder()
        async with bus.subscription("task:a", got, after_seq=0):
            await subscribed(redis, "task:a")
            home.messages["task:a"] = [Envelope("task:a", 1, "e1", b"x")]
            home.publish(bus, "task:a", 2)
            await got.wait_for(2)
    assert seqs(got.got) == [1, 2] and home.calls == [("task:a", 0)]


async def test_open_while_redis_is_down_subscribes_when_it_starts(redis: RedisServer) -> None:
    home = History()
    redis.stop()
    async with open_bus(redis.url, home.resync) as bus:
        got = Recorder()
        async with bus.subscription("task:a", got):
            assert not bus.statistics().connected
            redis.start()
            await subscribed(redis, "task:a")
            home.publish(bus, "task:a", 1)
            await got.wait_for(1)
    assert seqs(got.got) == [1]


@settings(max_examples=500, deadline=None)
@given(
    st.lists(
        st.sampled_from(["deliver", "drop", "twice", "old", "lost", "read", "answer"]),
        min_size=1,
        max_size=60,
    )
)
def test_tracker_property_every_message_once_in_order(actions: list[str]) -> None:
    """Whatever the bus loses or repeats, what is delivered is 1..N once, in order.

    A resync is read from the home node's history at one moment ("read") and lands
    later ("answer"): messages lost in between must still be asked for.
    """
    tracker = GapTracker(last=0, epoch="e1")
    out: list[int] = []
    asked: list[list[int]] = []  # resyncs in flight: [after_seq, home's latest when read]
    published = 0

    def apply(step: Step) -> None:
        out.extend(seqs(step.deliver))
        if step.resync_after is not None:
            asked.append([step.resync_after, -1])

    def answer() -> None:
        after, upto = asked.pop(0)
        upto = published if upto < 0 else upto
        apply(tracker.filled([env(s) for s in range(after + 1, upto + 1)], upto))

    for action in actions:
        if action == "read":
            if asked and asked[0][1] < 0:
                asked[0][1] = published
        elif action == "answer":
            if asked:
                answer()
        elif action == "lost":
            apply(tracker.lost())
        else:
            published += 1
            if action != "drop":
                apply(tracker.receive(env(published)))
            if action == "twice":
                apply(tracker.receive(env(published)))
            if action == "old":
                apply(tracker.receive(env(max(1, published - 3))))
    apply(tracker.lost())  # the end: a reconnect asks for whatever the last drops hid
    while asked:
        answer()
    assert out == list(range(1, published + 1))


async def test_the_blocks_own_error_is_not_wrapped(redis: RedisServer) -> None:
    home = History()
    with pytest.raises(KeyError):
        async with (
            open_bus(redis.url, home.resync) as bus,
            bus.subscription("task:a", Recorder()),
        ):
            raise KeyError("mine")


async def test_many_channels_leave_no_state_behind(redis: RedisServer) -> None:
    home = History()
    async with open_bus(redis.url, home.resync) as bus:
        for i in range(300):
            async with bus.subscription(f"task:{i}", Recorder()):
                pass
        await subscribed(redis, "task:299", 0)
        assert bus.statistics().channels == 0
        # coredis keeps a waiter list per channel ever subscribed unless the bus prunes it.
        pubsub = bus._pubsub
        assert len(pubsub._subscription_waiters) <= 1
        assert len(pubsub._unsubscription_waiters) <= 1


async def test_overflow_with_redis_up_sends_a_marker(redis: RedisServer) -> None:
    """A burst past the buffer: the dropped tail is announced by a marker and resynced."""
    home = History()
    async with open_bus(redis.url, home.resync, buffer_size=20, batch=5) as bus:
        got = Recorder()
        async with bus.subscription("task:a", got, after_seq=0):
            await subscribed(redis, "task:a")
            accepted = [home.publish(bus, "task:a", seq) for seq in range(1, 201)]
            assert accepted.count(True) == 20
            await got.wait_for(200)  # nothing more is ever published: only a marker tells
    assert seqs(got.got) == list(range(1, 201))
    assert home.calls == [("task:a", 20)]


async def test_two_nodes_one_home(redis: RedisServer) -> None:
    """One publishing bus (the home node), two subscribing buses (other nodes)."""
    home = History()
    async with (
        open_bus(redis.url, home.resync) as home_bus,
        open_bus(redis.url, home.resync) as node_b,
        open_bus(redis.url, home.resync) as node_c,
    ):
        b1, b2, c1 = Recorder(), Recorder(), Recorder()
        async with (
            node_b.subscription("task:a", b1),
            node_b.subscription("task:a", b2),
            node_c.subscription("task:a", c1),
        ):
            await subscribed(redis, "task:a", 2)  # one per node
            for seq in range(1, 1001):
                home.publish(home_bus, "task:a", seq)
            for recorder in (b1, b2, c1):
                await recorder.wait_for(1000)
    assert seqs(b1.got) == seqs(b2.got) == seqs(c1.got) == list(range(1, 1001))


async def test_first_subscriber_cancelled_before_subscribing(redis: RedisServer) -> None:
    """A later subscriber of the channel subscribes itself if the first one never did."""
    home = History()
    async with open_bus(redis.url, home.resync) as bus:
        got = Recorder()
        entered = trio.Event()

        async def second() -> None:
            async with bus.subscription("task:a", got):
                entered.set()
                await trio.sleep_forever()

        first_scope = trio.CancelScope()
        async with trio.open_nursery() as nursery:
            async with bus._sub_lock:  # hold SUBSCRIBE back
                nursery.start_soon(_first, bus, first_scope)
                await trio.testing.wait_all_tasks_blocked()
                nursery.start_soon(second)
                await trio.testing.wait_all_tasks_blocked()
                first_scope.cancel()
                await trio.testing.wait_all_tasks_blocked()
            assert redis.numsub("task:a") == 0
            with trio.fail_after(10):
                await entered.wait()
            await subscribed(redis, "task:a")
            home.publish(bus, "task:a", 1)
            await got.wait_for(1)
            nursery.cancel_scope.cancel()


async def _first(bus: Bus, scope: trio.CancelScope) -> None:
    with scope:
        async with bus.subscription("task:a", Recorder()):
            await trio.sleep_forever()
