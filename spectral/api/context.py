"""Who is asking: the principal every handler acts for, and what its role may do.

Authentication (:mod:`spectral.access.auth`) gives each request its principal, which
travels in the operation's :class:`~spectral.api.call.Call`; operations pass its
``owner_filter`` to the actors, so a non-admin only ever reaches its own owner's
objects. What a role
may do is checked where the operation is, with :func:`require_write` and
:func:`require_admin`, so that every surface (REST, RPC) applies the same rules.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from spectral.errors import ApiError

Role = Literal["admin", "service", "reader"]

#: The owner of tasks created with the bootstrap admin key.
ADMIN_OWNER = "admin"


@dataclass(frozen=True, slots=True)
class Principal:
    """An authenticated caller: the key's id, its owner, its role (and a token's scope).

    A JWT's principal has the key id ``jwt:<owner>`` (:mod:`spectral.access.jwts`).
    """

    key_id: str
    owner: str
    role: Role
    #: Set for a watch token: the one task or room (``task:<id>``) it may watch.
    scope: str | None = None
    #: Set for a JWT with ``exp``: the watch tokens it mints expire no later (unix seconds).
    expires_at: float | None = None

    @property
    def is_admin(self) -> bool:
        """Admins see and change every owner's objects."""
        return self.role == "admin"

    @property
    def owner_filter(self) -> str | None:
        """The owner whose objects this caller may touch, or None for all (admin)."""
        return None if self.is_admin else self.owner


def require_write(who: Principal, action: str = "change tasks") -> None:
    """403 unless the caller may create and mutate (admin, service; never a token)."""
    if who.scope is not None or who.role not in ("admin", "service"):
        raise ApiError(403, "FORBIDDEN", f"a {_kind(who)} may not {action}")


def require_admin(who: Principal, action: str = "use admin endpoints") -> None:
    """403 unless the caller holds an admin key."""
    if who.scope is not None or not who.is_admin:
        raise ApiError(403, "FORBIDDEN", f"a {_kind(who)} may not {action}")


def _kind(who: Principal) -> str:
    return "watch token" if who.scope is not None else f"{who.role} key"
