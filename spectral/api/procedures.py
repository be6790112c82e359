"""The task operations, independent of how they arrive (REST, RPC, the original's form).

Each takes a :class:`~spectral.api.call.Call` and a validated model, calls the task's
actor and returns the JSON answer (a :class:`~spectral.api.call.Result` for a
mutation, which may have been answered from the task's idempotency record); errors
leave as :class:`ApiError`.
"""

from __future__ import annotations

import math
import secrets
from collections.abc import Sequence
from typing import Any

import trio
from pydantic import ValidationError

from actors import ObjectNotFoundError
from spectral.api import models
from spectral.api.call import Call, Result
from spectral.api.context import require_write
from spectral.api.failures import TASK_ERRORS, state_error, task_error, validation_error
from spectral.errors import ApiError
from spectral.tasks import index as task_index
from spectral.tasks import state as sm
from spectral.tasks.actor import (
    KIND,
    Detach,
    Mutate,
    MutateEach,
    Mutation,
    Read,
    ReadHistory,
    Remove,
    TaskRejected,
)
from spectral.tasks.index import ExternalIdExistsError
from spectral.wire import event_json


async def call_task(call: Call, task_id: str, message: Any, *, create: bool = False) -> Any:
    """Send ``message`` to the task's actor; translate failures into API errors."""
    try:
        return await call.state.router.call(KIND, task_id, message, create=create)
    except TASK_ERRORS as error:
        raise task_error(error, task_id) from None


def mutate(command: sm.Command, call: Call) -> Mutate:
    """The message applying ``command`` for the caller (once per Idempotency-Key, if one came)."""
    owner = None if isinstance(command, sm.Create) else call.who.owner_filter
    once = None if call.once is None else (call.once.stored_key, call.once.fingerprint)
    return Mutate(command, owner, once)


def mutation_answer(result: Mutation) -> Result:
    """The answer shape shared by every mutation but create."""
    payload = {
        "success": True,
        "task": result.task,
        "event": result.event,
        "latestHistory": result.latest_history,
    }
    return Result(payload, replayed_at=result.replayed_at)


#: How long a create waits for its parent to count it (the report stays durable after).
PARENT_WAIT = 5.0
#: Subtree deletions under way at once (per request).
DELETE_CONCURRENCY = 16


async def create(call: Call, body: models.CreateTask) -> Result:
    """Create a task owned by the caller's owner, or by ``owner`` for an admin (with its
    phases' children, if any)."""
    require_write(call.who)
    owner = _new_owner(call, body.owner)
    depth = 1 if body.parent_id is None else await _child_depth(call, owner, body.parent_id)
    phase_ids = _phase_ids(body, depth)
    for index, child_id in enumerate(phase_ids):
        if not _is_phase_of(call, owner, child_id, body.task_id):
            raise ApiError(
                409,
                "TASK_EXISTS",
                f"phases.{index}.id: task {child_id!r} already exists",
                [{"field": f"phases.{index}.id", "message": "a task with this id exists"}],
            )
    command = sm.Create(
        task_id=body.task_id,
        owner=owner,
        epoch=secrets.token_hex(8),
        status=sm.Status(body.status),
        progress=body.progress,
        metadata=body.metadata or {},
        timeout_seconds=body.timeout_seconds,
        ttl_seconds=body.ttl_seconds,
        tags=tuple(body.tags or ()),
        external_id=body.external_id,
        parent_id=body.parent_id,
        weight=body.weight,
        on_child_failure=body.on_child_failure,
        complete_with_children=body.complete_with_children,
        depth=depth,
        phases=tuple({"id": p.id, "weight": p.weight, "name": p.name} for p in body.phases or ()),
    )
    if body.external_id is None:
        result: Mutation = await call_task(call, body.task_id, mutate(command, call), create=True)
    else:
        result = await _create_with_external_id(call, command, body.external_id)
    task = result.task
    if body.parent_id is not None:
        await _counted(call, body.task_id)
    if phase_ids:
        # The parent's creation sent one durable message per phase; each child creates
        # itself on receipt and reports back. Answer once they have (bounded).
        with trio.move_on_after(PARENT_WAIT):
            await call.state.router.delivered(KIND, body.task_id)
            for child_id in phase_ids:
                await call.state.router.delivered(KIND, child_id)
        task = await call_task(call, body.task_id, Read(None))
    payload = {"success": True, "taskId": body.task_id, "task": task}
    return Result(payload, replayed_at=result.replayed_at)


def _new_owner(call: Call, requested: str | None) -> str:
    """Whose new task it is: the caller's owner, or ``owner`` when an admin names one
    (another owner named by a non-admin is 403, as for ``POST /webhooks``)."""
    who = call.who
    if requested is None or requested == who.owner:
        return who.owner
    if not who.is_admin:
        raise ApiError(403, "FORBIDDEN", "only an admin key may create another owner's task")
    return requested


async def _child_depth(call: Call, owner: str, parent_id: str) -> int:
    """The depth of a new child of ``parent_id``: the parent must be ``owner``'s (the new
    task's), live, and not at the deepest level (400 naming ``parentId``, or 409 if it is
    finished)."""
    try:
        parent = await call.state.router.call(KIND, parent_id, Read(call.who.owner_filter))
    except TASK_ERRORS as error:
        if isinstance(error, ObjectNotFoundError) or (
            isinstance(error, TaskRejected) and error.reason.code == "TASK_NOT_FOUND"
        ):
            raise _field_error("parentId", f"no task {parent_id!r}") from None
        raise task_error(error, parent_id) from None
    if parent["owner"] != owner:
        # An admin's parent of another owner: the tree stays within one owner.
        raise _field_error("parentId", f"no task {parent_id!r}")
    if parent["status"] in ("success", "failed", "canceled"):
        raise ApiError(
            409, "PARENT_TERMINAL", f"parentId: task {parent_id!r} is {parent['status']}"
        )
    depth = int(parent.get("depth", 1)) + 1
    if depth > sm.MAX_DEPTH:
        raise _field_error("parentId", f"a tree is at most {sm.MAX_DEPTH} levels deep")
    return depth


def _phase_ids(body: models.CreateTask, depth: int) -> list[str]:
    """The children's ids of ``phases`` (400 naming the phase if one cannot be)."""
    if not body.phases:
        return []
    if depth + 1 > sm.MAX_DEPTH:
        raise _field_error("phases", f"a tree is at most {sm.MAX_DEPTH} levels deep")
    ids: list[str] = []
    for index, phase in enumerate(body.phases):
        child_id = f"{body.task_id}:{phase.id}"
        if len(child_id) > models.MAX_ID_LENGTH:
            raise _field_error(
                f"phases.{index}.id", f"the child's id {child_id!r} is over 128 characters"
            )
        if child_id in ids:
            raise _field_error(f"phases.{index}.id", f"phase {phase.id!r} is listed twice")
        ids.append(child_id)
    return ids


def _is_phase_of(call: Call, owner: str, child_id: str, task_id: str) -> bool:
    """True unless a task ``child_id`` exists that is not a child of ``task_id`` of
    ``owner`` (the registry's row: creations are listed before their answers)."""
    row = call.state.router.registry.get(KIND, child_id)
    if row is None or row.summary is None:
        return True
    return row.owner == owner and row.summary.get("parentId") == task_id


async def _counted(call: Call, child_id: str) -> None:
    """Wait (bounded) until the child's report reached its parent: ``childCount`` and
    progress are current when the create answers. The report is durable either way."""
    with trio.move_on_after(PARENT_WAIT):
        await call.state.router.delivered(KIND, child_id)


def _field_error(field: str, message: str) -> ApiError:
    return ApiError(
        400, "VALIDATION_ERROR", f"{field}: {message}", [{"field": field, "message": message}]
    )


async def _create_with_external_id(call: Call, command: sm.Create, external_id: str) -> Mutation:
    """Create after reserving the external id (unique per owner; spectral/tasks/index.py).

    Of concurrent creates with one external id exactly one gets past the reservation;
    the others are 409, on any node (a reservation is a create under way for
    ``RESERVATION_GRACE``). Creates of the same task id (a retry, e.g. one
    Idempotency-Key on several nodes) all get past, and the task's actor decides.
    """
    ids = call.state.external_ids
    assert ids is not None, "the server sets external_ids"
    owner, task_id = command.owner, command.task_id
    try:
        reserved = await ids.reserve(owner, external_id, task_id)
    except ExternalIdExistsError:
        raise ApiError(
            409,
            "EXTERNAL_ID_EXISTS",
            f"externalId: {external_id!r} is already used by another task of this owner",
        ) from None
    try:
        result: Mutation = await call_task(call, task_id, mutate(command, call), create=True)
    finally:
        await ids.done(owner, external_id, task_id, reserved=reserved)
    return result


async def update_progress(call: Call, body: models.UpdateProgress) -> Result:
    """Report progress."""
    require_write(call.who)
    command = sm.Progress(progress=body.progress, message=body.message, metadata=body.metadata)
    return mutation_answer(await call_task(call, body.task_id, mutate(command, call)))


async def add_event(call: Call, body: models.AddEvent) -> Result:
    """Append a log or progress event."""
    require_write(call.who)
    event = body.event
    command = sm.Log(
        message=event.message,
        event_type=sm.EventType(event.event_type),
        progress=event.progress,
        metadata=event.metadata,
    )
    return mutation_answer(await call_task(call, body.task_id, mutate(command, call)))


async def complete(call: Call, body: models.Complete) -> Result:
    """Finish the task successfully."""
    require_write(call.who)
    command = sm.Complete(metadata=body.metadata)
    return mutation_answer(await call_task(call, body.task_id, mutate(command, call)))


async def fail(call: Call, body: models.Fail) -> Result:
    """Finish the task with an error."""
    require_write(call.who)
    command = sm.Fail(error=body.error, metadata=body.metadata)
    return mutation_answer(await call_task(call, body.task_id, mutate(command, call)))


async def cancel(call: Call, body: models.Cancel) -> Result:
    """Cancel the task."""
    require_write(call.who)
    command = sm.Cancel(metadata=body.metadata)
    return mutation_answer(await call_task(call, body.task_id, mutate(command, call)))


async def batch_update_progress(call: Call, body: models.BatchUpdateProgress) -> dict[str, Any]:
    """Apply many progress updates; each item succeeds or fails alone.

    Items are grouped by task: each task gets its items as one message, applied in
    the order they appear (one turn, one commit), and tasks run concurrently.
    """
    require_write(call.who)
    results: list[dict[str, Any] | None] = [None] * len(body.updates)
    by_task: dict[str, list[tuple[int, sm.Progress]]] = {}
    for index, raw in enumerate(body.updates):
        try:
            item = models.UpdateProgress.model_validate(raw, strict=True)
        except ValidationError as exc:
            task_id = raw.get("taskId") if isinstance(raw.get("taskId"), str) else None
            error = validation_error(exc, f"updates.{index}")
            results[index] = {"taskId": task_id, "ok": False, "error": error.body()["error"]}
            continue
        command = sm.Progress(progress=item.progress, message=item.message, metadata=item.metadata)
        by_task.setdefault(item.task_id, []).append((index, command))

    # With an Idempotency-Key, each task records its part of the batch in its own file,
    # in the same commit as the items: a repeat whose registry record was lost (a crash
    # between the tasks' commits and the registry's) is answered from those, not reapplied.
    once = None if call.once is None else (call.once.stored_key, call.once.fingerprint)

    async def one_task(task_id: str, items: list[tuple[int, sm.Progress]]) -> None:
        commands = tuple(command for _, command in items)
        message = MutateEach(commands, call.who.owner_filter, once)
        try:
            outcomes: list[Mutation | sm.TaskStateError] = await call_task(call, task_id, message)
        except ApiError as error:
            failed = {"taskId": task_id, "ok": False, "error": error.body()["error"]}
            for index, _ in items:
                results[index] = failed
            return
        for (index, _), outcome in zip(items, outcomes, strict=True):
            if isinstance(outcome, Mutation):
                results[index] = {"taskId": task_id, "ok": True, "task": outcome.task}
            else:
                error = state_error(outcome, task_id)
                results[index] = {"taskId": task_id, "ok": False, "error": error.body()["error"]}

    async with trio.open_nursery() as nursery:
        for task_id, items in by_task.items():
            nursery.start_soon(one_task, task_id, items)
    return {"results": results}


async def get_task(call: Call, body: models.TaskRef) -> dict[str, Any]:
    """The task."""
    task: dict[str, Any] = await call_task(call, body.task_id, Read(call.who.owner_filter))
    return task


async def history(call: Call, query: models.HistoryQuery) -> dict[str, Any]:
    """A page of the task's history, oldest first."""
    message = ReadHistory(query.after, query.limit, owner=call.who.owner_filter)
    page = await call_task(call, query.task_id, message)
    return {"events": [event_json(e) for e in page.events], "nextAfter": page.next_after}


async def delete(call: Call, body: models.TaskRef) -> dict[str, Any]:
    """Delete the task and its subtree: files, registry rows; watchers are told and closed.

    The task is first detached from its parent (which drops it from its progress for
    good), then its descendants go, deepest first, then the task itself. Cut short
    (a crash), a repeat finishes the job: each step is idempotent.
    """
    require_write(call.who, "delete tasks")
    task = await call_task(call, body.task_id, Read(call.who.owner_filter))
    router = call.state.router
    parent_id = task.get("parentId")
    if parent_id is not None:
        try:
            await router.call(KIND, parent_id, Detach(body.task_id))
        except ObjectNotFoundError:
            pass  # the parent is gone already
        except TASK_ERRORS as error:
            if not (isinstance(error, TaskRejected) and error.reason.code == "TASK_NOT_FOUND"):
                raise task_error(error, parent_id) from None
    levels = await task_index.descendants(call.state.sql, task["owner"], body.task_id)
    limiter = trio.CapacityLimiter(DELETE_CONCURRENCY)

    async def remove(task_id: str) -> None:
        async with limiter:
            try:
                await router.call(KIND, task_id, Remove(None))
            except ObjectNotFoundError:
                pass
            except TASK_ERRORS as error:
                if not (isinstance(error, TaskRejected) and error.reason.code == "TASK_NOT_FOUND"):
                    raise task_error(error, task_id) from None

    for level in reversed(levels):
        async with trio.open_nursery() as nursery:
            for task_id in level:
                nursery.start_soon(remove, task_id)
    await call_task(call, body.task_id, Remove(call.who.owner_filter))
    return {"success": True}


async def children(call: Call, query: models.ChildrenQuery) -> dict[str, Any]:
    """A page of the task's children, newest first (the task must be the caller's)."""
    await call_task(call, query.task_id, Read(call.who.owner_filter))
    listing = models.ListQuery.model_validate(
        {"page": query.page, "limit": query.limit, "status": query.status,
         "parentId": query.task_id}
    )  # fmt: skip
    return await list_tasks(call, listing)


async def list_tasks(call: Call, query: models.ListQuery) -> dict[str, Any]:
    """A page of tasks, newest first (admins may filter by owner; others see their own)."""
    tags = list(dict.fromkeys(query.tag))
    if query.parent_id is not None:
        tags.append(task_index.parent_tag(query.parent_id))
    tasks, total = await task_page(
        call,
        owner=query.owner,
        status=None if query.status is None else query.status.value,
        page=query.page,
        limit=query.limit,
        id_prefix=query.q or None,
        tags=tags,
        created_after=_lower_bound(query.created_after),
        created_before=_upper_bound(query.created_before),
    )
    return {
        "tasks": tasks,
        "count": len(tasks),
        "pagination": pagination(total, query.page, query.limit),
    }


async def task_page(
    call: Call,
    *,
    owner: str | None,
    status: task_index.Statuses,
    page: int,
    limit: int,
    id_prefix: str | None = None,
    tags: Sequence[str] = (),
    created_after: float | None = None,
    created_before: float | None = None,
) -> tuple[list[dict[str, Any]], int]:
    """One page of the tasks the caller may list, newest first, and how many match.

    ``owner``: the owner asked for; an admin's narrows (None: every owner's), anyone
    else's is their own or finds nothing. The listing behind ``GET /tasks`` and
    ``GET /jobs``.
    """
    who = call.who
    if who.is_admin:
        listed = owner
    elif owner is not None and owner != who.owner:
        # Asking for another owner's tasks finds nothing: no owner has a "/" (and no NUL,
        # which PostgreSQL's text refuses).
        listed = "/no-such-owner"
    else:
        listed = who.owner
    # One path in every mode: the product's database lists every task (the registry's
    # SQLite in one process, PostgreSQL's mirror of every node's rows in a cluster).
    found = await task_index.list_tasks(
        call.state.sql,
        owner=listed,
        status=status,
        id_prefix=id_prefix,
        tags=tags,
        created_after=created_after,
        created_before=created_before,
        limit=limit,
        offset=(page - 1) * limit,
    )
    tasks = found.summaries
    for task in tasks:  # summaries written before tags existed
        task.setdefault("tags", [])
        task.setdefault("externalId", None)
        for name, value in _TREE_DEFAULTS.items():  # and before trees
            task.setdefault(name, value)
    return tasks, found.total


def pagination(total: int, page: int, limit: int) -> dict[str, int]:
    """A listing's ``pagination``: total, page, limit, pages."""
    return {"total": total, "page": page, "limit": limit, "pages": math.ceil(total / limit)}


_TREE_DEFAULTS = {
    "parentId": None,
    "childCount": 0,
    "weight": 1,
    "onChildFailure": "fail",
    "completeWithChildren": False,
    "depth": 1,
}


def _lower_bound(timestamp: str | None) -> float | None:
    """The least created_at a task created after ``timestamp`` has.

    Compared as clients see createdAt, in whole milliseconds (truncated): a task whose
    createdAt is exactly ``timestamp`` is not after it, though its clock time is a
    fraction of a millisecond later.
    """
    if timestamp is None:
        return None
    millis = round(models.timestamp_seconds(timestamp) * 1000, 3)
    return (math.floor(millis) + 1) / 1000


def _upper_bound(timestamp: str | None) -> float | None:
    """The created_at every task created before ``timestamp`` is below (milliseconds)."""
    if timestamp is None:
        return None
    millis = round(models.timestamp_seconds(timestamp) * 1000, 3)
    return math.ceil(millis) / 1000


async def get_by_external_id(call: Call, query: models.ExternalIdQuery) -> dict[str, Any]:
    """The caller's task with this external id (admins: any owner's; ``owner`` narrows)."""
    who = call.who
    ids = call.state.external_ids
    assert ids is not None, "the server sets external_ids"
    if who.is_admin:
        found = await ids.find(query.external_id, query.owner)
        if len(found) > 1:
            raise ApiError(
                400,
                "VALIDATION_ERROR",
                "owner: several owners have a task with this externalId; name one",
                details=[{"field": "owner", "message": "required when several owners match"}],
            )
    elif query.owner is not None and query.owner != who.owner:
        found = []
    else:
        found = await ids.find(query.external_id, who.owner)
    if not found:
        raise ApiError(404, "TASK_NOT_FOUND", "no task with this externalId")
    _, task_id = found[0]
    task: dict[str, Any] = await call_task(call, task_id, Read(who.owner_filter))
    return task
