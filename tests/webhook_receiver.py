"""A webhook receiver for tests: a small h11 server on 127.0.0.1 that verifies every delivery.

Each path (``/hook/<name>``) has its secret; a delivery is verified with the
``standardwebhooks`` reference library and kept once per ``webhook-id`` (the
receiver's de-duplication). ``answer`` decides each reply's status from the
delivery id and how many times that id arrived; ``stop``/``start`` take the
listener down and bring it back on the same port (connections are refused
meanwhile).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import h11
import trio
from standardwebhooks.webhooks import Webhook, WebhookVerificationError


@dataclass
class Receiver:
    """Deliveries received, verified and de-duplicated by ``webhook-id``."""

    secrets: dict[str, str] = field(default_factory=dict)
    #: (delivery id, times seen) → HTTP status to answer.
    answer: Callable[[str, int], int] = lambda _id, _n: 200
    #: Accepted payloads by path, then by delivery id (first arrival kept).
    received: dict[str, dict[str, dict[str, Any]]] = field(default_factory=dict)
    #: Every arrival, accepted or not: (path, delivery id, status answered).
    arrivals: list[tuple[str, str, int]] = field(default_factory=list)
    #: Deliveries whose signature did not verify (must stay empty).
    bad: list[str] = field(default_factory=list)
    port: int = 0
    _scope: trio.CancelScope | None = None
    _nursery: trio.Nursery | None = None

    def url(self, name: str) -> str:
        """The URL of path ``/hook/<name>``."""
        return f"http://127.0.0.1:{self.port}/hook/{name}"

    def payloads(self, name: str) -> list[dict[str, Any]]:
        """Accepted payloads of ``/hook/<name>``, in arrival order."""
        return list(self.received.get(f"/hook/{name}", {}).values())

    async def start(self, nursery: trio.Nursery) -> None:
        """Listen (on the same port as before, if any) in ``nursery``."""
        self._nursery = nursery
        self._scope = await nursery.start(self._serve)

    def stop(self) -> None:
        """Close the listener and every connection: attempts get connection refused."""
        assert self._scope is not None
        self._scope.cancel()
        self._scope = None

    async def _serve(self, *, task_status: trio.TaskStatus[trio.CancelScope]) -> None:
        with trio.CancelScope() as scope:
            listeners = await trio.open_tcp_listeners(self.port, host="127.0.0.1")
            self.port = listeners[0].socket.getsockname()[1]
            async with trio.open_nursery() as nursery:
                task_status.started(scope)
                await trio.serve_listeners(self._connection, listeners, handler_nursery=nursery)

    async def _connection(self, stream: trio.SocketStream) -> None:
        conn = h11.Connection(h11.SERVER)
        async with stream:
            while True:
                request: h11.Request | None = None
                body = b""
                while True:
                    event = conn.next_event()
                    if event is h11.NEED_DATA:
                        data = await stream.receive_some(65536)
                        if not data:
                            return
                        conn.receive_data(data)
                    elif isinstance(event, h11.Request):
                        request = event
                    elif isinstance(event, h11.Data):
                        body += event.data
                    elif isinstance(event, h11.EndOfMessage):
                        break
                    elif isinstance(event, h11.ConnectionClosed):
                        return
                assert request is not None
                status = self._handle(request.target.decode(), dict(_headers(request)), body)
                out = conn.send(h11.Response(status_code=status, headers=[("content-length", "0")]))
                out += conn.send(h11.EndOfMessage())
                await stream.send_all(out)
                if conn.our_state is h11.MUST_CLOSE:
                    return
                conn.start_next_cycle()

    def _handle(self, path: str, headers: dict[str, str], body: bytes) -> int:
        message_id = headers.get("webhook-id", "")
        secret = self.secrets.get(path)
        try:
            if secret is None:
                raise WebhookVerificationError(f"no secret for {path}")
            payload = Webhook(secret).verify(body, headers)
        except WebhookVerificationError:
            self.bad.append(message_id)
            self.arrivals.append((path, message_id, 400))
            return 400
        # A spectral body's id is the webhook-id header; a seed-jobs body's is its job's.
        assert "jobname" in payload or payload["id"] == message_id, "the id is webhook-id"
        seen = sum(1 for p, m, _ in self.arrivals if p == path and m == message_id)
        status = self.answer(message_id, seen + 1)
        self.arrivals.append((path, message_id, status))
        if 200 <= status < 300:
            self.received.setdefault(path, {}).setdefault(message_id, json.loads(body))
        return status


def _headers(request: h11.Request) -> list[tuple[str, str]]:
    return [(name.decode().lower(), value.decode()) for name, value in request.headers]
