"""One call of an operation: who asks, with which request, and its idempotency.

Everything an operation needs travels in the :class:`Call` it is given, explicitly:
the server state, the authenticated principal, the request (for the rare operation
that reads a header or the raw body), the path parameters, and, for a mutation
sent with an ``Idempotency-Key``, the :class:`Once` that the task's actor records
with the change. What it answers is a plain payload, or a :class:`Result` when it
must say more (another status, or that the answer was a stored one).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from spectral.api.context import Principal

if TYPE_CHECKING:
    from spectral.front import Request
    from spectral.state import ServerState


@dataclass(frozen=True, slots=True)
class Once:
    """A mutation's ``Idempotency-Key``, as a task's file stores it, and its fingerprint."""

    stored_key: str
    fingerprint: str


@dataclass(frozen=True, slots=True)
class Call:
    """One authorized call of an operation."""

    state: ServerState
    who: Principal
    request: Request
    params: Mapping[str, str] = field(default_factory=dict)
    #: Set for a mutation sent with an ``Idempotency-Key`` (see :mod:`spectral.api.idempotency`).
    once: Once | None = None


@dataclass(frozen=True, slots=True)
class Result:
    """An operation's answer with what the payload alone cannot say."""

    payload: Any
    #: Overrides the operation's success status.
    status: int | None = None
    #: When the answer was first given, if a task answered it from its idempotency record.
    replayed_at: float | None = None


def as_result(value: Any) -> Result:
    """``value`` as a :class:`Result`."""
    return value if isinstance(value, Result) else Result(value)
