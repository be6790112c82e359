"""The alarm scheduler: wakes objects (activating them if evicted) when their alarm is due.

Each object persists at most one alarm time in its own file; the registry mirrors
it (never later than the file), so that on start-up the scheduler knows every
pending alarm without opening the files. Times are wall-clock seconds from the
router's clock; the scheduler converts them to trio deadlines when it sleeps.

Firing means sending the object an :data:`~actors.mailbox.ALARM_DUE` message; the
object checks its own alarm in that turn, runs ``alarm()`` if it is due, and
clears it in the same transaction: an alarm fires once. A failing ``alarm()``
re-arms itself with backoff (see :mod:`actors.mailbox`).
"""

from __future__ import annotations

import heapq
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import trio

from actors.errors import ActorBrokenError, ActorClosedError, ObjectNotFoundError

log = logging.getLogger("actors.alarms")

Key = tuple[str, str]

# Delay before retrying an alarm whose object could not be reached (broken, closing).
_UNREACHABLE_RETRY = 5.0


class AlarmScheduler:
    """A heap of (when, kind, id) with lazy deletion, served by one task.

    Args:
        fire: ``await fire(kind, id)`` delivers the alarm message to the object.
        clock: wall-clock seconds (the same clock the objects use).
    """

    def __init__(self, fire: Callable[[str, str], Awaitable[Any]], clock: Callable[[], float]):
        self._fire = fire
        self._clock = clock
        self._heap: list[tuple[float, str, str]] = []
        self._current: dict[Key, float] = {}
        self._changed = trio.Event()
        self.fired = 0

    def __len__(self) -> int:
        return len(self._current)

    def schedule(self, kind: str, object_id: str, when: float | None) -> None:
        """Set (or with None, clear) the alarm of one object."""
        key = (kind, object_id)
        if when is None:
            self._current.pop(key, None)
            return
        if self._current.get(key) == when:
            return
        self._current[key] = when
        heapq.heappush(self._heap, (when, kind, object_id))
        if self._heap[0][0] == when:
            self._changed.set()

    def next_due(self) -> float | None:
        """The earliest pending alarm time, or None."""
        self._drop_stale()
        return self._heap[0][0] if self._heap else None

    def _drop_stale(self) -> None:
        heap = self._heap
        while heap and self._current.get((heap[0][1], heap[0][2])) != heap[0][0]:
            heapq.heappop(heap)

    async def serve(
        self,
        nursery: trio.Nursery,
        *,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Fire due alarms until cancelled; each delivery runs as its own task in ``nursery``."""
        task_status.started()
        while True:
            due = self.next_due()
            self._changed = trio.Event()
            if due is None:
                await self._changed.wait()
                continue
            delay = due - self._clock()
            if delay > 0:
                with trio.move_on_after(delay):
                    await self._changed.wait()
                continue
            when, kind, object_id = heapq.heappop(self._heap)
            del self._current[(kind, object_id)]
            self.fired += 1
            nursery.start_soon(self._deliver, kind, object_id, when)

    async def _deliver(self, kind: str, object_id: str, when: float) -> None:
        try:
            await self._fire(kind, object_id)
        except ObjectNotFoundError:
            pass  # deleted meanwhile: its alarm died with it
        except (ActorBrokenError, ActorClosedError) as exc:
            if (kind, object_id) not in self._current:
                log.warning("alarm for %s %r not delivered (%s); retrying", kind, object_id, exc)
                self.schedule(kind, object_id, self._clock() + _UNREACHABLE_RETRY)
        except Exception:
            # The turn machinery already logged it and re-armed with backoff.
            log.debug("alarm turn for %s %r failed", kind, object_id, exc_info=True)
