"""Running a mutating call at most once per Idempotency-Key (see :mod:`spectral.api.idempotency`).

The key travels explicitly: :func:`run` gives the operation a
:class:`~spectral.api.call.Call` whose ``once`` the task's actor records with the
change, and the operation's :class:`~spectral.api.call.Result` says whether the
actor answered from such a record instead.
"""

from __future__ import annotations

import json
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from typing import Any

from spectral.api import idempotency
from spectral.api.call import Call, Once, as_result

Run = Callable[[Call, Any], Awaitable[Any]]


@dataclass(frozen=True, slots=True)
class Outcome:
    """What to answer: status and payload, and whether (and when first) it was answered."""

    status: int
    payload: Any
    key: str | None = None
    replayed_at: float | None = None


async def run(call: Call, work: Run, value: Any, status: int) -> Outcome:
    """Run ``work(call, value)`` unless this (owner, key) was answered already; then answer
    from its record.

    Args:
        status: the operation's success status (a result may name another).
    """
    request = call.request
    key = idempotency.check_key(request.header("idempotency-key"))
    if key is None:
        result = as_result(await work(call, value))
        return Outcome(result.status or status, result.payload)
    try:
        body: Any = json.loads(request.body) if request.body else None
    except ValueError:
        body = request.body.decode("utf-8", "replace")  # refused by validation anyway
    fingerprint = idempotency.fingerprint(f"{request.method} {request.path}", body)
    who = call.who
    store = call.state.idempotency
    async with store.locked(who.owner, key):
        record = await store.get(who.owner, key)
        if record is not None:
            if record.fingerprint != fingerprint:
                raise idempotency.reused_error()
            return Outcome(record.status, record.answer, key, record.created_at)
        once = Once(idempotency.task_key(who.owner, key), fingerprint)
        result = as_result(await work(replace(call, once=once), value))
        answered = result.status or status
        first = result.replayed_at if result.replayed_at is not None else time.time()
        record = idempotency.Record(fingerprint, answered, result.payload, first)
        await store.put(who.owner, key, record)
        return Outcome(answered, result.payload, key, result.replayed_at)


def replay_headers(outcome: Outcome) -> list[tuple[str, str]]:
    """``Idempotent-Replayed: true`` on an answer served from a record."""
    if outcome.replayed_at is None:
        return []
    return [(idempotency.REPLAYED_HEADER.lower(), "true")]
