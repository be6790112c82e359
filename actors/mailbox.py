"""Turns: how one live object processes its messages.

Theory of operation
-------------------
Each live object is a :class:`Cell`: an inbox (a trio memory channel of
:class:`Envelope`), its SQLite connection and an instance of its kind. The cell
runs one loop in its host's nursery and takes messages in arrival order, one
turn at a time (Durable Objects' *input gate*: nothing else touches the object
while a turn runs, because a turn is synchronous from BEGIN to COMMIT).

A turn takes every message already waiting (up to ``max_batch``) and applies them
in ONE transaction, each inside its own SAVEPOINT. A handler that raises rolls
back only its own savepoint and the effects it asked for; the others stay. Then:

1. COMMIT (one fsync at most, shared by the whole batch: write coalescing);
2. registry: the record change is written; changes that listings must show
   before the answer (creation, deletion, owner, status, an earlier alarm) are
   awaited, others are staged (group commit in the registry writer);
3. ``after_commit`` callbacks run (broadcasts to watchers);
4. only now are the callers answered (the *output gate*: nobody hears of a
   change that is not committed).

Supervision: an unexpected exception in a handler fails that message with
:class:`ActorCrashedError` and reloads the instance from the file. A failed
COMMIT fails the whole batch and reopens the file. Consecutive crashing turns
back off exponentially and, after ``crash_limit``, mark the object broken.

The cell never sees the router: everything it asks of the runtime (its file, its
registry row, alarms, sockets, supervision, counters) goes through the narrow
:class:`~actors.host.CellHost` interface it is given.
"""

from __future__ import annotations

import json
import logging
import sqlite3
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import orjson
import trio

from actors.errors import (
    ActorBrokenError,
    ActorClosedError,
    ActorCrashedError,
    ObjectNotFoundError,
    Rejected,
)
from actors.messaging import Delivered, Incoming, Outgoing
from storage import ObjectFile, ObjectRow, StorageError, read_record, wake_time, write_record

if TYPE_CHECKING:
    from actors.actor import Actor
    from actors.host import CellHost
    from actors.sockets import SocketSet

log = logging.getLogger("actors")


class AlarmDue:
    """Internal message: the scheduler says this object's alarm may be due."""

    __slots__ = ()


ALARM_DUE = AlarmDue()


@dataclass(eq=False, slots=True)
class Envelope:
    """A message plus a one-shot reply slot."""

    message: Any
    done: trio.Event = field(default_factory=trio.Event)
    value: Any = None
    error: BaseException | None = None

    def resolve(self, value: Any) -> None:
        """Answer with a value."""
        self.value = value
        self.done.set()

    def fail(self, error: BaseException) -> None:
        """Answer with an error."""
        self.error = error
        self.done.set()

    async def wait(self) -> Any:
        """Wait for the answer; raise the error if there is one."""
        await self.done.wait()
        if self.error is not None:
            raise self.error
        return self.value


class Cell:
    """One live object: inbox, connection, kind instance, committed record."""

    def __init__(
        self,
        host: CellHost,
        kind_class: type[Actor],
        object_id: str,
        file: ObjectFile,
        conn: sqlite3.Connection,
    ) -> None:
        self.host = host
        self.kind_class = kind_class
        self.kind = kind_class.kind
        self.object_id = object_id
        self.key = (self.kind, object_id)
        #: Where the object's file is (its registry row carries ``file.name``).
        self.file = file
        self.conn = conn
        self.send_channel, self.receive_channel = trio.open_memory_channel[Envelope](
            host.config.inbox_size
        )
        self.closing = False
        #: Set when the loop has ended and the file is closed.
        self.finished = trio.Event()
        self.busy = False
        #: True from activation until the activating caller has sent its message, so
        #: the live cap and the reaper never evict a cell before its first message.
        self.reserved = True
        self.last_used = trio.current_time()
        self.record: dict[str, Any] = {}
        self.crashes = 0
        #: True once the idle reaper released the page cache (reset by every turn).
        self.shrunk = False
        self.alarm_failures = 0
        #: Set by a before_commit callback that raised during the current turn.
        self.crashed_before_commit = False
        self.registry_alarm_known = False
        #: True until the first commit of a freshly created file (see ObjectStore.settle).
        self.unsettled = True
        self.registry_alarm: float | None = None
        self._effects: list[tuple[Any, ...]] | None = None
        self.instance: Actor = kind_class(self)

    # -- activation ------------------------------------------------------------

    def load(self) -> None:
        """Read the record and let the kind load its state (raises on a bad file)."""
        self.record = _decode_record(read_record(self.conn))
        self.instance = self.kind_class(self)
        self.instance.load()
        alarm_at = self.record.get("alarm_at")
        if alarm_at is not None:
            self.host.schedule_alarm(self.kind, self.object_id, float(alarm_at))
        # Rows exist only while send_at is set (both change in one transaction): most
        # activations (every creation) skip the query.
        if self.record.get("send_at") is not None:
            unsent = self.conn.execute(
                "SELECT seq, target_kind, target_id, key, body, create_target FROM _outbox"
                " ORDER BY seq"
            ).fetchall()
            incarnation = float(self.record.get("incarnation") or 0.0)
            messages = [
                Outgoing(seq, incarnation, k, i, key, orjson.loads(b), bool(create))
                for seq, k, i, key, b, create in unsent
            ]
            if messages:
                self.host.post_messages(self.key, messages)

    @property
    def sockets(self) -> SocketSet:
        """This object's socket set (owned by the host)."""
        return self.host.sockets_of(self.kind, self.object_id)

    @property
    def context(self) -> Any:
        """The product's context object (see ``open_router``)."""
        return self.host.context

    def now(self) -> float:
        """Wall-clock seconds from the host's clock."""
        return self.host.clock()

    @property
    def idle(self) -> bool:
        """True when no turn runs and nothing waits in the inbox."""
        return (
            not self.busy
            and not self.reserved
            and self.send_channel.statistics().current_buffer_used == 0
        )

    @property
    def created(self) -> bool:
        """True once a committed turn has written to the object."""
        return self.record.get("created_at") is not None

    def send(self, envelope: Envelope) -> None:
        """Put an envelope in the inbox (never blocks; raises if the cell is closing)."""
        if self.closing:
            raise ActorClosedError(f"{self.kind} {self.object_id!r} is closing")
        self.send_channel.send_nowait(envelope)
        self.last_used = trio.current_time()

    def shrink(self) -> None:
        """Release the connection's cached pages (once per idle period; ~10 µs)."""
        if self.shrunk or self.conn is None:
            return
        self.shrunk = True
        try:
            self.conn.execute("PRAGMA shrink_memory")
        except sqlite3.Error:
            log.exception("shrink_memory on %s %r", self.kind, self.object_id)

    def close(self) -> None:
        """Stop taking messages; the loop finishes what is queued, then exits."""
        self.closing = True
        self.send_channel.close()

    # -- effects requested by the kind during a turn -------------------------------

    def effect(self, item: tuple[Any, ...]) -> None:
        """Record an effect of the current message (only valid inside a turn)."""
        if self._effects is None:
            raise RuntimeError("record, alarm, after_commit and delete work only inside a turn")
        self._effects.append(item)

    def send_message(
        self, kind: str, object_id: str, message: Any, key: str | None, create: bool = False
    ) -> None:
        """Write a durable message to the outbox with the current message's changes."""
        if self._effects is None:
            raise RuntimeError("send works only inside a turn")
        body = _dumps(message)
        if key is not None:
            self.conn.execute(
                "DELETE FROM _outbox WHERE target_kind = ? AND target_id = ? AND key = ?",
                (kind, object_id, key),
            )
        cursor = self.conn.execute(
            "INSERT INTO _outbox (target_kind, target_id, key, body, create_target)"
            " VALUES (?, ?, ?, ?, ?)",
            (kind, object_id, key, body, int(create)),
        )
        seq = cursor.lastrowid
        assert seq is not None
        incarnation = self.record.get("incarnation")
        if incarnation is None:
            for item in self._effects:
                if item[0] == "incarnation":
                    incarnation = item[1]
            if incarnation is None:  # this object's first message: a new outbox history
                incarnation = self.host.clock()
                self._effects.append(("incarnation", incarnation))
        # What a redelivery from the file would carry, not the caller's live object.
        outgoing = Outgoing(seq, incarnation, kind, object_id, key, orjson.loads(body), create)
        self._effects.append(("sent", outgoing))
        send_at = self.record.get("send_at")
        for item in self._effects:  # as this turn left it (a Delivered may have cleared it)
            if item[0] == "send_at":
                send_at = item[1]
        if send_at is None:
            self._effects.append(("send_at", self.host.clock()))

    def pending_alarm(self) -> float | None:
        """The alarm as set by the committed record and the current turn's effects."""
        at = self.record.get("alarm_at")
        for item in self._effects or ():
            if item[0] == "alarm":
                at = item[1]
        return at

    # -- the loop ----------------------------------------------------------------

    async def run(self) -> None:
        """Process turns until closed; never raises (supervision happens here)."""
        max_batch = self.host.config.max_batch
        try:
            async with self.receive_channel:
                while not self.host.is_broken(self.key):
                    try:
                        first = await self.receive_channel.receive()
                    except trio.EndOfChannel:
                        break
                    batch = [first]
                    while len(batch) < max_batch:
                        try:
                            batch.append(self.receive_channel.receive_nowait())
                        except (trio.WouldBlock, trio.EndOfChannel):
                            break
                    self.busy = True
                    try:
                        await self._turn(batch)
                    finally:
                        self.busy = False
                        self.shrunk = False
                        self.last_used = trio.current_time()
                    if self.closing and self.conn is None:
                        break
                    if self.crashes:
                        await self._after_crash()
        finally:
            self.closing = True
            self._fail_leftovers()
            if self.conn is not None:
                self._close_connection()
            self.host.forget(self.key, self)
            self.finished.set()

    def _fail_leftovers(self) -> None:
        error = self.host.leftover_error(self.key)
        while True:
            try:
                envelope = self.receive_channel.receive_nowait()
            except (trio.WouldBlock, trio.EndOfChannel, trio.ClosedResourceError):
                break
            envelope.fail(error)

    def _close_connection(self) -> None:
        conn, self.conn = self.conn, None  # type: ignore[assignment]
        try:
            conn.close()
        except sqlite3.Error:
            log.exception("closing %s %r", self.kind, self.object_id)
        if self.record.get("created_at") is None:
            # Activated to be created, but no message ever wrote to it: leave no file.
            self.host.delete_file(self.file)

    async def _after_crash(self) -> None:
        config = self.host.config
        if self.crashes >= config.crash_limit:
            log.error("%s %r broken after %d crashes", self.kind, self.object_id, self.crashes)
            self.host.mark_broken(self.key)
            self.close()
            return
        await trio.sleep(min(config.crash_backoff * 2 ** (self.crashes - 1), 5.0))

    async def _turn(self, batch: list[Envelope]) -> None:
        host = self.host
        conn = self.conn
        now = host.clock()
        effects: list[tuple[Any, ...]] = []
        outcomes: list[tuple[bool, Any]] = []
        wrote = crashed = False
        self._effects = effects
        self.crashed_before_commit = False
        try:
            conn.execute("BEGIN")
            deleted = False
            # A lone message needs no savepoint: on failure the whole transaction goes
            # (two statements fewer per turn; most turns are lone messages when load
            # is spread over many objects).
            lone = len(batch) == 1
            for envelope in batch:
                if deleted:
                    # The object is gone once this turn commits: later messages of the
                    # batch are answered as if they had arrived after the deletion.
                    outcomes.append((False, _not_found(self)))
                    continue
                mark = len(effects)
                changes = conn.total_changes
                if not lone:
                    conn.execute("SAVEPOINT message")
                try:
                    result = self._dispatch(envelope.message, now)
                except Exception as exc:
                    if lone:
                        conn.execute("ROLLBACK")
                        conn.execute("BEGIN")
                    else:
                        conn.execute("ROLLBACK TO message")
                        conn.execute("RELEASE message")
                    del effects[mark:]
                    if isinstance(exc, Rejected):
                        outcomes.append((False, exc))
                    else:
                        crashed = True
                        log.exception("%s %r: handler crashed", self.kind, self.object_id)
                        outcomes.append((False, _crash_error(self, exc)))
                        if isinstance(envelope.message, AlarmDue):
                            self._retry_alarm(now)
                    continue
                if not lone:
                    conn.execute("RELEASE message")
                outcomes.append((True, result))
                wrote = wrote or conn.total_changes != changes or len(effects) != mark
                deleted = any(item[0] == "delete" for item in effects[mark:])
            if not deleted:
                wrote = self._before_commit(effects) or wrote
            record_changes = self._record_changes(effects, wrote, now)
            if record_changes:
                write_record(conn, _encode_record(record_changes))
            if not host.may_commit():
                raise _FencedError(f"{self.kind} {self.object_id!r}: this node may not commit now")
            committing = time.perf_counter()
            conn.execute("COMMIT")
            host.record_commit(time.perf_counter() - committing)
            if self.unsettled:
                host.settle_file(conn)
                self.unsettled = False
        except _FencedError as exc:
            # Not a crash: nothing was wrong with the turn, only this node's right to write.
            conn.execute("ROLLBACK")
            log.warning("%s", exc)
            for envelope in batch:
                envelope.fail(ActorBrokenError(str(exc)))
            self._restart()  # the handlers' in-memory changes go with the rollback
            return
        except Exception as exc:
            self._effects = None
            log.exception("%s %r: turn failed to commit", self.kind, self.object_id)
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            error = _crash_error(self, exc)
            for envelope in batch:
                envelope.fail(error)
            self.crashes += 1
            host.record_restart()
            self._restart()
            return
        finally:
            self._effects = None
        crashed = crashed or self.crashed_before_commit
        host.record_turn(len(batch))
        previous = self.record
        self.record = {**previous, **record_changes}
        sent = [item[1] for item in effects if item[0] == "sent"]
        if sent:
            host.post_messages(self.key, sent)
        await self._publish(previous, effects, record_changes)
        for callback in (item[1] for item in effects if item[0] == "after"):
            try:
                callback()
            except Exception:
                log.exception("%s %r: after_commit callback failed", self.kind, self.object_id)
        for envelope, (ok, value) in zip(batch, outcomes, strict=True):
            if ok:
                envelope.resolve(value)
            else:
                envelope.fail(value)
        if crashed:
            self.crashes += 1
            host.record_restart()
            self._restart()
        else:
            self.crashes = 0

    def _before_commit(self, effects: list[tuple[Any, ...]]) -> bool:
        """Run the turn's ``before_commit`` callbacks (each distinct one once); True if
        they wrote. One that raises is rolled back alone and counts as a crash."""
        callbacks: list[Any] = []
        for item in effects:
            if item[0] == "before" and item[1] not in callbacks:
                callbacks.append(item[1])
        if not callbacks:
            return False
        conn = self.conn
        wrote = False
        for callback in callbacks:
            mark, changes = len(effects), conn.total_changes
            conn.execute("SAVEPOINT before_commit")
            try:
                callback()
            except Exception:
                conn.execute("ROLLBACK TO before_commit")
                del effects[mark:]
                self.crashed_before_commit = True
                log.exception("%s %r: before_commit callback crashed", self.kind, self.object_id)
            conn.execute("RELEASE before_commit")
            wrote = wrote or conn.total_changes != changes or len(effects) != mark
        return wrote

    def _dispatch(self, message: Any, now: float) -> Any:
        if isinstance(message, AlarmDue):
            at = self.pending_alarm()
            if at is None:
                return False
            if at > now:
                # Woken early (the registry's copy may lag behind the file): re-arm.
                self.host.schedule_alarm(self.kind, self.object_id, at)
                return False
            self.effect(("alarm", None))
            self.instance.alarm()
            self.alarm_failures = 0
            return True
        if isinstance(message, Incoming):
            return self._receive(message)
        if isinstance(message, Delivered):
            if message.incarnation != self.record.get("incarnation"):
                return None  # acknowledges an earlier incarnation's rows, not these
            self.conn.execute("DELETE FROM _outbox WHERE seq <= ?", (message.through,))
            if self.conn.execute("SELECT 1 FROM _outbox LIMIT 1").fetchone() is None:
                self.effect(("send_at", None))
            return None
        return self.instance.handle(message)

    def _receive(self, message: Incoming) -> bool:
        """Apply a durable message once: the inbox keeps the last seq per sender."""
        sender = message.sender
        row = self.conn.execute(
            "SELECT incarnation, seq FROM _inbox WHERE sender_kind = ? AND sender_id = ?",
            (sender.kind, sender.id),
        ).fetchone()
        if row is not None and (row[0], row[1]) >= (message.incarnation, message.seq):
            # Delivered again after a crash or a lost acknowledgement, or from an
            # earlier incarnation of the sender (deleted and made again since).
            return False
        changes, effects = self.conn.total_changes, len(self._effects or ())
        self.instance.receive(sender, message.body)
        if not self.created and (
            self.conn.total_changes == changes and len(self._effects or ()) == effects
        ):
            return False  # activated for it (create), created nothing: leave no trace
        self.conn.execute(
            "INSERT INTO _inbox (sender_kind, sender_id, incarnation, seq) VALUES (?, ?, ?, ?)"
            " ON CONFLICT (sender_kind, sender_id)"
            " DO UPDATE SET incarnation = excluded.incarnation, seq = excluded.seq",
            (sender.kind, sender.id, message.incarnation, message.seq),
        )
        return True

    def _retry_alarm(self, now: float) -> None:
        # Outside the failed savepoint: committed with the rest of the turn.
        self.alarm_failures += 1
        delay = min(self.host.config.alarm_retry_base * 2 ** (self.alarm_failures - 1), 300.0)
        self.effect(("alarm", now + delay))

    def _record_changes(
        self, effects: list[tuple[Any, ...]], wrote: bool, now: float
    ) -> dict[str, Any]:
        changes: dict[str, Any] = {}
        for item in effects:
            if item[0] == "record":
                changes.update(item[1])
            elif item[0] == "alarm":
                changes["alarm_at"] = item[1]
            elif item[0] in ("send_at", "incarnation"):
                changes[item[0]] = item[1]
        created_at = changes.pop("created_at", None)
        changes = {k: v for k, v in changes.items() if self.record.get(k) != v}
        if not (changes or wrote):
            return {}
        if self.record.get("created_at") is None:
            created_at = now if created_at is None else created_at
            changes.update(kind=self.kind, id=self.object_id, created_at=created_at)
        changes["updated_at"] = now
        return changes

    async def _publish(
        self,
        previous: dict[str, Any],
        effects: list[tuple[Any, ...]],
        changes: dict[str, Any],
    ) -> None:
        """After commit: deletion, registry row, alarm schedule."""
        host = self.host
        if any(item[0] == "delete" for item in effects):
            self._close_connection()
            host.delete_file(self.file)
            host.schedule_alarm(self.kind, self.object_id, None)
            self.record = {}
            self.close()
            await host.delete_row(self.kind, self.object_id)
            return
        if not changes:
            return
        alarm_at = self.record.get("alarm_at")
        if "alarm_at" in changes:
            host.schedule_alarm(self.kind, self.object_id, alarm_at)
        durable = (
            previous.get("created_at") is None
            or "owner" in changes
            or "status" in changes
            or any(item[0] == "record" and item[2] for item in effects)
        )
        if alarm_at is not None and (
            not self.registry_alarm_known
            or self.registry_alarm is None
            or alarm_at < self.registry_alarm
        ):
            # The registry may never hold a later alarm than the file, or a restart
            # would miss it. A later one may lag: waking early is harmless.
            durable = True
        row = _row(self.kind, self.record, self.file.name)
        if durable:
            await host.write_row(row)
        else:
            host.stage_row(row)
        self.registry_alarm_known = True
        self.registry_alarm = alarm_at

    def _restart(self) -> None:
        """Reload the instance from the file (reopening it if the connection failed)."""
        try:
            if self.conn is None or not _connection_ok(self.conn):
                if self.conn is not None:
                    self.conn.close()
                self.conn = self.host.open_file(self.file)
            self.load()
        except (StorageError, sqlite3.Error, Exception):
            log.exception("%s %r: restart failed", self.kind, self.object_id)
            self.host.mark_broken(self.key)
            self.close()


class _FencedError(Exception):
    """The host refused the commit (actors/remote.py: ``may_commit``)."""


def _not_found(cell: Cell) -> ObjectNotFoundError:
    return ObjectNotFoundError(f"{cell.kind} {cell.object_id!r} does not exist")


def _crash_error(cell: Cell, exc: BaseException) -> ActorCrashedError:
    error = ActorCrashedError(f"{cell.kind} {cell.object_id!r}: {type(exc).__name__}: {exc}")
    error.__cause__ = exc
    return error


def _connection_ok(conn: sqlite3.Connection) -> bool:
    try:
        conn.execute("SELECT 1 FROM _object LIMIT 1").fetchall()
    except sqlite3.Error:
        return False
    return True


def _decode_record(record: dict[str, Any]) -> dict[str, Any]:
    if isinstance(record.get("summary"), str):
        return {**record, "summary": orjson.loads(record["summary"])}
    return record


def _encode_record(changes: dict[str, Any]) -> dict[str, Any]:
    if "summary" in changes and changes["summary"] is not None:
        return {**changes, "summary": _dumps(changes["summary"])}
    return changes


def _dumps(value: Any) -> str:
    """Compact JSON; orjson, or the standard library for what orjson refuses (big ints)."""
    try:
        return orjson.dumps(value).decode()
    except TypeError:
        return json.dumps(value, separators=(",", ":"))


def _row(kind: str, record: dict[str, Any], file: str | None) -> ObjectRow:
    return ObjectRow(
        kind=kind,
        id=record["id"],
        owner=record.get("owner"),
        status=record.get("status"),
        progress=record.get("progress"),
        created_at=record["created_at"],
        updated_at=record["updated_at"],
        alarm_at=wake_time(record),
        summary=record.get("summary"),
        file=file,
    )


def broken_error(cell_kind: str, object_id: str) -> ActorBrokenError:
    """The error callers get for a broken object."""
    return ActorBrokenError(f"{cell_kind} {object_id!r} is unavailable")
