"""The object kinds of the runtime tests (test_router, test_turns, test_alarms, ...): one module.

``Ledger`` appends rows and can be told to reject or crash a message; every side
effect a message asks for (record change, alarm, after_commit callback, broadcast)
is observable from the test through class-level lists, reset by :func:`reset`.
``AlwaysCrashes`` crashes on every message; ``Gauge`` keeps one number and stages
its progress in the registry (test_registry_recovery runs it in a child process).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar

from actors import Actor, Migration, Rejected


class Refused(Rejected):
    """The ledger's domain refusal."""


@dataclass(frozen=True)
class Append:
    """Append ``value``; answer the new row's sequence number.

    ``fail="reject"`` raises :class:`Refused` and ``fail="crash"`` a RuntimeError, in
    both cases *after* writing a row and asking for every kind of effect, so a test
    can check that all of it was discarded.
    """

    value: Any
    fail: str | None = None


@dataclass(frozen=True)
class Note:
    """Append ``value`` with no callbacks or broadcasts (the cheapest write); answer its seq."""

    value: Any


@dataclass(frozen=True)
class Rows:
    """Answer every appended value, in file (sequence) order."""


@dataclass(frozen=True)
class Count:
    """Answer the in-memory row count (what ``load`` read, plus appends since)."""


@dataclass(frozen=True)
class SetRecord:
    """Change the registry record; answers the record as committed *before* this message."""

    owner: str | None = None
    status: str | None = None
    progress: float | None = None


@dataclass(frozen=True)
class GetRecord:
    """Answer the committed record (``Actor.record``)."""


@dataclass(frozen=True)
class SetAlarm:
    """Set (or clear, with None) the alarm; answers the alarm as seen in the turn."""

    at: float | None


@dataclass(frozen=True)
class Delete:
    """Delete the object."""


@dataclass(frozen=True)
class Touch:
    """Read-only: answers the object's id (writes nothing)."""


class Ledger(Actor):
    """An append-only table of values, with a registry record and an alarm."""

    kind = "ledger"
    migrations = (
        Migration(1, "CREATE TABLE entries (seq INTEGER PRIMARY KEY, value TEXT NOT NULL)"),
        Migration(2, "ALTER TABLE entries ADD COLUMN note TEXT"),
    )

    #: (id, value) of every Append whose after_commit callback ran, in order.
    committed: ClassVar[list[tuple[str, Any]]] = []
    #: ids, one per load() call.
    loads: ClassVar[list[str]] = []
    #: ids whose load() raises.
    load_crashes: ClassVar[set[str]] = set()
    #: (id, now) of every alarm() that succeeded.
    fired: ClassVar[list[tuple[str, float]]] = []
    #: (id, now) of every alarm() call, failed or not.
    alarm_calls: ClassVar[list[tuple[str, float]]] = []
    #: alarm() raises this many times per id before succeeding.
    alarm_failures: ClassVar[dict[str, int]] = {}
    #: Called as hook(ledger_id, value) from each Append's after_commit callback.
    on_commit: ClassVar[Callable[[str, Any], None] | None] = None

    def load(self) -> None:
        """Read the row count; fail for ids listed in ``load_crashes``."""
        Ledger.loads.append(self.id)
        if self.id in Ledger.load_crashes:
            raise RuntimeError(f"load of {self.id!r} fails on purpose")
        self.count = self.db.execute("SELECT count(*) FROM entries").fetchone()[0]

    def handle(self, message: Any) -> Any:
        """Apply one message."""
        match message:
            case Append(value=value, fail=fail):
                seq = self.db.execute(
                    "INSERT INTO entries (value) VALUES (?)", (str(value),)
                ).lastrowid
                object_id = self.id
                self.after_commit(lambda: Ledger._committed(object_id, value))
                self.after_commit(lambda: self.sockets.broadcast(value))
                if fail is not None:
                    self.update_record(owner="bad", status="bad", progress=-1.0)
                    self.set_alarm(self.now() + 1000.0)
                    if fail == "reject":
                        raise Refused(f"refused {value!r}")
                    self.count += 1000  # in-memory damage: a crash reloads from the file
                    raise RuntimeError(f"crash on {value!r}")
                self.count += 1
                return seq
            case Note(value=value):
                self.count += 1
                return self.db.execute(
                    "INSERT INTO entries (value) VALUES (?)", (str(value),)
                ).lastrowid
            case Rows():
                return [r[0] for r in self.db.execute("SELECT value FROM entries ORDER BY seq")]
            case Count():
                return self.count
            case GetRecord():
                return self.record
            case SetRecord(owner=owner, status=status, progress=progress):
                fields = {"owner": owner, "status": status, "progress": progress}
                self.update_record(**{k: v for k, v in fields.items() if v is not None})
                return self.record
            case SetAlarm(at=at):
                self.set_alarm(at)
                self.db.execute("INSERT INTO entries (value) VALUES ('set alarm')")
                self.count += 1
                return self.alarm_at
            case Delete():
                self.delete()
                return "deleted"
            case Touch():
                return self.id
        raise TypeError(f"unknown message {message!r}")

    def alarm(self) -> None:
        """Append 'alarm' (or fail as configured in ``alarm_failures``)."""
        Ledger.alarm_calls.append((self.id, self.now()))
        left = Ledger.alarm_failures.get(self.id, 0)
        if left:
            Ledger.alarm_failures[self.id] = left - 1
            raise RuntimeError("alarm fails on purpose")
        Ledger.fired.append((self.id, self.now()))
        self.db.execute("INSERT INTO entries (value) VALUES ('alarm')")
        self.count += 1

    @staticmethod
    def _committed(object_id: str, value: Any) -> None:
        Ledger.committed.append((object_id, value))
        if Ledger.on_commit is not None:
            Ledger.on_commit(object_id, value)


class AlwaysCrashes(Actor):
    """Every message writes a row, then crashes."""

    kind = "always_crashes"
    migrations = (Migration(1, "CREATE TABLE t (x INTEGER)"),)

    def handle(self, message: Any) -> Any:
        """Write, then crash."""
        self.db.execute("INSERT INTO t VALUES (1)")
        raise ZeroDivisionError("always")


class Gauge(Actor):
    """Stores one number; progress goes to the registry without waiting (non-durable)."""

    kind = "gauge"
    migrations = (Migration(1, "CREATE TABLE gauge (value REAL)"),)

    def handle(self, message: float) -> float:
        """Set the value and the registry's progress field."""
        self.db.execute("DELETE FROM gauge")
        self.db.execute("INSERT INTO gauge VALUES (?)", (message,))
        if not self.created:
            self.update_record(owner="o", status="open", progress=message)
        else:
            self.update_record(progress=message)
        return message


#: What most tests serve (each kind costs a router 256 shard directories).
KINDS: list[type[Actor]] = [Ledger]
ALL_KINDS: list[type[Actor]] = [Ledger, AlwaysCrashes]


def reset() -> None:
    """Forget everything the kinds recorded (call before each test)."""
    Ledger.committed.clear()
    Ledger.loads.clear()
    Ledger.load_crashes.clear()
    Ledger.fired.clear()
    Ledger.alarm_calls.clear()
    Ledger.alarm_failures.clear()
    Ledger.on_commit = None
