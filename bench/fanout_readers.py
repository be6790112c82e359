"""WebSocket readers for the fan-out benchmark: many watchers read by one epoll loop.

Run by ``bench/http_wrk.py`` as a separate process (pinned to the client's core)::

    python bench/fanout_readers.py HOST PORT PATH WATCHERS UPDATES

It opens ``WATCHERS`` raw WebSockets on ``PATH`` (the benchmark's admin key in a
header), waits for each one's snapshot, prints ``ready`` and then reads every
socket from one ``select.epoll`` loop: no task per socket, no JSON decoding (a
message's ``seq`` is read from its bytes), so that the readers cost less than the
server they measure. A receipt is ``(seq, time.perf_counter())``; perf_counter is
CLOCK_MONOTONIC, shared by every process on Linux, so the parent compares it with
its own send times. It stops once every watcher has ``UPDATES`` messages, or when
a line arrives on stdin, and prints one JSON line: the receipt times per seq, the
closes seen, and its own CPU seconds while reading.
"""

from __future__ import annotations

import base64
import json
import os
import resource
import secrets
import select
import socket
import sys
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.http_load import BENCH_KEY, frames  # noqa: E402


def last_seq(payload: bytes) -> int:
    """The top-level ``seq`` of a watcher message (the last ``"seq":`` in it)."""
    at = payload.rfind(b'"seq":') + 6
    end = at
    while payload[end : end + 1].isdigit():
        end += 1
    return int(payload[at:end])


def cpu_seconds() -> float:
    """User + system CPU of this process."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def handshake(
    host: str, port: int, path: str, headers: str = ""
) -> tuple[socket.socket, bytearray]:
    """A raw WebSocket on ``path`` (``headers``: extra header lines, each ending in CRLF);
    the bytes read past the 101."""
    sock = socket.create_connection((host, port))
    key = base64.b64encode(secrets.token_bytes(16)).decode()
    sock.sendall(
        (
            f"GET {path} HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            f"{headers}Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
        ).encode()
    )
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(4096)
        if not chunk:
            raise ConnectionError("closed during the handshake")
        data += chunk
    if not data.startswith(b"HTTP/1.1 101"):
        raise ConnectionError(f"handshake refused: {data[:100]!r}")
    return sock, bytearray(data.partition(b"\r\n\r\n")[2])


def open_watcher(host: str, port: int, path: str) -> tuple[socket.socket, bytearray]:
    """A raw WebSocket watcher, handshake done and snapshot read; the bytes read past it."""
    sock, buffer = handshake(host, port, path, f"X-API-Key: {BENCH_KEY}\r\n")
    while not any(b'"snapshot"' in payload for payload in frames(buffer)):
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError("closed before the snapshot")
        buffer += chunk
    return sock, buffer


#: What a reader does with one message of socket ``index`` read at ``now``: True when it
#: counts as a receipt (the readers stop once every socket has ``updates`` of them).
Handler = Callable[[int, bytes, float], bool]


def read_all(
    sockets: list[socket.socket], buffers: list[bytearray], updates: int, handle: Handler
) -> dict[str, int]:
    """Read until every socket has ``updates`` counted messages or stdin has a line;
    the closes seen."""
    closes: dict[str, int] = {}
    counts = [0] * len(sockets)
    poller = select.epoll()
    by_fd = {}
    for index, sock in enumerate(sockets):
        sock.setblocking(False)
        by_fd[sock.fileno()] = index
        poller.register(sock.fileno(), select.EPOLLIN)
    stdin = sys.stdin.fileno()
    poller.register(stdin, select.EPOLLIN)
    remaining = len(sockets)
    while remaining:
        for fd, _ in poller.poll(1.0):
            if fd == stdin:
                return closes
            index = by_fd[fd]
            try:
                data = sockets[index].recv(262144)
            except BlockingIOError:
                continue
            now = time.perf_counter()
            if not data:
                closes["eof"] = closes.get("eof", 0) + 1
                poller.unregister(fd)
                remaining -= 1
                continue
            buffer = buffers[index]
            buffer += data
            try:
                payloads = frames(buffer)
            except ConnectionError as closed:
                closes[str(closed)] = closes.get(str(closed), 0) + 1
                poller.unregister(fd)
                remaining -= 1
                continue
            for payload in payloads:
                counts[index] += handle(index, payload, now)
            if counts[index] >= updates:
                poller.unregister(fd)
                remaining -= 1
    return closes


def run(opened: list[tuple[socket.socket, bytearray]], updates: int, handle: Handler,
        receipts: dict[int, list[float]]) -> None:  # fmt: skip
    """Say ready, read, print the receipts (one JSON line), exit."""
    sockets = [sock for sock, _ in opened]
    buffers = [buffer for _, buffer in opened]
    print("ready", flush=True)
    before = cpu_seconds()
    closes = read_all(sockets, buffers, updates, handle)
    used = cpu_seconds() - before
    print(json.dumps({"receipts": receipts, "closes": closes, "cpu_s": used}), flush=True)
    for sock in sockets:
        sock.close()
    os._exit(0)


def main() -> None:
    """Open the watchers, say ready, read, print the receipts."""
    host, port, path, watchers, updates = sys.argv[1:6]
    opened = [open_watcher(host, int(port), path) for _ in range(int(watchers))]
    receipts: dict[int, list[float]] = defaultdict(list)

    def handle(index: int, payload: bytes, now: float) -> bool:
        receipts[last_seq(payload)].append(now)
        return True

    run(opened, int(updates), handle, receipts)


if __name__ == "__main__":
    main()
