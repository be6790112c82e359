"""Request models (pydantic): every rule a request must meet, with the field it concerns.

Bodies are validated strictly (a string is not a number, ``true`` is not 1); query
strings, which are text by nature, are converted. NaN and Infinity are refused.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, ClassVar, Literal

from pydantic import (
    AfterValidator,
    AliasChoices,
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
)

from spectral.access.keys import OWNER_PATTERN
from spectral.tasks.state import (
    EXTERNAL_ID_PATTERN,
    MAX_TAGS,
    TAG_PATTERN,
    EventType,
    Status,
)

#: Items per batchUpdateProgress call at most (docs/api.md, "Limits").
MAX_BATCH = 1_000
ID_PATTERN = r"^[A-Za-z0-9._:-]{1,128}$"
MAX_ID_LENGTH = 128


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
Tag = Annotated[str, StringConstraints(pattern=TAG_PATTERN)]
Tags = Annotated[
    list[Tag],
    Field(max_length=MAX_TAGS, description="up to 16 tags of 1-64 A-Z a-z 0-9 . _ : -"),
]
ExternalId = Annotated[
    str,
    StringConstraints(pattern=EXTERNAL_ID_PATTERN),
    Field(description="1-255 printable characters (no control character), unique per owner"),
]
#: ISO-8601 timestamps as listing filters take them (no offset: UTC).
TIMESTAMP_PATTERN = (
    r"^[1-9][0-9]{3}-(0[1-9]|1[0-2])-(0[1-9]|[12][0-9]|3[01])[Tt ]([01][0-9]|2[0-3])"
    r":[0-5][0-9]:[0-5][0-9](\.[0-9]{1,9})?([Zz]|[+-]([01][0-9]|2[0-3]):[0-5][0-9])?$"
)
_TIMESTAMP = re.compile(TIMESTAMP_PATTERN)


def timestamp_seconds(value: str) -> float:
    """Unix seconds of an ISO-8601 timestamp matching :data:`TIMESTAMP_PATTERN`.

    A day past its month's end counts on (``02-30`` is March 1 or 2), so that every
    value the pattern admits is a time.
    """
    if not _TIMESTAMP.match(value) or value.endswith("\n"):
        raise ValueError("must be an ISO-8601 timestamp, e.g. 2026-12-01T21:45:00.000Z")
    year, month, day = int(value[0:4]), int(value[5:7]), int(value[8:10])
    hour, minute, second = int(value[11:13]), int(value[14:16]), int(value[17:19])
    rest = value[19:]
    fraction = 0.0
    if rest.startswith("."):
        digits = re.match(r"\.([0-9]+)", rest)
        assert digits is not None
        fraction = float("0." + digits.group(1))
        rest = rest[digits.end() :]
    offset = 0
    if rest and rest not in ("Z", "z"):
        sign = 1 if rest[0] == "+" else -1
        offset = sign * (int(rest[1:3]) * 3600 + int(rest[4:6]) * 60)
    start = datetime(year, month, 1, tzinfo=UTC) + timedelta(days=day - 1)
    return start.timestamp() + hour * 3600 + minute * 60 + second + fraction - offset


Timestamp = Annotated[
    str,
    StringConstraints(pattern=TIMESTAMP_PATTERN),
    Field(description="ISO-8601, e.g. 2026-12-01T21:45:00.000Z (no offset: UTC)"),
]


#: An owner as keys name it (docs/api.md, "Authentication and isolation").
Owner = Annotated[
    str,
    StringConstraints(pattern=OWNER_PATTERN),
    Field(description="1-128 characters of A-Z a-z 0-9 . _ : -"),
]


class Body(BaseModel):
    """Base of request bodies: strict types, no NaN, unknown fields ignored."""

    model_config = ConfigDict(strict=True, allow_inf_nan=False, extra="ignore", frozen=True)


class Query(BaseModel):
    """Base of query-string models: text converted to the field's type."""

    model_config = ConfigDict(allow_inf_nan=False, extra="ignore", frozen=True)


Weight = Annotated[
    float, Field(gt=0, le=1_000_000, description="a child's share of its parent's progress")
]
PhaseId = Annotated[
    str,
    StringConstraints(pattern=r"^[A-Za-z0-9._:-]{1,64}$"),
    Field(description="1-64 characters of A-Z a-z 0-9 . _ : -; the child's id is {taskId}:{id}"),
]
#: Phases per task at most (each is a child task made with it).
MAX_PHASES = 100


class Phase(Body):
    """One phase of ``phases``: a child task ``{taskId}:{id}``."""

    id: PhaseId
    weight: Weight = 1
    name: Annotated[str, StringConstraints(min_length=1, max_length=200)] | None = None


class CreateTask(Body):
    """``POST /tasks/create``: ``id`` or ``taskId``."""

    task_id: TaskId = Field(validation_alias=AliasChoices("taskId", "id"), alias="taskId")
    status: Literal["pending", "in-progress"] = "pending"
    progress: Progress = 0
    metadata: Metadata | None = None
    timeout_seconds: PositiveSeconds | None = Field(None, alias="timeoutSeconds")
    ttl_seconds: PositiveSeconds | None = Field(None, alias="ttlSeconds")
    tags: Tags | None = None
    external_id: ExternalId | None = Field(None, alias="externalId")
    parent_id: TaskId | None = Field(None, alias="parentId")
    weight: Weight = 1
    on_child_failure: Literal["fail", "ignore"] = Field("fail", alias="onChildFailure")
    complete_with_children: bool = Field(False, alias="completeWithChildren")
    phases: Annotated[list[Phase], Field(min_length=1, max_length=MAX_PHASES)] | None = None
    #: Admins only: whose task it is (default: the key's owner).
    owner: Owner | None = Field(
        None, description="admins only: the task's owner (default: the key's owner)"
    )


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
    tag: Tags = []
    created_after: Timestamp | None = Field(None, alias="createdAfter")
    created_before: Timestamp | None = Field(None, alias="createdBefore")
    parent_id: TaskId | None = Field(None, alias="parentId")

    #: Query names that may repeat (every value is taken, as a list).
    repeated: ClassVar[tuple[str, ...]] = ("tag",)


class ChildrenQuery(Query):
    """``GET /tasks/{taskId}/children`` (``taskId`` from the path)."""

    task_id: TaskId = Field(alias="taskId")
    page: Annotated[int, Field(ge=1, le=1_000_000)] = 1
    limit: Annotated[int, Field(ge=1, le=100)] = 20
    status: Status | None = None


class ExternalIdQuery(Query):
    """``GET /tasks/by-external-id/{externalId}`` (``owner``: admins)."""

    external_id: ExternalId = Field(alias="externalId")
    owner: Annotated[str, StringConstraints(min_length=1, max_length=128)] | None = None


#: The seeds' job states (spectral/seed_jobs.py); ``""`` (the seed's ``status=``) is any.
JobState = Literal["", "waiting", "active", "completed", "failed", "delayed"]


class JobRef(Body):
    """``GET /jobs/{jobId}``: a task id under the seed's name."""

    job_id: TaskId = Field(alias="jobId")


class JobsQuery(Query):
    """``GET /jobs``: the seeds' listing (``owner``: admins)."""

    page: Annotated[int, Field(ge=1, le=1_000_000)] = 1
    limit: Annotated[int, Field(ge=1, le=100)] = 10
    status: JobState = Field(
        "",
        description="waiting, active, completed, failed (failed and canceled tasks) or "
        "delayed (never any); empty: every state",
    )
    owner: Annotated[str, StringConstraints(min_length=1, max_length=128)] | None = None


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
    "ChildrenQuery",
    "Complete",
    "CreateTask",
    "EventType",
    "EventsQuery",
    "ExternalIdQuery",
    "Fail",
    "HistoryQuery",
    "JobRef",
    "JobsQuery",
    "ListQuery",
    "NewEvent",
    "Owner",
    "Phase",
    "TaskId",
    "TaskRef",
    "UpdateProgress",
    "WatchQuery",
]
