"""``GET /tasks/{taskId}/events``: the watch protocol as Server-Sent Events.

Same messages as the WebSocket (encoded once, shared), ``id:`` = seq, resumable
with ``Last-Event-ID`` (or ``?since=``). A comment line every 15 s keeps proxies
from closing an idle stream. The stream ends after ``deleted``, on shutdown, or
when the client falls more than the watcher queue behind.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import trio
from pydantic import ValidationError
from quart import Quart, Response, request

from actors import CLOSE_GOING_AWAY, CloseReason, Watcher
from spectral import metrics
from spectral.api import models
from spectral.api.context import principal
from spectral.api.failures import validation_error
from spectral.api.rest import parse_task_id
from spectral.api.watch import opening, release, start_watch
from spectral.errors import ApiError
from spectral.state import ServerState

KEEPALIVE_SECONDS = 15.0
KEEPALIVE = b": keepalive\n\n"


def watch_query() -> models.WatchQuery:
    """The query, with ``Last-Event-ID`` standing in for ``since``."""
    params = request.args.to_dict()
    last_event_id = request.headers.get("Last-Event-ID")
    if last_event_id is not None and "since" not in params:
        params["since"] = last_event_id.strip()
    try:
        return models.WatchQuery.model_validate(params)
    except ValidationError as error:
        raise validation_error(error) from None


def register(app: Quart, state: ServerState) -> None:
    """Add the SSE endpoint to ``app``."""

    @app.get("/tasks/<task_id>/events")
    async def task_events(task_id: str) -> Response:
        """Watch a task as an event stream."""
        task_id = parse_task_id(task_id)
        query = watch_query()
        who = principal()
        if not state.auth.open_watch(who):
            raise ApiError(429, "TOO_MANY_WATCHERS", "too many watch connections for this key")
        watcher = Watcher(state.settings.watcher_queue)
        try:
            start = await start_watch(state, who, task_id, query, watcher)
        except BaseException:
            state.auth.close_watch(who)
            raise

        async def stream() -> AsyncIterator[bytes]:
            metrics.SSE_STREAMS.inc()
            try:
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
            finally:
                state.auth.close_watch(who)
                metrics.SSE_STREAMS.dec()
                watcher.close(CloseReason(CLOSE_GOING_AWAY, "stream ended"))
                release(state, task_id, watcher)

        response = Response(stream(), content_type="text/event-stream")
        response.headers["Cache-Control"] = "no-cache"
        response.headers["X-Accel-Buffering"] = "no"
        response.timeout = None
        return response
