"""The task REST endpoints: parse, authorize, forward to a procedure, answer JSON."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError
from quart import Quart, request

from spectral.api import models, procedures, rpc_procedures
from spectral.api.context import Principal, name_task, principal
from spectral.api.failures import validation_error
from spectral.api.once import replay_headers, run_once
from spectral.errors import ApiError
from spectral.state import ServerState

M = TypeVar("M", bound=BaseModel)
Procedure = Callable[[ServerState, Principal, Any], Awaitable[dict[str, Any]]]

#: ``POST /tasks/{name}``: request model, procedure and success status.
MUTATIONS: dict[str, tuple[type[BaseModel], Procedure, int]] = {
    "create": (models.CreateTask, procedures.create, 201),
    "updateProgress": (models.UpdateProgress, procedures.update_progress, 200),
    "addEvent": (models.AddEvent, procedures.add_event, 200),
    "complete": (models.Complete, procedures.complete, 200),
    "fail": (models.Fail, procedures.fail, 200),
    "cancel": (models.Cancel, procedures.cancel, 200),
    "batchUpdateProgress": (models.BatchUpdateProgress, procedures.batch_update_progress, 200),
}
#: ``POST /tasks/{name}`` for the RPC procedures that have no body endpoint above: the
#: original's OpenAPI form, answering what the RPC answers, as plain JSON (docs/api.md, "Tasks").
ORIGINAL_FORM = ("getById", "getHistory", "listAll", "delete")


async def parse_body(model: type[M], *, empty_is_object: bool = False) -> M:
    """Validate the request body against ``model`` (400 naming the field on failure).

    An empty body is 400 ``INVALID_JSON``, or ``{}`` with ``empty_is_object``.
    """
    return validate_body(model, await request.get_data(cache=False), empty_is_object)


def validate_body(model: type[M], data: bytes, empty_is_object: bool = False) -> M:
    """Validate body bytes already read against ``model`` (see :func:`parse_body`)."""
    if not data and empty_is_object:
        data = b"{}"
    if not data:
        raise ApiError(400, "INVALID_JSON", "the body is empty; send a JSON object")
    try:
        return model.model_validate_json(data)
    except ValidationError as error:
        raise validation_error(error) from None


def parse_query(model: type[M]) -> M:
    """Validate the query string against ``model``."""
    try:
        return model.model_validate(request.args.to_dict())
    except ValidationError as error:
        raise validation_error(error) from None


def parse_task_id(task_id: str) -> str:
    """Validate a task id taken from the path."""
    try:
        return models.TaskRef.model_validate({"taskId": task_id}).task_id
    except ValidationError as error:
        raise validation_error(error) from None


def _mutation_view(
    state: ServerState, name: str, model: type[BaseModel], procedure: Procedure, status: int
) -> Callable[[], Awaitable[tuple[Any, int, dict[str, str]]]]:
    async def view() -> tuple[Any, int, dict[str, str]]:
        who = principal()
        raw = await request.get_data(cache=False)
        body = validate_body(model, raw)
        name_task(body)

        async def work() -> tuple[int, Any]:
            return status, await procedure(state, who, body)

        outcome = await run_once(state, who, f"rest {name}", raw, work)
        return outcome.payload, outcome.status, replay_headers(outcome)

    view.__doc__ = procedure.__doc__
    return view


def _original_view(
    state: ServerState, name: str, procedure: rpc_procedures.Procedure
) -> Callable[[], Awaitable[Any]]:
    async def view() -> Any:
        who = principal()
        raw = await request.get_data(cache=False)
        body = validate_body(procedure.model, raw, empty_is_object=True)
        name_task(body)
        if procedure.reads:
            return await procedure.run(state, who, body)

        async def work() -> tuple[int, Any]:
            return 200, await procedure.run(state, who, body)

        outcome = await run_once(state, who, f"rest {name}", raw, work)
        return outcome.payload, outcome.status, replay_headers(outcome)

    view.__doc__ = procedure.run.__doc__
    return view


def register(app: Quart, state: ServerState) -> None:
    """Add the task endpoints to ``app``."""

    for name, (model, procedure, status) in MUTATIONS.items():
        app.add_url_rule(
            f"/tasks/{name}",
            f"tasks_{name}",
            _mutation_view(state, name, model, procedure, status),
            methods=["POST"],
        )
    for name in ORIGINAL_FORM:
        app.add_url_rule(
            f"/tasks/{name}",
            f"tasks_{name}",
            _original_view(state, name, rpc_procedures.PROCEDURES[name]),
            methods=["POST"],
        )

    @app.get("/tasks")
    async def list_tasks() -> dict[str, Any]:
        """Page through tasks, newest first."""
        return procedures.list_tasks(state, principal(), parse_query(models.ListQuery))

    @app.get("/tasks/<task_id>")
    async def get_task(task_id: str) -> dict[str, Any]:
        """One task."""
        return await procedures.get_task(state, principal(), parse_task_id(task_id))

    @app.get("/tasks/<task_id>/history")
    async def history(task_id: str) -> dict[str, Any]:
        """A page of history."""
        task_id = parse_task_id(task_id)
        query = parse_query(models.HistoryQuery)
        return await procedures.history(state, principal(), task_id, query)

    @app.delete("/tasks/<task_id>")
    async def delete(task_id: str) -> tuple[Any, int, dict[str, str]]:
        """Delete a task."""
        who = principal()
        task_id = parse_task_id(task_id)

        async def work() -> tuple[int, Any]:
            return 200, await procedures.delete(state, who, task_id)

        outcome = await run_once(state, who, f"rest DELETE {task_id}", b"", work)
        return outcome.payload, outcome.status, replay_headers(outcome)
