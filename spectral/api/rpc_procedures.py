"""The original system's procedures (docs/api.md, "RPC"): its inputs, answers and Dates.

What the operation table (:mod:`spectral.api.operations`) needs to serve a procedure
in the original's shapes: the input models of the procedures that REST has no
counterpart of (``getHistory``, ``listAll``), their work, the adapters from a REST
answer to the original's, and the shapes that say where an answer's timestamps are
(they travel as Dates under ``/rpc``).
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import Field, StringConstraints

from spectral.api import models, procedures
from spectral.api.call import Call
from spectral.api.orpc_wire import DATE, Each, Shape
from spectral.tasks.actor import ReadHistory
from spectral.tasks.state import Status
from spectral.wire import event_json

#: Most events one getHistory answers.
MAX_HISTORY = 100


class GetHistory(models.Body):
    """``getHistory``: the task's latest ``limit`` events."""

    task_id: models.TaskId = Field(alias="taskId")
    limit: Annotated[int, Field(ge=1, le=MAX_HISTORY)] = 50


class ListAll(models.Body):
    """``listAll``: every field optional (no input at all lists the newest 100)."""

    page: Annotated[int, Field(ge=1, le=1_000_000)] = 1
    limit: Annotated[int, Field(ge=1, le=100)] = 100
    status: Status | None = None
    owner: Annotated[str, StringConstraints(min_length=1, max_length=128)] | None = None
    q: Annotated[str, StringConstraints(max_length=128)] | None = None


# -- where the timestamps are ------------------------------------------------------

TASK: Shape = {
    name: DATE
    for name in ("createdAt", "updatedAt", "startedAt", "completedAt", "failedAt", "canceledAt")
}
EVENT: Shape = {"timestamp": DATE}
MUTATION: Shape = {"task": TASK, "latestHistory": Each(EVENT)}
BATCH: Shape = {"results": Each({"task": TASK})}
LISTING: Shape = {"tasks": Each({"createdAt": DATE})}
HISTORY: Shape = Each(EVENT)
NO_DATES: Shape = {}


# -- the original's shapes ---------------------------------------------------------------


def created(answer: dict[str, Any]) -> dict[str, Any]:
    """``create`` answers ``{"success", "taskId"}``."""
    return {"success": True, "taskId": answer["taskId"]}


def mutated(answer: dict[str, Any]) -> dict[str, Any]:
    """The mutations answer ``{"task", "latestHistory"}``."""
    return {"task": answer["task"], "latestHistory": answer["latestHistory"]}


# -- the procedures REST has no counterpart of ------------------------------------------------


async def get_history(call: Call, body: GetHistory) -> list[dict[str, Any]]:
    """The task's latest ``limit`` events, newest first."""
    task = await procedures.get_task(call, body)
    seq = task["seq"]
    # History is contiguous up to seq (only the oldest are ever dropped).
    owner = call.who.owner_filter
    message = ReadHistory(max(0, seq - body.limit), body.limit, upto=seq, owner=owner)
    page = await procedures.call_task(call, body.task_id, message)
    return [event_json(event) for event in reversed(page.events)]


async def list_all(call: Call, body: ListAll) -> dict[str, Any]:
    """Tasks newest first, each ``{taskId, createdAt, createdBy, status, progress}``."""
    query = models.ListQuery(
        page=body.page, limit=body.limit, status=body.status, owner=body.owner, q=body.q
    )
    listing = await procedures.list_tasks(call, query)
    tasks = [
        {
            "taskId": task["taskId"],
            "createdAt": task["createdAt"],
            "createdBy": task["owner"],
            "status": task["status"],
            "progress": task["progress"],
        }
        for task in listing["tasks"]
    ]
    return {"tasks": tasks, "count": len(tasks)}


async def delete(call: Call, body: models.TaskRef) -> dict[str, Any]:
    """Delete the task: ``{"success", "taskId"}``."""
    await procedures.delete(call, body)
    return {"success": True, "taskId": body.task_id}
