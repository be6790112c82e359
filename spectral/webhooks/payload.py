"""Which webhooks take an event, and the JSON body they receive (docs/api.md, "Webhooks")."""

from __future__ import annotations

import json
from typing import Any

from spectral import seed_jobs
from spectral.tasks.events import TaskEvent
from spectral.tasks.state import Event, EventType
from spectral.wire import event_json, iso

#: What a webhook's ``eventType`` may be: one type, or ``all``.
SUBSCRIPTIONS = ("progress", "completed", "failed", "canceled", "all")
#: What a webhook's ``format`` may be: spectral's bodies, or the seeds' jobs system's.
SPECTRAL, SEED_JOBS = "spectral", "seed-jobs"
FORMATS = (SPECTRAL, SEED_JOBS)
#: Every event type a webhook receives.
EVENT_TYPES = ("created", "progress", "event", "completed", "failed", "canceled", "deleted")

#: History event types as webhook event types, for events recovered from history.
FROM_HISTORY = {
    EventType.CREATED: "created",
    EventType.LOG: "event",
    EventType.PROGRESS: "progress",
    EventType.SUCCESS: "completed",
    EventType.ERROR: "failed",
    EventType.TIMEOUT: "failed",
    EventType.CANCELED: "canceled",
}


#: One event on its way to webhooks: the bus's own record of a committed change.
Outgoing = TaskEvent


def matches(subscription: str, prefix: str | None, event_type: str, task_id: str) -> bool:
    """Whether a webhook subscribed to ``subscription`` (and ``prefix``) takes this event."""
    if subscription != "all" and subscription != event_type:
        return False
    return not prefix or task_id.startswith(prefix)


def takes(format: str, subscription: str, prefix: str | None, outgoing: Outgoing) -> bool:
    """Whether a webhook of ``format`` subscribed to ``subscription`` (and ``prefix``)
    takes this event.

    A ``seed-jobs`` webhook takes none of the events the seed has no form of (created,
    plain log events, deleted): no delivery is made for them. Its filter reads a log
    event that moved progress as ``progress``, as the seed does; ``canceled`` takes
    cancelations, which it receives as the seed's ``failed``.
    """
    event_type = outgoing.event_type
    if format == SEED_JOBS:
        if seed_jobs.event_kind(outgoing) is None:
            return False
        if event_type == "event":
            event_type = "progress"
    return matches(subscription, prefix, event_type, outgoing.task_id)


def render(format: str, delivery_id: str, outgoing: Outgoing) -> bytes:
    """The body of a delivery of an event a webhook of ``format`` takes (:func:`takes`):
    :func:`body`, or :func:`spectral.seed_jobs.webhook_payload`'s for ``seed-jobs``."""
    if format == SEED_JOBS:
        seed = seed_jobs.webhook_payload(outgoing)
        assert seed is not None, "takes() said the seed has a form of it"
        return _encode(seed)
    return body(delivery_id, outgoing)


def _encode(payload: dict[str, Any]) -> bytes:
    return json.dumps(payload, separators=(",", ":"), ensure_ascii=False).encode()


def from_history(owner: str, task_id: str, event: Event, task: dict[str, Any]) -> Outgoing:
    """An event read back from a task's history (``task`` is the task as it is now)."""
    return Outgoing(
        owner=owner,
        task_id=task_id,
        seq=event.seq,
        event_type=FROM_HISTORY[event.event_type],
        timestamp=event.timestamp,
        task=task,
        event=event_json(event),
    )


def body(delivery_id: str, outgoing: Outgoing) -> bytes:
    """The delivery's JSON body: id, eventType, taskId, seq, owner, progress?, result?,
    error?, task, timestamp."""
    payload: dict[str, Any] = {
        "id": delivery_id,
        "eventType": outgoing.event_type,
        "taskId": outgoing.task_id,
        "seq": outgoing.seq,
        "owner": outgoing.owner,
    }
    event, task = outgoing.event or {}, outgoing.task
    if event.get("progress") is not None:
        payload["progress"] = event["progress"]
    elif outgoing.event_type == "progress" and task is not None:
        payload["progress"] = task["progress"]
    if outgoing.event_type == "completed" and task is not None:
        payload["result"] = task["metadata"]
    if outgoing.event_type == "failed" and task is not None:
        payload["error"] = task["error"]
    payload["task"] = task
    payload["timestamp"] = iso(outgoing.timestamp)
    return _encode(payload)
