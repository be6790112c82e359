"""Start a real server process on a free loopback port and talk to it.

A server under test prints ``... listening on http://HOST:PORT`` once it accepts
connections (``spectral serve --port 0`` and ``examples/counter.py --port 0`` both
do). :func:`running` starts the command, waits for that line, drains the rest of
its output (so the pipe never fills) and kills it on exit.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

import trio

ROOT = Path(__file__).resolve().parent.parent
LISTENING = re.compile(rb"listening on (http://[^\s]+)")


@dataclass
class Server:
    """A running server process and what it printed."""

    process: trio.Process
    url: str
    lines: list[str] = field(default_factory=list)

    @property
    def ws_url(self) -> str:
        """The base URL with the ws:// scheme."""
        return "ws://" + self.url.removeprefix("http://")

    @property
    def output(self) -> str:
        """Everything printed so far."""
        return "\n".join(self.lines)

    def kill(self) -> None:
        """SIGKILL: no shutdown code runs."""
        self.process.kill()

    def terminate(self) -> None:
        """SIGTERM: graceful shutdown."""
        self.process.send_signal(signal.SIGTERM)

    async def wait(self) -> int:
        """Wait for the process to exit and return its exit code (wrap in fail_after)."""
        return await self.process.wait()


def python_command(*args: str) -> list[str]:
    """argv that runs ``args`` with this interpreter."""
    return [sys.executable, *args]


@asynccontextmanager
async def running(
    argv: Sequence[str],
    *,
    env: dict[str, str] | None = None,
    cwd: Path | None = None,
    start_timeout: float = 60.0,
) -> AsyncIterator[Server]:
    """Run ``argv`` until the block ends; yield once it prints its listening line."""
    full_env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
    process = await trio.lowlevel.open_process(
        list(argv),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        env=full_env,
        cwd=cwd or ROOT,
    )
    assert process.stdout is not None
    lines: list[str] = []
    found = trio.Event()
    url: list[str] = []

    async def drain() -> None:
        buffer = b""
        async for chunk in process.stdout:  # type: ignore[union-attr]
            buffer += chunk
            *complete, buffer = buffer.split(b"\n")
            for line in complete:
                lines.append(line.decode(errors="replace"))
                match = LISTENING.search(line)
                if match and not found.is_set():
                    url.append(match.group(1).decode())
                    found.set()
        if buffer:
            lines.append(buffer.decode(errors="replace"))
        found.set()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(drain)
        try:
            with trio.fail_after(start_timeout):
                await found.wait()
            if not url:
                await process.wait()
                raise RuntimeError(f"server exited ({process.returncode}):\n" + "\n".join(lines))
            yield Server(process, url[0], lines)
        finally:
            if process.returncode is None:
                process.kill()
            with trio.move_on_after(10):
                await process.wait()
            nursery.cancel_scope.cancel()
