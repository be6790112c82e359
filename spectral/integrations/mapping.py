"""From a verified payload to what happens to which task. Pure: no I/O, no clock.

An integration's :class:`Mapping` says where the payload keeps the external id, the
provider's status (and, optionally, progress and error), and which provider status
means which step of the unified sequence ``initialized → processing →
completed | failed``. :func:`read` turns one payload into a :class:`Delivery`, or
raises :class:`PayloadError` naming the path at fault; :func:`command` turns a
delivery into the task command that applies it (``initialized`` creates, so it has
none: the caller creates the task if it is absent).
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from spectral.integrations import paths
from spectral.tasks import state as sm

#: Longest provider status and error taken from a payload; external ids as tasks take them.
MAX_STATUS = 100
_EXTERNAL_ID = re.compile(sm.EXTERNAL_ID_PATTERN)
MAX_ERROR = 2_000
#: The error of a ``failed`` delivery whose payload has none.
DEFAULT_ERROR = "the provider reported a failure"


class Step(StrEnum):
    """The unified sequence's steps a provider status maps to."""

    INITIALIZED = "initialized"
    PROCESSING = "processing"
    COMPLETED = "completed"
    FAILED = "failed"


@dataclass(frozen=True, slots=True)
class Mapping:
    """Where an integration finds things in a payload (paths parsed at registration)."""

    external_id_path: str
    status_path: str
    status_map: dict[str, Step]
    progress_path: str | None = None
    error_path: str | None = None


@dataclass(frozen=True, slots=True)
class Delivery:
    """What one payload asks for."""

    external_id: str
    provider_status: str
    step: Step
    progress: float | None = None
    error: str | None = None


class PayloadError(Exception):
    """A payload the mapping cannot read: ``status`` 400 (a path) or 422 (a status)."""

    def __init__(self, status: int, code: str, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.status = status
        self.code = code
        self.field = field
        self.message = message


def _value(payload: Any, path: str, name: str) -> Any:
    try:
        return paths.resolve(payload, paths.parse(path))
    except (paths.MissingPathError, paths.PathSyntaxError) as error:
        raise PayloadError(400, "CALLBACK_PATH_MISSING", path, f"{error} ({name})") from None


def read(mapping: Mapping, payload: Any) -> Delivery:
    """The delivery ``payload`` describes.

    Raises:
        PayloadError: a mapped path is missing or holds the wrong type (400, naming the
            path), or the provider status is not in the status map (422, naming it).
    """
    if not isinstance(payload, dict):
        raise PayloadError(400, "INVALID_JSON", "body", "the payload must be a JSON object")
    raw_id = _value(payload, mapping.external_id_path, "externalIdPath")
    if isinstance(raw_id, bool) or not isinstance(raw_id, str | int):
        raise PayloadError(
            400, "CALLBACK_PATH_INVALID", mapping.external_id_path,
            "the external id must be a string or an integer (externalIdPath)",
        )  # fmt: skip
    external_id = str(raw_id)
    if not _EXTERNAL_ID.match(external_id):
        raise PayloadError(
            400, "CALLBACK_PATH_INVALID", mapping.external_id_path,
            "the external id must be 1-255 characters, none a control character"
            " (externalIdPath)",
        )  # fmt: skip
    status = _value(payload, mapping.status_path, "statusPath")
    if not isinstance(status, str) or len(status) > MAX_STATUS:
        raise PayloadError(
            400, "CALLBACK_PATH_INVALID", mapping.status_path,
            f"the status must be a string of at most {MAX_STATUS} characters (statusPath)",
        )  # fmt: skip
    step = mapping.status_map.get(status)
    if step is None:
        raise PayloadError(
            422, "CALLBACK_STATUS_UNMAPPED", mapping.status_path,
            f"provider status {status!r} is not in the statusMap (statusPath)",
        )  # fmt: skip
    progress = None
    if step is Step.PROCESSING and mapping.progress_path is not None:
        progress = _progress(payload, mapping.progress_path)
    error = None
    if step is Step.FAILED:
        error = _error(payload, mapping.error_path)
    return Delivery(external_id, status, step, progress, error)


def _progress(payload: Any, path: str) -> float:
    value = _value(payload, path, "progressPath")
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or not math.isfinite(value)
        or not 0 <= value <= 100
    ):
        raise PayloadError(
            400, "CALLBACK_PATH_INVALID", path, "progress must be a number from 0 to 100"
            " (progressPath)",
        )  # fmt: skip
    return float(value)


def _error(payload: Any, path: str | None) -> str:
    if path is None:
        return DEFAULT_ERROR
    try:
        value = paths.resolve(payload, paths.parse(path))
    except paths.MissingPathError:
        return DEFAULT_ERROR  # a failure without a message is still a failure
    text = value if isinstance(value, str) else _compact(value)
    return (text or DEFAULT_ERROR)[:MAX_ERROR]


def _compact(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def command(delivery: Delivery, integration_name: str) -> sm.Command | None:
    """The task command applying ``delivery`` (None for ``initialized``: create if absent).

    ``processing`` with progress reports it; without, it logs a line (which moves a
    pending task to in-progress all the same).
    """
    note = f"{integration_name}: {delivery.provider_status}"
    match delivery.step:
        case Step.INITIALIZED:
            return None
        case Step.PROCESSING if delivery.progress is not None:
            return sm.Progress(progress=delivery.progress, message=note)
        case Step.PROCESSING:
            return sm.Log(message=note)
        case Step.COMPLETED:
            return sm.Complete()
        case Step.FAILED:
            return sm.Fail(error=delivery.error or DEFAULT_ERROR)
