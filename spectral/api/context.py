"""Who is asking: the principal every handler acts for.

Until API keys land (the auth issue), every request acts as the admin. Handlers
already take the principal from :func:`principal` and pass ``owner_filter`` to
the actors, so authentication only has to fill this in.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Role = Literal["admin", "service", "reader"]

#: The owner of tasks created with the bootstrap admin key.
ADMIN_OWNER = "admin"


@dataclass(frozen=True, slots=True)
class Principal:
    """An authenticated caller: the key's id, its owner and its role."""

    key_id: str
    owner: str
    role: Role

    @property
    def is_admin(self) -> bool:
        """Admins see and change every owner's objects."""
        return self.role == "admin"

    @property
    def owner_filter(self) -> str | None:
        """The owner whose objects this caller may touch, or None for all (admin)."""
        return None if self.is_admin else self.owner


BOOTSTRAP_ADMIN = Principal(key_id="bootstrap", owner=ADMIN_OWNER, role="admin")


def principal() -> Principal:
    """The principal of the current request (every request is the admin until auth lands)."""
    return BOOTSTRAP_ADMIN
