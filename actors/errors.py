"""Errors raised by the actor runtime, split the way trio splits closed and broken."""

from __future__ import annotations


class ActorError(Exception):
    """Base class for every error raised by :mod:`actors`."""


class ObjectNotFoundError(ActorError):
    """The object has no file and the call did not ask to create it."""


class ActorBrokenError(ActorError):
    """The object is unavailable: its file is unreadable, or its turns crash in a loop.

    Only that object is affected. The router refuses it for a cool-down period,
    then tries to activate it again. Products answer 503.
    """


class RemoteUnavailableError(ActorBrokenError):
    """The object lives on another router that cannot be reached (actors/remote.py)."""

    def __init__(self, message: str, *, node_id: str) -> None:
        super().__init__(message)
        self.node_id = node_id


class ObjectMovedError(ActorError):
    """The object turned out to live elsewhere (another router took it first): route the
    call again (actors/remote.py). Raised by a :class:`~actors.remote.Remote`."""


class ActorClosedError(ActorError):
    """We closed the actor (eviction, deletion, shutdown) before it handled the message.

    The message was not applied. :meth:`Router.call` retries these by itself.
    """


class RouterClosedError(ActorClosedError):
    """The router is shutting down and accepts no new messages."""


class ActorCrashedError(ActorError):
    """The handler raised an unexpected exception: this message was rolled back.

    Other messages of the same turn are unaffected; the actor reloads its state
    from its file. The original exception is the ``__cause__``.
    """


class Rejected(ActorError):
    """Base class for a handler's expected refusals (a domain error, not a crash).

    Raising it rolls back only the message that raised it, reaches the caller
    unchanged, and does not count as a crash. Products subclass it.
    """
