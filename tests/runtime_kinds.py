"""Small object kinds used by the runtime tests (they exercise actors/ without spectral/)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from actors import Actor, Migration, Rejected


class Refused(Rejected):
    """A ledger's expected refusal."""


@dataclass(frozen=True)
class Append:
    """Append ``value``; ``fail`` = "reject" refuses it, "crash" raises a bug."""

    value: Any
    fail: str | None = None


@dataclass(frozen=True)
class Entries:
    """Answer every appended value, in order."""


@dataclass(frozen=True)
class Alarm:
    """Set (or clear, with None) the alarm."""

    at: float | None


class Ledger(Actor):
    """Appends values to a table; each append also changes the record and may notify."""

    kind = "ledger"
    migrations = (
        Migration(1, "CREATE TABLE entries (seq INTEGER PRIMARY KEY, value TEXT NOT NULL)"),
    )
    #: Every instance's after_commit calls append here (per class, reset by tests).
    committed: ClassVar[list[tuple[str, Any]]] = []
    #: Alarm firings, as (id, time).
    fired: ClassVar[list[tuple[str, float]]] = []
    #: Alarm turns that should raise before succeeding, per id.
    alarm_failures: ClassVar[dict[str, int]] = {}

    def load(self) -> None:
        """Count the rows so far."""
        self.count = self.db.execute("SELECT count(*) FROM entries").fetchone()[0]

    def handle(self, message: Any) -> Any:
        """Apply one message."""
        match message:
            case Append(value=value, fail=fail):
                self.db.execute("INSERT INTO entries (value) VALUES (?)", (repr(value),))
                self.update_record(owner="tests", status="open", progress=float(self.count % 100))
                self.set_alarm(None)
                object_id = self.id
                self.after_commit(lambda: Ledger.committed.append((object_id, value)))
                self.after_commit(lambda: self.sockets.broadcast(value))
                if fail == "reject":
                    raise Refused(f"refused {value!r}")
                if fail == "crash":
                    raise RuntimeError(f"bug on {value!r}")
                self.count += 1
                return self.count
            case Entries():
                return [r[0] for r in self.db.execute("SELECT value FROM entries ORDER BY seq")]
            case Alarm(at=at):
                self.set_alarm(at)
                self.update_record(owner="tests", status="alarmed")
                self.db.execute("INSERT INTO entries (value) VALUES ('alarm set')")
                return at
        raise TypeError(message)

    def alarm(self) -> None:
        """Record the firing (or fail as configured)."""
        left = Ledger.alarm_failures.get(self.id, 0)
        if left:
            Ledger.alarm_failures[self.id] = left - 1
            raise RuntimeError("alarm failed on purpose")
        Ledger.fired.append((self.id, self.now()))
        self.db.execute("INSERT INTO entries (value) VALUES ('alarm fired')")


class CrashOnLoad(Actor):
    """A kind whose activation always fails (a bug in load)."""

    kind = "crash_on_load"
    migrations = (Migration(1, "CREATE TABLE t (x)"),)

    def load(self) -> None:
        """Fail."""
        raise RuntimeError("cannot load")

    def handle(self, message: Any) -> Any:
        """Never reached."""
        return message


class AlwaysCrashes(Actor):
    """Every message is a crash."""

    kind = "always_crashes"
    migrations = (Migration(1, "CREATE TABLE t (x)"),)

    def handle(self, message: Any) -> Any:
        """Write, then crash."""
        self.db.execute("INSERT INTO t VALUES (1)")
        raise ZeroDivisionError("always")
