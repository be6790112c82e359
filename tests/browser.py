"""A real browser for tests: Debian's chromium driven by Playwright's sync API.

Playwright's sync API stays on the thread that started it, so each page lives in a
worker thread of its own (:class:`Tab`); ``await tab.run(fn)`` runs ``fn(page, seen)``
there. Every request to anything but the server is aborted and recorded, every
WebSocket is recorded, and Content-Security-Policy violations are collected:
:meth:`Seen.problems` lists them all, with console errors.

(The same harness as tests/test_reference_browser.py and tests/test_example_watch_html.py,
gathered here for new browser tests.)
"""

from __future__ import annotations

import functools
import math
import queue
import struct
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import trio
from playwright.sync_api import Page, Route, sync_playwright

CHROMIUM = Path("/usr/bin/chromium")
#: Without the background-networking flags chromium keeps trying to reach its services.
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
#: Generous deadline of every wait on a condition in the page (milliseconds).
WAIT_MS = 60_000
#: Text that means a page printed a value it did not understand.
FORBIDDEN = ("undefined", "[object Object]", "NaN")

#: Collects Content-Security-Policy violations; runs before the page's own script.
CSP_LISTENER = """
window.__violations = [];
document.addEventListener("securitypolicyviolation",
  (e) => window.__violations.push(e.violatedDirective + " " + e.blockedURI));
"""

#: Every visible element with text of its own whose colour has a contrast below 4.5:1
#: (WCAG AA) against the first opaque background behind it.
LOW_CONTRAST = """
() => {
  const rgb = (text) => (text.match(/[\\d.]+/g) || []).map(Number);
  const channel = (c) => {
    c /= 255;
    return c <= 0.03928 ? c / 12.92 : ((c + 0.055) / 1.055) ** 2.4;
  };
  const luminance = ([r, g, b]) => 0.2126 * channel(r) + 0.7152 * channel(g) + 0.0722 * channel(b);
  const background = (el) => {
    for (; el; el = el.parentElement) {
      const c = rgb(getComputedStyle(el).backgroundColor);
      if (c.length === 3 || (c.length === 4 && c[3] > 0)) return c;
    }
    return rgb(getComputedStyle(document.documentElement).backgroundColor);
  };
  const low = [];
  for (const el of document.body.querySelectorAll("*")) {
    const own = [...el.childNodes].some((n) => n.nodeType === 3 && n.textContent.trim());
    if (!own || !el.getClientRects().length) continue;
    const a = luminance(rgb(getComputedStyle(el).color)), b = luminance(background(el));
    const ratio = (Math.max(a, b) + 0.05) / (Math.min(a, b) + 0.05);
    if (ratio < 4.5) low.push(el.tagName + "." + el.className + " " + ratio.toFixed(2) + " " +
      el.textContent.trim().slice(0, 30));
  }
  return low;
}
"""

#: How wide the page is, against the window: equal when nothing scrolls sideways.
OVERFLOW = "[document.documentElement.scrollWidth, document.body.scrollWidth, innerWidth]"

#: Visible form controls with no accessible name (label, aria-label or text).
UNLABELLED = """
() => [...document.querySelectorAll("input, select, textarea, button, progress")]
  .filter((el) => el.getClientRects().length && !(el.labels && el.labels.length) &&
    !el.getAttribute("aria-label") && !el.textContent.trim())
  .map((el) => el.outerHTML.slice(0, 80))
"""


@dataclass
class Seen:
    """What the page reached for besides the server."""

    origin: str
    #: A page opened from disk (``file://``), let through as the server is.
    local_file: Path | None = None
    requested: list[str] = field(default_factory=list)
    elsewhere: list[str] = field(default_factory=list)
    sockets: list[str] = field(default_factory=list)
    console_errors: list[str] = field(default_factory=list)

    def route(self, route: Route) -> None:
        """Let requests to the server through; abort (and record) every other one."""
        url = route.request.url
        parts = urlsplit(url)
        if parts.scheme == "file" and self.local_file and Path(parts.path) == self.local_file:
            route.continue_()
        elif f"{parts.scheme}://{parts.netloc}" == self.origin:
            self.requested.append(route.request.method + " " + parts.path)
            route.continue_()
        else:
            self.elsewhere.append(url)
            route.abort()

    def problems(self, page: Page) -> list[str]:
        """Requests and sockets elsewhere, console errors and policy violations."""
        ws_origin = "ws://" + self.origin.removeprefix("http://") + "/"
        out = [f"request elsewhere: {url}" for url in self.elsewhere]
        out += [f"socket elsewhere: {url}" for url in self.sockets if not url.startswith(ws_origin)]
        out += [f"console: {text}" for text in self.console_errors if not _expected(text)]
        out += [f"policy: {text}" for text in page.evaluate("window.__violations")]
        return out


def _expected(text: str) -> bool:
    """Console errors chromium itself prints for refused sockets and error answers."""
    return "WebSocket connection to" in text or "Failed to load resource" in text


@contextmanager
def browser_page(
    server_url: str,
    *,
    width: int = 1280,
    height: int = 900,
    scheme: str = "light",
    extra_args: tuple[str, ...] = (),
    local_file: Path | None = None,
) -> Iterator[tuple[Page, Seen]]:
    """A fresh chromium page at ``width`` in ``scheme`` whose requests go only to the server."""
    if not CHROMIUM.exists():
        pytest.fail(f"{CHROMIUM} is missing (`make test` installs it; or apt-get install chromium)")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=str(CHROMIUM), args=[*CHROMIUM_ARGS, *extra_args]
        )
        try:
            context = browser.new_context(
                viewport={"width": width, "height": height},
                color_scheme=scheme,  # type: ignore[arg-type]
                service_workers="block",
            )
            seen = Seen(origin=server_url, local_file=local_file)
            context.route("**/*", seen.route)
            context.add_init_script(CSP_LISTENER)
            page = context.new_page()
            page.on("websocket", lambda ws: seen.sockets.append(ws.url))
            page.on(
                "console",
                lambda message: (
                    seen.console_errors.append(message.text) if message.type == "error" else None
                ),
            )
            page.on("pageerror", lambda error: seen.console_errors.append(str(error)))
            yield page, seen
        finally:
            browser.close()


class Tab:
    """One page in one thread of its own; ``await tab.run(fn)`` runs ``fn(page, seen)``
    there and returns its result (or raises its exception)."""

    def __init__(self) -> None:
        self._commands: queue.Queue[Callable[[Page, Seen], Any] | None] = queue.Queue()
        self._send, self._results = trio.open_memory_channel[tuple[str, Any]](math.inf)

    def _put(self, item: tuple[str, Any]) -> None:
        trio.from_thread.run_sync(self._send.send_nowait, item)

    def serve(
        self,
        server_url: str,
        url: str,
        width: int,
        height: int,
        scheme: str,
        extra_args: tuple[str, ...] = (),
        local_file: Path | None = None,
    ) -> None:
        try:
            with browser_page(
                server_url,
                width=width,
                height=height,
                scheme=scheme,
                extra_args=extra_args,
                local_file=local_file,
            ) as (
                page,
                seen,
            ):
                page.goto(url)
                self._put(("ok", None))
                while (command := self._commands.get()) is not None:
                    try:
                        self._put(("ok", command(page, seen)))
                    except Exception as error:  # handed to the test
                        self._put(("error", error))
        except Exception as error:  # handed to the test
            self._put(("error", error))

    async def result(self) -> Any:
        kind, value = await self._results.receive()
        if kind == "error":
            raise value
        return value

    async def run(self, command: Callable[[Page, Seen], Any]) -> Any:
        self._commands.put(command)
        return await self.result()

    def close(self) -> None:
        self._commands.put(None)


@asynccontextmanager
async def open_tab(
    server_url: str,
    url: str,
    *,
    width: int = 1280,
    height: int = 900,
    scheme: str = "light",
    extra_args: tuple[str, ...] = (),
    local_file: Path | None = None,
) -> AsyncIterator[Tab]:
    """``url`` open in chromium (with ``extra_args``), in a thread of its own; a page
    opened from disk names its ``local_file``."""
    tab = Tab()
    serve = functools.partial(
        tab.serve, server_url, url, width, height, scheme, extra_args, local_file
    )
    async with trio.open_nursery() as nursery:
        nursery.start_soon(trio.to_thread.run_sync, serve)
        try:
            await tab.result()
            yield tab
        finally:
            tab.close()


def wait_for(condition: str, arg: Any = None) -> Callable[[Page, Seen], Any]:
    """Wait until the JavaScript ``condition`` (a function of ``arg``) holds in the page."""

    def command(page: Page, seen: Seen) -> Any:
        return page.wait_for_function(condition, arg=arg, timeout=WAIT_MS).json_value()

    return command


def evaluate(expression: str, arg: Any = None) -> Callable[[Page, Seen], Any]:
    """Evaluate ``expression`` in the page."""

    def command(page: Page, seen: Seen) -> Any:
        return page.evaluate(expression, arg)

    return command


def problems(page: Page, seen: Seen) -> list[str]:
    """:meth:`Seen.problems` as a command."""
    return seen.problems(page)


def png_size(data: bytes) -> tuple[int, int]:
    """Width and height of a PNG image."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    return struct.unpack(">II", data[16:24])
