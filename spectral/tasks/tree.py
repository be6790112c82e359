"""Task trees, the pure part: what a child reports, and what its parent makes of it.

Theory of operation
-------------------
A child tells its parent its status and progress after every change of either,
as a durable runtime message (actors/messaging.py) keyed ``rollup``: the parent
gets the latest report at least once, applies each once, and never an older one
after a newer (the child's seq rides along and a stale report is ignored too).
The parent keeps a :class:`Family`, its children's last reports (a table in its own
file), and after each report asks :func:`rollup` which state-machine command, if
any, follows:

- a child failed or was canceled and the parent's ``onChildFailure`` is ``fail``:
  :class:`~spectral.tasks.state.Fail`, the error naming the child;
- ``completeWithChildren`` and every child finished (succeeded, or failed/canceled
  under ``ignore``): :class:`~spectral.tasks.state.Complete`;
- otherwise, if the weighted mean of the children's progress moved:
  :class:`~spectral.tasks.state.Progress` to it. A succeeded child counts 100, and so
  does a failed or canceled one under ``ignore`` (it is done; the parent can reach
  100). A terminal parent keeps counting its children but never changes.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, replace
from typing import Any

from spectral.tasks.state import Command, Complete, Fail, Progress, Status, TaskState

#: The message key of a child's reports: only the latest waits in its outbox.
REPORT_KEY = "rollup"
_FINISHED = frozenset({Status.SUCCESS.value, Status.FAILED.value, Status.CANCELED.value})
_FAILED = frozenset({Status.FAILED.value, Status.CANCELED.value})


@dataclass(frozen=True, slots=True)
class Report:
    """A child's state as its parent needs it."""

    child_id: str
    seq: int
    weight: float
    status: str
    progress: float
    error: str | None = None
    #: The child's epoch: a task deleted and made again under its id is another child.
    epoch: str = ""

    def to_json(self) -> dict[str, Any]:
        """The message body."""
        return {
            "child": self.child_id,
            "seq": self.seq,
            "weight": self.weight,
            "status": self.status,
            "progress": self.progress,
            "error": self.error,
            "epoch": self.epoch,
        }

    @classmethod
    def from_json(cls, body: dict[str, Any]) -> Report:
        """Read a message body."""
        return cls(
            child_id=str(body["child"]),
            seq=int(body["seq"]),
            weight=float(body["weight"]),
            status=str(body["status"]),
            progress=float(body["progress"]),
            error=body.get("error"),
            epoch=str(body.get("epoch", "")),
        )


def report_of(state: TaskState) -> Report:
    """What ``state`` tells its parent."""
    return Report(
        state.task_id,
        state.seq,
        state.weight,
        state.status.value,
        state.progress,
        state.error,
        state.epoch,
    )


def reports_change(previous: TaskState | None, new: TaskState) -> bool:
    """True if the parent must hear of ``new`` (created, or status or progress moved)."""
    return new.parent_id is not None and (
        previous is None or previous.status is not new.status or previous.progress != new.progress
    )


def with_child_count(state: TaskState, count: int) -> TaskState:
    """``state`` with ``count`` children (no event: the count is not a history entry)."""
    return replace(state, child_count=count)


class Family:
    """A parent's children: their last reports, and the ones removed from it (by id, with
    the epoch removed: None when it was removed before it ever reported)."""

    def __init__(
        self, reports: Iterable[Report] = (), removed: Iterable[tuple[str, str | None]] = ()
    ) -> None:
        self.children: dict[str, Report] = {r.child_id: r for r in reports}
        self.removed: dict[str, str | None] = dict(removed)

    def __len__(self) -> int:
        return len(self.children)

    def apply(self, report: Report) -> bool:
        """Take a report; False if it is stale or its child was removed.

        A report of another epoch than the removed (or known) child's is a new task
        made under the same id: it is taken, from its seq 1.
        """
        child_id = report.child_id
        if child_id in self.removed:
            gone = self.removed[child_id]
            if gone is None or gone == report.epoch:
                return False
            del self.removed[child_id]
        known = self.children.get(child_id)
        if known is not None and known.epoch == report.epoch and known.seq >= report.seq:
            return False
        self.children[child_id] = report
        return True

    def remove(self, child_id: str, epoch: str | None = None) -> bool:
        """Forget a child (its epoch's later reports are ignored); True if it was counted.

        With ``epoch``, only that epoch of the child is removed: a child made again
        since (another epoch) stays. A child not reported yet is remembered as removed
        with ``epoch`` (None: whatever it reports).
        """
        known = self.children.get(child_id)
        if known is None:
            self.removed.setdefault(child_id, epoch)
            return False
        if epoch is not None and known.epoch != epoch:
            return False
        del self.children[child_id]
        self.removed[child_id] = known.epoch
        return True

    def progress(self, ignore_failures: bool) -> float | None:
        """The weighted mean of the children's progress (None without children)."""
        total = weighted = 0.0
        for child in self.children.values():
            done = child.status == Status.SUCCESS.value or (
                ignore_failures and child.status in _FAILED
            )
            total += child.weight
            weighted += child.weight * (100.0 if done else child.progress)
        if not total:
            return None
        return min(100.0, round(weighted / total, 6))

    def first_failure(self) -> Report | None:
        """A failed or canceled child, if any (the earliest id, for a stable error)."""
        failed = [c for c in self.children.values() if c.status in _FAILED]
        return min(failed, key=lambda c: c.child_id) if failed else None

    def all_finished(self, ignore_failures: bool) -> bool:
        """True if there are children and each succeeded (or, ignoring failures, finished)."""
        done = _FINISHED if ignore_failures else {Status.SUCCESS.value}
        return bool(self.children) and all(c.status in done for c in self.children.values())


def rollup(state: TaskState, family: Family) -> Command | None:
    """The command that follows from the parent's children, or None (see the module)."""
    if state.terminal or not family:
        return None
    ignore = state.on_child_failure == "ignore"
    if not ignore:
        failed = family.first_failure()
        if failed is not None:
            verb = "was canceled" if failed.status == Status.CANCELED.value else "failed"
            reason = f": {failed.error}" if failed.error else ""
            return Fail(error=f"child {failed.child_id!r} {verb}{reason}")
    if state.complete_with_children and family.all_finished(ignore):
        return Complete()
    progress = family.progress(ignore)
    if progress is None or progress == state.progress:
        return None
    return Progress(progress=progress, message=f"Children at {round(progress, 2):g}%")
