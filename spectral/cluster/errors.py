"""Errors of cluster mode (no engine client imported here)."""

from __future__ import annotations

from actors import ActorBrokenError, RemoteUnavailableError

#: The object's home node cannot be reached: 503 ``TASK_UNAVAILABLE`` until it returns.
HomeUnavailableError = RemoteUnavailableError


class NodeFencedError(ActorBrokenError):
    """This node lost its lease (PostgreSQL unreachable): it refuses work until renewed."""
