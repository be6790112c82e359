"""Every operation of the server, in one table: the single source of the HTTP API.

Each row (:class:`Operation`) says what the operation takes (its input model), what
it does (``run``), what it answers (the answer model, for the document), who may
call it, the errors it may answer, and where it is served: its REST routes
(:class:`Rest`) and its oRPC procedure (:class:`Rpc`, with the adapter from the
REST answer to the original system's, and where that answer's Dates are). The
application (:mod:`spectral.api.app`) routes requests from this table, and the
OpenAPI document (:mod:`spectral.api.openapi`) describes it from the same rows
through :func:`routes`: a new operation is one row.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel

from spectral.api import admin, models, ops, procedures, rpc_procedures, schemas, sse
from spectral.api import dashboard as dashboard_api
from spectral.api import integrations as integration_api
from spectral.api import jobs as jobs_api
from spectral.api import rooms as room_api
from spectral.api import webhooks as webhook_api
from spectral.api.call import Call
from spectral.api.orpc_wire import Shape

#: What an operation does: ``run(call, input)`` (input is None for operations without one).
Run = Callable[[Call, Any], Awaitable[Any]]
#: An answer in the document: a response model, or an inline JSON schema.
AnswerSchema = type[BaseModel] | dict[str, Any]
#: Where a REST route's input comes from: the JSON body (strict), the query string and
#: the path (text converted), the path alone, nothing, or the raw body read by ``run``.
Source = Literal["body", "query", "path", "none", "raw"]

#: Error statuses and what they mean (docs/api.md, "Errors").
ERROR_TEXT = {
    400: "malformed JSON or invalid input; the message names the field",
    401: "no key, an unknown or a revoked key",
    403: "the key's role may not do this",
    404: "unknown (or another owner's) object",
    405: "this method is not supported here",
    409: "state conflict (`TASK_TERMINAL`, `TASK_EXISTS`, `EXTERNAL_ID_EXISTS`)",
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
    "jobs": (
        "The seeds' jobs system: tasks as its jobs, in its shapes and state names "
        '(docs/api.md, "The seeds\' jobs system").'
    ),
    "integrations": (
        "Inbound provider callbacks that drive tasks by external id "
        '(docs/api.md, "Provider callbacks").'
    ),
    "rooms": (
        "Broadcast rooms; subscribe with the WebSocket `/rooms/{roomId}/subscribe` "
        '(docs/api.md, "Rooms").'
    ),
    "operations": "Health, metrics and this document.",
}
AUTH = (401, 403, 429)
#: Errors of every oRPC procedure (a framing problem, a wrong method, a wrong content type).
RPC_ERRORS = (400, *AUTH, 404, 405, 413, 415, 503)


def path_parameter(name: str, description: str, pattern: str | None = None) -> dict[str, Any]:
    """An OpenAPI path parameter."""
    schema: dict[str, Any] = {"type": "string"}
    if pattern is not None:
        schema["pattern"] = pattern
    return {"name": name, "in": "path", "required": True, "description": description,
            "schema": schema}  # fmt: skip


TASK_ID = path_parameter(
    "taskId", "1-128 characters of A-Z a-z 0-9 . _ : - (not only dots)", models.ID_PATTERN
)
ROOM_ID = path_parameter(
    "roomId",
    "user_{owner}, request_{id}, or 1-128 characters of A-Z a-z 0-9 . _ : -",
    models.ID_PATTERN,
)
#: The document's rule is narrower than the model's: no leading dot or slash, so that a
#: generated "." or ".." (which HTTP clients resolve as dot segments) is never sent raw.
EXTERNAL_ID = path_parameter(
    "externalId",
    "the task's external id as one percent-encoded segment (`/` as `%2F`, `.` as `%2E`)",
    r"^[^./\x00-\x1f\x7f-\x9f\u2028\u2029][^\x00-\x1f\x7f-\x9f\u2028\u2029]{0,254}$",
)
WEBHOOK_ID = path_parameter("id", "the webhook's id")
KEY_ID = path_parameter("id", "the key's id (16 hex digits)")
DELIVERY_ID = {"name": "deliveryId", "in": "path", "required": True,
               "schema": {"type": "string"}}  # fmt: skip
LAST_EVENT_ID = {
    "name": "Last-Event-ID", "in": "header", "required": False,
    "description": "resume after this seq (as `since`)", "schema": {"type": "string"},
}  # fmt: skip
#: The ``?data=`` of an oRPC GET.
RPC_DATA = {
    "name": "data",
    "in": "query",
    "required": False,
    "description": 'the body\'s framing as URL-encoded JSON, e.g. `{"json": {"taskId": "a"}}`',
    "schema": {"type": "string"},
}


@dataclass(frozen=True)
class Rest:
    """One REST route of an operation."""

    method: str
    path: str
    operation_id: str
    source: Source = "body"
    #: The document's tag, when not the operation's.
    tag: str | None = None
    #: An empty body counts as ``{}`` (the original's procedure form) instead of a 400.
    empty_is_object: bool = False
    #: A ``%2F`` in the path stays inside its segment (a parameter may hold a slash).
    encoded_slash: bool = False


@dataclass(frozen=True)
class Rpc:
    """An operation as an oRPC procedure at ``/rpc/tasks/{name}``."""

    name: str
    #: What it answers inside ``{"json": ...}``.
    answer: AnswerSchema
    #: Where that answer's timestamps are (they travel as Dates).
    dates: Shape
    #: From the REST answer to the original's (None: the same).
    adapt: Callable[[Any], Any] | None = None
    #: May be called with GET (it changes nothing).
    get: bool = False


@dataclass(frozen=True)
class Operation:
    """One operation (a row of the table)."""

    name: str
    tag: str
    summary: str
    run: Run
    input: type[BaseModel] | None
    answer: AnswerSchema
    rest: tuple[Rest, ...] = ()
    rpc: Rpc | None = None
    status: int = 200
    errors: tuple[int, ...] = ()
    #: Takes an ``Idempotency-Key`` (its answer is recorded and replayed).
    mutating: bool = False
    #: ``key`` (an API key), ``token`` (an API key or a watch token for the path's task),
    #: ``public`` (no credential), or ``signed`` (no API key: ``run`` verifies the
    #: request's own signature, a provider callback's).
    access: Literal["key", "token", "public", "signed"] = "key"
    description: str = ""
    answer_text: str = "success"
    media_type: str = "application/json"
    #: Path and header parameters, for the document.
    parameters: tuple[dict[str, Any], ...] = ()
    links: dict[str, Any] | None = None
    #: Error statuses whose meaning here differs from :data:`ERROR_TEXT`'s.
    error_text: dict[int, str] | None = None


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


def _tasks() -> list[Operation]:
    rpc = rpc_procedures
    task_errors = (400, *AUTH, 404, 503)
    mutation_errors = (400, *AUTH, 404, 409, 413, 422, 503)
    changes = {
        "updateProgress": (
            models.UpdateProgress, procedures.update_progress,
            "Report progress (a pending task starts).",
        ),
        "addEvent": (models.AddEvent, procedures.add_event, "Append a `log` or `progress` event."),
        "complete": (
            models.Complete, procedures.complete, "Finish successfully (progress becomes 100).",
        ),
        "fail": (models.Fail, procedures.fail, "Finish with an error."),
        "cancel": (models.Cancel, procedures.cancel, "Cancel the task."),
    }  # fmt: skip
    return [
        Operation(
            "create", "tasks", "Create a task", procedures.create, models.CreateTask,
            schemas.Created, rest=(Rest("POST", "/tasks/create", "tasks.create"),),
            rpc=Rpc("create", schemas.RpcCreated, rpc.NO_DATES, adapt=rpc.created),
            answer_text="created", status=201, mutating=True,
            errors=(400, *AUTH, 409, 413, 422, 503), links=CREATE_LINKS,
            description="`id` or `taskId`; an id any owner uses is 409 `TASK_EXISTS`; an "
            "`externalId` another task of the owner has is 409 `EXTERNAL_ID_EXISTS`. "
            "`parentId`: one of the new task's owner's tasks, not finished (409 "
            "`PARENT_TERMINAL`), at most 8 levels; `phases` make one child `{taskId}:{id}` "
            "each. `owner` (admin keys only; another key naming another owner is 403): "
            "the task is that owner's in every respect.",
        ),
        *(
            Operation(
                name, "tasks", summary, run, model, schemas.Mutation,
                rest=(Rest("POST", f"/tasks/{name}", f"tasks.{name}"),),
                rpc=Rpc(name, schemas.RpcMutation, rpc.MUTATION, adapt=rpc.mutated),
                mutating=True, errors=mutation_errors,
                description="A terminal task refuses it: 409 `TASK_TERMINAL`.",
            )
            for name, (model, run, summary) in changes.items()
        ),
        Operation(
            "batchUpdateProgress", "tasks",
            "Many progress updates; each item succeeds or fails alone",
            procedures.batch_update_progress, models.BatchUpdateProgress, schemas.Batch,
            rest=(Rest("POST", "/tasks/batchUpdateProgress", "tasks.batchUpdateProgress"),),
            rpc=Rpc("batchUpdateProgress", schemas.RpcBatch, rpc.BATCH),
            mutating=True, errors=(400, *AUTH, 413, 422),
            description="1 to 1,000 items, each an `UpdateProgress` body, validated one by one; "
            "the items of one task are applied in their order.",
        ),
        Operation(
            "list", "tasks", "Page through tasks, newest first", procedures.list_tasks,
            models.ListQuery, schemas.TaskPage,
            rest=(Rest("GET", "/tasks", "tasks.list", source="query"),), errors=(400, *AUTH),
            description="`q` is an id prefix; `owner` narrows (admins); `tag` (repeatable: "
            "all must match); `parentId`: its children; "
            "`createdAfter` < createdAt < `createdBefore`.",
        ),
        Operation(
            "byExternalId", "tasks", "The task with an external id",
            procedures.get_by_external_id, models.ExternalIdQuery, schemas.Task,
            rest=(Rest("GET", "/tasks/by-external-id/{externalId}", "tasks.byExternalId",
                       source="query", encoded_slash=True),),
            errors=(400, *AUTH, 404, 503), parameters=(EXTERNAL_ID,),
            description="The caller's owner's task; admins: any owner's, `owner` narrows "
            "(400 naming `owner` if several owners have one with this external id). "
            "Percent-encode the id as one segment (`/` as `%2F`, `.` as `%2E`).",
        ),
        Operation(
            "get", "tasks", "One task", procedures.get_task, models.TaskRef, schemas.Task,
            rest=(
                Rest("GET", "/tasks/{taskId}", "tasks.get", source="path"),
                Rest("POST", "/tasks/getById", "procedures.getById", tag="procedures",
                     empty_is_object=True),
            ),
            rpc=Rpc("getById", schemas.Task, rpc.TASK, get=True),
            errors=(400, *AUTH, 404, 413, 503), parameters=(TASK_ID,),
        ),
        Operation(
            "history", "tasks", "A page of history, oldest first", procedures.history,
            models.HistoryQuery, schemas.HistoryPage,
            rest=(Rest("GET", "/tasks/{taskId}/history", "tasks.history", source="query"),),
            errors=task_errors, parameters=(TASK_ID,),
        ),
        Operation(
            "children", "tasks", "A page of a task's children, newest first",
            procedures.children, models.ChildrenQuery, schemas.TaskPage,
            rest=(Rest("GET", "/tasks/{taskId}/children", "tasks.children", source="query"),),
            errors=task_errors, parameters=(TASK_ID,),
            description="The tasks created with `parentId` = this task (the same page as "
            "`GET /tasks?parentId=`, after checking the task is the caller's).",
        ),
        Operation(
            "delete", "tasks", "Delete a task", procedures.delete, models.TaskRef,
            schemas.Success,
            rest=(Rest("DELETE", "/tasks/{taskId}", "tasks.delete", source="path"),),
            mutating=True, errors=(*task_errors, 422), parameters=(TASK_ID,),
            description="Watchers get `{\"type\": \"deleted\"}`; the id may be created again. "
            "Its subtree (children, theirs...) is deleted with it.",
        ),
        Operation(
            "getHistory", "procedures", "The latest events, newest first", rpc.get_history,
            rpc.GetHistory, _events(),
            rest=(Rest("POST", "/tasks/getHistory", "procedures.getHistory",
                       empty_is_object=True),),
            rpc=Rpc("getHistory", _events(), rpc.HISTORY, get=True),
            errors=(400, *AUTH, 404, 413, 503),
        ),
        Operation(
            "listAll", "procedures", "Task summaries, newest first", rpc.list_all, rpc.ListAll,
            schemas.Summaries,
            rest=(Rest("POST", "/tasks/listAll", "procedures.listAll", empty_is_object=True),),
            rpc=Rpc("listAll", schemas.Summaries, rpc.LISTING, get=True),
            errors=(400, *AUTH, 413), description="An empty body lists the newest 100.",
        ),
        Operation(
            "deleteById", "procedures", "Delete a task", rpc.delete, models.TaskRef,
            schemas.Deleted,
            rest=(Rest("POST", "/tasks/delete", "procedures.delete", empty_is_object=True),),
            rpc=Rpc("delete", schemas.RpcDeleted, rpc.NO_DATES), mutating=True,
            errors=(400, *AUTH, 404, 413, 422, 503),
        ),
    ]  # fmt: skip


def _watch() -> list[Operation]:
    text = {"type": "string"}
    return [
        Operation(
            "events", "watch", "Watch a task (SSE)", sse.events, models.EventsQuery,
            {**text, "description": "records `id: <seq>` / `data: <WatchMessage JSON>`"},
            rest=(Rest("GET", "/tasks/{taskId}/events", "watch.sse", source="query"),),
            answer_text="an event stream: the snapshot, then every change",
            media_type="text/event-stream", access="token",
            parameters=(TASK_ID, LAST_EVENT_ID), errors=(400, 401, 404, 429, 503),
            description=(
                "Each record's `data:` is a `WatchMessage`: replayed events (with `since`), "
                "the `Snapshot`, then every `Change`; `DeletedMessage` ends the stream. "
                "A `: keepalive` comment every 15 s of silence."
            ),
        ),
    ]  # fmt: skip


def _rooms() -> list[Operation]:
    return [
        Operation(
            "broadcast", "rooms", "Send a JSON object to every subscriber", room_api.broadcast,
            room_api.BroadcastBody, schemas.Broadcasted,
            rest=(Rest("POST", "/rooms/{roomId}/broadcast", "rooms.broadcast", source="raw"),),
            errors=(400, *AUTH, 404, 413, 422, 503), parameters=(ROOM_ID,), mutating=True,
            description="The server adds `roomSeq` and `timestamp`; the room keeps its last "
            "1,000 messages for subscribers resuming with `since`.",
        ),
        Operation(
            "roomHealth", "rooms", "Subscribers and last roomSeq of a room", room_api.health,
            None, schemas.RoomHealth,
            rest=(Rest("GET", "/rooms/{roomId}/health", "rooms.health", source="none"),),
            errors=(400, *AUTH, 404, 503), parameters=(ROOM_ID,),
            description="An owner's own room `user_{owner}` answers before its first use.",
        ),
    ]  # fmt: skip


def _webhooks() -> list[Operation]:
    hook = (WEBHOOK_ID,)
    hooks = webhook_api
    return [
        Operation(
            "listWebhooks", "webhooks", "The owner's webhooks", hooks.list_webhooks,
            hooks.ListQuery, schemas.WebhookList,
            rest=(Rest("GET", "/webhooks", "webhooks.list", source="query"),),
            errors=(400, *AUTH),
        ),
        Operation(
            "createWebhook", "webhooks", "Subscribe a URL to task events", hooks.create_webhook,
            hooks.CreateWebhook, schemas.CreatedWebhook,
            rest=(Rest("POST", "/webhooks", "webhooks.create"),), status=201,
            errors=(400, *AUTH, 413), answer_text="created; `secret` is shown only here",
            description="A URL on a loopback, private, link-local or metadata address is "
            "400 `WEBHOOK_URL_FORBIDDEN` (unless SPECTRAL_WEBHOOK_ALLOW_PRIVATE=1). "
            '`format`: `spectral` (the default) or `seed-jobs` (the seeds\' jobs system\'s '
            "bodies; no delivery for events it has no form of).",
        ),
        Operation(
            "getWebhook", "webhooks", "One webhook", hooks.get_webhook, None, schemas.Webhook,
            rest=(Rest("GET", "/webhooks/{id}", "webhooks.get", source="none"),),
            errors=(*AUTH, 404), parameters=hook,
        ),
        Operation(
            "updateWebhook", "webhooks",
            "Change url, eventType, description, taskIdPrefix, active or format",
            hooks.update_webhook,
            hooks.UpdateWebhook, schemas.Webhook,
            rest=(Rest("PUT", "/webhooks/{id}", "webhooks.update"),),
            errors=(400, *AUTH, 404, 413), parameters=hook,
        ),
        Operation(
            "deleteWebhook", "webhooks", "Delete a webhook", hooks.delete_webhook, None,
            schemas.Success,
            rest=(Rest("DELETE", "/webhooks/{id}", "webhooks.delete", source="none"),),
            errors=(*AUTH, 404), parameters=hook,
        ),
        Operation(
            "deliveries", "webhooks", "Recent deliveries with every attempt", hooks.deliveries,
            hooks.DeliveriesQuery, schemas.DeliveryList,
            rest=(Rest("GET", "/webhooks/{id}/deliveries", "webhooks.deliveries",
                       source="query"),),
            errors=(400, *AUTH, 404), parameters=hook,
        ),
        Operation(
            "redeliver", "webhooks", "Retry a delivery now (a dead one included)",
            hooks.redeliver, None, schemas.Redelivered,
            rest=(Rest("POST", "/webhooks/{id}/deliveries/{deliveryId}/redeliver",
                       "webhooks.redeliver", source="none"),),
            status=202, errors=(*AUTH, 404), parameters=(WEBHOOK_ID, DELIVERY_ID),
        ),
    ]  # fmt: skip


JOB_ID = path_parameter(
    "jobId",
    "the task's id: 1-128 characters of A-Z a-z 0-9 . _ : - (not only dots)",
    models.ID_PATTERN,
)


def _jobs() -> list[Operation]:
    return [
        Operation(
            "listJobs", "jobs", "Page through jobs, newest first", jobs_api.list_jobs,
            models.JobsQuery, schemas.JobPage,
            rest=(Rest("GET", "/jobs", "jobs.list", source="query"),), errors=(400, *AUTH),
            description="The caller's tasks as jobs (admins: every owner's, `owner` "
            "narrows), in `GET /tasks`' order. `status`: `failed` takes failed and canceled "
            "tasks; `delayed` is accepted and finds nothing.",
        ),
        Operation(
            "getJob", "jobs", "One job", jobs_api.get_job, models.JobRef, schemas.Job,
            rest=(Rest("GET", "/jobs/{jobId}", "jobs.get", source="path"),),
            errors=(400, *AUTH, 404, 503), parameters=(JOB_ID,),
            description="The task `jobId` in the seed's shape; another owner's is 404.",
        ),
    ]  # fmt: skip


INTEGRATION_ID = path_parameter("id", "the integration's id")
_CREATED_INTEGRATION = "$response.body#/id"
#: From a registered integration to what may be done with it.
INTEGRATION_LINKS = {
    "get": {"operationId": "integrations.get", "parameters": {"id": _CREATED_INTEGRATION}},
    "delete": {"operationId": "integrations.delete", "parameters": {"id": _CREATED_INTEGRATION}},
    "callback": {
        "operationId": "callbacks.receive",
        "parameters": {"integrationId": _CREATED_INTEGRATION},
    },
}


def _header(name: str, description: str) -> dict[str, Any]:
    return {"name": name, "in": "header", "required": False, "description": description,
            "schema": {"type": "string"}}  # fmt: skip


#: The callback's signature headers (which ones count depends on the integration).
CALLBACK_HEADERS = (
    path_parameter("integrationId", "the integration's id (`callbackPath` holds it)"),
    _header("webhook-id", "standard-webhooks: the message id (a replay repeats it)"),
    _header("webhook-timestamp", "standard-webhooks: unix seconds, within 5 minutes of now"),
    _header(
        "webhook-signature",
        'standard-webhooks: space-separated `v1,<base64 HMAC-SHA256 of "{id}.{timestamp}.{body}">`',
    ),
    _header(
        "X-Signature",
        "hmac-sha256 (this header, or the one the integration names): the hex HMAC-SHA256 "
        "of the raw body, optionally prefixed `sha256=`",
    ),
)


def _integrations() -> list[Operation]:
    one = (INTEGRATION_ID,)
    api = integration_api
    return [
        Operation(
            "listIntegrations", "integrations", "The owner's inbound integrations",
            api.list_integrations, api.ListQuery, schemas.IntegrationList,
            rest=(Rest("GET", "/integrations", "integrations.list", source="query"),),
            errors=(400, *AUTH),
        ),
        Operation(
            "createIntegration", "integrations", "Register a provider's callbacks",
            api.create_integration, api.CreateIntegration, schemas.CreatedIntegration,
            rest=(Rest("POST", "/integrations", "integrations.create"),), status=201,
            errors=(400, *AUTH, 413), answer_text="created; `secret` is shown only here",
            links=INTEGRATION_LINKS,
            description="The provider posts to `callbackPath`, signed with `secret`. Paths "
            "are dotted (`data.object.id`, `items.0.id`); a malformed one is 400 naming it.",
        ),
        Operation(
            "getIntegration", "integrations", "One integration", api.get_integration, None,
            schemas.Integration,
            rest=(Rest("GET", "/integrations/{id}", "integrations.get", source="none"),),
            errors=(*AUTH, 404), parameters=one,
        ),
        Operation(
            "updateIntegration", "integrations", "Change an integration's name or mapping",
            api.update_integration, api.UpdateIntegration, schemas.Integration,
            rest=(Rest("PUT", "/integrations/{id}", "integrations.update"),),
            errors=(400, *AUTH, 404, 413), parameters=one,
            description="Any of name, externalIdPath, statusPath, statusMap, progressPath, "
            "errorPath (null clears these two) and, for hmac-sha256, header. "
            "The secret never changes.",
        ),
        Operation(
            "deleteIntegration", "integrations", "Delete an integration",
            api.delete_integration, None, schemas.Success,
            rest=(Rest("DELETE", "/integrations/{id}", "integrations.delete", source="none"),),
            errors=(*AUTH, 404), parameters=one,
        ),
        Operation(
            "callback", "integrations", "A provider's signed callback (no API key)",
            api.callback, api.CallbackBody, schemas.CallbackOutcome,
            rest=(Rest("POST", "/callbacks/{integrationId}", "callbacks.receive",
                       source="raw"),),
            access="signed", errors=(400, 401, 404, 409, 413, 422, 503),
            parameters=CALLBACK_HEADERS,
            answer_text="applied (or, `replayed`, the answer the same delivery got before)",
            error_text={
                400: "the body is not JSON, or a mapped path is missing or holds a wrong "
                "value (the message names the path)",
                401: "a missing or bad signature, or a timestamp outside the tolerance: "
                "nothing changed",
                404: "unknown integration, or (not `initialized`) no task of the owner has "
                "the external id",
                409: "`TASK_TERMINAL`: the task has ended (a `processing` after the end)",
                422: "`CALLBACK_STATUS_UNMAPPED`: the provider status is not in the statusMap",
            },
            description="Verified against the raw body; the task is found by (the "
            "integration's owner, the external id) and the mapped step applied. A delivery "
            "with the id of one processed before is answered as then, not applied again.",
        ),
    ]  # fmt: skip


def _access() -> list[Operation]:
    return [
        Operation(
            "watchToken", "auth", "A short-lived token to watch one task or room",
            admin.watch_token, admin.WatchTokenRequest, schemas.WatchToken,
            rest=(Rest("POST", "/tokens/watch", "auth.watchToken"),),
            errors=(400, *AUTH, 404, 413),
            description="Exactly one of `taskId`, `room` and `feed` (`admin`: the admin"
            " feed, admins only); opens only SSE and WebSocket.",
        ),
        Operation(
            "whoami", "auth", "The caller's key: id, owner, role, name", admin.whoami, None,
            schemas.Me, rest=(Rest("GET", "/me", "auth.me", source="none"),), errors=AUTH,
        ),
        Operation(
            "createKey", "auth", "Create an API key (admin)", admin.create_key, admin.CreateKey,
            schemas.CreatedKey, rest=(Rest("POST", "/admin/keys", "auth.createKey"),),
            answer_text="created; `key` is the secret, shown only here", status=201,
            errors=(400, *AUTH, 413),
        ),
        Operation(
            "listKeys", "auth", "Every API key (admin)", admin.list_keys, None, schemas.KeyList,
            rest=(Rest("GET", "/admin/keys", "auth.listKeys", source="none"),), errors=AUTH,
        ),
        Operation(
            "revokeKey", "auth", "Revoke a key at once (admin)", admin.revoke_key, None,
            schemas.Success,
            rest=(Rest("DELETE", "/admin/keys/{id}", "auth.revokeKey", source="none"),),
            errors=(*AUTH, 404), parameters=(KEY_ID,),
        ),
    ]  # fmt: skip


def _operations() -> list[Operation]:
    text = {"type": "string"}
    return [
        Operation(
            "health", "operations", "Liveness and runtime figures", ops.health, None,
            schemas.Health, rest=(Rest("GET", "/health", "ops.health", source="none"),),
            access="public",
        ),
        Operation(
            "metrics", "operations", "Prometheus metrics (admin)", ops.prometheus_metrics, None,
            {**text, "description": "Prometheus text exposition"},
            rest=(Rest("GET", "/metrics", "ops.metrics", source="none"),),
            media_type="text/plain", errors=AUTH,
        ),
        Operation(
            "openapi", "operations", "This document", ops.openapi_document, None,
            {"type": "object", "description": "OpenAPI 3.1"},
            rest=(Rest("GET", "/openapi.json", "ops.openapi", source="none"),), access="public",
        ),
        Operation(
            "reference", "operations", "This document as a page (works offline)",
            ops.api_reference, None, text,
            rest=(Rest("GET", "/api-reference", "ops.reference", source="none"),),
            media_type="text/html", access="public",
        ),
        Operation(
            "referenceAsset", "operations", "A script of that page (Scalar, vendored)",
            ops.api_reference_asset, None, text,
            rest=(Rest("GET", "/api-reference/{file}", "ops.referenceAsset", source="none"),),
            media_type="text/javascript", access="public", errors=(404,),
            parameters=(path_parameter("file", "the file's name, with its version"),),
        ),
        Operation(
            "socketioClient", "jobs", "The socket.io-client browser bundle (4.8.4, vendored)",
            ops.socketio_client, None, text,
            rest=(
                Rest("GET", "/socket.io/socket.io.js", "jobs.socketioClient", source="none"),
                Rest("GET", "/socket.io/socket.io.min.js", "jobs.socketioClientMin",
                     source="none"),
            ),
            media_type="text/javascript", access="public",
            description="Served where a Socket.IO server serves it, so that pages loading "
            "`/socket.io/socket.io.js` work unchanged (docs/api.md, \"Socket.IO\").",
        ),
        Operation(
            "dashboard", "operations", "The dashboard (works offline; docs/dashboard.md)",
            dashboard_api.dashboard, None, text,
            rest=(Rest("GET", "/", "ops.dashboard", source="none"),),
            media_type="text/html", access="public",
        ),
    ]  # fmt: skip


#: Every operation, in the document's order.
OPERATIONS: tuple[Operation, ...] = (
    *_tasks(),
    *_watch(),
    *_rooms(),
    *_webhooks(),
    *_jobs(),
    *_integrations(),
    *_access(),
    *_operations(),
)


# -- the document's view of the table --------------------------------------------------------


@dataclass(frozen=True)
class Route:
    """One (method, path) of the document, derived from an operation."""

    method: str
    path: str
    operation_id: str
    tag: str
    operation: Operation
    answer: AnswerSchema
    #: The success status (an oRPC procedure always answers 200).
    status: int = 200
    #: The request body's model (None: no body), and whether the body may be empty.
    body: type[BaseModel] | None = None
    body_required: bool = True
    #: The query's model (its path fields are parameters of the path).
    query: type[BaseModel] | None = None
    #: oRPC framing: ``json``/``meta`` around the input and the answer.
    rpc: bool = False
    #: oRPC's GET form of a read (input in ``?data=``).
    rpc_get: bool = False
    #: ``json`` may be left out (no input), where every field of the input is optional.
    rpc_input_required: bool = True
    errors: tuple[int, ...] = ()
    parameters: tuple[dict[str, Any], ...] = ()


def routes() -> list[Route]:
    """Every documented route: each REST route of each operation, then the procedures."""
    documented: list[Route] = []
    for operation in OPERATIONS:
        for rest in operation.rest:
            documented.append(_rest_route(operation, rest))
    for operation in OPERATIONS:
        if operation.rpc is not None:
            documented += _rpc_routes(operation, operation.rpc)
    return documented


def _rest_route(operation: Operation, rest: Rest) -> Route:
    names = {part[1:-1] for part in rest.path.split("/") if part.startswith("{")}
    parameters = tuple(p for p in operation.parameters if p["in"] != "path" or p["name"] in names)
    return Route(
        rest.method, rest.path, rest.operation_id, rest.tag or operation.tag, operation,
        operation.answer, status=operation.status,
        body=operation.input if rest.source in ("body", "raw") else None,
        body_required=not rest.empty_is_object,
        query=operation.input if rest.source == "query" else None,
        errors=operation.errors, parameters=parameters,
    )  # fmt: skip


def _rpc_routes(operation: Operation, rpc: Rpc) -> list[Route]:
    assert operation.input is not None
    optional = not any(f.is_required() for f in operation.input.model_fields.values())
    errors = tuple(sorted({*RPC_ERRORS, 409, 422})) if operation.mutating else RPC_ERRORS
    path = f"/rpc/tasks/{rpc.name}"
    found = [
        Route(
            "POST", path, f"rpc.{rpc.name}", "rpc", operation, rpc.answer, body=operation.input,
            rpc=True, rpc_input_required=not optional, errors=errors,
        )
    ]  # fmt: skip
    if rpc.get:
        found.append(
            Route(
                "GET", path, f"rpc.{rpc.name}.get", "rpc", operation, rpc.answer, rpc=True,
                rpc_get=True, errors=(400, *AUTH, 404, 503), parameters=(RPC_DATA,),
            )
        )  # fmt: skip
    return found


def _request_models() -> tuple[type[BaseModel], ...]:
    found: dict[type[BaseModel], None] = {}
    for operation in OPERATIONS:
        takes_body = any(rest.source in ("body", "raw") for rest in operation.rest)
        if operation.input is not None and (takes_body or operation.rpc is not None):
            found[operation.input] = None
    return tuple(found)


#: Every request body model (the models they nest come with them), for the components.
REQUEST_MODELS: tuple[type[BaseModel], ...] = _request_models()
