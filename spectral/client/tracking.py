"""``track()``: report a piece of work as a task, with progress calls coalesced.

A worker calls ``.progress(n)`` as often as it likes; the latest value per task waits in
a :class:`Pending` table and is sent at most every ``interval`` seconds (0.25 s by
default), every task with something new in one ``batchUpdateProgress``. Leaving the
``with`` block sends what is still pending, then completes the task, or fails it with
the exception's text, or cancels it (KeyboardInterrupt, a cancelled async task). The
last progress value always arrives, and always before the end.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

#: Seconds between two flushes of coalesced progress at most.
DEFAULT_INTERVAL = 0.25
#: Items per batchUpdateProgress at most (the server's limit).
MAX_BATCH = 1000


@dataclass
class Pending:
    """The latest unsent progress per task, shared by a client's trackers (thread-safe)."""

    items: dict[str, dict[str, Any]] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def put(self, task_id: str, progress: float, message: str | None) -> None:
        """Remember ``progress`` as the task's latest (replacing an unsent one)."""
        item: dict[str, Any] = {"taskId": task_id, "progress": progress}
        if message is not None:
            item["message"] = message
        with self.lock:
            self.items[task_id] = item

    def take(self, task_id: str | None = None) -> list[dict[str, Any]]:
        """Remove and return what is pending (one task's, or up to MAX_BATCH of all)."""
        with self.lock:
            if task_id is not None:
                item = self.items.pop(task_id, None)
                return [] if item is None else [item]
            taken: list[dict[str, Any]] = []
            for key in list(self.items)[:MAX_BATCH]:
                taken.append(self.items.pop(key))
            return taken

    def batches(self) -> int:
        """``take()`` calls that empty what is pending now. A flush makes no more: a value
        put while it sends waits for the next flush, so a task reporting in a tight loop
        is still sent once per interval, not back to back."""
        with self.lock:
            return -(-len(self.items) // MAX_BATCH)

    def restore(self, items: list[dict[str, Any]]) -> None:
        """Put back items whose sending failed, unless a newer value replaced them."""
        with self.lock:
            for item in items:
                self.items.setdefault(item["taskId"], item)

    def __len__(self) -> int:
        return len(self.items)


class Tracker:
    """What ``track()`` hands the worker: report progress, log lines and metadata."""

    def __init__(
        self,
        task_id: str,
        pending: Pending,
        wake: Callable[[], None],
        send_now: Callable[[str, Mapping[str, Any]], Any],
    ) -> None:
        self.task_id = task_id
        self._pending = pending
        self._wake = wake
        self._send_now = send_now

    def progress(self, value: float, message: str | None = None) -> None:
        """Report progress 0-100 (coalesced: only the latest value per interval is sent)."""
        self._pending.put(self.task_id, value, message)
        self._wake()

    def log(self, message: str) -> Any:
        """Append a log line to the task's history now (after any pending progress)."""
        return self._send_now("log", {"message": message})

    def metadata(self, **values: Any) -> Any:
        """Merge ``values`` into the task's metadata now (after any pending progress)."""
        return self._send_now("metadata", values)


def outcome_of(exc: BaseException | None, cancelled: type[BaseException] | None = None) -> str:
    """How a ``track()`` block ended: ``complete``, ``cancel`` or ``fail``."""
    if exc is None:
        return "complete"
    if isinstance(exc, KeyboardInterrupt) or (cancelled is not None and isinstance(exc, cancelled)):
        return "cancel"
    return "fail"


def failure_text(exc: BaseException) -> str:
    """The error a failed task records: the exception's text (or its type's name)."""
    return str(exc) or type(exc).__name__


class AsyncTracker(Tracker):
    """``Tracker`` of an ``AsyncClient``: ``progress()`` is plain, ``log()`` and
    ``metadata()`` are coroutines."""

    async def log(self, message: str) -> Any:
        """Append a log line to the task's history now (after any pending progress)."""
        return await self._send_now("log", {"message": message})

    async def metadata(self, **values: Any) -> Any:
        """Merge ``values`` into the task's metadata now (after any pending progress)."""
        return await self._send_now("metadata", values)
