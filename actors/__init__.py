"""A small Durable-Object runtime on trio: one supervised actor per (kind, id).

Knows nothing of tasks. See docs/architecture.md for the API an object kind implements.
"""

from actors.actor import Actor
from actors.errors import (
    ActorBrokenError,
    ActorClosedError,
    ActorCrashedError,
    ActorError,
    ObjectMovedError,
    ObjectNotFoundError,
    Rejected,
    RemoteUnavailableError,
    RouterClosedError,
)
from actors.messaging import Address
from actors.router import Router, RouterConfig, RouterStatistics, open_router
from actors.sockets import (
    CLOSE_GOING_AWAY,
    CLOSE_NORMAL,
    CLOSE_TOO_SLOW,
    CloseReason,
    SocketSet,
    TrySend,
    Watcher,
)
from storage import Migration

__all__ = [
    "CLOSE_GOING_AWAY",
    "CLOSE_NORMAL",
    "CLOSE_TOO_SLOW",
    "Actor",
    "ActorBrokenError",
    "ActorClosedError",
    "ActorCrashedError",
    "ActorError",
    "Address",
    "CloseReason",
    "Migration",
    "ObjectMovedError",
    "ObjectNotFoundError",
    "Rejected",
    "RemoteUnavailableError",
    "Router",
    "RouterClosedError",
    "RouterConfig",
    "RouterStatistics",
    "SocketSet",
    "TrySend",
    "Watcher",
    "open_router",
]
