"""The SDK's operations, sans I/O: each builds the HTTP request of one server operation
(docs/api.md) and says how to read its answer. ``Client`` and ``AsyncClient`` send them.

``OPERATIONS`` names, for each SDK method, the server operation it calls (the server's
table of operations, ``spectral/api/operations.py``); tests/test_client.py checks that
every operation a key holder can call has a method here, so none can be forgotten.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Generic, TypeVar
from urllib.parse import quote

from spectral.api import schemas

#: What a call's ``read`` makes of a 2xx answer: the SDK method's return type.
T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Call(Generic[T]):
    """One request to send, and how to read a 2xx answer (into a ``T``)."""

    method: str
    path: str
    json: Any = None
    params: Mapping[str, Any] | None = None
    #: Sends an ``Idempotency-Key`` (generated once per call, reused by every retry): the
    #: server applies it once however often it arrives.
    mutating: bool = False
    read: Callable[[Any], T] = field(default=lambda body: body)
    #: Generated for a mutating call only (a read sends none: no need to pay for uuid4).
    idempotency_key: str = ""

    def __post_init__(self) -> None:
        if self.mutating and not self.idempotency_key:
            object.__setattr__(self, "idempotency_key", uuid.uuid4().hex)

    @property
    def repeatable(self) -> bool:
        """Safe to send again when its outcome is unknown (a read, or a keyed mutation).

        Other calls (webhook and key administration) are retried only when the server
        cannot have applied them: no connection was made, or 429/503 answered.
        """
        return self.method == "GET" or self.mutating


#: SDK method -> the server operation it calls (``spectral/api/operations.py`` names).
OPERATIONS: dict[str, str] = {
    "create_task": "create",
    "update_progress": "updateProgress",
    "add_event": "addEvent",
    "complete": "complete",
    "fail": "fail",
    "cancel": "cancel",
    "batch_update_progress": "batchUpdateProgress",
    "list_tasks": "list",
    "children": "children",
    "get_task": "get",
    "get_task_by_external_id": "byExternalId",
    "history": "history",
    "delete_task": "delete",
    "broadcast": "broadcast",
    "room_health": "roomHealth",
    "list_webhooks": "listWebhooks",
    "create_webhook": "createWebhook",
    "get_webhook": "getWebhook",
    "update_webhook": "updateWebhook",
    "delete_webhook": "deleteWebhook",
    "deliveries": "deliveries",
    "redeliver": "redeliver",
    "list_integrations": "listIntegrations",
    "create_integration": "createIntegration",
    "get_integration": "getIntegration",
    "update_integration": "updateIntegration",
    "delete_integration": "deleteIntegration",
    "create_watch_token": "watchToken",
    "whoami": "whoami",
    "create_key": "createKey",
    "list_keys": "listKeys",
    "revoke_key": "revokeKey",
    "health": "health",
}

#: Server operations the SDK leaves out on purpose, and why.
NOT_METHODS: dict[str, str] = {
    "getHistory": "the original's RPC-shaped twin of history()",
    "listAll": "the original's RPC-shaped twin of list_tasks()",
    "deleteById": "the original's RPC-shaped twin of delete_task()",
    "events": "a stream: use watch()",
    "metrics": "Prometheus text for a scraper, not an SDK call",
    "openapi": "the document itself",
    "reference": "a page for people",
    "referenceAsset": "a script of that page",
    "socketioClient": "socket.io-client's bundle, for browsers",
    "dashboard": "the dashboard, a page for people",
    "callback": "the provider's side: signed with the integration's secret, not a key",
    "getJob": "the seeds' jobs system's view of get_task(), for its own clients",
    "listJobs": "the seeds' jobs system's view of list_tasks(), for its own clients",
}


def _segment(value: str) -> str:
    return quote(value, safe="")


def _task(body: Any) -> schemas.Task:
    return schemas.Task.model_validate(body["task"])


def _timestamp(value: str | datetime | None) -> str | None:
    if isinstance(value, datetime):
        if value.tzinfo is None:
            raise ValueError("a naive datetime is ambiguous: give it a tzinfo")
        return value.astimezone(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")
    return value


def _drop_none(values: Mapping[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in values.items() if value is not None}


def new_task_id() -> str:
    """A fresh task id, for ``create_task()`` without one."""
    return f"task-{uuid.uuid4().hex}"


# -- tasks -------------------------------------------------------------------------------


def create_task(
    task_id: str | None = None,
    *,
    status: str | None = None,
    progress: float | None = None,
    metadata: Mapping[str, Any] | None = None,
    timeout_seconds: float | None = None,
    ttl_seconds: float | None = None,
    tags: Sequence[str] | None = None,
    external_id: str | None = None,
    parent_id: str | None = None,
    weight: float | None = None,
    on_child_failure: str | None = None,
    complete_with_children: bool | None = None,
    phases: Sequence[Mapping[str, Any]] | None = None,
    owner: str | None = None,
) -> Call[schemas.Task]:
    """``POST /tasks/create``; answers the new task.

    ``owner``: an admin key may create the task for another owner (e.g. a backend
    creating each user's jobs); other keys may only name their own.

    ``tags``: up to 16, fixed at creation; ``external_id``: your own id for the task,
    unique per owner (a second one is 409 ``EXTERNAL_ID_EXISTS``). ``parent_id``,
    ``weight``, ``on_child_failure`` (``"fail"``/``"ignore"``),
    ``complete_with_children`` and ``phases`` (``[{"id", "weight"?, "name"?}]``: one
    child ``{task_id}:{id}`` each) place it in a tree (docs/api.md, "Task trees").
    """
    body = _drop_none(
        {
            "taskId": task_id or new_task_id(),
            "status": status,
            "progress": progress,
            "metadata": None if metadata is None else dict(metadata),
            "timeoutSeconds": timeout_seconds,
            "ttlSeconds": ttl_seconds,
            "tags": None if tags is None else list(tags),
            "externalId": external_id,
            "parentId": parent_id,
            "weight": weight,
            "onChildFailure": on_child_failure,
            "completeWithChildren": complete_with_children,
            "phases": None if phases is None else [dict(p) for p in phases],
            "owner": owner,
        }
    )
    return Call("POST", "/tasks/create", body, mutating=True, read=_task)


def update_progress(
    task_id: str,
    progress: float,
    message: str | None = None,
    metadata: Mapping[str, Any] | None = None,
) -> Call[schemas.Task]:
    """``POST /tasks/updateProgress``; answers the task after it."""
    body = _drop_none(
        {
            "taskId": task_id,
            "progress": progress,
            "message": message,
            "metadata": None if metadata is None else dict(metadata),
        }
    )
    return Call("POST", "/tasks/updateProgress", body, mutating=True, read=_task)


def add_event(
    task_id: str,
    message: str,
    *,
    event_type: str = "log",
    progress: float | None = None,
    metadata: Mapping[str, Any] | None = None,
) -> Call[schemas.Task]:
    """``POST /tasks/addEvent`` (``log`` or ``progress``); answers the task after it."""
    event = _drop_none(
        {
            "eventType": event_type,
            "message": message,
            "progress": progress,
            "metadata": None if metadata is None else dict(metadata),
        }
    )
    body = {"taskId": task_id, "event": event}
    return Call("POST", "/tasks/addEvent", body, mutating=True, read=_task)


def complete(task_id: str, metadata: Mapping[str, Any] | None = None) -> Call[schemas.Task]:
    """``POST /tasks/complete``; answers the finished task."""
    body = _drop_none({"taskId": task_id, "metadata": None if metadata is None else dict(metadata)})
    return Call("POST", "/tasks/complete", body, mutating=True, read=_task)


def fail(task_id: str, error: str, metadata: Mapping[str, Any] | None = None) -> Call[schemas.Task]:
    """``POST /tasks/fail``; answers the failed task."""
    body = _drop_none(
        {
            "taskId": task_id,
            "error": error,
            "metadata": None if metadata is None else dict(metadata),
        }
    )
    return Call("POST", "/tasks/fail", body, mutating=True, read=_task)


def cancel(task_id: str, metadata: Mapping[str, Any] | None = None) -> Call[schemas.Task]:
    """``POST /tasks/cancel``; answers the canceled task."""
    body = _drop_none({"taskId": task_id, "metadata": None if metadata is None else dict(metadata)})
    return Call("POST", "/tasks/cancel", body, mutating=True, read=_task)


def batch_update_progress(updates: Sequence[Mapping[str, Any]]) -> Call[list[schemas.BatchItem]]:
    """``POST /tasks/batchUpdateProgress``: items ``{"taskId", "progress", "message"?}``;
    answers one result per item (``ok``, ``task`` or ``error``)."""
    body = {"updates": [dict(item) for item in updates]}
    return Call(
        "POST",
        "/tasks/batchUpdateProgress",
        body,
        mutating=True,
        read=lambda answer: schemas.Batch.model_validate(answer).results,
    )


def get_task(task_id: str) -> Call[schemas.Task]:
    """``GET /tasks/{taskId}``."""
    return Call("GET", f"/tasks/{_segment(task_id)}", read=schemas.Task.model_validate)


def get_task_by_external_id(external_id: str, owner: str | None = None) -> Call[schemas.Task]:
    """``GET /tasks/by-external-id/{externalId}`` (``owner``: admins, when several match).

    The id is one percent-encoded segment, its dots too (``..`` is not a dot segment).
    """
    segment = _segment(external_id).replace(".", "%2E")
    return Call(
        "GET",
        f"/tasks/by-external-id/{segment}",
        params=_drop_none({"owner": owner}),
        read=schemas.Task.model_validate,
    )


def history(
    task_id: str, after: int | None = None, limit: int | None = None
) -> Call[schemas.HistoryPage]:
    """``GET /tasks/{taskId}/history``: a page of events, oldest first."""
    params = _drop_none({"after": after, "limit": limit})
    return Call(
        "GET",
        f"/tasks/{_segment(task_id)}/history",
        params=params,
        read=schemas.HistoryPage.model_validate,
    )


def list_tasks(
    status: str | None = None,
    q: str | None = None,
    owner: str | None = None,
    page: int = 1,
    limit: int = 20,
    tag: str | Sequence[str] | None = None,
    created_after: str | datetime | None = None,
    created_before: str | datetime | None = None,
    parent_id: str | None = None,
) -> Call[schemas.TaskPage]:
    """``GET /tasks``: a page of tasks, newest first.

    ``tag``: one or several (a task must have every one); ``created_after`` and
    ``created_before``: ISO-8601 strings or aware datetimes, both bounds excluded;
    ``parent_id``: that task's children.
    """
    tags = [tag] if isinstance(tag, str) else None if tag is None else list(tag)
    params = _drop_none(
        {
            "status": status,
            "q": q,
            "owner": owner,
            "page": page,
            "limit": limit,
            "tag": tags or None,
            "createdAfter": _timestamp(created_after),
            "createdBefore": _timestamp(created_before),
            "parentId": parent_id,
        }
    )
    return Call("GET", "/tasks", params=params, read=schemas.TaskPage.model_validate)


def children(
    task_id: str, status: str | None = None, page: int = 1, limit: int = 20
) -> Call[schemas.TaskPage]:
    """``GET /tasks/{taskId}/children``: a page of the task's children, newest first."""
    params = _drop_none({"status": status, "page": page, "limit": limit})
    return Call(
        "GET",
        f"/tasks/{_segment(task_id)}/children",
        params=params,
        read=schemas.TaskPage.model_validate,
    )


def delete_task(task_id: str) -> Call[None]:
    """``DELETE /tasks/{taskId}``."""
    return Call("DELETE", f"/tasks/{_segment(task_id)}", mutating=True, read=lambda _: None)


# -- rooms -------------------------------------------------------------------------------


def broadcast(room: str, data: Mapping[str, Any]) -> Call[schemas.Broadcasted]:
    """``POST /rooms/{roomId}/broadcast``: the JSON object ``data`` to every subscriber."""
    return Call(
        "POST",
        f"/rooms/{_segment(room)}/broadcast",
        dict(data),
        mutating=True,
        read=schemas.Broadcasted.model_validate,
    )


def room_health(room: str) -> Call[schemas.RoomHealth]:
    """``GET /rooms/{roomId}/health``."""
    return Call("GET", f"/rooms/{_segment(room)}/health", read=schemas.RoomHealth.model_validate)


# -- webhooks ----------------------------------------------------------------------------


def list_webhooks(page: int = 1, limit: int = 20) -> Call[schemas.WebhookList]:
    """``GET /webhooks``."""
    return Call(
        "GET",
        "/webhooks",
        params={"page": page, "limit": limit},
        read=schemas.WebhookList.model_validate,
    )


def create_webhook(
    url: str, event_type: str = "all", **fields: Any
) -> Call[schemas.CreatedWebhook]:
    """``POST /webhooks`` (other fields as docs/api.md names them, e.g.
    ``taskIdPrefix="export-"``); the answer holds the signing secret, shown once."""
    return Call(
        "POST",
        "/webhooks",
        {"url": url, "eventType": event_type, **fields},
        read=schemas.CreatedWebhook.model_validate,
    )


def get_webhook(webhook_id: str) -> Call[schemas.Webhook]:
    """``GET /webhooks/{id}``."""
    return Call("GET", f"/webhooks/{_segment(webhook_id)}", read=schemas.Webhook.model_validate)


def update_webhook(webhook_id: str, **fields: Any) -> Call[schemas.Webhook]:
    """``PUT /webhooks/{id}``."""
    return Call(
        "PUT",
        f"/webhooks/{_segment(webhook_id)}",
        fields,
        read=schemas.Webhook.model_validate,
    )


def delete_webhook(webhook_id: str) -> Call[None]:
    """``DELETE /webhooks/{id}``."""
    return Call("DELETE", f"/webhooks/{_segment(webhook_id)}", read=lambda _: None)


def deliveries(webhook_id: str, **params: Any) -> Call[schemas.DeliveryList]:
    """``GET /webhooks/{id}/deliveries``."""
    return Call(
        "GET",
        f"/webhooks/{_segment(webhook_id)}/deliveries",
        params=params,
        read=schemas.DeliveryList.model_validate,
    )


def redeliver(webhook_id: str, delivery_id: str) -> Call[schemas.Redelivered]:
    """``POST /webhooks/{id}/deliveries/{deliveryId}/redeliver``."""
    path = f"/webhooks/{_segment(webhook_id)}/deliveries/{_segment(delivery_id)}/redeliver"
    return Call("POST", path, read=schemas.Redelivered.model_validate)


# -- integrations (provider callbacks) ---------------------------------------------------


def list_integrations(owner: str | None = None) -> Call[schemas.IntegrationList]:
    """``GET /integrations`` (``owner``: admins)."""
    return Call(
        "GET",
        "/integrations",
        params=_drop_none({"owner": owner}),
        read=schemas.IntegrationList.model_validate,
    )


def create_integration(
    name: str,
    signing: str,
    external_id_path: str,
    status_path: str,
    status_map: Mapping[str, str],
    **fields: Any,
) -> Call[schemas.CreatedIntegration]:
    """``POST /integrations`` (other fields as docs/api.md names them, e.g.
    ``progressPath="data.progress"``); the answer holds the secret, shown once, and the
    ``callbackPath`` the provider posts to."""
    body = {
        "name": name,
        "signing": signing,
        "externalIdPath": external_id_path,
        "statusPath": status_path,
        "statusMap": dict(status_map),
        **fields,
    }
    return Call("POST", "/integrations", body, read=schemas.CreatedIntegration.model_validate)


def get_integration(integration_id: str) -> Call[schemas.Integration]:
    """``GET /integrations/{id}``."""
    return Call(
        "GET",
        f"/integrations/{_segment(integration_id)}",
        read=schemas.Integration.model_validate,
    )


def update_integration(integration_id: str, **fields: Any) -> Call[schemas.Integration]:
    """``PUT /integrations/{id}`` (fields as docs/api.md names them, e.g. ``statusMap``)."""
    return Call(
        "PUT",
        f"/integrations/{_segment(integration_id)}",
        fields,
        read=schemas.Integration.model_validate,
    )


def delete_integration(integration_id: str) -> Call[None]:
    """``DELETE /integrations/{id}``."""
    return Call("DELETE", f"/integrations/{_segment(integration_id)}", read=lambda _: None)


# -- access ------------------------------------------------------------------------------


def create_watch_token(
    task_id: str | None = None,
    *,
    room: str | None = None,
    feed: str | None = None,
    ttl_seconds: int | None = None,
) -> Call[schemas.WatchToken]:
    """``POST /tokens/watch``: a short-lived token to watch one task or room (e.g. from
    a browser), or (``feed="admin"``, admins) the admin feed of every task event."""
    body = _drop_none({"taskId": task_id, "room": room, "feed": feed, "ttlSeconds": ttl_seconds})
    return Call("POST", "/tokens/watch", body, read=schemas.WatchToken.model_validate)


def whoami() -> Call[schemas.Me]:
    """``GET /me``: the caller's key (id, owner, role, name)."""
    return Call("GET", "/me", read=schemas.Me.model_validate)


def create_key(owner: str, role: str, name: str | None = None) -> Call[schemas.CreatedKey]:
    """``POST /admin/keys`` (admins): the secret is in the answer, shown once."""
    fields = _drop_none({"owner": owner, "role": role, "name": name})
    return Call("POST", "/admin/keys", fields, read=schemas.CreatedKey.model_validate)


def list_keys() -> Call[schemas.KeyList]:
    """``GET /admin/keys`` (admins)."""
    return Call("GET", "/admin/keys", read=schemas.KeyList.model_validate)


def revoke_key(key_id: str) -> Call[None]:
    """``DELETE /admin/keys/{id}`` (admins)."""
    return Call("DELETE", f"/admin/keys/{_segment(key_id)}", read=lambda _: None)


def health() -> Call[schemas.Health]:
    """``GET /health``."""
    return Call("GET", "/health", read=schemas.Health.model_validate)
