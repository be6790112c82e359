"""Request models (pydantic): every rule a request must meet, with the field it concerns.

Bodies are validated strictly (a string is not a number, ``true`` is not 1); query
strings, which are text by nature, are converted. NaN and Infinity are refused.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    AliasChoices,
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
)

from spectral.tasks.state import EventType, Status

#: Items per batchUpdateProgress call at most (docs/api.md, "Limits").
MAX_BATCH = 1_000
ID_PATTERN = r"^[A-Za-z0-9._:-]{1,128}$"


def _not_only_dots(value: str) -> str:
    if value.strip(".") == "":
        raise ValueError("must not consist of dots only")
    return value


TaskId = Annotated[
    str,
    StringConstraints(pattern=ID_PATTERN),
    AfterValidator(_not_only_dots),
    Field(description="1-128 characters of A-Z a-z 0-9 . _ : - (not only dots)"),
]
Progress = Annotated[float, Field(ge=0, le=100, description="0 to 100 inclusive")]
Metadata = Annotated[dict[str, Any], Field(description="a JSON object, at most 64 KiB")]
PositiveSeconds = Annotated[float, Field(gt=0, le=10 * 365 * 86400)]


class Body(BaseModel):
    """Base of request bodies: strict types, no NaN, unknown fields ignored."""

    model_config = ConfigDict(strict=True, allow_inf_nan=False, extra="ignore", frozen=True)


class Query(BaseModel):
    """Base of query-string models: text converted to the field's type."""

    model_config = ConfigDict(allow_inf_nan=False, extra="ignore", frozen=True)


class CreateTask(Body):
    """``POST /tasks/create``: ``id`` or ``taskId``."""

    task_id: TaskId = Field(validation_alias=AliasChoices("taskId", "id"), alias="taskId")
    status: Literal["pending", "in-progress"] = "pending"
    progress: Progress = 0
    metadata: Metadata | None = None
    timeout_seconds: PositiveSeconds | None = Field(None, alias="timeoutSeconds")
    ttl_seconds: PositiveSeconds | None = Field(None, alias="ttlSeconds")


class UpdateProgress(Body):
    """``POST /tasks/updateProgress`` (and one item of a batch)."""

    task_id: TaskId = Field(alias="taskId")
    progress: Progress
    message: str | None = None
    metadata: Metadata | None = None


class NewEvent(Body):
    """The ``event`` of addEvent: ``eventType`` (or ``type``) is ``log`` or ``progress``."""

    event_type: Literal["log", "progress"] = Field(
        validation_alias=AliasChoices("eventType", "type"), alias="eventType"
    )
    message: str
    progress: Progress | None = None
    metadata: Metadata | None = None


class AddEvent(Body):
    """``POST /tasks/addEvent``."""

    task_id: TaskId = Field(alias="taskId")
    event: NewEvent


class Complete(Body):
    """``POST /tasks/complete``."""

    task_id: TaskId = Field(alias="taskId")
    metadata: Metadata | None = None


class Fail(Body):
    """``POST /tasks/fail``."""

    task_id: TaskId = Field(alias="taskId")
    error: Annotated[str, StringConstraints(min_length=1)]
    metadata: Metadata | None = None


class Cancel(Body):
    """``POST /tasks/cancel``."""

    task_id: TaskId = Field(alias="taskId")
    metadata: Metadata | None = None


class BatchUpdateProgress(Body):
    """``POST /tasks/batchUpdateProgress``: items are validated one by one."""

    updates: Annotated[list[dict[str, Any]], Field(min_length=1, max_length=MAX_BATCH)]


class TaskRef(Body):
    """A body naming one task (``getById``, ``delete``)."""

    task_id: TaskId = Field(alias="taskId")


RoomId = Annotated[
    str,
    StringConstraints(pattern=ID_PATTERN),
    Field(description="user_{owner}, request_{id}, or 1-128 characters of A-Z a-z 0-9 . _ : -"),
]


class RoomRef(Body):
    """A room named in a path."""

    room_id: RoomId = Field(alias="roomId")


#: A seq a client names (``after``, ``since``): SQLite integers are 64-bit.
SeqBound = Annotated[int, Field(ge=0, le=2**63 - 1)]


class HistoryQuery(Query):
    """``GET /tasks/{taskId}/history`` (``taskId`` from the path)."""

    task_id: TaskId = Field(alias="taskId")
    limit: Annotated[int, Field(ge=1, le=1000)] = 50
    after: SeqBound = 0


class ListQuery(Query):
    """``GET /tasks``."""

    page: Annotated[int, Field(ge=1, le=1_000_000)] = 1
    limit: Annotated[int, Field(ge=1, le=100)] = 20
    status: Status | None = None
    owner: Annotated[str, StringConstraints(min_length=1, max_length=128)] | None = None
    q: Annotated[str, StringConstraints(max_length=128)] | None = None


class WatchQuery(Query):
    """``GET /ws/task/{taskId}`` and ``GET /rooms/{roomId}/subscribe``."""

    since: SeqBound | None = None
    epoch: Annotated[str, StringConstraints(max_length=64)] | None = None
    token: str | None = None


class EventsQuery(WatchQuery):
    """``GET /tasks/{taskId}/events`` (``taskId`` from the path)."""

    task_id: TaskId = Field(alias="taskId")


__all__ = [
    "MAX_BATCH",
    "AddEvent",
    "BatchUpdateProgress",
    "Cancel",
    "Complete",
    "CreateTask",
    "EventType",
    "EventsQuery",
    "Fail",
    "HistoryQuery",
    "ListQuery",
    "NewEvent",
    "TaskId",
    "TaskRef",
    "UpdateProgress",
    "WatchQuery",
]
