"""The two narrow interfaces inside the runtime: what a cell needs of its host, and
what an object kind's instance sees of its cell.

A :class:`~actors.mailbox.Cell` never holds the router: it talks to a
:class:`CellHost` (implemented by :class:`~actors.router.Router`), whose methods
name what the cell wants done — open or delete its file, schedule its alarm, write
its registry row, count a turn. An :class:`~actors.actor.Actor` sees only an
:class:`ActorCell`. So imports run one way: ``router`` → ``mailbox`` → ``host``,
and ``actor`` → ``host``; neither ``mailbox`` nor ``actor`` imports the router.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from actors.config import RouterConfig
    from actors.messaging import Outgoing
    from actors.sockets import SocketSet
    from storage import ObjectFile, ObjectRow

#: An object's identity: (kind, id).
Key = tuple[str, str]


class CellHost(Protocol):
    """Everything a live cell asks of the runtime that hosts it."""

    #: The runtime's tunables (inbox size, batch cap, crash and alarm back-off).
    config: RouterConfig
    #: Whatever the product handed to ``open_router(context=...)``.
    context: Any
    #: Wall-clock seconds (tests inject ``trio.current_time``).
    clock: Callable[[], float]

    # -- the object's file ------------------------------------------------------

    def open_file(self, file: ObjectFile) -> sqlite3.Connection:
        """Reopen the object's existing file (after a failed commit)."""
        ...

    def settle_file(self, conn: sqlite3.Connection) -> None:
        """Restore the durable ``synchronous`` setting after a fresh file's first commit."""
        ...

    def delete_file(self, file: ObjectFile) -> None:
        """Remove the object's file (deleted, or created but never committed)."""
        ...

    # -- the registry row ---------------------------------------------------------

    async def write_row(self, row: ObjectRow) -> None:
        """Write the object's registry row and wait until it is committed."""
        ...

    def stage_row(self, row: ObjectRow) -> None:
        """Queue the object's registry row for the next group commit."""
        ...

    async def delete_row(self, kind: str, object_id: str) -> None:
        """Delete the object's registry row and wait until that is committed."""
        ...

    # -- neighbours: alarms, watchers -----------------------------------------------

    def schedule_alarm(self, kind: str, object_id: str, when: float | None) -> None:
        """Wake the object at ``when`` (wall-clock seconds); None clears its alarm."""
        ...

    def sockets_of(self, kind: str, object_id: str) -> SocketSet:
        """The object's socket set (kept by the host: it outlives the cell)."""
        ...

    def post_messages(self, sender: Key, messages: list[Outgoing]) -> None:
        """Hand committed outbox rows to the courier (see actors/messaging.py)."""
        ...

    # -- supervision ------------------------------------------------------------------

    def is_broken(self, key: Key) -> bool:
        """True while the object is refused after a crash loop or an unreadable file."""
        ...

    def mark_broken(self, key: Key) -> None:
        """Refuse the object for the configured cool-down."""
        ...

    def leftover_error(self, key: Key) -> Exception:
        """The error for messages still queued when the cell's loop ends."""
        ...

    def forget(self, key: Key, cell: object) -> None:
        """The cell's loop has ended and its file is closed: drop it from the live set."""
        ...

    # -- counters -----------------------------------------------------------------------

    def may_commit(self) -> bool:
        """False while nothing may be committed (a cluster node that lost its lease)."""
        ...

    def record_commit(self, seconds: float) -> None:
        """Count the time one COMMIT took."""
        ...

    def record_turn(self, messages: int) -> None:
        """Count one committed turn of ``messages`` messages."""
        ...

    def record_restart(self) -> None:
        """Count one reload of an instance after a crash or a failed commit."""
        ...


class ActorCell(Protocol):
    """What an object kind's instance (:class:`~actors.actor.Actor`) sees of its cell."""

    object_id: str
    conn: sqlite3.Connection
    #: The committed record (owner, status, progress, created_at, ...).
    record: dict[str, Any]

    @property
    def sockets(self) -> SocketSet:
        """The object's watchers."""
        ...

    @property
    def context(self) -> Any:
        """The product's context object (see ``open_router``)."""
        ...

    def now(self) -> float:
        """Wall-clock seconds from the host's clock."""
        ...

    def pending_alarm(self) -> float | None:
        """The alarm as of this point of the turn."""
        ...

    def send_message(
        self, kind: str, object_id: str, message: Any, key: str | None, create: bool = False
    ) -> None:
        """Write a durable message to the outbox with the current message's changes."""
        ...

    def effect(self, item: tuple[Any, ...]) -> None:
        """Record an effect of the current message (only valid inside a turn)."""
        ...
