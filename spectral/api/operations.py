"""Every HTTP operation of the server, as data for the OpenAPI document.

One row per (method, path): the request model, the answer's schema (a component
name or an inline schema), the error statuses it may answer, and whether it takes
an ``Idempotency-Key``. :mod:`spectral.api.openapi` turns the table into the document.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel

from spectral.api import admin, models, rpc_procedures
from spectral.api import rooms as room_api
from spectral.api import webhooks as webhook_api

#: Error statuses and what they mean (docs/api.md, "Errors").
ERROR_TEXT = {
    400: "malformed JSON or invalid input; the message names the field",
    401: "no key, an unknown or a revoked key",
    403: "the key's role may not do this",
    404: "unknown (or another owner's) object",
    405: "this method is not supported here",
    409: "state conflict (`TASK_TERMINAL`, `TASK_EXISTS`)",
    413: "request body over 1 MiB (the connection is closed)",
    415: "the body is not `application/json`",
    422: "`IDEMPOTENCY_KEY_REUSED`: the key was used with another body",
    429: "rate limited (`RATE_LIMITED`) or too many watch connections",
    503: "this task's storage is unavailable, or the server is shutting down",
}
TAGS = {
    "tasks": 'Tasks over REST: create, mutate, read, list, delete (docs/api.md, "Tasks").',
    "procedures": (
        "The original system's form: every RPC procedure as `POST /tasks/{procedure}`, "
        "plain JSON in and out."
    ),
    "rpc": (
        "oRPC's RPC protocol (`@orpc/client` with an `RPCLink` at `/rpc`): the body is "
        '`{"json": <input>, "meta"?: [...]}`, the answer `{"json": <output>, "meta"?: [...]}`; '
        "timestamps travel as Dates (meta type 1). Errors are oRPC's error body. Any other "
        "path under `/rpc` is oRPC's 404, another method its 405."
    ),
    "watch": "Following a task as it changes (SSE here; WebSocket in docs/api.md).",
    "auth": (
        "API keys (admin) and watch tokens for browsers "
        '(docs/api.md, "Authentication and isolation").'
    ),
    "webhooks": 'Signed, durable webhooks for task events (docs/api.md, "Webhooks").',
    "rooms": (
        "Broadcast rooms; subscribe with the WebSocket `/rooms/{roomId}/subscribe` "
        '(docs/api.md, "Rooms").'
    ),
    "operations": "Health, metrics and this document.",
}

AUTH = (401, 403, 429)
TASK_ID = {
    "name": "taskId",
    "in": "path",
    "required": True,
    "description": "1-128 characters of A-Z a-z 0-9 . _ : - (not only dots)",
    "schema": {"type": "string", "pattern": models.ID_PATTERN},
}


@dataclass(frozen=True)
class Body:
    """A JSON request body validated by ``model``."""

    model: type[BaseModel]
    #: An empty body is refused (400) unless this is False (it then counts as ``{}``).
    required: bool = True


@dataclass(frozen=True)
class RpcBody:
    """An oRPC-framed request body whose ``json`` is validated by ``model``."""

    model: type[BaseModel]
    #: ``json`` may be left out (no input) only where every field is optional.
    input_required: bool = True
    required: bool = True


@dataclass(frozen=True)
class Operation:
    """One (method, path) of the HTTP API."""

    method: str
    path: str
    operation_id: str
    tag: str
    summary: str
    answer: str | dict[str, Any]
    answer_text: str = "success"
    status: int = 200
    errors: tuple[int, ...] = ()
    body: Body | RpcBody | None = None
    query: type[BaseModel] | None = None
    parameters: tuple[dict[str, Any], ...] = ()
    description: str = ""
    media_type: str = "application/json"
    mutating: bool = False
    public: bool = False
    #: Also opened by a watch token (``?token=``).
    token: bool = False
    #: An oRPC read called with GET (input in ``?data=``).
    rpc_get: bool = False
    #: OpenAPI links from the success answer to operations on the same object.
    links: dict[str, Any] | None = None

    def answer_schema(self) -> dict[str, Any]:
        """The success answer's schema (a ``$ref`` for a component name)."""
        if isinstance(self.answer, str):
            return {"$ref": f"#/components/schemas/{self.answer}"}
        return self.answer


def _events() -> dict[str, Any]:
    return {"type": "array", "items": {"$ref": "#/components/schemas/Event"}}


_CREATED_ID = "$response.body#/taskId"
#: From a created task to what may be done with it (stateful API testers follow these).
CREATE_LINKS = {
    "get": {"operationId": "tasks.get", "parameters": {"taskId": _CREATED_ID}},
    "history": {"operationId": "tasks.history", "parameters": {"taskId": _CREATED_ID}},
    "delete": {"operationId": "tasks.delete", "parameters": {"taskId": _CREATED_ID}},
    "updateProgress": {
        "operationId": "tasks.updateProgress",
        "requestBody": {"taskId": _CREATED_ID, "progress": 50, "message": "half"},
    },
    "addEvent": {
        "operationId": "tasks.addEvent",
        "requestBody": {"taskId": _CREATED_ID, "event": {"type": "log", "message": "a line"}},
    },
    "complete": {"operationId": "tasks.complete", "requestBody": {"taskId": _CREATED_ID}},
    "fail": {"operationId": "tasks.fail", "requestBody": {"taskId": _CREATED_ID, "error": "x"}},
    "cancel": {"operationId": "tasks.cancel", "requestBody": {"taskId": _CREATED_ID}},
    "getById": {"operationId": "rpc.getById", "requestBody": {"json": {"taskId": _CREATED_ID}}},
    "rpcProgress": {
        "operationId": "rpc.updateProgress",
        "requestBody": {"json": {"taskId": _CREATED_ID, "progress": 5}},
    },
    "getHistory": {
        "operationId": "procedures.getHistory",
        "requestBody": {"taskId": _CREATED_ID, "limit": 5},
    },
}


def _rest() -> list[Operation]:
    task_errors = (400, *AUTH, 404, 503)
    mutation_errors = (400, *AUTH, 404, 409, 413, 422, 503)
    changes = {
        "updateProgress": (models.UpdateProgress, "Report progress (a pending task starts)."),
        "addEvent": (models.AddEvent, "Append a `log` or `progress` event."),
        "complete": (models.Complete, "Finish successfully (progress becomes 100)."),
        "fail": (models.Fail, "Finish with an error."),
        "cancel": (models.Cancel, "Cancel the task."),
    }
    operations = [
        Operation(
            "POST", "/tasks/create", "tasks.create", "tasks", "Create a task", "Created",
            answer_text="created", status=201, body=Body(models.CreateTask), mutating=True,
            errors=(400, *AUTH, 409, 413, 422, 503), links=CREATE_LINKS,
            description="`id` or `taskId`; an id any owner uses is 409 `TASK_EXISTS`.",
        ),
        *(
            Operation(
                "POST", f"/tasks/{name}", f"tasks.{name}", "tasks", summary, "Mutation",
                body=Body(model), mutating=True, errors=mutation_errors,
                description="A terminal task refuses it: 409 `TASK_TERMINAL`.",
            )
            for name, (model, summary) in changes.items()
        ),
        Operation(
            "POST", "/tasks/batchUpdateProgress", "tasks.batchUpdateProgress", "tasks",
            "Many progress updates; each item succeeds or fails alone", "Batch",
            body=Body(models.BatchUpdateProgress), mutating=True,
            errors=(400, *AUTH, 413, 422),
            description="1 to 1,000 items, each an `UpdateProgress` body, validated one by one.",
        ),
        Operation(
            "GET", "/tasks", "tasks.list", "tasks", "Page through tasks, newest first",
            "TaskPage", query=models.ListQuery, errors=(400, *AUTH),
            description="`q` is an id prefix; `owner` narrows (admins).",
        ),
        Operation(
            "GET", "/tasks/{taskId}", "tasks.get", "tasks", "One task", "Task",
            parameters=(TASK_ID,), errors=task_errors,
        ),
        Operation(
            "GET", "/tasks/{taskId}/history", "tasks.history", "tasks",
            "A page of history, oldest first", "HistoryPage", parameters=(TASK_ID,),
            query=models.HistoryQuery, errors=task_errors,
        ),
        Operation(
            "DELETE", "/tasks/{taskId}", "tasks.delete", "tasks", "Delete a task", "Success",
            parameters=(TASK_ID,), mutating=True, errors=(*task_errors, 422),
            description="Watchers get `{\"type\": \"deleted\"}`; the id may be created again.",
        ),
    ]  # fmt: skip
    return operations


def _original_form() -> list[Operation]:
    errors = (400, *AUTH, 404, 413, 503)
    return [
        Operation(
            "POST", "/tasks/getById", "procedures.getById", "procedures", "One task", "Task",
            body=Body(models.TaskRef, required=False), errors=errors,
        ),
        Operation(
            "POST", "/tasks/getHistory", "procedures.getHistory", "procedures",
            "The latest events, newest first", _events(),
            body=Body(rpc_procedures.GetHistory, required=False), errors=errors,
        ),
        Operation(
            "POST", "/tasks/listAll", "procedures.listAll", "procedures",
            "Task summaries, newest first", "Summaries",
            body=Body(rpc_procedures.ListAll, required=False), errors=(400, *AUTH, 413),
            description="An empty body lists the newest 100.",
        ),
        Operation(
            "POST", "/tasks/delete", "procedures.delete", "procedures", "Delete a task",
            "Deleted", body=Body(models.TaskRef, required=False), mutating=True,
            errors=(*errors, 422),
        ),
    ]  # fmt: skip


#: What each RPC procedure answers inside ``{"json": ...}``.
RPC_OUTPUTS: dict[str, str | dict[str, Any]] = {
    "create": "RpcCreated",
    "getById": "Task",
    "addEvent": "RpcMutation",
    "updateProgress": "RpcMutation",
    "complete": "RpcMutation",
    "fail": "RpcMutation",
    "cancel": "RpcMutation",
    "getHistory": _events(),
    "listAll": "Summaries",
    "delete": "RpcDeleted",
    "batchUpdateProgress": "RpcBatch",
}
#: The ``?data=`` of an oRPC GET.
RPC_DATA = {
    "name": "data",
    "in": "query",
    "required": False,
    "description": 'the body\'s framing as URL-encoded JSON, e.g. `{"json": {"taskId": "a"}}`',
    "schema": {"type": "string"},
}


def _rpc() -> list[Operation]:
    operations = []
    for name, procedure in rpc_procedures.PROCEDURES.items():
        optional = not any(f.is_required() for f in procedure.model.model_fields.values())
        mutating = not procedure.reads
        errors = (400, *AUTH, 404, 405, 409, 413, 415, 422, 503) if mutating else (
            400, *AUTH, 404, 405, 413, 415, 503,
        )  # fmt: skip
        summary = (procedure.run.__doc__ or name).strip().splitlines()[0]
        operations.append(
            Operation(
                "POST", f"/rpc/tasks/{name}", f"rpc.{name}", "rpc", summary,
                RPC_OUTPUTS[name], body=RpcBody(procedure.model, input_required=not optional),
                mutating=mutating, errors=errors,
            )
        )  # fmt: skip
        if procedure.reads:
            operations.append(
                Operation(
                    "GET", f"/rpc/tasks/{name}", f"rpc.{name}.get", "rpc", summary,
                    RPC_OUTPUTS[name], parameters=(RPC_DATA,), rpc_get=True,
                    errors=(400, *AUTH, 404, 503),
                    description="oRPC's GET form of a read (an `RPCLink` with `method: \"GET\"`).",
                )
            )  # fmt: skip
    return operations


def _others() -> list[Operation]:
    text = {"type": "string"}
    return [
        Operation(
            "GET", "/tasks/{taskId}/events", "watch.sse", "watch", "Watch a task (SSE)",
            {**text, "description": "records `id: <seq>` / `data: <WatchMessage JSON>`"},
            answer_text="an event stream: the snapshot, then every change",
            media_type="text/event-stream", token=True, query=models.WatchQuery,
            parameters=(
                TASK_ID,
                {
                    "name": "Last-Event-ID", "in": "header", "required": False,
                    "description": "resume after this seq (as `since`)",
                    "schema": {"type": "string"},
                },
            ),
            errors=(400, 401, 404, 429, 503),
            description=(
                "Each record's `data:` is a `WatchMessage`: replayed events (with `since`), "
                "the `Snapshot`, then every `Change`; `DeletedMessage` ends the stream. "
                "A `: keepalive` comment every 15 s of silence."
            ),
        ),
        Operation(
            "POST", "/tokens/watch", "auth.watchToken", "auth",
            "A short-lived token to watch one task or room", "WatchToken",
            body=Body(admin.WatchTokenRequest), errors=(400, *AUTH, 404, 413),
            description="Exactly one of `taskId` and `room`; opens only SSE and WebSocket.",
        ),
        Operation(
            "POST", "/admin/keys", "auth.createKey", "auth", "Create an API key (admin)",
            "CreatedKey", answer_text="created; `key` is the secret, shown only here",
            status=201, body=Body(admin.CreateKey), errors=(400, *AUTH, 413),
        ),
        Operation(
            "GET", "/admin/keys", "auth.listKeys", "auth", "Every API key (admin)", "KeyList",
            errors=AUTH,
        ),
        Operation(
            "DELETE", "/admin/keys/{id}", "auth.revokeKey", "auth", "Revoke a key at once (admin)",
            "Success", errors=(*AUTH, 404),
            parameters=(
                {
                    "name": "id", "in": "path", "required": True,
                    "description": "the key's id (16 hex digits)", "schema": {"type": "string"},
                },
            ),
        ),
        Operation(
            "GET", "/health", "ops.health", "operations", "Liveness and runtime figures",
            "Health", public=True,
        ),
        Operation(
            "GET", "/metrics", "ops.metrics", "operations", "Prometheus metrics (admin)",
            {**text, "description": "Prometheus text exposition"}, media_type="text/plain",
            errors=AUTH,
        ),
        Operation(
            "GET", "/openapi.json", "ops.openapi", "operations", "This document",
            {"type": "object", "description": "OpenAPI 3.1"}, public=True,
        ),
        Operation(
            "GET", "/api-reference", "ops.reference", "operations",
            "This document as a page (works offline)", text, media_type="text/html",
            public=True,
        ),
        Operation(
            "GET", "/static/{filename}", "ops.static", "operations",
            "A file of the package's static folder", {**text, "format": "binary"},
            media_type="application/octet-stream", errors=(401, 404, 429),
            parameters=(
                {"name": "filename", "in": "path", "required": True, "schema": text},
            ),
        ),
    ]  # fmt: skip


ROOM_ID = {
    "name": "roomId",
    "in": "path",
    "required": True,
    "description": "user_{owner}, request_{id}, or 1-128 characters of A-Z a-z 0-9 . _ : -",
    "schema": {"type": "string", "pattern": models.ID_PATTERN},
}


def _rooms() -> list[Operation]:
    return [
        Operation(
            "POST", "/rooms/{roomId}/broadcast", "rooms.broadcast", "rooms",
            "Send a JSON object to every subscriber", "Broadcasted",
            body=Body(room_api.BroadcastBody), errors=(400, *AUTH, 404, 413, 422, 503),
            parameters=(ROOM_ID,), mutating=True,
            description="The server adds `roomSeq` and `timestamp`; the room keeps its last "
            "1,000 messages for subscribers resuming with `since`.",
        ),
        Operation(
            "GET", "/rooms/{roomId}/health", "rooms.health", "rooms",
            "Subscribers and last roomSeq of a room", "RoomHealth",
            errors=(400, *AUTH, 404, 503), parameters=(ROOM_ID,),
        ),
    ]  # fmt: skip


WEBHOOK_ID = {
    "name": "id", "in": "path", "required": True, "description": "the webhook's id",
    "schema": {"type": "string"},
}  # fmt: skip


def _webhooks() -> list[Operation]:
    hook = (WEBHOOK_ID,)
    return [
        Operation(
            "GET", "/webhooks", "webhooks.list", "webhooks", "The owner's webhooks",
            "WebhookList", query=webhook_api.ListQuery, errors=(400, *AUTH),
        ),
        Operation(
            "POST", "/webhooks", "webhooks.create", "webhooks", "Subscribe a URL to task events",
            "CreatedWebhook", status=201, body=Body(webhook_api.CreateWebhook),
            errors=(400, *AUTH, 413), answer_text="created; `secret` is shown only here",
            description="A URL on a loopback, private, link-local or metadata address is "
            "400 `WEBHOOK_URL_FORBIDDEN` (unless SPECTRAL_WEBHOOK_ALLOW_PRIVATE=1).",
        ),
        Operation(
            "GET", "/webhooks/{id}", "webhooks.get", "webhooks", "One webhook", "Webhook",
            errors=(*AUTH, 404), parameters=hook,
        ),
        Operation(
            "PUT", "/webhooks/{id}", "webhooks.update", "webhooks",
            "Change url, eventType, description, taskIdPrefix or active", "Webhook",
            body=Body(webhook_api.UpdateWebhook), errors=(400, *AUTH, 404, 413),
            parameters=hook,
        ),
        Operation(
            "DELETE", "/webhooks/{id}", "webhooks.delete", "webhooks", "Delete a webhook",
            "Success", errors=(*AUTH, 404), parameters=hook,
        ),
        Operation(
            "GET", "/webhooks/{id}/deliveries", "webhooks.deliveries", "webhooks",
            "Recent deliveries with every attempt", "DeliveryList",
            query=webhook_api.DeliveriesQuery, errors=(400, *AUTH, 404), parameters=hook,
        ),
        Operation(
            "POST", "/webhooks/{id}/deliveries/{deliveryId}/redeliver", "webhooks.redeliver",
            "webhooks", "Retry a delivery now (a dead one included)", "Redelivered",
            status=202, errors=(*AUTH, 404),
            parameters=(
                WEBHOOK_ID,
                {
                    "name": "deliveryId", "in": "path", "required": True,
                    "schema": {"type": "string"},
                },
            ),
        ),
    ]  # fmt: skip


#: Every operation, in the document's order.
OPERATIONS: tuple[Operation, ...] = (
    *_rest(),
    *_original_form(),
    *_rpc(),
    *_rooms(),
    *_webhooks(),
    *_others(),
)
#: Every request body model (and the models they nest), for the components.
REQUEST_MODELS: tuple[type[BaseModel], ...] = (
    models.CreateTask,
    models.UpdateProgress,
    models.NewEvent,
    models.AddEvent,
    models.Complete,
    models.Fail,
    models.Cancel,
    models.BatchUpdateProgress,
    models.TaskRef,
    rpc_procedures.GetHistory,
    rpc_procedures.ListAll,
    admin.CreateKey,
    admin.WatchTokenRequest,
    room_api.BroadcastBody,
    webhook_api.CreateWebhook,
    webhook_api.UpdateWebhook,
)
