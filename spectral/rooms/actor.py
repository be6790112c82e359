"""The Room object: a broadcast channel with its own file, history and watchers.

Theory of operation
-------------------
A room keeps its last ``history_cap`` messages (table ``messages``), each stamped
with ``roomSeq`` (1, 2, ...) and ``timestamp``. A broadcast appends in the turn's
transaction and hands the encoded message to the room's socket set from
``after_commit``: subscribers hear only of committed messages, and a room with
thousands of subscribers never makes its publisher wait (the socket set only
queues). A subscribe attaches its watcher from ``after_commit`` of its own
message, so, as for tasks, the live queue starts exactly after the ``lastSeq``
it was told: replay what is kept of ``(since, lastSeq]``, then live, no gap,
no duplicate. The stream carries room messages only, never a control message of
the server's own (any field name it could use may also be a broadcaster's).

Ownership: ``user_{owner}`` belongs to that owner; any other room belongs to the
owner of its first user (subscribe or broadcast). A non-admin asking for a room
of another owner is told it does not exist.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from actors import Actor, Migration, Rejected, Watcher
from spectral import wire

KIND = "room"
#: Messages kept per room (docs/api.md, "Rooms"), unless configured otherwise.
HISTORY_CAP = 1_000
#: Prefix of an owner's own room (every task event of the owner is published there).
USER_PREFIX = "user_"

MIGRATIONS = (
    Migration(
        1,
        """
        CREATE TABLE messages (
            seq INTEGER PRIMARY KEY,
            body TEXT NOT NULL
        );
        """,
    ),
)


class RoomNotFoundError(Rejected):
    """No such room, or one of another owner (the same answer, on purpose)."""


def natural_owner(room_id: str) -> str | None:
    """The owner a room belongs to by its name (``user_{owner}``), if any."""
    return room_id[len(USER_PREFIX) :] if room_id.startswith(USER_PREFIX) else None


# -- messages ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Publish:
    """Append messages (JSON objects) as ``owner`` (None: admin or the server itself)."""

    bodies: tuple[dict[str, Any], ...]
    owner: str | None = None


@dataclass(frozen=True, slots=True)
class Subscribe:
    """Attach ``watcher`` after this turn's commit; answer where its replay starts."""

    #: None: only answer where a subscriber would start (a subscriber on another node).
    watcher: Watcher | None
    since: int | None = None
    owner: str | None = None


@dataclass(frozen=True, slots=True)
class ReadMessages:
    """Messages with ``after < roomSeq <= upto``, oldest first, at most ``limit``."""

    after: int
    upto: int
    limit: int = 500
    owner: str | None = None


@dataclass(frozen=True, slots=True)
class Describe:
    """The room's owner, subscriber count and last ``roomSeq``."""

    owner: str | None = None


# -- answers -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Published:
    """What a broadcast answers: subscribers that got it queued, and the last ``roomSeq``."""

    delivered: int
    room_seq: int


@dataclass(frozen=True, slots=True)
class SubscribeStart:
    """Replay the kept messages in ``(replay_after, last_seq]``, then go live."""

    last_seq: int
    replay_after: int | None


@dataclass(frozen=True, slots=True)
class RoomInfo:
    """A room's health."""

    owner: str
    connections: int
    last_seq: int


# -- the actor -----------------------------------------------------------------------


class Room(Actor):
    """One room (see the module docstring)."""

    kind = KIND
    migrations = MIGRATIONS
    history_cap = HISTORY_CAP

    owner: str | None
    last_seq: int

    def load(self) -> None:
        """Read the owner and the last roomSeq."""
        self.owner = self.record.get("owner")
        row = self.db.execute("SELECT max(seq) FROM messages").fetchone()
        self.last_seq = int(row[0] or 0)

    def handle(self, message: Any) -> Any:
        """Dispatch one message."""
        match message:
            case Publish():
                return self._publish(message)
            case Subscribe():
                return self._subscribe(message)
            case ReadMessages():
                self._visible(message.owner, claim=False)
                return self._read(message.after, message.upto, message.limit)
            case Describe():
                owner = self._visible(message.owner, claim=False)
                return RoomInfo(owner, len(self.sockets), self.last_seq)
        raise TypeError(f"not a room message: {message!r}")

    def _visible(self, owner: str | None, *, claim: bool) -> str:
        """The room's owner, claiming an unowned room for ``owner`` if ``claim``."""
        current = self.owner or natural_owner(self.id)
        if current is None:
            if not claim:
                raise RoomNotFoundError(f"room {self.id!r} not found")
            current = owner or "admin"
        if owner is not None and owner != current:
            raise RoomNotFoundError(f"room {self.id!r} not found")
        if self.owner is None and claim:
            self.update_record(owner=current)  # the first use creates the room
            self.owner = current  # set last: a refused message changed nothing above
        return current

    def _publish(self, message: Publish) -> Published:
        self._visible(message.owner, claim=True)
        now = self.now()
        seq = self.last_seq
        outgoing: list[wire.Outgoing] = []
        rows: list[tuple[int, str]] = []
        for body in message.bodies:
            seq += 1
            stamped = {**body, "roomSeq": seq, "timestamp": wire.iso(now)}
            text = wire.dumps(stamped)
            rows.append((seq, text))
            outgoing.append(wire.Outgoing(seq, text))
        self.db.executemany("INSERT INTO messages (seq, body) VALUES (?, ?)", rows)
        if seq > self.history_cap:
            self.db.execute("DELETE FROM messages WHERE seq <= ?", (seq - self.history_cap,))
        sockets = self.sockets
        delivered = len(sockets)
        context = self.context
        tap = getattr(context, "live", None)
        room_id = self.id

        def notify() -> None:
            for item in outgoing:
                sockets.broadcast(item)
                if tap is not None:
                    tap(KIND, room_id, item, "")

        self.after_commit(notify)
        self.last_seq = seq
        return Published(delivered, seq)

    def _subscribe(self, message: Subscribe) -> SubscribeStart:
        self._visible(message.owner, claim=True)
        since = message.since
        # Every kept message after ``since``: if some were already dropped, the
        # subscriber sees the gap in ``roomSeq`` (the first is not ``since + 1``).
        replay_after = since if since is not None and 0 <= since < self.last_seq else None
        watcher, sockets = message.watcher, self.sockets
        if watcher is not None:  # None: a subscriber on another node asks where to start
            self.after_commit(lambda: sockets.attach(watcher))
        return SubscribeStart(self.last_seq, replay_after)

    def _read(self, after: int, upto: int, limit: int) -> list[wire.Outgoing]:
        rows = self.db.execute(
            "SELECT seq, body FROM messages WHERE seq > ? AND seq <= ? ORDER BY seq LIMIT ?",
            (after, upto, limit),
        ).fetchall()
        return [wire.Outgoing(seq, _replayed(body)) for seq, body in rows]


def _replayed(body: str) -> str:
    return wire.dumps({**json.loads(body), "replayed": True})


def room_kind(history_cap: int) -> type[Room]:
    """The Room kind keeping ``history_cap`` messages per room."""
    return type("Room", (Room,), {"history_cap": history_cap})
