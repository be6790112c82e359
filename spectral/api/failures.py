"""Turning what can go wrong below the HTTP layer into the error answers of docs/api.md."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ValidationError

from actors import (
    ActorBrokenError,
    ActorCrashedError,
    ObjectNotFoundError,
    RemoteUnavailableError,
    RouterClosedError,
)
from spectral.errors import ApiError
from spectral.nul import MESSAGE as NUL_MESSAGE
from spectral.nul import may_hold_nul, nul_path
from spectral.sql import SqlError, SqlUnavailableError
from spectral.tasks.actor import TaskRejected
from spectral.tasks.state import InvalidCommandError, TaskStateError


def validation_error(error: ValidationError, where: str = "") -> ApiError:
    """400 naming each offending field; malformed JSON is ``INVALID_JSON``."""
    problems = error.errors(include_url=False, include_context=False, include_input=False)
    if any(problem["type"] == "json_invalid" for problem in problems):
        return ApiError(400, "INVALID_JSON", f"the body is not valid JSON: {problems[0]['msg']}")
    details = [
        {"field": _field(where, problem["loc"]), "message": problem["msg"]} for problem in problems
    ]
    first = details[0]
    return ApiError(400, "VALIDATION_ERROR", f"{first['field']}: {first['message']}", details)


def _field(where: str, loc: tuple[Any, ...]) -> str:
    parts = [where] if where else []
    parts += [str(part) for part in loc]
    return ".".join(parts) or "body"


def refuse_nul(value: BaseModel | None, json_text: str | bytes | None = None) -> None:
    """A 400 naming the first string (or object key) of a validated input holding NUL
    (see :mod:`spectral.nul`); ``json_text``, the JSON it came from, skips the walk when
    it cannot hold one."""
    if value is None or (json_text is not None and not may_hold_nul(json_text)):
        return
    path = nul_path(value)
    if path is not None:
        field = ".".join(path) or "body"
        raise ApiError(
            400,
            "VALIDATION_ERROR",
            f"{field}: {NUL_MESSAGE}",
            [{"field": field, "message": NUL_MESSAGE}],
        )


#: Seconds a client is told to wait before retrying a task whose node is down.
HOME_RETRY_AFTER = 2


def task_error(error: BaseException, task_id: str) -> ApiError:
    """The answer for an error raised by a call to a task's actor."""
    match error:
        case TaskRejected():
            return state_error(error.reason, task_id)
        case ObjectNotFoundError():
            return ApiError(404, "TASK_NOT_FOUND", f"task {task_id!r} not found")
        case RouterClosedError():
            return ApiError(503, "SHUTTING_DOWN", "the server is shutting down")
        case RemoteUnavailableError():
            return ApiError(
                503,
                "TASK_UNAVAILABLE",
                f"task {task_id!r} is unavailable: its node is down; try again later",
                headers={"Retry-After": str(HOME_RETRY_AFTER)},
            )
        case ActorBrokenError():
            return ApiError(
                503, "STORAGE_UNAVAILABLE", f"task {task_id!r} is unavailable; try again later"
            )
        case ActorCrashedError():
            return ApiError(500, "INTERNAL", f"task {task_id!r} failed to apply the request")
    raise error


def state_error(reason: TaskStateError, task_id: str) -> ApiError:
    """The answer for a refusal of the task state machine."""
    if isinstance(reason, InvalidCommandError):
        return ApiError(
            400,
            reason.code,
            str(reason),
            [{"field": reason.field, "message": str(reason).split(": ", 1)[-1]}],
        )
    if reason.code == "TASK_NOT_FOUND":
        return ApiError(404, reason.code, f"task {task_id!r} not found")
    return ApiError(reason.status, reason.code, str(reason))


#: Seconds a client is told to wait before retrying when the database failed.
STORAGE_RETRY_AFTER = 1


def storage_error(error: SqlError) -> ApiError:
    """503 ``STORAGE_UNAVAILABLE`` for a database error nothing below the API handled."""
    if isinstance(error, SqlUnavailableError):
        message = "the database is unavailable; try again later"
    else:
        message = "the database could not complete the request; try again later"
    return ApiError(
        503, "STORAGE_UNAVAILABLE", message, headers={"Retry-After": str(STORAGE_RETRY_AFTER)}
    )


def sql_error_in(error: BaseException) -> SqlError | None:
    """``error`` if it is a :class:`SqlError`, or the first of a group made only of them."""
    if isinstance(error, SqlError):
        return error
    if isinstance(error, BaseExceptionGroup):
        matched, rest = error.split(SqlError)
        if matched is not None and rest is None:
            first: BaseException = matched
            while isinstance(first, BaseExceptionGroup):
                first = first.exceptions[0]
            return first if isinstance(first, SqlError) else None
    return None


#: Errors :func:`task_error` knows how to answer.
TASK_ERRORS = (
    TaskRejected,
    ObjectNotFoundError,
    ActorBrokenError,
    ActorCrashedError,
    RouterClosedError,
)
