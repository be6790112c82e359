"""The RPC procedures (docs/api.md, "RPC"), in the original system's input and output shapes.

One table, :data:`PROCEDURES`: name → input model, the work (done by
:mod:`spectral.api.procedures`, adapted here to the original's answers) and the
shape that says where the answer's timestamps are. :mod:`spectral.api.rpc` serves
it in oRPC's framing (timestamps as Dates); :mod:`spectral.api.rest` serves the
procedures that have no REST endpoint of their own as plain JSON at ``POST /tasks/{name}``.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Annotated, Any

from pydantic import Field, StringConstraints

from spectral.api import models, procedures
from spectral.api.context import Principal
from spectral.api.orpc_wire import DATE, Each, Shape
from spectral.state import ServerState
from spectral.task_state import Status
from spectral.tasks import ReadHistory
from spectral.wire import event_json

Work = Callable[[ServerState, Principal, Any], Awaitable[Any]]

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
NO_DATES: Shape = {}


# -- the work, in the original's shapes -----------------------------------------------


async def create(state: ServerState, who: Principal, body: models.CreateTask) -> dict[str, Any]:
    """Create a task: ``{"success", "taskId"}``."""
    answer = await procedures.create(state, who, body)
    return {"success": True, "taskId": answer["taskId"]}


def _mutation(work: Work) -> Work:
    async def run(state: ServerState, who: Principal, body: Any) -> dict[str, Any]:
        answer = await work(state, who, body)
        return {"task": answer["task"], "latestHistory": answer["latestHistory"]}

    run.__doc__ = f"{work.__doc__} Answers ``{{task, latestHistory}}``."
    return run


async def get_by_id(state: ServerState, who: Principal, body: models.TaskRef) -> dict[str, Any]:
    """The task."""
    return await procedures.get_task(state, who, body.task_id)


async def get_history(state: ServerState, who: Principal, body: GetHistory) -> list[dict[str, Any]]:
    """The task's latest ``limit`` events, newest first."""
    task = await procedures.get_task(state, who, body.task_id)
    seq = task["seq"]
    # History is contiguous up to seq (only the oldest are ever dropped).
    message = ReadHistory(max(0, seq - body.limit), body.limit, upto=seq, owner=who.owner_filter)
    page = await procedures.call_task(state, body.task_id, message)
    return [event_json(event) for event in reversed(page.events)]


async def list_all(state: ServerState, who: Principal, body: ListAll) -> dict[str, Any]:
    """Tasks newest first, each ``{taskId, createdAt, createdBy, status, progress}``."""
    query = models.ListQuery(
        page=body.page, limit=body.limit, status=body.status, owner=body.owner, q=body.q
    )
    tasks = [
        {
            "taskId": task["taskId"],
            "createdAt": task["createdAt"],
            "createdBy": task["owner"],
            "status": task["status"],
            "progress": task["progress"],
        }
        for task in procedures.list_tasks(state, who, query)["tasks"]
    ]
    return {"tasks": tasks, "count": len(tasks)}


async def delete(state: ServerState, who: Principal, body: models.TaskRef) -> dict[str, Any]:
    """Delete the task: ``{"success", "taskId"}``."""
    await procedures.delete(state, who, body.task_id)
    return {"success": True, "taskId": body.task_id}


@dataclass(frozen=True, slots=True)
class Procedure:
    """One procedure: its input model, its work and where its answer's timestamps are."""

    model: type[models.Body]
    run: Work
    shape: Shape
    #: Changes nothing: may be called with GET (oRPC's ``route({method: "GET"})``).
    reads: bool = False


#: Every RPC procedure, by name.
PROCEDURES: dict[str, Procedure] = {
    "create": Procedure(models.CreateTask, create, NO_DATES),
    "getById": Procedure(models.TaskRef, get_by_id, TASK, reads=True),
    "addEvent": Procedure(models.AddEvent, _mutation(procedures.add_event), MUTATION),
    "updateProgress": Procedure(
        models.UpdateProgress, _mutation(procedures.update_progress), MUTATION
    ),
    "complete": Procedure(models.Complete, _mutation(procedures.complete), MUTATION),
    "fail": Procedure(models.Fail, _mutation(procedures.fail), MUTATION),
    "cancel": Procedure(models.Cancel, _mutation(procedures.cancel), MUTATION),
    "getHistory": Procedure(GetHistory, get_history, Each(EVENT), reads=True),
    "listAll": Procedure(ListAll, list_all, LISTING, reads=True),
    "delete": Procedure(models.TaskRef, delete, NO_DATES),
    "batchUpdateProgress": Procedure(
        models.BatchUpdateProgress, procedures.batch_update_progress, BATCH
    ),
}
