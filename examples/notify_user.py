"""The seeds' notification-room pattern: a worker notifies a user, the user's client
hears it, along with every change of that user's tasks (published to ``user_{owner}``).

Run a server (``make run``), then in one terminal::

    SPECTRAL_API_KEY=... python examples/notify_user.py listen alice

and in another::

    SPECTRAL_API_KEY=... python examples/notify_user.py notify alice "your report is ready"
"""

from __future__ import annotations

import json
import sys

from spectral.client import Client


def listen(owner: str) -> None:
    """Print every message of the room ``user_{owner}``, one JSON line each."""
    with Client() as client:
        for message in client.subscribe(f"user_{owner}"):
            print(json.dumps(message), flush=True)


def notify(owner: str, text: str) -> None:
    """Broadcast ``text`` to the room ``user_{owner}``."""
    with Client() as client:
        sent = client.broadcast(f"user_{owner}", {"type": "notification", "text": text})
        print(f"delivered to {sent.delivered} subscriber(s), roomSeq {sent.room_seq}")


if __name__ == "__main__":
    match sys.argv[1:]:
        case ["listen", owner]:
            listen(owner)
        case ["notify", owner, text]:
            notify(owner, text)
        case _:
            sys.exit(__doc__)
