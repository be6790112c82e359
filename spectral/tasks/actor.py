"""The Task object: one actor per task, its state and history in its own SQLite file.

Theory of operation
-------------------
The actor holds the task's :class:`~spectral.tasks.state.TaskState` in memory and
in its file (table ``task``, one row; ``events``, the history). A mutation runs
the pure state machine, writes the new state and the appended event in the
turn's transaction, re-arms the task's one alarm (heartbeat timeout or
retention), updates the registry record, and registers an ``after_commit``
broadcast: watchers hear of the change only once it is committed. In-memory
state changes last, so a refused or crashed message leaves it untouched.

A watch attaches its watcher from an ``after_commit`` callback of its own
message: callbacks run in message order after the commit, so the watcher gets
exactly the broadcasts of the messages that come after the snapshot it was given
— no gap and no duplicate, whatever else the turn's batch held.

Every message carries the caller's owner (``None`` for an admin). A task of
another owner answers exactly like a missing one.
"""

from __future__ import annotations

import json
import secrets
import sqlite3
from collections import deque
from dataclasses import dataclass
from typing import Any, NamedTuple

from actors import CLOSE_NORMAL, Actor, Address, CloseReason, Migration, Rejected, Watcher
from spectral import wire
from spectral.tasks import tree
from spectral.tasks.events import EVENT_TYPES, EventBus, TaskEvent
from spectral.tasks.state import (
    Cancel,
    Command,
    Complete,
    ComputedProgressError,
    Create,
    Event,
    EventType,
    Fail,
    InvalidCommandError,
    Log,
    Progress,
    Status,
    TaskExistsError,
    TaskNotFoundError,
    TaskState,
    TaskStateError,
    TaskTerminalError,
    TimeOut,
    apply,
)

KIND = "task"
#: Events kept per task, oldest dropped first (docs/api.md, "Tasks").
HISTORY_CAP = 10_000
#: Events in ``latestHistory`` answers (newest first).
LATEST = 10

MIGRATIONS = (
    Migration(
        1,
        """
        CREATE TABLE task (
            id INTEGER PRIMARY KEY CHECK (id = 1),
            state TEXT NOT NULL,
            metadata TEXT NOT NULL
        );
        CREATE TABLE events (
            seq INTEGER PRIMARY KEY,
            event_type TEXT NOT NULL,
            message TEXT NOT NULL,
            progress REAL,
            metadata TEXT,
            timestamp REAL NOT NULL
        );
        """,
    ),
    # Idempotency records, written in the transaction of the change they answer.
    Migration(
        2,
        """
        CREATE TABLE idempotency (
            key TEXT PRIMARY KEY,
            fingerprint TEXT NOT NULL,
            answer TEXT NOT NULL,
            created_at REAL NOT NULL
        ) WITHOUT ROWID;
        CREATE INDEX idempotency_by_age ON idempotency (created_at);
        """,
    ),
    # Tags (a JSON array) and the external id, set at creation and never changed. A file
    # made before this migration gets NULLs: a task without tags or external id.
    Migration(
        3,
        """
        ALTER TABLE task ADD COLUMN tags TEXT;
        ALTER TABLE task ADD COLUMN external_id TEXT;
        """,
    ),
    # Task trees (spectral/tasks/tree.py): the task's place in its tree (JSON, set at
    # creation; NULL: a root of weight 1) and, for a parent, its children's last
    # reports (``removed``: detached for good, later reports ignored).
    Migration(
        4,
        """
        ALTER TABLE task ADD COLUMN tree TEXT;
        CREATE TABLE children (
            id TEXT PRIMARY KEY,
            seq INTEGER NOT NULL,
            weight REAL NOT NULL,
            status TEXT NOT NULL,
            progress REAL NOT NULL,
            error TEXT,
            epoch TEXT NOT NULL DEFAULT '',
            removed INTEGER NOT NULL DEFAULT 0
        ) WITHOUT ROWID;
        """,
    ),
)
#: How long an idempotency record is kept in the task's file (docs/api.md, "Idempotency").
IDEMPOTENCY_SECONDS = 24 * 3600

#: Live watcher message type per command.
_LIVE_TYPES: dict[type, str] = {
    Create: "event",
    Progress: "progress",
    Log: "event",
    Complete: "complete",
    Fail: "fail",
    Cancel: "cancel",
    TimeOut: "timeout",
}


class IdempotencyConflictError(TaskStateError):
    """The Idempotency-Key was already used on this task with another request."""

    code = "IDEMPOTENCY_KEY_REUSED"
    status = 422


#: The refusals a batch's record may hold, by code.
_REFUSALS: dict[str, type[TaskStateError]] = {
    cls.code: cls
    for cls in (TaskNotFoundError, TaskExistsError, TaskTerminalError, ComputedProgressError)
}


def _refusal_json(error: TaskStateError) -> dict[str, Any]:
    """A refused batch item as its record keeps it."""
    return {"code": error.code, "message": str(error), "field": getattr(error, "field", None)}


def _refusal(stored: dict[str, Any]) -> TaskStateError:
    """A refused batch item from its record."""
    if stored["code"] == InvalidCommandError.code:
        return InvalidCommandError(stored["field"], stored["message"].split(": ", 1)[-1])
    return _REFUSALS.get(stored["code"], TaskStateError)(stored["message"])


class TaskRejected(Rejected):
    """A task message refused by the state machine or by ownership; wraps the reason."""

    def __init__(self, reason: TaskStateError) -> None:
        super().__init__(str(reason))
        self.reason = reason


# -- messages ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Mutate:
    """Apply a state-machine command (once per ``idempotency`` (stored key, fingerprint))."""

    command: Command
    owner: str | None = None
    idempotency: tuple[str, str] | None = None


@dataclass(frozen=True, slots=True)
class MutateEach:
    """Apply ``commands`` in order in one turn, each on its own (a batch's items of one task).

    Answers one outcome per command: its :class:`Mutation`, or the
    :class:`~spectral.tasks.state.TaskStateError` that refused it (the others still apply).
    With ``idempotency`` (stored key, fingerprint) the outcomes are recorded in the
    task's file in the same commit, so a repeat is answered from them, never applied
    again, even if the batch's own record never reached the registry.
    """

    commands: tuple[Command, ...]
    owner: str | None = None
    idempotency: tuple[str, str] | None = None


@dataclass(frozen=True, slots=True)
class Read:
    """Answer the current task."""

    owner: str | None = None


@dataclass(frozen=True, slots=True)
class ReadHistory:
    """Answer events with ``after < seq <= upto``, oldest first, at most ``limit``."""

    after: int = 0
    limit: int = 50
    upto: int | None = None
    owner: str | None = None


@dataclass(frozen=True, slots=True)
class Watch:
    """Attach ``watcher`` after this turn's commit; answer where its replay starts."""

    #: None: only answer where a watcher would start (a watcher on another node).
    watcher: Watcher | None
    since: int | None = None
    epoch: str | None = None
    owner: str | None = None


@dataclass(frozen=True, slots=True)
class Detach:
    """Remove a child from this parent for good (before the child's deletion)."""

    child_id: str
    owner: str | None = None


@dataclass(frozen=True, slots=True)
class Remove:
    """Delete the task: its file, its registry row; watchers get ``deleted`` and 1000."""

    owner: str | None = None


# -- answers -------------------------------------------------------------------------


class Mutation(NamedTuple):
    """What a committed mutation answers (a named tuple: a batch makes one per item)."""

    task: dict[str, Any]
    event: dict[str, Any]
    latest_history: list[dict[str, Any]]
    #: When the answer was first given, if this one is a repeat served from its record.
    replayed_at: float | None = None


@dataclass(frozen=True, slots=True)
class History:
    """A page of history."""

    events: list[Event]
    next_after: int | None


@dataclass(frozen=True, slots=True)
class WatchStart:
    """Where a new watcher starts: replay ``(since, snapshot.seq]`` then the snapshot."""

    snapshot: TaskState
    replay_after: int | None
    recovered: bool


# -- the actor -----------------------------------------------------------------------


class Task(Actor):
    """One task (see the module docstring)."""

    kind = KIND
    migrations = MIGRATIONS
    #: Tasks are created often: their files come from a pool (see storage/pool.py).
    pooled = True
    history_cap = HISTORY_CAP

    state: TaskState | None
    #: The last events' JSON shapes, oldest first (for ``latestHistory``).
    recent: deque[dict[str, Any]]

    def load(self) -> None:
        """Read the state and the last events from the file."""
        row = self.db.execute(
            "SELECT state, metadata, tags, external_id, tree FROM task WHERE id = 1"
        ).fetchone()
        rows = self.db.execute(
            "SELECT id, seq, weight, status, progress, error, epoch, removed FROM children"
        ).fetchall()
        self.family = tree.Family(
            (tree.Report(*r[:7]) for r in rows if not r[7]),
            ((r[0], r[6] or None) for r in rows if r[7]),
        )
        self.state = None if row is None else _state_from_row(*row, len(self.family))
        rows = self.db.execute(
            f"SELECT {_EVENT_COLUMNS} FROM events ORDER BY seq DESC LIMIT ?",
            (min(LATEST, self.history_cap),),
        ).fetchall()
        # Never more than history keeps: latestHistory is a view of history.
        self.recent = deque(
            (wire.event_json(_event_from_row(r)) for r in reversed(rows)),
            maxlen=min(LATEST, self.history_cap),
        )

    def handle(self, message: Any) -> Any:
        """Dispatch one message."""
        try:
            match message:
                case Mutate():
                    return self._mutate(message.command, message.owner, message.idempotency)
                case MutateEach():
                    return self._mutate_each(message.commands, message.owner, message.idempotency)
                case Read():
                    return wire.task_json(self._visible(message.owner))
                case ReadHistory():
                    self._visible(message.owner)
                    return self._history(message.after, message.limit, message.upto)
                case Watch():
                    return self._watch(message)
                case Remove():
                    return self._remove(self._visible(message.owner))
                case Detach():
                    self._visible(message.owner)
                    return self._detach(message.child_id)
        except TaskStateError as error:
            raise TaskRejected(error) from None
        raise TypeError(f"not a task message: {message!r}")

    def receive(self, sender: Address, message: Any) -> None:
        """A child's report (spectral/tasks/tree.py): keep it, then roll up."""
        if sender.kind != KIND:
            return
        if "create" in message:  # a phase: its parent made it (see _spawn)
            if self.state is not None:
                raise TaskRejected(TaskExistsError(f"task {self.id!r} already exists"))
            spec = message["create"]
            command = Create(
                task_id=self.id,
                owner=spec["owner"],
                epoch=secrets.token_hex(8),
                metadata={} if spec.get("name") is None else {"name": spec["name"]},
                parent_id=sender.id,
                weight=spec["weight"],
                depth=spec["depth"],
            )
            self._mutate(command, None)
            return
        if self.state is None:
            return
        if "removed" in message:  # a child deleted itself (its retention ran out)
            self._detach(str(message["removed"]), message.get("epoch"))
            return
        report = tree.Report.from_json(message)
        if not self.family.apply(report):
            return
        self.db.execute(
            "INSERT OR REPLACE INTO children (id, seq, weight, status, progress, error, epoch)"
            " VALUES (?, ?, ?, ?, ?, ?, ?)",
            (report.child_id, report.seq, report.weight, report.status, report.progress,
             report.error, report.epoch),
        )  # fmt: skip
        self.before_commit(self._roll_up_once)  # once for the whole turn

    def _roll_up_once(self) -> None:
        """Roll up once after a turn's children's reports (many reports, one event)."""
        if self.state is not None:
            self._roll_up()

    def _detach(self, child_id: str, epoch: str | None = None) -> bool:
        """Remove a child (of ``epoch``, if given) from the mean for good."""
        if self.state is None:
            return False
        removed = self.family.remove(child_id, epoch)
        if child_id in self.family.children:
            return False  # another epoch of the child (made again since): it stays
        gone = self.family.removed.get(child_id)
        self.db.execute(
            "INSERT INTO children (id, seq, weight, status, progress, epoch, removed)"
            " VALUES (?, 0, 0, '', 0, ?, 1)"
            " ON CONFLICT (id) DO UPDATE SET removed = 1, epoch = excluded.epoch",
            (child_id, gone or ""),
        )
        self._roll_up()
        return removed

    def _roll_up(self) -> None:
        """Count the children and apply what they imply (a command, or only the count)."""
        state = self.state
        assert state is not None
        count = len(self.family)
        if state.child_count != count:
            counted = tree.with_child_count(state, count)
            self._write(counted, [], metadata_changed=False)
            self._record_state(state, counted, wire.task_json(counted))
            self.state = counted
        command = tree.rollup(self.state, self.family)
        if command is not None:
            self._mutate(command, None, computed=True)

    def alarm(self) -> None:
        """Heartbeat timeout (fail "timed out") or retention (delete), whichever is due."""
        state = self.state
        if state is None:
            return
        now = self.now()
        retention = state.retention_deadline()
        if retention is not None and retention <= now:
            self._remove(state)
            return
        heartbeat = state.heartbeat_deadline()
        if heartbeat is not None and heartbeat <= now:
            self._mutate(TimeOut(), None)
            return
        self.set_alarm(_next_alarm(state))

    # -- mutations ---------------------------------------------------------------------

    def _mutate(
        self,
        command: Command,
        owner: str | None,
        idempotency: tuple[str, str] | None = None,
        *,
        computed: bool = False,
    ) -> Mutation:
        if not isinstance(command, Create):
            self._visible(owner)
            if not computed:
                self._not_computed(command)
        if idempotency is not None and self.state is not None:
            replay = self._recorded(*idempotency)
            if replay is not None:
                return replay
        now = self.now()
        previous = self.state
        new, event = apply(previous, command, now)
        metadata_changed = previous is None or new.metadata is not previous.metadata
        self._write(new, [event], metadata_changed=metadata_changed)
        self._report(previous, new)
        if isinstance(command, Create) and command.phases:
            self._spawn(new, command.phases)
        self.set_alarm(_next_alarm(new))
        changes = self._changes([(command, new, event)], now)
        [(task, event_body, _, _)] = changes
        self._record_state(previous, new, task)
        self._notify(changes, now)
        latest = [event_body, *reversed(self.recent)][: self.recent.maxlen]
        answer = Mutation(task=task, event=event_body, latest_history=latest)
        if idempotency is not None:
            self._record(*idempotency, answer, now)
        # Last: in-memory state changes only once nothing above can fail.
        self.state = new
        self.recent.append(event_body)
        return answer

    def _mutate_each(
        self,
        commands: tuple[Command, ...],
        owner: str | None,
        idempotency: tuple[str, str] | None = None,
    ) -> list[Mutation | TaskStateError]:
        """Apply ``commands`` in order with one write for them all (a batch's items).

        A refused command changes nothing (``apply`` raises before anything is
        written) and the next ones apply to the state as it is. Each answer is the
        task right after its command (no ``latestHistory``: a batch answers tasks).
        """
        first = self._visible(owner)  # not there (or not yours): every item is refused
        if idempotency is not None:
            replay = self._recorded_each(*idempotency)
            if replay is not None:
                return replay
        now = self.now()
        outcomes: list[Mutation | TaskStateError | None] = []
        applied: list[tuple[Command, TaskState, Event]] = []
        state = first
        for command in commands:
            try:
                self._not_computed(command)
                state, event = apply(state, command, now)
            except TaskStateError as error:
                outcomes.append(error)
                continue
            outcomes.append(None)  # filled in below, in order
            applied.append((command, state, event))
        if not applied:
            return [o for o in outcomes if o is not None]
        metadata_changed = any(new.metadata is not first.metadata for _, new, _ in applied)
        self._write(state, [event for _, _, event in applied], metadata_changed=metadata_changed)
        self._report(first, state)
        self.set_alarm(_next_alarm(state))
        changes = self._changes(applied, now)
        self._record_state(first, state, changes[-1][0])
        self._notify(changes, now)
        answers = iter(Mutation(task, body, []) for task, body, _, _ in changes)
        result = [next(answers) if o is None else o for o in outcomes]
        if idempotency is not None:
            self._record_each(*idempotency, result, now)
        self.state = state
        self.recent.extend(body for _, body, _, _ in changes)
        return result

    def _spawn(self, state: TaskState, phases: Any) -> None:
        """Make one child per phase: durable messages from this creation's turn, so a
        crash right after it still makes them (each child creates itself on receipt)."""
        for phase in phases:
            spec = {
                "owner": state.owner,
                "weight": phase.get("weight", 1),
                "name": phase.get("name"),
                "depth": state.depth + 1,
            }
            child_id = f"{state.task_id}:{phase['id']}"
            self.send(KIND, child_id, {"create": spec}, create=True)

    def _not_computed(self, command: Command) -> None:
        """Refuse progress on a task whose children compute it."""
        if self.family and (
            isinstance(command, Progress)
            or (isinstance(command, Log) and command.progress is not None)
        ):
            raise ComputedProgressError(
                "progress: this task's progress is computed from its children"
            )

    def _report(self, previous: TaskState | None, new: TaskState) -> None:
        """Tell the parent (a durable message with this turn's changes), if it must hear."""
        if tree.reports_change(previous, new):
            assert new.parent_id is not None
            body = tree.report_of(new).to_json()
            self.send(KIND, new.parent_id, body, key=tree.REPORT_KEY)

    def _changes(
        self, applied: list[tuple[Command, TaskState, Event]], now: float
    ) -> list[tuple[dict[str, Any], dict[str, Any], str, TaskEvent]]:
        """Per applied command: the task and event as JSON, the watchers' message type
        and the bus event."""
        changes = []
        for command, new, event in applied:
            task, event_body = wire.task_json(new), wire.event_json(event)
            live_type = _LIVE_TYPES[type(command)]
            published = TaskEvent(
                owner=new.owner,
                task_id=new.task_id,
                seq=new.seq,
                event_type=EVENT_TYPES["created" if isinstance(command, Create) else live_type],
                timestamp=now,
                task=task,
                event=event_body,
            )
            changes.append((task, event_body, live_type, published))
        return changes

    def _record_state(
        self, previous: TaskState | None, new: TaskState, task: dict[str, Any]
    ) -> None:
        record: dict[str, Any] = {"progress": new.progress, "summary": task}
        if previous is None or previous.status is not new.status:
            record["status"] = new.status.value
        if previous is None:
            record["owner"] = new.owner
            record["created_at"] = new.created_at  # listings filter by the task's createdAt
        self.update_record(**record)

    def _notify(
        self, changes: list[tuple[dict[str, Any], dict[str, Any], str, TaskEvent]], now: float
    ) -> None:
        """After the commit: the watchers' messages, then the bus events, in order.

        A message is encoded only if someone watches (a batch to unwatched tasks
        encodes nothing for watchers).
        """
        sockets = self.sockets
        bus = self._bus()
        tap = None if bus is None else bus.live

        def notify() -> None:
            if tap is not None:
                for task, event_body, live_type, _ in changes:
                    outgoing = wire.live_message(live_type, task, event_body, now)
                    sockets.broadcast(outgoing)
                    tap(KIND, task["taskId"], outgoing, task["epoch"])
            elif len(sockets):
                for task, event_body, live_type, _ in changes:
                    sockets.broadcast(wire.live_message(live_type, task, event_body, now))
            if bus is not None:
                for change in changes:
                    bus.publish(change[3])

        self.after_commit(notify)

    def _stored(self, key: str, fingerprint: str, shape: str) -> tuple[Any, float] | None:
        """The record kept for ``key`` (its answer, when it was made), if any; raises if
        it was made for another request or holds another ``shape`` of answer."""
        row = self.db.execute(
            "SELECT fingerprint, answer, created_at FROM idempotency"
            " WHERE key = ? AND created_at > ?",
            (key, self.now() - IDEMPOTENCY_SECONDS),
        ).fetchone()
        if row is None:
            return None
        stored = json.loads(row[1])
        if row[0] != fingerprint or shape not in stored:  # another request (or a batch's)
            raise IdempotencyConflictError(
                "this Idempotency-Key was already used with a different request"
            )
        return stored, row[2]

    def _recorded(self, key: str, fingerprint: str) -> Mutation | None:
        found = self._stored(key, fingerprint, "task")
        if found is None:
            return None
        stored, at = found
        return Mutation(stored["task"], stored["event"], stored["latestHistory"], at)

    def _recorded_each(self, key: str, fingerprint: str) -> list[Mutation | TaskStateError] | None:
        """A batch's outcomes for this task, if this key was recorded here."""
        found = self._stored(key, fingerprint, "outcomes")
        if found is None:
            return None
        stored, at = found
        return [
            Mutation(item["task"], {}, [], at) if "task" in item else _refusal(item)
            for item in stored["outcomes"]
        ]

    def _record_each(
        self, key: str, fingerprint: str, outcomes: list[Mutation | TaskStateError], now: float
    ) -> None:
        stored = {
            "outcomes": [
                {"task": o.task} if isinstance(o, Mutation) else _refusal_json(o) for o in outcomes
            ]
        }
        self._store_record(key, fingerprint, stored, now)

    def _record(self, key: str, fingerprint: str, answer: Mutation, now: float) -> None:
        stored = {
            "task": answer.task,
            "event": answer.event,
            "latestHistory": answer.latest_history,
        }
        self._store_record(key, fingerprint, stored, now)

    def _store_record(self, key: str, fingerprint: str, stored: Any, now: float) -> None:
        self.db.execute(
            "INSERT OR REPLACE INTO idempotency (key, fingerprint, answer, created_at)"
            " VALUES (?, ?, ?, ?)",
            (key, fingerprint, _json(stored), now),
        )
        self.db.execute(
            "DELETE FROM idempotency WHERE created_at <= ?", (now - IDEMPOTENCY_SECONDS,)
        )

    def _write(self, state: TaskState, events: list[Event], *, metadata_changed: bool) -> None:
        """The task's state after ``events``, and the events appended to history."""
        db = self.db
        if self.state is None:
            db.execute(
                "INSERT INTO task (id, state, metadata, tags, external_id, tree)"
                " VALUES (1, ?, ?, ?, ?, ?)",
                (
                    _state_row(state),
                    _json(state.metadata),
                    _json(list(state.tags)),
                    state.external_id,
                    _tree_row(state),
                ),
            )
        elif metadata_changed:
            db.execute(
                "UPDATE task SET state = ?, metadata = ? WHERE id = 1",
                (_state_row(state), _json(state.metadata)),
            )
        else:
            db.execute("UPDATE task SET state = ? WHERE id = 1", (_state_row(state),))
        db.executemany(
            f"INSERT INTO events ({_EVENT_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?)",
            [
                (
                    event.seq,
                    event.event_type.value,
                    event.message,
                    event.progress,
                    None if event.metadata is None else _json(event.metadata),
                    event.timestamp,
                )
                for event in events
            ],
        )
        if not events:
            return
        last = events[-1].seq
        if last > self.history_cap:
            db.execute("DELETE FROM events WHERE seq <= ?", (last - self.history_cap,))

    def _remove(self, state: TaskState) -> bool:
        now = self.now()
        self.delete()
        if state.parent_id is not None:
            # A DELETE detached it already (synchronously, durably); a deletion by
            # retention tells the parent here (sent from the deleting turn: a crash at
            # that instant loses it, and the parent keeps counting its last report).
            body = {"removed": state.task_id, "epoch": state.epoch}
            self.send(KIND, state.parent_id, body)
        outgoing = wire.deleted_message(state.task_id, state.seq + 1, now)
        sockets = self.sockets
        published = TaskEvent(state.owner, state.task_id, state.seq + 1, "deleted", now, None, None)
        bus = self._bus()
        tap = None if bus is None else bus.live
        epoch = state.epoch

        def notify() -> None:
            sockets.broadcast(outgoing)
            sockets.close_all(CloseReason(CLOSE_NORMAL, "task deleted"))
            if tap is not None:
                tap(KIND, state.task_id, outgoing, epoch)
            if bus is not None:
                bus.publish(published)

        self.after_commit(notify)
        return True

    def _bus(self) -> EventBus | None:
        context = self.context
        return context if isinstance(context, EventBus) else None

    # -- reads ---------------------------------------------------------------------------

    def _visible(self, owner: str | None) -> TaskState:
        state = self.state
        if state is None or (owner is not None and state.owner != owner):
            raise TaskNotFoundError("task not found")
        return state

    def _history(self, after: int, limit: int, upto: int | None) -> History:
        assert self.state is not None
        upto = self.state.seq if upto is None else upto
        rows = self.db.execute(
            f"SELECT {_EVENT_COLUMNS} FROM events WHERE seq > ? AND seq <= ? ORDER BY seq LIMIT ?",
            (after, upto, limit + 1),
        ).fetchall()
        events = [_event_from_row(r) for r in rows[:limit]]
        next_after = events[-1].seq if len(rows) > limit else None
        return History(events, next_after)

    def _watch(self, message: Watch) -> WatchStart:
        state = self._visible(message.owner)
        replay_after: int | None = None
        recovered = False
        # Without an epoch (e.g. a browser's EventSource resuming) the seq alone is trusted.
        if message.since is not None and message.epoch in (None, state.epoch):
            oldest = self._oldest_seq()
            if 0 <= message.since <= state.seq and (
                message.since >= state.seq or (oldest is not None and oldest <= message.since + 1)
            ):
                recovered = True
                replay_after = message.since if message.since < state.seq else None
        watcher = message.watcher
        if watcher is not None:  # None: a watcher on another node asks where to start
            sockets = self.sockets
            self.after_commit(lambda: sockets.attach(watcher))
        return WatchStart(state, replay_after, recovered)

    def _oldest_seq(self) -> int | None:
        row = self.db.execute("SELECT min(seq) FROM events").fetchone()
        return None if row is None else row[0]


# -- persistence helpers ----------------------------------------------------------------

_EVENT_COLUMNS = "seq, event_type, message, progress, metadata, timestamp"
_STATE_FIELDS = (
    "task_id",
    "owner",
    "epoch",
    "status",
    "progress",
    "error",
    "seq",
    "created_at",
    "updated_at",
    "started_at",
    "completed_at",
    "failed_at",
    "canceled_at",
    "timeout_seconds",
    "ttl_seconds",
)


def _json(value: Any) -> str:
    return wire.dumps(value)


def _state_row(state: TaskState) -> str:
    return _json([getattr(state, name) for name in _STATE_FIELDS])


#: The tree fields a task's ``tree`` column holds (NULL: a root, all defaults).
_TREE_FIELDS = ("parent_id", "weight", "on_child_failure", "complete_with_children", "depth")


def _tree_row(state: TaskState) -> str | None:
    if (state.parent_id, state.weight, state.on_child_failure, state.depth) == (
        None,
        1.0,
        "fail",
        1,
    ) and not state.complete_with_children:
        return None
    return _json({name: getattr(state, name) for name in _TREE_FIELDS})


def _state_from_row(
    state_text: str,
    metadata_text: str,
    tags_text: str | None = None,
    external_id: str | None = None,
    tree_text: str | None = None,
    child_count: int = 0,
) -> TaskState:
    values = dict(zip(_STATE_FIELDS, json.loads(state_text), strict=True))
    values["status"] = Status(values["status"])
    tags = () if tags_text is None else tuple(json.loads(tags_text))
    if tree_text is not None:
        values.update(json.loads(tree_text))
    return TaskState(
        metadata=json.loads(metadata_text),
        tags=tags,
        external_id=external_id,
        child_count=child_count,
        **values,
    )


def _event_from_row(row: sqlite3.Row | tuple[Any, ...]) -> Event:
    seq, event_type, message, progress, metadata, timestamp = row
    return Event(
        seq=seq,
        event_type=EventType(event_type),
        message=message,
        progress=progress,
        metadata=None if metadata is None else json.loads(metadata),
        timestamp=timestamp,
    )


def _next_alarm(state: TaskState) -> float | None:
    deadlines = [d for d in (state.heartbeat_deadline(), state.retention_deadline()) if d]
    return min(deadlines) if deadlines else None
