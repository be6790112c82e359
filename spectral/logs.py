"""Structured logs: one JSON object per line on stderr."""

from __future__ import annotations

import json
import logging
import sys
import time
from typing import Any

#: LogRecord attributes that are not user fields.
_STANDARD = set(vars(logging.makeLogRecord({}))) | {"message", "asctime", "taskName"}


class JsonFormatter(logging.Formatter):
    """Formats a record as ``{"ts", "level", "logger", "msg", ...extra fields}``."""

    def format(self, record: logging.LogRecord) -> str:
        """One JSON line; ``extra=`` fields of the call become keys."""
        line: dict[str, Any] = {
            "ts": round(record.created, 3),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for key, value in vars(record).items():
            if key not in _STANDARD:
                line[key] = value
        if record.exc_info:
            line["exc"] = self.formatException(record.exc_info)
        return json.dumps(line, default=str, separators=(",", ":"))


def configure(level: str = "INFO") -> None:
    """Send every logger's records to stderr as JSON lines at ``level``."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)


def log_request(
    logger: logging.Logger,
    method: str,
    route: str,
    status: int,
    started: float,
    *,
    path: str,
    **fields: Any,
) -> None:
    """Log one finished request: method, path (never its query), route, status, duration."""
    if logger.isEnabledFor(logging.INFO):
        duration_ms = round((time.perf_counter() - started) * 1000, 3)
        logger.info(
            "request",
            extra={
                "method": method,
                "path": path.partition("?")[0],
                "route": route,
                "status": status,
                "ms": duration_ms,
                **fields,
            },
        )
