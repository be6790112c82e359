"""The error envelope (docs/api.md, "Errors"): ``{"error": {"code", "message", "details"?}}``."""

from __future__ import annotations

from http import HTTPStatus
from typing import Any


class ApiError(Exception):
    """An error answered to the client with its status and envelope."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        details: Any = None,
        *,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.details = details
        #: Extra response headers (e.g. ``Retry-After`` on a 429).
        self.headers = headers or {}

    def body(self) -> dict[str, Any]:
        """The JSON envelope."""
        return envelope(self.code, self.message, self.details)


def envelope(code: str, message: str, details: Any = None) -> dict[str, Any]:
    """``{"error": {...}}`` with ``details`` only when there are some."""
    error: dict[str, Any] = {"code": code, "message": message}
    if details is not None:
        error["details"] = details
    return {"error": error}


#: Codes whose standard names vary between Python versions.
_CODES = {413: "PAYLOAD_TOO_LARGE", 422: "UNPROCESSABLE_CONTENT"}


def code_for_status(status: int) -> str:
    """UPPER_SNAKE code for an HTTP status (404 → NOT_FOUND)."""
    if status in _CODES:
        return _CODES[status]
    try:
        return HTTPStatus(status).name
    except ValueError:
        return "ERROR"
