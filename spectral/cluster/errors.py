"""Errors of cluster mode that reach the API layer (no engine client imported here)."""

from __future__ import annotations

from actors import ActorBrokenError


class HomeUnavailableError(ActorBrokenError):
    """The object's home node cannot be reached (stopped, killed, or cut off): 503
    ``TASK_UNAVAILABLE`` until it returns."""

    def __init__(self, message: str, *, node_id: str) -> None:
        super().__init__(message)
        self.node_id = node_id


class NodeFencedError(ActorBrokenError):
    """This node lost its lease (PostgreSQL unreachable): it refuses work until renewed."""
