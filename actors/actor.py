"""The public API an object kind implements: subclass :class:`Actor`.

A kind declares its name and schema and implements up to three hooks; the
runtime gives it its SQLite connection, its socket set, a clock, alarms and its
registry record::

    class Counter(Actor):
        kind = "counter"
        migrations = [Migration(1, "CREATE TABLE counter (value INTEGER NOT NULL)")]

        def load(self) -> None:             # activation: read state from self.db
            ...
        def handle(self, message) -> Any:   # one message, inside the turn's transaction
            ...
        def alarm(self) -> None:            # the alarm turn
            ...

Rules for ``handle`` and ``alarm``: they are synchronous (a turn never awaits),
they may read and write ``self.db`` freely (the runtime owns BEGIN/COMMIT and a
savepoint per message), and they tell the outside world about a change only
through :meth:`after_commit`, which runs once the change is committed. Raise a
subclass of :class:`~actors.errors.Rejected` to refuse a message; any other
exception counts as a crash: the message is rolled back and the actor reloads.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, ClassVar

from storage import Migration

if TYPE_CHECKING:
    import sqlite3

    from actors.host import ActorCell
    from actors.messaging import Address
    from actors.sockets import SocketSet


class Actor:
    """Base class of an object kind. The runtime creates one instance per live object.

    Do not override ``__init__``; set up state in :meth:`load`.
    """

    #: The kind's name: ``[a-z][a-z0-9_]*``, unique per router.
    kind: ClassVar[str]
    #: The kind's schema, versions 1..N, applied on activation.
    migrations: ClassVar[Sequence[Migration]] = ()
    #: True for kinds created often: their files are pre-created by a background job
    #: (a pool, see storage/pool.py), so that a creation costs a rename.
    pooled: ClassVar[bool] = False

    def __init__(self, cell: ActorCell) -> None:
        self._cell = cell

    # -- hooks a kind implements --------------------------------------------

    def load(self) -> None:
        """Activation hook: read the object's state from :attr:`db`."""

    def handle(self, message: Any) -> Any:
        """Apply one message inside the turn's transaction and return the caller's answer."""
        raise NotImplementedError(f"{type(self).__name__} handles no messages")

    def alarm(self) -> None:
        """The alarm turn: runs once when the alarm set with :meth:`set_alarm` is due."""

    def receive(self, sender: Address, message: Any) -> None:
        """Apply a message another object sent with :meth:`send` (once, in a turn).

        Same rules as :meth:`handle`; raising :class:`~actors.errors.Rejected` drops
        the message (the sender is not told), any other exception retries it later.
        """
        raise NotImplementedError(f"{type(self).__name__} receives no messages")

    # -- what the runtime provides --------------------------------------------

    @property
    def id(self) -> str:
        """The object's id."""
        return self._cell.object_id

    @property
    def db(self) -> sqlite3.Connection:
        """The object's own SQLite connection (autocommit; the runtime manages transactions)."""
        return self._cell.conn

    @property
    def sockets(self) -> SocketSet:
        """The object's watchers; broadcast to them from :meth:`after_commit` callbacks."""
        return self._cell.sockets

    @property
    def created(self) -> bool:
        """True once a committed turn has written to the object (it exists for others)."""
        return self._cell.record.get("created_at") is not None

    @property
    def record(self) -> dict[str, Any]:
        """The committed registry record: owner, status, progress, created_at, ..."""
        return dict(self._cell.record)

    @property
    def alarm_at(self) -> float | None:
        """The alarm time as of this point of the turn (wall-clock seconds), or None."""
        return self._cell.pending_alarm()

    @property
    def context(self) -> Any:
        """The object the product passed to ``open_router(context=...)`` (None if none)."""
        return self._cell.context

    def now(self) -> float:
        """Wall-clock time in seconds since the epoch (the router's clock)."""
        return self._cell.now()

    def set_alarm(self, when: float | None) -> None:
        """Persist one alarm time (or clear it) with this message's changes."""
        self._cell.effect(("alarm", when))

    def update_record(self, *, durable: bool = False, **fields: Any) -> None:
        """Change registry fields (owner, status, progress, summary) with this message.

        Changes of owner and status, creation and deletion reach the registry before
        the answer; other fields may lag by the registry's flush interval unless
        ``durable`` is true. ``created_at`` is taken with the object's first record
        only (its own creation time, so that the registry orders and filters by the
        time the object reports; default: the turn's time) and ignored later.
        """
        unknown = set(fields) - {"owner", "status", "progress", "summary", "created_at"}
        if unknown:
            raise TypeError(f"unknown record fields: {sorted(unknown)}")
        self._cell.effect(("record", fields, durable))

    def send(
        self,
        kind: str,
        object_id: str,
        message: Any,
        *,
        key: str | None = None,
        create: bool = False,
    ) -> None:
        """Send a durable message to another object when this turn commits.

        The message (JSON-serialisable) is written to this object's file with the
        turn's changes and delivered at least once, in order, and applied once by the
        target's :meth:`receive` (actors/messaging.py). With ``key``, it replaces this
        object's undelivered message to the same target with the same key. With
        ``create``, a target that does not exist yet is activated for it (its
        ``receive`` may create it; if it writes nothing, nothing is left behind).
        """
        self._cell.send_message(kind, object_id, message, key, create)

    def before_commit(self, callback: Callable[[], object]) -> None:
        """Run ``callback`` once at the end of this turn, inside its transaction.

        After every message of the turn, before the commit: for work that the turn's
        messages together call for (one recomputation for many inputs). Asked for
        several times in a turn (by equal callables), it runs once. If it raises, only
        what it did is rolled back and it counts as a crash (the instance reloads
        after the commit); the messages stay applied. A rolled-back message's request
        goes with it.
        """
        self._cell.effect(("before", callback))

    def after_commit(self, callback: Callable[[], object]) -> None:
        """Run ``callback`` after this message's changes are committed (output gate)."""
        self._cell.effect(("after", callback))

    def delete(self) -> None:
        """Delete the object when this turn commits: its file and its registry row go."""
        self._cell.effect(("delete",))
