"""``GET /tasks/{taskId}/events``: the watch protocol as Server-Sent Events.

Same messages as the WebSocket (encoded once, shared), ``id:`` = seq, resumable
with ``Last-Event-ID`` (or ``?since=``). A comment line every 15 s keeps proxies
from closing an idle stream. The stream ends after ``deleted``, on shutdown, when
the client goes away, or when it falls more than the watcher queue behind.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import trio
from pydantic import ValidationError

from actors import CLOSE_GOING_AWAY, CloseReason, Watcher
from spectral.api import models
from spectral.api.call import Call
from spectral.api.failures import validation_error
from spectral.api.watch import opening, release, start_watch
from spectral.errors import ApiError
from spectral.front import StreamingResponse
from spectral.ops import metrics

KEEPALIVE_SECONDS = 15.0
KEEPALIVE = b": keepalive\n\n"
HEADERS = [
    ("content-type", "text/event-stream"),
    ("cache-control", "no-cache"),
    ("x-accel-buffering", "no"),
]


def resume_point(call: Call, query: models.EventsQuery) -> models.EventsQuery:
    """The query, with ``Last-Event-ID`` standing in for a missing ``since``."""
    last_event_id = call.request.header("last-event-id")
    if last_event_id is None or query.since is not None:
        return query
    try:
        since = models.WatchQuery.model_validate({"since": last_event_id.strip()}).since
    except ValidationError as error:
        raise validation_error(error) from None
    return query.model_copy(update={"since": since})


async def events(call: Call, query: models.EventsQuery) -> StreamingResponse:
    """Watch a task as an event stream."""
    state, who, task_id = call.state, call.who, query.task_id
    query = resume_point(call, query)
    if not state.auth.open_watch(who):
        raise ApiError(429, "TOO_MANY_WATCHERS", "too many watch connections for this key")
    watcher = Watcher(state.settings.watcher_queue)
    try:
        start = await start_watch(state, who, task_id, query, watcher)
    except BaseException:
        state.auth.close_watch(who)
        raise

    metrics.SSE_STREAMS.inc()
    closed = False

    def close() -> None:
        nonlocal closed
        if closed:
            return
        closed = True
        state.auth.close_watch(who)
        metrics.SSE_STREAMS.dec()
        watcher.close(CloseReason(CLOSE_GOING_AWAY, "stream ended"))
        release(state, task_id, watcher)

    async def stream() -> AsyncIterator[bytes]:
        async for outgoing in opening(state, who, task_id, start):
            yield outgoing.sse
        while True:
            item = None
            with trio.move_on_after(KEEPALIVE_SECONDS):
                try:
                    item = await watcher.next()
                except trio.EndOfChannel:
                    return
            yield KEEPALIVE if item is None else item.sse

    return StreamingResponse(200, stream(), list(HEADERS), on_close=close)
