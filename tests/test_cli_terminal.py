"""``spectral watch`` as a person meets it: in a terminal.

The command runs on a pseudo-terminal (100 x 10); what it writes goes through pyte, a
VT100 emulator, and the assertions read the emulated screen — what a person sees
after every carriage return and erase, not the raw bytes. ``SPECTRAL_SCREENSHOT=1``
also renders that screen in Debian's chromium and writes docs/cli-watch.png, which
docs/cli.md shows:

    SPECTRAL_SCREENSHOT=1 .venv/bin/python -m pytest tests/test_cli_terminal.py
"""

from __future__ import annotations

import fcntl
import html
import os
import pty
import struct
import sys
import termios
from collections.abc import Callable
from dataclasses import dataclass, field

import pyte
import trio

from spectral.client import AsyncClient
from tests.conftest import ADMIN_KEY
from tests.procs import ROOT, Server
from tests.test_cli_client import BASE_ENV

COLUMNS, LINES = 100, 10
SCREENSHOT = ROOT / "docs" / "cli-watch.png"
#: The 16 named colours of pyte's screen, as a dark terminal theme draws them.
PALETTE = {
    "default": "#d0d0d0",
    "black": "#1c1c1c",
    "red": "#e06c75",
    "green": "#98c379",
    "yellow": "#e5c07b",
    "blue": "#61afef",
    "magenta": "#c678dd",
    "cyan": "#56b6c2",
    "white": "#d0d0d0",
    "brightblack": "#7f848e",
    "brightred": "#ff7b86",
    "brightgreen": "#b5e890",
    "brightyellow": "#ffd68a",
    "brightblue": "#8cc8ff",
    "brightmagenta": "#de9bff",
    "brightcyan": "#7fe0ec",
    "brightwhite": "#ffffff",
}


@dataclass
class Terminal:
    """A command on a pseudo-terminal, with the screen it has drawn so far."""

    process: trio.Process
    master: int
    screen: pyte.Screen = field(default_factory=lambda: pyte.Screen(COLUMNS, LINES))
    changed: trio.Event = field(default_factory=trio.Event)
    closed: bool = False

    def __post_init__(self) -> None:
        self.stream = pyte.ByteStream(self.screen)

    @property
    def text(self) -> str:
        """The screen as lines of text, trailing spaces removed."""
        return "\n".join(line.rstrip() for line in self.screen.display).strip("\n")

    async def read(self) -> None:
        """Feed the emulator until the command closes the terminal."""
        while True:
            await trio.lowlevel.wait_readable(self.master)
            try:
                chunk = os.read(self.master, 65536)
            except OSError:  # EIO: every process holding the terminal has exited
                chunk = b""
            if chunk:
                self.stream.feed(chunk)
            else:
                self.closed = True
            self.changed.set()
            self.changed = trio.Event()
            if self.closed:
                return

    async def until(self, check: Callable[[str], bool], what: str) -> str:
        """Wait until the screen satisfies ``check``; the screen's text."""
        with trio.move_on_after(60):
            while not check(self.text):
                if self.closed:
                    break
                await self.changed.wait()
        assert check(self.text), f"never on screen: {what}\n{self.text}"
        return self.text

    def line_with(self, needle: str) -> int:
        """The number of the screen line containing ``needle``."""
        return next(n for n, line in enumerate(self.screen.display) if needle in line)

    def html(self) -> str:
        """The screen as coloured HTML (for the screenshot)."""
        rows = []
        used = max(y for y, line in enumerate(self.screen.display) if line.strip()) + 1
        for y in range(used):
            row = self.screen.buffer[y]
            cells = []
            for x in range(COLUMNS):
                char = row[x]
                colour = PALETTE.get(char.fg, f"#{char.fg}" if len(char.fg) == 6 else "#d0d0d0")
                weight = "bold" if char.bold else "normal"
                cells.append(
                    f'<span style="color:{colour};font-weight:{weight}">'
                    f"{html.escape(char.data)}</span>"
                )
            rows.append("".join(cells))
        body = "\n".join(rows)
        return (
            "<!doctype html><meta charset=utf-8><style>body{margin:0;background:#1c1c1c}"
            "pre{margin:0;padding:14px 16px;font:15px/1.35 'DejaVu Sans Mono',monospace;"
            f"color:#d0d0d0}}</style><pre>{body}</pre>"
        )


async def in_terminal(nursery: trio.Nursery, url: str, *args: str) -> Terminal:
    """Start ``spectral ARGS`` with stdin, stdout and stderr a 100 x 10 terminal."""
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", LINES, COLUMNS, 0, 0))
    env = {
        **BASE_ENV,
        "TERM": "xterm-256color",
        "SPECTRAL_URL": url,
        "SPECTRAL_API_KEY": ADMIN_KEY,
    }
    env.pop("NO_COLOR", None)
    process = await trio.lowlevel.open_process(
        [sys.executable, "-m", "spectral", *args],
        stdin=slave,
        stdout=slave,
        stderr=slave,
        env=env,
        start_new_session=True,
    )
    os.close(slave)
    os.set_blocking(master, False)
    terminal = Terminal(process, master)
    nursery.start_soon(terminal.read)
    return terminal


async def test_watch_draws_a_live_bar_with_status_and_message(server: Server) -> None:
    async with AsyncClient(server.url, ADMIN_KEY) as client, trio.open_nursery() as nursery:
        await client.create_task("deploy-7")
        terminal = await in_terminal(nursery, server.url, "watch", "deploy-7")
        try:
            await terminal.until(lambda s: "deploy-7" in s and "pending" in s, "pending")
            await client.update_progress("deploy-7", 40, "copying files")
            await terminal.until(lambda s: "40%" in s and "copying files" in s, "40%")
            await client.update_progress("deploy-7", 62, "restarting web-3 of 5")
            screen = await terminal.until(
                lambda s: "62%" in s and "restarting web-3 of 5" in s, "62%"
            )
            assert "in-progress" in screen
            assert '{"type"' not in screen  # a bar on a terminal, not JSON lines
            bar = terminal.screen.display[terminal.line_with("62%")]
            assert bar.startswith("deploy-7 ") and "━" in bar
            if os.environ.get("SPECTRAL_SCREENSHOT"):
                await screenshot(terminal.html())
            await client.complete("deploy-7")
            screen = await terminal.until(lambda s: "deploy-7: success" in s, "the summary")
            with trio.fail_after(60):
                assert await terminal.process.wait() == 0
            (bar_line,) = [line for line in screen.splitlines() if "100%" in line]
            assert "success" in bar_line and "Task completed" in bar_line
            summary = terminal.line_with("deploy-7: success")
            assert terminal.screen.buffer[summary][0].fg == "green"
        finally:
            terminal.process.kill()


async def test_watch_of_a_failed_task_says_why_in_red(server: Server) -> None:
    async with AsyncClient(server.url, ADMIN_KEY) as client, trio.open_nursery() as nursery:
        await client.create_task("import-3")
        terminal = await in_terminal(nursery, server.url, "watch", "import-3")
        try:
            await terminal.until(lambda s: "pending" in s, "pending")
            await client.update_progress("import-3", 30)
            await terminal.until(lambda s: "30%" in s, "30%")
            await client.fail("import-3", "disk full")
            await terminal.until(lambda s: "import-3: failed (disk full)" in s, "the summary")
            with trio.fail_after(60):
                assert await terminal.process.wait() == 1
            summary = terminal.line_with("import-3: failed")
            assert terminal.screen.buffer[summary][0].fg == "red"
        finally:
            terminal.process.kill()


async def test_tables_on_a_terminal(server: Server) -> None:
    async with AsyncClient(server.url, ADMIN_KEY) as client, trio.open_nursery() as nursery:
        await client.create_task("t-1")
        await client.update_progress("t-1", 25)
        await client.create_task("t-2")
        await client.fail("t-2", "nope")
        terminal = await in_terminal(nursery, server.url, "tasks", "list")
        screen = await terminal.until(lambda s: "2 task(s)" in s, "the table")
        with trio.fail_after(60):
            assert await terminal.process.wait() == 0
        row = terminal.line_with("t-1 ")
        assert "in-progress" in screen.splitlines()[row] and "25%" in screen.splitlines()[row]
        failed = terminal.screen.display[terminal.line_with("t-2 ")]
        column = failed.index("failed")
        assert terminal.screen.buffer[terminal.line_with("t-2 ")][column].fg == "red"


async def screenshot(page_html: str) -> None:
    """docs/cli-watch.png: the emulated screen drawn by chromium."""
    from playwright.sync_api import sync_playwright

    from tests.test_reference_browser import CHROMIUM, CHROMIUM_ARGS

    def shoot() -> None:
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
            try:
                page = browser.new_page(viewport={"width": 960, "height": 240})
                page.route("**/*", lambda route: route.abort())
                page.set_content(page_html)
                page.locator("pre").screenshot(path=str(SCREENSHOT))
            finally:
                browser.close()

    await trio.to_thread.run_sync(shoot)
