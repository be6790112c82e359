"""The seeds' jobs vocabulary: tasks seen as the Socket.IO jobs system's "jobs" (pure).

One of the systems spectral replaces is a jobs-notification service (Socket.IO,
REST, webhooks, JWT). Its clients read jobs in their own shapes and state names;
this module turns spectral's task JSON and committed task events into those
shapes, and nothing else: the REST routes (``GET /jobs``), the Socket.IO feed and
the ``seed-jobs`` webhook format all call it (docs/api.md, "The seeds' jobs
system").

States: ``pending`` → ``waiting``, ``in-progress`` → ``active``, ``success`` →
``completed``, ``failed`` and ``canceled`` → ``failed`` (a canceled job's error is
``"canceled"``). A job's ``name`` is its task's ``metadata.name`` (a string), else
the task id; its ``result`` is ``metadata.result`` once completed.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from spectral.tasks.events import TaskEvent

#: The seed's state of each task status.
STATES = {
    "pending": "waiting",
    "in-progress": "active",
    "success": "completed",
    "failed": "failed",
    "canceled": "failed",
}
#: The task statuses of each seed state (``delayed`` exists in the seed and matches none).
STATUSES_OF = {
    "waiting": ("pending",),
    "active": ("in-progress",),
    "completed": ("success",),
    "failed": ("failed", "canceled"),
    "delayed": (),
}
#: The error a canceled task's job carries.
CANCELED = "canceled"
#: The seed's event of each committed task event type (others have none).
EVENTS = {
    "progress": "progress",
    "completed": "completed",
    "failed": "failed",
    "canceled": "failed",
}


def millis(iso: str | None) -> int | None:
    """Milliseconds since the epoch of an ISO-8601 UTC time (None stays None)."""
    if iso is None:
        return None
    return round(datetime.fromisoformat(iso).timestamp() * 1000)


def job_name(task: dict[str, Any]) -> str:
    """The job's name: the task's ``metadata.name`` when it is a string, else its id."""
    name = task.get("metadata", {}).get("name")
    return name if isinstance(name, str) else task["taskId"]


def job_error(task: dict[str, Any]) -> str | None:
    """Why the job failed: the task's error, ``"canceled"`` when canceled, else None."""
    if task["status"] == "canceled":
        return CANCELED
    if task["status"] == "failed":
        return task.get("error") or "failed"
    return None


def job_view(task: dict[str, Any]) -> dict[str, Any]:
    """``GET /jobs/{jobId}``'s answer for a task (its JSON, docs/api.md "Tasks")."""
    view: dict[str, Any] = {
        "id": task["taskId"],
        "name": job_name(task),
        "state": STATES[task["status"]],
        "progress": task["progress"],
    }
    if task["status"] == "success" and "result" in task["metadata"]:
        view["result"] = task["metadata"]["result"]
    error = job_error(task)
    if error is not None:
        view["failedReason"] = error
    finished = task["completedAt"] or task["failedAt"] or task["canceledAt"]
    view["timestamp"] = {
        "created": millis(task["createdAt"]),
        "started": millis(task["startedAt"]),
        "finished": millis(finished),
    }
    return view


def event_kind(event: TaskEvent) -> str | None:
    """The kind of the seed's event for a committed task event: ``progress``,
    ``completed`` or ``failed``; None when the seed has no such event (created, log
    events without progress, deleted)."""
    if event.task is None:
        return None
    kind = EVENTS.get(event.event_type)
    if (
        kind is None
        and event.event_type == "event"
        and (event.event or {}).get("progress") is not None
    ):
        # A log event that moved progress reads as progress in the seed's terms.
        kind = "progress"
    return kind


def job_event(event: TaskEvent) -> tuple[str, dict[str, Any]] | None:
    """The seed's event for a committed task event: ``(kind, payload)`` (kind as
    :func:`event_kind`); None when the seed has no such event."""
    kind = event_kind(event)
    task = event.task
    if kind is None or task is None:
        return None
    payload: dict[str, Any] = {
        "jobId": event.task_id,
        "state": STATES[task["status"]],
        "progress": task["progress"],
    }
    if kind == "completed" and "result" in task["metadata"]:
        payload["result"] = task["metadata"]["result"]
    if kind == "failed":
        payload["error"] = job_error(task)
    payload["timestamp"] = round(event.timestamp * 1000)
    return kind, payload


def webhook_payload(event: TaskEvent) -> dict[str, Any] | None:
    """The ``seed-jobs`` webhook body of a committed task event, or None when the seed
    has no such event (the delivery is then not made)."""
    seen = job_event(event)
    if seen is None:
        return None
    kind, payload = seen
    assert event.task is not None  # job_event answered
    body: dict[str, Any] = {
        "id": event.task_id,
        "jobname": job_name(event.task),
        "userId": event.owner,
    }
    if kind == "progress":
        body["progress"] = payload["progress"]
    elif kind == "completed":
        body["result"] = payload.get("result")
    else:
        body["error"] = payload["error"]
    body["eventType"] = kind
    return body
