"""Response models (pydantic): what the server answers, for the OpenAPI document.

The server builds its answers as plain dicts (:mod:`spectral.wire`,
:mod:`spectral.api.procedures`); these models only describe them. Fields that are
always present have no default, so the serialization schema lists them as required.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from spectral.tasks.state import EventType, Status

#: The answers' timestamps: ISO-8601 UTC with milliseconds (:func:`spectral.wire.iso`).
TIMESTAMP_PATTERN = r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$"

Timestamp = Annotated[
    str,
    Field(
        pattern=TIMESTAMP_PATTERN,
        json_schema_extra={"format": "date-time"},
        description="ISO-8601 UTC with milliseconds",
    ),
]
Seq = Annotated[int, Field(ge=1, description="sequence number of an event (1 = created)")]
Percent = Annotated[float, Field(ge=0, le=100)]


class Answer(BaseModel):
    """Base of response models (they describe answers, they build none)."""

    model_config = ConfigDict(populate_by_name=True, frozen=True)


class Task(Answer):
    """A task (docs/api.md, "Tasks")."""

    task_id: str = Field(alias="taskId")
    status: Status
    progress: Percent
    metadata: dict[str, Any]
    error: str | None
    owner: str
    seq: Seq
    epoch: str = Field(description="random id fixed when the task was created")
    created_at: Timestamp = Field(alias="createdAt")
    updated_at: Timestamp = Field(alias="updatedAt")
    started_at: Timestamp | None = Field(alias="startedAt")
    completed_at: Timestamp | None = Field(alias="completedAt")
    failed_at: Timestamp | None = Field(alias="failedAt")
    canceled_at: Timestamp | None = Field(alias="canceledAt")
    timeout_seconds: float | None = Field(alias="timeoutSeconds")
    ttl_seconds: float | None = Field(alias="ttlSeconds")
    # Defaults only so that the SDK reads a server from before tags: this server always
    # sends both.
    tags: list[str] = Field(
        default_factory=list, description="set at creation, never changed; [] when none"
    )
    external_id: str | None = Field(
        None, alias="externalId", description="the caller's own id for the task, unique per owner"
    )
    parent_id: str | None = Field(None, alias="parentId", description="its parent, if any")
    child_count: int = Field(0, alias="childCount", description="children reporting to it")
    weight: float = Field(1, description="its share of its parent's progress")
    on_child_failure: Literal["fail", "ignore"] = Field("fail", alias="onChildFailure")
    complete_with_children: bool = Field(False, alias="completeWithChildren")
    depth: int = Field(1, ge=1, le=8, description="1 for a root, its parent's + 1 for a child")


class Event(Answer):
    """One history event."""

    seq: Seq
    event_type: EventType = Field(alias="eventType")
    message: str
    progress: Percent | None
    metadata: dict[str, Any] | None
    timestamp: Timestamp


class FieldProblem(Answer):
    """One offending field of a validation error."""

    field: str = Field(description="dotted path of the field, e.g. `updates.2.taskId`")
    message: str


class ErrorDetail(Answer):
    """The inside of the error envelope."""

    code: str = Field(pattern=r"^[A-Z][A-Z0-9_]*$", description="UPPER_SNAKE error code")
    message: str
    details: list[FieldProblem] | None = Field(
        None, description="present for validation errors: every offending field"
    )


class ErrorEnvelope(Answer):
    """Every REST error: ``{"error": {"code", "message", "details"?}}``."""

    error: ErrorDetail


class Success(Answer):
    """``{"success": true}``."""

    success: Literal[True]


class Created(Answer):
    """``POST /tasks/create``."""

    success: Literal[True]
    task_id: str = Field(alias="taskId")
    task: Task


class Mutation(Answer):
    """Every mutation but create: the task, the event it appended, the latest history."""

    success: Literal[True]
    task: Task
    event: Event
    latest_history: list[Event] = Field(
        alias="latestHistory", max_length=10, description="the last 10 events, newest first"
    )


class BatchItem(Answer):
    """One item of a batch: ``task`` when it succeeded, ``error`` when it did not."""

    task_id: str | None = Field(alias="taskId", description="null when the item had none")
    ok: bool
    task: Task | None = None
    error: ErrorDetail | None = None


class Batch(Answer):
    """``batchUpdateProgress``: one result per item, in order."""

    results: list[BatchItem]


class Pagination(Answer):
    """Where a listing page sits."""

    total: int = Field(ge=0)
    page: int = Field(ge=1)
    limit: int = Field(ge=1)
    pages: int = Field(ge=0)


class TaskPage(Answer):
    """``GET /tasks``: newest first."""

    tasks: list[Task]
    count: int = Field(ge=0)
    pagination: Pagination


class JobTimes(Answer):
    """A job's times in milliseconds since the epoch; null when not yet."""

    created: int = Field(ge=0)
    started: int | None = Field(ge=0)
    finished: int | None = Field(ge=0)


class Job(Answer):
    """A task as the seeds' jobs system shows it (docs/api.md, "The seeds' jobs system")."""

    id: str = Field(description="the task's id")
    name: str = Field(description="the task's `metadata.name` when a string, else its id")
    state: Literal["waiting", "active", "completed", "failed"] = Field(
        description="pending → waiting, in-progress → active, success → completed, "
        "failed and canceled → failed"
    )
    progress: Percent
    result: Any = Field(
        None, description="completed only: the completion's `metadata.result`, if it had one"
    )
    failed_reason: str | None = Field(
        None,
        alias="failedReason",
        description='failed only: the task\'s error ("canceled" for a canceled task)',
    )
    timestamp: JobTimes


class JobPage(Answer):
    """``GET /jobs``: newest first."""

    jobs: list[Job]
    pagination: Pagination


class HistoryPage(Answer):
    """``GET /tasks/{taskId}/history``: oldest first."""

    events: list[Event]
    next_after: int | None = Field(
        alias="nextAfter", description="the `after` of the next page; null at the end"
    )


class TaskSummary(Answer):
    """One task of ``listAll``."""

    task_id: str = Field(alias="taskId")
    created_at: Timestamp = Field(alias="createdAt")
    created_by: str = Field(alias="createdBy", description="the owner")
    status: Status
    progress: Percent


class Summaries(Answer):
    """``listAll``: newest first."""

    tasks: list[TaskSummary]
    count: int = Field(ge=0)


class Deleted(Answer):
    """``delete`` (the procedure form)."""

    success: Literal[True]
    task_id: str = Field(alias="taskId")


class Actors(Answer):
    """Actor counts of ``/health``."""

    live: int = Field(ge=0)
    evicted: int = Field(ge=0)


class ClusterHealth(Answer):
    """This node's part in a cluster (``/health`` in cluster mode only)."""

    node: str = Field(description="this node's id")
    epoch: int = Field(ge=1, description="this incarnation of the node")
    status: Literal["current", "fenced", "superseded"] = Field(
        description="its lease: current, or refusing work (docs/cluster.md)"
    )
    forwarded: int = Field(ge=0, description="calls this node sent to their tasks' homes")
    served: int = Field(ge=0, description="calls other nodes sent to this one")


class Health(Answer):
    """``GET /health``."""

    status: Literal["healthy", "shutting_down"]
    version: str
    uptime_seconds: float = Field(alias="uptimeSeconds", ge=0)
    actors: Actors
    connections: int = Field(ge=0)
    cluster: ClusterHealth | None = Field(None, description="cluster mode only")


class Broadcasted(Answer):
    """``POST /rooms/{roomId}/broadcast``."""

    delivered: int = Field(ge=0, description="subscribers the message was queued for")
    room_seq: int = Field(alias="roomSeq", ge=1)


class RoomHealth(Answer):
    """``GET /rooms/{roomId}/health``."""

    room_id: str = Field(alias="roomId")
    connections: int = Field(ge=0)
    last_seq: int = Field(alias="lastSeq", ge=0)


class Webhook(Answer):
    """A webhook, never its secret."""

    id: str
    owner: str
    url: str
    event_type: Literal["progress", "completed", "failed", "canceled", "all"] = Field(
        alias="eventType"
    )
    description: str | None
    task_id_prefix: str | None = Field(alias="taskIdPrefix")
    active: bool
    # A default only so that the SDK reads a server from before formats: this server
    # always sends it.
    format: Literal["spectral", "seed-jobs"] = Field(
        "spectral",
        description="the bodies' shape: spectral's, or the seeds' jobs system's "
        '(docs/api.md, "Webhooks: format seed-jobs")',
    )
    created_at: Timestamp = Field(alias="createdAt")
    updated_at: Timestamp = Field(alias="updatedAt")


class CreatedWebhook(Webhook):
    """``POST /webhooks``: the webhook with its signing secret, shown only here."""

    secret: str = Field(pattern=r"^whsec_", description="Standard Webhooks secret")


class WebhookList(Answer):
    """``GET /webhooks``."""

    webhooks: list[Webhook]


class Integration(Answer):
    """An inbound integration, never its secret (docs/api.md, "Provider callbacks")."""

    id: str
    owner: str
    name: str
    signing: Literal["standard-webhooks", "hmac-sha256"]
    header: str | None = Field(description="hmac-sha256: the signature's header")
    external_id_path: str = Field(alias="externalIdPath")
    status_path: str = Field(alias="statusPath")
    status_map: dict[str, Literal["initialized", "processing", "completed", "failed"]] = Field(
        alias="statusMap"
    )
    progress_path: str | None = Field(alias="progressPath")
    error_path: str | None = Field(alias="errorPath")
    callback_path: str = Field(
        alias="callbackPath", description="where the provider posts: `/callbacks/{id}`"
    )
    created_at: Timestamp = Field(alias="createdAt")
    updated_at: Timestamp = Field(alias="updatedAt")


class CreatedIntegration(Integration):
    """``POST /integrations``: the integration with its secret, shown only here."""

    secret: str = Field(
        description="standard-webhooks: a `whsec_` secret; hmac-sha256: the HMAC key (hex)"
    )


class IntegrationList(Answer):
    """``GET /integrations``."""

    integrations: list[Integration]


class CallbackOutcome(Answer):
    """``POST /callbacks/{integrationId}``: what the delivery did (a replay: the same)."""

    success: Literal[True]
    delivery_id: str = Field(alias="deliveryId")
    integration_id: str = Field(alias="integrationId")
    external_id: str = Field(alias="externalId")
    provider_status: str = Field(alias="providerStatus")
    step: Literal["initialized", "processing", "completed", "failed"]
    applied: bool = Field(
        description="false when it changed nothing (initialized: the task existed; "
        "completed/failed: the task had already ended so)"
    )
    task_id: str = Field(alias="taskId")
    task: Task
    replayed: bool = Field(description="true when this delivery was processed before")


class Attempt(Answer):
    """One delivery attempt."""

    attempt: int = Field(ge=1)
    at: Timestamp
    response_code: int | None = Field(alias="responseCode")
    error: str | None
    duration_ms: float = Field(alias="durationMs", ge=0)


class Delivery(Answer):
    """A delivery and its attempts."""

    id: str
    task_id: str = Field(alias="taskId")
    seq: int
    event_type: str = Field(alias="eventType")
    status: str
    attempt: int = Field(ge=0)
    next_retry_at: Timestamp | None = Field(alias="nextRetryAt")
    response_code: int | None = Field(alias="responseCode")
    error: str | None
    created_at: Timestamp = Field(alias="createdAt")
    updated_at: Timestamp = Field(alias="updatedAt")
    attempts: list[Attempt]


class DeliveryList(Answer):
    """``GET /webhooks/{id}/deliveries``."""

    deliveries: list[Delivery]


class Redelivered(Answer):
    """``POST /webhooks/{id}/deliveries/{deliveryId}/redeliver`` (202)."""

    success: Literal[True]
    delivery_id: str = Field(alias="deliveryId")


class ApiKey(Answer):
    """An API key, never its secret."""

    id: str
    name: str | None
    owner: str
    role: Literal["admin", "service", "reader"]
    created_at: Timestamp = Field(alias="createdAt")
    last_used_at: Timestamp | None = Field(alias="lastUsedAt")
    revoked_at: Timestamp | None = Field(alias="revokedAt")


class Me(Answer):
    """``GET /me``: the caller's key."""

    key_id: str = Field(alias="keyId", description="`bootstrap` for the admin key of admin.key")
    owner: str
    role: Literal["admin", "service", "reader"]
    name: str | None


class CreatedKey(ApiKey):
    """A new API key, with its secret (shown in this answer only)."""

    key: str


class KeyList(Answer):
    """``GET /admin/keys``."""

    keys: list[ApiKey]


class WatchToken(Answer):
    """``POST /tokens/watch``."""

    token: str
    expires_at: Timestamp = Field(alias="expiresAt")


# -- the oRPC outputs (inside ``{"json": ...}``) ---------------------------------------------


class IdempotencyInfo(Answer):
    """``__idempotency`` of a mutating RPC output sent with an ``Idempotency-Key``."""

    cached: bool
    key: str = Field(description="the first 8 characters of the key")
    cached_at: Timestamp | None = Field(None, alias="cachedAt")


class RpcCreated(Answer):
    """``create``."""

    success: Literal[True]
    task_id: str = Field(alias="taskId")
    idempotency: IdempotencyInfo | None = Field(None, alias="__idempotency")


class RpcMutation(Answer):
    """``updateProgress``, ``addEvent``, ``complete``, ``fail``, ``cancel``."""

    task: Task
    latest_history: list[Event] = Field(alias="latestHistory", max_length=10)
    idempotency: IdempotencyInfo | None = Field(None, alias="__idempotency")


class RpcDeleted(Deleted):
    """``delete``."""

    idempotency: IdempotencyInfo | None = Field(None, alias="__idempotency")


class RpcBatch(Batch):
    """``batchUpdateProgress``."""

    idempotency: IdempotencyInfo | None = Field(None, alias="__idempotency")


class RpcErrorData(Answer):
    """``data`` of an oRPC error: our own code, and the fields of a validation error."""

    code: str
    details: list[FieldProblem] | None = None


class RpcError(Answer):
    """An oRPC error (``ORPCError.toJSON()``)."""

    defined: Literal[False]
    code: str = Field(description="oRPC's common code for the status, e.g. NOT_FOUND")
    status: int
    message: str
    data: RpcErrorData | None = None


class RpcErrorEnvelope(Answer):
    """Every error under ``/rpc``."""

    json_: RpcError = Field(alias="json")


#: Every response model, for the document's components.
RESPONSE_MODELS: tuple[type[Answer], ...] = (
    Task,
    Event,
    ErrorEnvelope,
    Success,
    Created,
    Mutation,
    Batch,
    TaskPage,
    HistoryPage,
    Summaries,
    Deleted,
    Health,
    CreatedKey,
    KeyList,
    WatchToken,
    Broadcasted,
    RoomHealth,
    Webhook,
    CreatedWebhook,
    WebhookList,
    DeliveryList,
    Redelivered,
    Integration,
    CreatedIntegration,
    IntegrationList,
    CallbackOutcome,
    RpcCreated,
    RpcMutation,
    RpcDeleted,
    RpcBatch,
    RpcErrorEnvelope,
)
