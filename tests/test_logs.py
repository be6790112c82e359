"""Request lines: their shape, batching, and the flush when the server stops."""

from __future__ import annotations

import io
import json
import time

import trio

from spectral.ops.logs import RequestLog


def test_a_request_line_has_the_formatters_shape_and_no_query() -> None:
    out = io.BytesIO()
    log = RequestLog("INFO", out)
    log.request("GET", "/tasks/a?token=secret", "/tasks/{taskId}", 200, time.perf_counter(),
                keyId="k", taskId="a")  # fmt: skip
    assert out.getvalue() == b""  # batched
    log.flush()
    line = json.loads(out.getvalue())
    fields = ("level", "logger", "msg", "method", "path", "route", "status")
    assert {k: line[k] for k in fields} == {
        "level": "info", "logger": "spectral.http", "msg": "request", "method": "GET",
        "path": "/tasks/a", "route": "/tasks/{taskId}", "status": 200,
    }  # fmt: skip
    assert line["ms"] >= 0 and line["keyId"] == "k" and line["taskId"] == "a"
    assert b"secret" not in out.getvalue()


def test_a_full_batch_is_written_at_once_and_warning_level_writes_nothing() -> None:
    out = io.BytesIO()
    log = RequestLog("INFO", out)
    for n in range(RequestLog.MAX_LINES):
        log.request("GET", f"/p{n}", "/p", 200, time.perf_counter())
    assert out.getvalue().count(b"\n") == RequestLog.MAX_LINES
    quiet = io.BytesIO()
    RequestLog("WARNING", quiet).request("GET", "/", "/", 200, time.perf_counter())
    assert quiet.getvalue() == b""


async def test_serve_flushes_every_interval_and_when_cancelled(autojump_clock) -> None:
    out = io.BytesIO()
    log = RequestLog("INFO", out, interval=0.5)
    async with trio.open_nursery() as nursery:
        await nursery.start(log.serve)
        log.request("GET", "/a", "/a", 200, time.perf_counter())
        await trio.sleep(0.6)
        assert out.getvalue().count(b"\n") == 1
        log.request("GET", "/b", "/b", 200, time.perf_counter())
        nursery.cancel_scope.cancel()
    assert out.getvalue().count(b"\n") == 2
