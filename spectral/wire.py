"""JSON shapes on the wire: tasks, events and watcher messages (docs/api.md, "Tasks", "Watching").

Pure functions from the state machine's values to plain dicts, plus the
encode-once envelope that a broadcast hands to every watcher.
"""

from __future__ import annotations

import functools
import json
from datetime import UTC, datetime
from typing import Any

import orjson

from spectral.front.websocket import text_frame
from spectral.tasks.state import Event, EventType, TaskState

#: Watcher message type for each event type (replay and live use the same words).
MESSAGE_TYPES: dict[EventType, str] = {
    EventType.CREATED: "event",
    EventType.LOG: "event",
    EventType.PROGRESS: "progress",
    EventType.SUCCESS: "complete",
    EventType.ERROR: "fail",
    EventType.CANCELED: "cancel",
    EventType.TIMEOUT: "timeout",
}


def iso(timestamp: float | None) -> str | None:
    """Unix seconds → ISO-8601 UTC with milliseconds and ``Z`` (None stays None)."""
    if timestamp is None:
        return None
    # A task's timestamps repeat (a batch's items share one): remember the last few.
    text = _recent.get(timestamp)
    if text is None:
        milliseconds = int(timestamp * 1000)
        second, millis = divmod(milliseconds, 1000)
        text = f"{_second_prefix(second)}{millis:03d}Z"
        if len(_recent) >= 64:
            _recent.clear()
        _recent[timestamp] = text
    return text


_recent: dict[float, str] = {}


@functools.lru_cache(maxsize=4096)
def _second_prefix(second: int) -> str:
    # Formatting a date is slow (~3 µs); a task's timestamps repeat a few seconds.
    return datetime.fromtimestamp(second, UTC).strftime("%Y-%m-%dT%H:%M:%S.")


def task_json(state: TaskState) -> dict[str, Any]:
    """The task as clients see it (docs/api.md, "Tasks")."""
    return {
        "taskId": state.task_id,
        "status": state.status.value,
        "progress": _number(state.progress),
        "metadata": dict(state.metadata),
        "error": state.error,
        "owner": state.owner,
        "seq": state.seq,
        "epoch": state.epoch,
        "createdAt": iso(state.created_at),
        "updatedAt": iso(state.updated_at),
        "startedAt": iso(state.started_at),
        "completedAt": iso(state.completed_at),
        "failedAt": iso(state.failed_at),
        "canceledAt": iso(state.canceled_at),
        "timeoutSeconds": state.timeout_seconds,
        "ttlSeconds": state.ttl_seconds,
        "tags": list(state.tags),
        "externalId": state.external_id,
        "parentId": state.parent_id,
        "childCount": state.child_count,
        "weight": _number(state.weight),
        "onChildFailure": state.on_child_failure,
        "completeWithChildren": state.complete_with_children,
        "depth": state.depth,
    }


def event_json(event: Event) -> dict[str, Any]:
    """One history event (docs/api.md, "Tasks")."""
    return {
        "seq": event.seq,
        "eventType": event.event_type.value,
        "message": event.message,
        "progress": None if event.progress is None else _number(event.progress),
        "metadata": None if event.metadata is None else dict(event.metadata),
        "timestamp": iso(event.timestamp),
    }


def dumps(value: Any) -> str:
    """Compact JSON text (see :func:`encode`)."""
    return encode(value).decode()


def encode(value: Any) -> bytes:
    """Compact UTF-8 JSON, fast (orjson, ~10x the standard library here); integers
    beyond 64 bits (which metadata may hold, e.g. an oRPC bigint) through the standard
    library. No NaN: the models refuse it."""
    try:
        return orjson.dumps(value)
    except TypeError:
        text = json.dumps(value, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
        return text.encode()


class Outgoing:
    """A watcher message encoded once and shared by every watcher's writer.

    ``seq`` is the SSE ``id:``; ``final`` says the stream ends after it (deletion).
    :attr:`frame` (the WebSocket frame) and :attr:`sse` (the SSE record) are built on
    first use and then shared by every watcher.
    """

    __slots__ = ("_frame", "_sse", "final", "seq", "text")

    def __init__(self, seq: int, text: str, final: bool = False) -> None:
        self.seq = seq
        self.text = text
        self.final = final
        self._frame: bytes | None = None
        self._sse: bytes | None = None

    def __repr__(self) -> str:
        return f"Outgoing(seq={self.seq}, text={self.text!r}, final={self.final})"

    @property
    def frame(self) -> bytes:
        """The WebSocket text frame carrying :attr:`text`."""
        if self._frame is None:
            self._frame = text_frame(self.text.encode())
        return self._frame

    @property
    def sse(self) -> bytes:
        """The Server-Sent Events record (``id:`` = seq)."""
        if self._sse is None:
            self._sse = f"id: {self.seq}\ndata: {self.text}\n\n".encode()
        return self._sse


def live_message(
    message_type: str, task: dict[str, Any], event: dict[str, Any], timestamp: float
) -> Outgoing:
    """The message every watcher gets after a committed mutation (JSON shapes given)."""
    body: dict[str, Any] = {
        "type": message_type,
        "taskId": task["taskId"],
        "task": task,
        "event": event,
        "seq": task["seq"],
        "timestamp": iso(timestamp),
    }
    return Outgoing(task["seq"], dumps(body))


def replayed_message(task_id: str, event: Event) -> Outgoing:
    """A history event re-sent to a resuming watcher (``task`` omitted, ``replayed``)."""
    body = {
        "type": MESSAGE_TYPES[event.event_type],
        "taskId": task_id,
        "event": event_json(event),
        "seq": event.seq,
        "timestamp": iso(event.timestamp),
        "replayed": True,
    }
    return Outgoing(event.seq, dumps(body))


def snapshot_message(state: TaskState, *, recovered: bool) -> Outgoing:
    """The first live message of a watch: the current task."""
    body = {
        "type": "snapshot",
        "taskId": state.task_id,
        "task": task_json(state),
        "seq": state.seq,
        "epoch": state.epoch,
        "recovered": recovered,
    }
    return Outgoing(state.seq, dumps(body))


def deleted_message(task_id: str, seq: int, timestamp: float) -> Outgoing:
    """The last message of a deleted task's watchers."""
    body = {"type": "deleted", "taskId": task_id, "seq": seq, "timestamp": iso(timestamp)}
    return Outgoing(seq, dumps(body), final=True)


def _number(value: float) -> int | float:
    """Whole numbers as ints (``50`` rather than ``50.0``), like the original's answers."""
    return int(value) if value.is_integer() else value
