"""A stand-in payment provider drives a task through provider callbacks.

The service registers an inbound integration (docs/api.md, "Provider callbacks"):
where the provider's payload keeps the payment id and its status, and which
provider status is which step. The provider then posts its own payloads, signed
with Standard Webhooks, to the integration's callback URL, with no API key: the
payment is created (``payment.created`` → initialized), processed
(``payment.processing`` with a percentage), and paid (``payment.succeeded`` →
completed). A watcher follows the task over the WebSocket and prints what it sees.

Run a server (``make run``), then::

    SPECTRAL_API_KEY=... python examples/provider_callbacks.py [payment-id]
"""

from __future__ import annotations

import json
import sys
import threading
import uuid
from datetime import UTC, datetime
from typing import Any

import httpx
from standardwebhooks import Webhook

from spectral.client import Client

STATUS_MAP = {
    "payment.created": "initialized",
    "payment.processing": "processing",
    "payment.succeeded": "completed",
    "payment.failed": "failed",
}


class Provider:
    """The payment provider's side: it knows the callback URL and the secret, no API key."""

    def __init__(self, url: str, secret: str) -> None:
        self.url = url
        self.signer = Webhook(secret)
        self.http = httpx.Client(timeout=10)

    def send(self, kind: str, payment_id: str, **fields: Any) -> dict[str, Any]:
        body = json.dumps({"type": kind, "data": {"id": payment_id, **fields}})
        message_id = f"msg_{uuid.uuid4().hex}"
        now = datetime.now(UTC)
        headers = {
            "content-type": "application/json",
            "webhook-id": message_id,
            "webhook-timestamp": str(int(now.timestamp())),
            "webhook-signature": self.signer.sign(message_id, now, body),
        }
        answer = self.http.post(self.url, content=body, headers=headers)
        answer.raise_for_status()
        outcome: dict[str, Any] = answer.json()
        print(f"provider: {kind} -> {outcome['step']}", flush=True)
        return outcome


def watch(client: Client, task_id: str) -> None:
    """Print every message of the task from its creation (since=0) to its end."""
    for message in client.watch(task_id, since=0):
        # Replayed changes carry the event only; live ones the task as well.
        event = message.get("event") or {}
        progress = event.get("progress", (message.get("task") or {}).get("progress"))
        print(f"watcher: seq {message['seq']} {message['type']} {progress:g}%", flush=True)


def main(payment_id: str) -> None:
    with Client() as client:
        integration = client.create_integration(
            "payments", "standard-webhooks", "data.id", "type", STATUS_MAP,
            progressPath="data.percent", errorPath="data.reason",
        )  # fmt: skip
        print(f"registered {integration.name}: POST {integration.callback_path}", flush=True)
        provider = Provider(client.base_url + integration.callback_path, integration.secret)
        created = provider.send("payment.created", payment_id, amount=4200)
        watcher = threading.Thread(target=watch, args=(client, created["taskId"]))
        watcher.start()
        for percent in (30, 70):
            provider.send("payment.processing", payment_id, percent=percent)
        provider.send("payment.succeeded", payment_id)
        watcher.join(timeout=30)
        final = client.get_task_by_external_id(payment_id)
        print(f"task {final.task_id}: {final.status} {final.progress}", flush=True)
        client.delete_integration(integration.id)


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else f"pay_{uuid.uuid4().hex[:12]}")
