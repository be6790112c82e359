"""Durable messages between objects (actors/messaging.py): at least once, applied once,
in order, coalesced by key, kept across a shutdown, dropped for a missing or refusing
target, retried for a crashing one.

The kinds are generic (no task concept): a ``Sender`` adds numbers to its total and
sends either each number (unkeyed) or its running total (keyed, latest wins) to a
``Sink``, which records what it received per sender.
"""

from __future__ import annotations

import json
import sqlite3
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import pytest
import trio

from actors import Actor, Migration, Rejected, RouterConfig, open_router
from actors.messaging import Address, Delivered, Incoming

pytestmark = pytest.mark.trio


@dataclass(frozen=True)
class Add:
    """Add ``amount`` to the sender's total and tell ``sink`` (keyed: the total)."""

    sink: str
    amount: int
    keyed: bool = False


@dataclass(frozen=True)
class Seen:
    """Answer what the sink received: [(sender id, body), ...] in order of application."""


class Refusal(Rejected):
    """The sink refuses a message."""


class Sender(Actor):
    """Keeps a total; sends each change to a sink."""

    kind = "sender"
    migrations = (Migration(1, "CREATE TABLE total (id INTEGER PRIMARY KEY, value INTEGER)"),)

    def load(self) -> None:
        """Read the total."""
        row = self.db.execute("SELECT value FROM total WHERE id = 1").fetchone()
        self.total = 0 if row is None else row[0]

    def handle(self, message: Any) -> Any:
        """Add, write, send (``"record"``: answer the committed record)."""
        if message == "record":
            return self.record
        assert isinstance(message, Add)
        self.total += message.amount
        self.db.execute("INSERT OR REPLACE INTO total (id, value) VALUES (1, ?)", (self.total,))
        if message.keyed:
            self.send("sink", message.sink, {"total": self.total}, key="total")
        else:
            self.send("sink", message.sink, {"amount": message.amount})
        return self.total


class Sink(Actor):
    """Appends what it receives; refuses bodies with ``refuse`` and crashes on ``crash``."""

    kind = "sink"
    migrations = (Migration(1, "CREATE TABLE got (n INTEGER PRIMARY KEY, sender TEXT, body TEXT)"),)
    #: Crash on this many deliveries before applying (per sink id).
    crashes: ClassVar[dict[str, int]] = {}

    def handle(self, message: Any) -> Any:
        """Create (any message) or answer what was seen."""
        if isinstance(message, Seen):
            rows = self.db.execute("SELECT sender, body FROM got ORDER BY n").fetchall()
            return [(sender, json.loads(body)) for sender, body in rows]
        self.db.execute("CREATE TABLE IF NOT EXISTS made (id INTEGER PRIMARY KEY)")
        self.db.execute("INSERT OR IGNORE INTO made (id) VALUES (1)")
        return None

    def receive(self, sender: Address, message: Any) -> None:
        """Record it (or refuse, or crash)."""
        if message.get("refuse"):
            raise Refusal("refused")
        left = Sink.crashes.get(self.id, 0)
        if left:
            Sink.crashes[self.id] = left - 1
            raise RuntimeError("crash on purpose")
        self.db.execute(
            "INSERT INTO got (sender, body) VALUES (?, ?)", (sender.id, json.dumps(message))
        )


class Mortal(Actor):
    """Sends ``("send", n)`` to sink ``s``; ``("die", 0)`` deletes it."""

    kind = "mortal"
    migrations = (Migration(1, "CREATE TABLE t (n INTEGER)"),)

    def handle(self, message: Any) -> Any:
        """Send or die."""
        verb, n = message
        if verb == "die":
            self.delete()
            return None
        self.db.execute("INSERT INTO t (n) VALUES (?)", (n,))
        self.send("sink", "s", {"n": n})
        return n


KINDS = (Sender, Sink)
CONFIG = RouterConfig(crash_backoff=0.001, crash_limit=1000)


@pytest.fixture(autouse=True)
def _reset() -> None:
    Sink.crashes.clear()


async def test_every_message_is_applied_once_in_order(tmp_path: Path) -> None:
    async with open_router(tmp_path, KINDS, CONFIG) as router:
        await router.call("sink", "s", None, create=True)
        for n in range(1, 201):
            await router.call("sender", "a", Add("s", n), create=True)
        await router.delivered("sender", "a")
        seen = await router.call("sink", "s", Seen())
        assert seen == [("a", {"amount": n}) for n in range(1, 201)]
        # The courier's acknowledgement clears the sender's wake time and its outbox.
        with trio.fail_after(10):
            while router.registry.get("sender", "a").alarm_at is not None:
                await trio.sleep(0.01)
    assert _outbox(_only_file(tmp_path, "sender")) == []


async def test_a_keyed_burst_coalesces_and_ends_exact(tmp_path: Path) -> None:
    async with open_router(tmp_path, KINDS, CONFIG) as router:
        await router.call("sink", "s", None, create=True)
        await router.call("sender", "a", Add("s", 0, keyed=True), create=True)
        async with trio.open_nursery() as nursery:
            for _ in range(1000):
                nursery.start_soon(router.call, "sender", "a", Add("s", 1, keyed=True))
        await router.delivered("sender", "a")
        seen = await router.call("sink", "s", Seen())
        assert seen[-1] == ("a", {"total": 1000})
        totals = [body["total"] for _, body in seen]
        assert totals == sorted(totals)  # never an older total after a newer one
        assert len(seen) < 1000  # the burst was coalesced
        assert router.courier.delivered == len(seen)


async def test_a_message_delivered_twice_is_applied_once(tmp_path: Path) -> None:
    async with open_router(tmp_path, KINDS, CONFIG) as router:
        await router.call("sink", "s", None, create=True)
        message = Incoming(Address("sender", "x"), 1.0, 7, {"amount": 1})
        assert await router.call("sink", "s", message) is True
        assert await router.call("sink", "s", message) is False
        older = Incoming(Address("sender", "x"), 1.0, 3, {"amount": 2})
        assert await router.call("sink", "s", older) is False
        # A later incarnation of the sender (deleted, made again) starts at seq 1 again;
        # an earlier one's straggler is refused.
        reborn = Incoming(Address("sender", "x"), 2.0, 1, {"amount": 3})
        assert await router.call("sink", "s", reborn) is True
        ghost = Incoming(Address("sender", "x"), 1.0, 9, {"amount": 4})
        assert await router.call("sink", "s", ghost) is False
        seen = await router.call("sink", "s", Seen())
        assert seen == [("x", {"amount": 1}), ("x", {"amount": 3})]


async def test_a_sender_deleted_and_made_again_is_heard(tmp_path: Path) -> None:
    async with open_router(tmp_path, (*KINDS, Mortal), CONFIG) as router:
        await router.call("sink", "s", None, create=True)
        for n in range(1, 4):
            await router.call("mortal", "m", ("send", n), create=True)
        await router.delivered("mortal", "m")
        await router.call("mortal", "m", ("die", 0))
        # Made again: a new file, its outbox's seqs start at 1 again.
        for n in range(11, 13):
            await router.call("mortal", "m", ("send", n), create=True)
        await router.delivered("mortal", "m")
        seen = await router.call("sink", "s", Seen())
        assert [body["n"] for _, body in seen] == [1, 2, 3, 11, 12]


async def test_a_missing_or_refusing_target_drops_the_message(tmp_path: Path) -> None:
    async with open_router(tmp_path, KINDS, CONFIG) as router:
        await router.call("sender", "a", Add("nobody", 1), create=True)
        await router.delivered("sender", "a")
        assert router.courier.dropped == 1
        await router.call("sink", "s", None, create=True)
        message = Incoming(Address("sender", "y"), 1.0, 1, {"refuse": True})
        with pytest.raises(Refusal):
            await router.call("sink", "s", message)
        # The refusal rolled the inbox back too: the same seq is applied when valid.
        assert await router.call("sink", "s", Incoming(message.sender, 1.0, 1, {"ok": 1})) is True


async def test_a_crashing_target_gets_the_message_again(tmp_path: Path) -> None:
    async with open_router(tmp_path, KINDS, CONFIG) as router:
        await router.call("sink", "s", None, create=True)
        Sink.crashes["s"] = 3
        await router.call("sender", "a", Add("s", 5), create=True)
        with trio.fail_after(30):
            await router.delivered("sender", "a")
        assert router.courier.retried == 3
        assert await router.call("sink", "s", Seen()) == [("a", {"amount": 5})]


async def test_undelivered_messages_survive_a_shutdown(tmp_path: Path) -> None:
    async with open_router(tmp_path, KINDS, CONFIG) as router:
        await router.call("sink", "s", None, create=True)
        Sink.crashes["s"] = 10**9  # the sink cannot apply anything during this run
        await router.call("sender", "a", Add("s", 1), create=True)
        await router.call("sender", "a", Add("s", 2))
        with trio.fail_after(10):
            while router.courier.retried < 2:
                await trio.sleep(0.01)
        await router.evict("sender", "a")
    assert [body for _, body in _outbox(_only_file(tmp_path, "sender"))] == [
        '{"amount":1}',
        '{"amount":2}',
    ]
    Sink.crashes.clear()
    # The registry wakes the sender at start-up; its activation hands the rows over.
    async with open_router(tmp_path, KINDS, CONFIG) as router:
        with trio.fail_after(30):
            while len(await router.call("sink", "s", Seen())) < 2:
                await trio.sleep(0.01)
        assert await router.call("sink", "s", Seen()) == [
            ("a", {"amount": 1}),
            ("a", {"amount": 2}),
        ]


def _outbox(path: Path | None) -> list[tuple[int, str]]:
    assert path is not None
    conn = sqlite3.connect(path)
    try:
        return conn.execute("SELECT seq, body FROM _outbox ORDER BY seq").fetchall()
    finally:
        conn.close()


def _only_file(root: Path, kind: str) -> Path:
    files = list((root / "objects" / kind).rglob("*.sqlite"))
    assert len(files) == 1, files
    return files[0]


class Summer(Actor):
    """Adds numbers; writes the total once per turn, before the commit (crashes on demand)."""

    kind = "summer"
    migrations = (
        Migration(1, "CREATE TABLE n (v INTEGER); CREATE TABLE total (turns INTEGER, t INTEGER)"),
    )
    crash_end: ClassVar[bool] = False

    def handle(self, message: Any) -> Any:
        """An int adds it; None answers (total rows written, last total)."""
        if message is None:
            rows = self.db.execute("SELECT turns, t FROM total").fetchall()
            return len(rows), (rows[-1][1] if rows else None)
        self.db.execute("INSERT INTO n (v) VALUES (?)", (message,))
        self.before_commit(self.write_total)
        return message

    def write_total(self) -> None:
        """One total row per turn that added something."""
        if Summer.crash_end:
            self.db.execute("INSERT INTO total (turns, t) VALUES (0, -1)")
            raise RuntimeError("before_commit crashes on purpose")
        total = self.db.execute("SELECT sum(v) FROM n").fetchone()[0]
        self.db.execute("INSERT INTO total (turns, t) VALUES (1, ?)", (total,))


async def test_before_commit_runs_once_per_turn_inside_its_transaction(tmp_path: Path) -> None:
    Summer.crash_end = False
    async with open_router(tmp_path, (Summer,), CONFIG) as router:
        await router.call("summer", "s", 0, create=True)
        async with trio.open_nursery() as nursery:
            for n in range(1, 501):
                nursery.start_soon(router.call, "summer", "s", n)
        rows, total = await router.call("summer", "s", None)
        assert total == 500 * 501 // 2
        assert rows < 500  # the burst came in batches: one callback per batch
        # A crashing callback: its own writes go, the message stays applied.
        Summer.crash_end = True
        assert await router.call("summer", "s", 7) == 7
        Summer.crash_end = False
        after_rows, after_total = await router.call("summer", "s", None)
        assert after_rows == rows and after_total == total  # no -1 row was kept
        await router.call("summer", "s", 1)
        assert (await router.call("summer", "s", None))[1] == total + 7 + 1


async def test_a_send_in_the_turn_that_acknowledges_keeps_the_wake_time(tmp_path: Path) -> None:
    """A Delivered that empties the outbox and a send in the same turn: the row left
    keeps ``send_at`` set (the registry's wake time after a crash)."""
    async with open_router(tmp_path, KINDS, CONFIG) as router:
        await router.call("sink", "s", None, create=True)
        Sink.crashes["s"] = 10**9  # nothing is applied: the courier never acknowledges
        await router.call("sender", "a", Add("s", 1), create=True)
        record = await router.call("sender", "a", "record")
        assert record["send_at"] is not None
        async with trio.open_nursery() as nursery:  # both queued before the turn runs
            nursery.start_soon(router.call, "sender", "a", Delivered(record["incarnation"], 1))
            nursery.start_soon(router.call, "sender", "a", Add("s", 2))
        after = await router.call("sender", "a", "record")
        assert after["send_at"] is not None
        assert router.registry.get("sender", "a").alarm_at is not None
        Sink.crashes.clear()
        await router.delivered("sender", "a")
