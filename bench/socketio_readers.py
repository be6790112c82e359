"""Socket.IO readers for the fan-out benchmark: bench/fanout_readers.py's twin, over
Socket.IO (Engine.IO 4, WebSocket transport) instead of spectral's native WebSocket.

Run by ``bench/http_wrk.py --scenario socketio`` as a separate process (pinned to
the client's core)::

    python bench/socketio_readers.py HOST PORT TASK_ID WATCHERS UPDATES

It opens ``WATCHERS`` Socket.IO connections the way ``socket.io-client`` does with
``transports: ["websocket"]`` (``GET /socket.io/?EIO=4&transport=websocket``, then a
CONNECT packet carrying the benchmark's admin key as ``auth.token``), waits for each
one's CONNECT answer, prints ``ready`` and reads every socket from one
``select.epoll`` loop, answering the server's pings. Each ``job:progress`` event of
``TASK_ID`` is one receipt. Its update is told by its ``progress``: the benchmark
sends progress ``step / 10``, so the update's seq is ``round(progress * 10) + 2``
(seq 1 is the creation). The output is fanout_readers.py's: one JSON line with the
receipt times per seq, the closes seen and the readers' CPU seconds.
"""

from __future__ import annotations

import json
import secrets
import socket
import sys
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.fanout_readers import handshake, run  # noqa: E402
from bench.http_load import BENCH_KEY, frames  # noqa: E402

#: What a connection asks for: Engine.IO 4 straight over WebSocket.
PATH = "/socket.io/?EIO=4&transport=websocket"
PING, PONG = b"2", b"3"


def client_frame(text: bytes) -> bytes:
    """One masked WebSocket text frame (a client's frames must be masked)."""
    mask = secrets.token_bytes(4)
    size = len(text)
    head = bytes([0x81, 0x80 | size]) if size < 126 else bytes([0x81, 0xFE]) + size.to_bytes(2)
    return head + mask + bytes(byte ^ mask[i % 4] for i, byte in enumerate(text))


def open_socket(host: str, port: int) -> tuple[socket.socket, bytearray]:
    """A Socket.IO connection on the WebSocket transport, connected to ``/``; the bytes
    read past its CONNECT answer."""
    sock, buffer = handshake(host, port, PATH)
    opened = connected = False
    while not connected:
        for packet in frames(buffer):
            if packet.startswith(b"0{"):
                opened = True
                token = json.dumps({"token": BENCH_KEY}).encode()
                sock.sendall(client_frame(b"40" + token))
            elif packet.startswith(b"40"):
                connected = opened
            elif packet.startswith(b"44"):
                raise ConnectionError(f"connect refused: {packet[:200]!r}")
            elif packet == PING:
                sock.sendall(client_frame(PONG))
        if not connected:
            chunk = sock.recv(65536)
            if not chunk:
                raise ConnectionError("closed before the CONNECT answer")
            buffer += chunk
    return sock, buffer


def update_seq(packet: bytes) -> int:
    """The seq of the update a ``job:progress`` event tells (see the module docstring)."""
    at = packet.rfind(b'"progress":') + 11
    end = at
    while packet[end : end + 1] not in (b",", b"}", b""):
        end += 1
    return round(float(packet[at:end]) * 10) + 2


def main() -> None:
    """Open the connections, say ready, read, print the receipts."""
    host, port, task_id, watchers, updates = sys.argv[1:6]
    opened = [open_socket(host, int(port)) for _ in range(int(watchers))]
    wanted = b'42["job:progress",{"jobId":' + json.dumps(task_id).encode()
    receipts: dict[int, list[float]] = defaultdict(list)

    def handle(index: int, packet: bytes, now: float) -> bool:
        if packet == PING:
            sock = opened[index][0]
            sock.setblocking(True)
            sock.sendall(client_frame(PONG))
            sock.setblocking(False)
            return False
        if packet.startswith(wanted):
            receipts[update_seq(packet)].append(now)
            return True
        return False

    run(opened, int(updates), handle, receipts)


if __name__ == "__main__":
    main()
