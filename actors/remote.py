"""Objects spread over several routers: the one hook the router consults (cluster mode).

The runtime knows nothing of nodes, networks or databases. A product that runs one
router per node hands each router a :class:`Remote` (``Router.remote``); the router
then asks it, for every call, whether the object lives here, and forwards the call
when it does not. Without one (the default) every object lives here.

- :meth:`Remote.route` decides where an object lives; with ``create`` it may make
  this node the object's home (the first node to create an object keeps it).
- :meth:`Remote.forward` runs a call on the object's home and returns its answer or
  raises its error, as a local call would.
- :meth:`Remote.activating` is awaited before an object's file is opened here: the
  place to take a fencing token, or to refuse (raise an :mod:`actors.errors` error).
- :meth:`Remote.may_commit` is checked right before every COMMIT: a router that lost
  its right to write (its lease lapsed) rolls the turn back and answers
  :class:`~actors.errors.ActorBrokenError` instead.
"""

from __future__ import annotations

from typing import Any, Protocol


class Remote(Protocol):
    """Where objects live, when several routers share them."""

    async def route(self, kind: str, object_id: str, *, create: bool) -> bool:
        """True if the object lives here (placing it here first when ``create`` allows)."""
        ...

    async def forward(self, kind: str, object_id: str, message: Any, *, create: bool) -> Any:
        """Deliver ``message`` on the object's home; its answer, or raise its error."""
        ...

    async def activating(self, kind: str, object_id: str) -> None:
        """Called before the object's file is opened here; raise to refuse."""
        ...

    def may_commit(self) -> bool:
        """False while this router must not commit anything."""
        ...
