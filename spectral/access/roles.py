"""The roles an API key may have (docs/api.md, "Authentication and isolation")."""

from typing import Literal

Role = Literal["admin", "service", "reader"]
ROLES: tuple[Role, ...] = ("admin", "service", "reader")
