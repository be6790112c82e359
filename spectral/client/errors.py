"""The SDK's exceptions: one base carrying the server's ``code`` and HTTP status, and one
subclass per family of codes (docs/api.md, "Errors"), so callers catch what they can act on.
"""

from __future__ import annotations

from typing import Any


class SpectralError(Exception):
    """An error answered by the server (or met on the way to it).

    Attributes:
        status: the HTTP status (0 when no answer arrived).
        code: the server's error code, e.g. ``TASK_NOT_FOUND`` (``UNREACHABLE`` when none).
        message: the server's message.
        details: the server's details, if any.
    """

    def __init__(self, status: int, code: str, message: str, details: Any = None) -> None:
        super().__init__(f"{code}: {message}" if code else message)
        self.status = status
        self.code = code
        self.message = message
        self.details = details


class NotFoundError(SpectralError):
    """404: no such task, room or webhook (or not yours)."""


class ConflictError(SpectralError):
    """409 or 422: the task's state refuses the change (terminal, exists) or an
    idempotency key was reused with another request."""


class ValidationError(SpectralError):
    """400, 413 or 415: the request is malformed; ``message`` names the field."""


class AuthError(SpectralError):
    """401 or 403: no key, a bad or revoked key, or a role that may not do this."""


class RateLimitedError(SpectralError):
    """429 after every retry: ``retry_after`` is the server's last ``Retry-After``."""

    retry_after: float | None = None


class UnavailableError(SpectralError):
    """The server is unreachable, unavailable (502/503/504) or failing, after every
    retry; or the circuit breaker is open."""


class CircuitOpenError(UnavailableError):
    """Refused without a request: recent calls kept failing (see ``CircuitBreaker``)."""


def error_for(status: int, body: Any) -> SpectralError:
    """The exception for an error answer (``{"error": {"code", "message", "details"}}``)."""
    error = body.get("error") if isinstance(body, dict) else None
    if isinstance(error, dict):
        code = str(error.get("code", ""))
        message = str(error.get("message", ""))
        details = error.get("details")
    else:
        code, message, details = f"HTTP_{status}", f"HTTP {status}", body
    return _CLASSES.get(status, _fallback(status))(status, code, message, details)


def _fallback(status: int) -> type[SpectralError]:
    if status >= 500:
        return UnavailableError
    return SpectralError


_CLASSES: dict[int, type[SpectralError]] = {
    400: ValidationError,
    401: AuthError,
    403: AuthError,
    404: NotFoundError,
    409: ConflictError,
    413: ValidationError,
    415: ValidationError,
    422: ConflictError,
    429: RateLimitedError,
    502: UnavailableError,
    503: UnavailableError,
    504: UnavailableError,
}
