"""Running a mutating request at most once per Idempotency-Key (see :mod:`spectral.idempotency`)."""

from __future__ import annotations

import json
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from quart import request

from spectral import idempotency
from spectral.api.context import Principal
from spectral.state import ServerState

Work = Callable[[], Awaitable[tuple[int, Any]]]


@dataclass(frozen=True, slots=True)
class Outcome:
    """What to answer: status and payload, and whether (and when first) it was answered."""

    status: int
    payload: Any
    key: str | None = None
    replayed_at: float | None = None


def request_key() -> str | None:
    """The request's ``Idempotency-Key``, validated (400 naming the header)."""
    return idempotency.check_key(request.headers.get(idempotency.HEADER))


async def run_once(
    state: ServerState, who: Principal, route: str, raw: bytes, work: Work
) -> Outcome:
    """Run ``work`` unless this (owner, key) was answered already; then answer from its record.

    Args:
        route: names the operation in the fingerprint (e.g. ``"rest create"``).
        raw: the request body as received (its canonical JSON is fingerprinted).
        work: performs the request; returns the status and payload to record.
    """
    key = request_key()
    if key is None:
        status, payload = await work()
        return Outcome(status, payload)
    try:
        body: Any = json.loads(raw) if raw else None
    except ValueError:
        body = raw.decode("utf-8", "replace")  # refused by validation anyway
    fingerprint = idempotency.fingerprint(route, body)
    store = state.idempotency
    async with store.locked(who.owner, key):
        record = store.get(who.owner, key)
        if record is not None:
            if record.fingerprint != fingerprint:
                raise idempotency.reused_error()
            return Outcome(record.status, record.answer, key, record.created_at)
        tag = idempotency.Tag(key, who.owner, fingerprint)
        token = idempotency.CURRENT.set(tag)
        try:
            status, payload = await work()
        finally:
            idempotency.CURRENT.reset(token)
        first = tag.replayed_at if tag.replayed_at is not None else time.time()
        store.put(who.owner, key, idempotency.Record(fingerprint, status, payload, first))
        return Outcome(status, payload, key, tag.replayed_at)


def replay_headers(outcome: Outcome) -> dict[str, str]:
    """``Idempotent-Replayed: true`` on an answer served from a record."""
    return {idempotency.REPLAYED_HEADER: "true"} if outcome.replayed_at is not None else {}
