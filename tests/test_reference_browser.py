"""The API reference page (``GET /api-reference``) as a person meets it: a real browser.

Debian's chromium (``make test`` installs it), driven by Playwright's sync API in a
worker thread, opens the page of a real server. Every request to anything but that
server is aborted in the browser and recorded. ``SPECTRAL_SCREENSHOT=1`` also writes
the screenshot docs/api.md shows (docs/api-reference.png):

    SPECTRAL_SCREENSHOT=1 .venv/bin/python -m pytest tests/test_reference_browser.py -k screenshot
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit

import httpx
import pytest
import trio
from playwright.sync_api import Error as PlaywrightError
from playwright.sync_api import Page, Route, sync_playwright

from spectral.api.reference import SCALAR_PATH
from tests.browser import CHROMIUM, CHROMIUM_ARGS, CSP_LISTENER, LOW_CONTRAST, OVERFLOW, png_size
from tests.procs import ROOT, Server

#: Text that means the renderer printed a value it did not understand, or an internal reference.
# The last: a reference to the design spec, which users do not have (built so that this
# file does not itself cite it).
FORBIDDEN = ("undefined", "[object Object]", "NaN", "SPEC" + " \u00a7")
SCREENSHOT = ROOT / "docs" / "api-reference.png"
NARROW = 360

T = TypeVar("T")


@dataclass
class Seen:
    """What the browser did besides showing the page."""

    origin: str
    requested: list[str] = field(default_factory=list)
    elsewhere: list[str] = field(default_factory=list)
    console_errors: list[str] = field(default_factory=list)

    def route(self, route: Route) -> None:
        """Let requests to the server through; abort (and record) every other one."""
        url = route.request.url
        parts = urlsplit(url)
        if f"{parts.scheme}://{parts.netloc}" == self.origin:
            self.requested.append(parts.path)
            route.continue_()
        else:
            self.elsewhere.append(url)
            route.abort()


@contextmanager
def browser_page(
    server_url: str, *, width: int = 1280, height: int = 900, scheme: str = "light"
) -> Iterator[tuple[Page, Seen]]:
    """A fresh chromium page at ``width`` in ``scheme`` whose requests go only to the server."""
    if not CHROMIUM.exists():
        pytest.fail(
            f"{CHROMIUM} is missing: the API reference page is tested in Debian's chromium "
            "(`make test` installs it; or `apt-get install -y chromium`)"
        )
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            context = browser.new_context(
                viewport={"width": width, "height": height},
                color_scheme=scheme,  # type: ignore[arg-type]
                service_workers="block",
            )
            seen = Seen(origin=server_url)
            context.route("**/*", seen.route)
            context.add_init_script(CSP_LISTENER)
            page = context.new_page()
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


def open_reference(page: Page, server_url: str, fragment: str = "") -> None:
    """Load the page and wait until Scalar has rendered the document."""
    page.goto(f"{server_url}/api-reference{fragment}")
    page.wait_for_selector("aside a[href^='#tag/']", state="attached")


def scroll_through(page: Page) -> None:
    """Scroll to the end, step by step: Scalar renders operations as they come near."""
    for _ in range(200):
        at_end = page.evaluate("innerHeight + scrollY >= document.documentElement.scrollHeight - 2")
        if at_end:
            break
        page.mouse.wheel(0, 2500)
        page.wait_for_timeout(50)


def violations(page: Page) -> list[str]:
    """The Content-Security-Policy violations the page reported."""
    return page.evaluate("window.__violations")


async def in_thread(function: Callable[..., T], *args: Any) -> T:
    """Run the (blocking) browser session in a worker thread."""
    return await trio.to_thread.run_sync(function, *args)


async def the_document(server: Server) -> dict[str, Any]:
    """``GET /openapi.json`` of the server."""
    async with httpx.AsyncClient(base_url=server.url, timeout=20) as http:
        answer = await http.get("/openapi.json")
    answer.raise_for_status()
    return answer.json()


def op_anchor(method: str, path: str, operation: dict[str, Any]) -> str:
    """The fragment Scalar gives an operation (its section's id is ``api-1/`` and this)."""
    return f"tag/{operation['tags'][0]}/{method}{path}"


def operations(document: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    """Every (METHOD, path, operation) of the document."""
    return [
        (method.upper(), path, operation)
        for path, item in document["paths"].items()
        for method, operation in item.items()
    ]


# -- what the page shows ---------------------------------------------------------------------


def _look(server_url: str) -> dict[str, Any]:
    with browser_page(server_url) as (page, seen):
        open_reference(page, server_url)
        seen_page = {
            "title": page.title(),
            "heading": page.inner_text("h1"),
            "nav": page.eval_on_selector_all(
                "aside a[href^='#tag/']", "els => els.map(a => a.getAttribute('href'))"
            ),
        }
        scroll_through(page)
        seen_page["visible"] = page.inner_text("body")
        seen_page["all_text"] = page.evaluate("document.getElementById('app').textContent")
        seen_page["sections"] = page.eval_on_selector_all(
            "section[id^='api-1/tag/']",
            "els => els.map(s => [s.id, (s.querySelector('h3') || {}).innerText || '', "
            "s.getClientRects().length > 0])",
        )
        seen_page["ids"] = page.eval_on_selector_all("[id]", "els => els.map(e => e.id)")
        seen_page["violations"] = violations(page)
        seen_page["requested"] = list(seen.requested)
        seen_page["elsewhere"] = list(seen.elsewhere)
        seen_page["console_errors"] = list(seen.console_errors)
    # A shared link to an operation near the end of the page lands on it once rendered.
    with browser_page(server_url) as (page, seen):
        open_reference(page, server_url, "#tag/auth/DELETE/admin/keys/{id}")
        page.wait_for_selector("section[id='api-1/tag/auth/DELETE/admin/keys/{id}'] h3")
        page.wait_for_timeout(500)
        seen_page["deep_link_top"] = page.evaluate(
            "document.getElementById('api-1/tag/auth/DELETE/admin/keys/{id}')"
            ".getBoundingClientRect().top"
        )
        seen_page["deep_link_errors"] = seen.console_errors + violations(page)
    return seen_page


async def test_the_page_lists_every_operation_and_shows_nothing_broken(server: Server) -> None:
    document = await the_document(server)
    seen = await in_thread(_look, server.url)

    assert seen["title"] == "spectral API reference"
    assert seen["heading"] == "spectral"
    assert f"v{document['info']['version']}" in seen["visible"]
    for text in (seen["visible"], seen["all_text"]):
        for word in FORBIDDEN:
            at = text.find(word)
            assert at < 0, f"{word!r} shown: …{text[max(at - 80, 0) : at + 40]}…"
    expected = {
        op_anchor(method, path, op): op["summary"] for method, path, op in operations(document)
    }
    # The sidebar links every operation; scrolled through, the page shows each one's section.
    assert {href.removeprefix("#") for href in seen["nav"]} >= set(expected)
    sections = {
        anchor.removeprefix("api-1/"): (" ".join(h3.split()), shown)
        for anchor, h3, shown in seen["sections"]
        if anchor.removeprefix("api-1/") in expected
    }
    assert sections == {anchor: (summary, True) for anchor, summary in expected.items()}
    assert len(seen["ids"]) == len(set(seen["ids"]))
    assert 0 <= seen["deep_link_top"] < 200 and seen["deep_link_errors"] == []
    # Nothing but the page, its script and its document was asked for, all from the server.
    assert seen["elsewhere"] == []
    assert set(seen["requested"]) == {"/api-reference", SCALAR_PATH, "/openapi.json"}
    assert seen["console_errors"] == [] and seen["violations"] == []


def _create_body(server_url: str) -> dict[str, Any]:
    with browser_page(server_url) as (page, seen):
        open_reference(page, server_url)
        section = "section[id='api-1/tag/tasks/POST/tasks/create']"
        page.wait_for_selector(f"{section} h3")
        prefix = "api-1/tag/tasks/POST/tasks/create.body."
        return {
            # Each field's name and the text of its entry (type, rules, default, meaning).
            "fields": page.eval_on_selector_all(
                f"{section} [id^='{prefix}']",
                f"els => els.map(e => [e.id.slice({len(prefix)}), "
                "e.closest('li.property').textContent])",
            ),
            "errors": seen.console_errors + violations(page),
        }


async def test_the_create_body_shows_its_fields_with_their_real_defaults(server: Server) -> None:
    document = await the_document(server)
    schema = document["components"]["schemas"]["CreateTask"]
    seen = await in_thread(_create_body, server.url)

    fields = {name: " ".join(text.split()) for name, text in seen["fields"]}
    assert sorted(fields) == sorted(schema["properties"])
    defaults = 0
    for name, prop in schema["properties"].items():
        text = fields[name]
        assert text.startswith(name), (name, text)
        described = prop.get("description") or prop.get("anyOf", [{}])[0].get("description")
        if described:
            assert " ".join(described.replace("`", "").split()) in text, (name, text)
        if "default" in prop:
            defaults += 1
            assert "Default" in text and json.dumps(prop["default"]).strip('"') in text, (
                name,
                text,
            )
    assert defaults >= 3
    assert seen["errors"] == []


# -- narrow, dark ----------------------------------------------------------------------------


def _narrow_and_dark(server_url: str) -> dict[str, Any]:
    found: dict[str, Any] = {}
    for scheme in ("light", "dark"):
        with browser_page(server_url, width=NARROW, height=740, scheme=scheme) as (page, seen):
            open_reference(page, server_url)
            page.wait_for_selector("h1")
            scroll_through(page)
            found[scheme] = {
                "overflow": page.evaluate(OVERFLOW),
                "low_contrast": page.evaluate(LOW_CONTRAST),
                "background": page.evaluate(
                    "getComputedStyle(document.querySelector('.scalar-app') || document.body)"
                    ".backgroundColor"
                ),
                "errors": seen.console_errors + violations(page),
            }
    return found


async def test_the_page_reads_at_360px_in_light_and_dark(server: Server) -> None:
    found = await in_thread(_narrow_and_dark, server.url)

    for scheme in ("light", "dark"):
        seen = found[scheme]
        # The body never scrolls sideways.
        assert seen["overflow"] == [NARROW, NARROW, NARROW], scheme
        assert seen["low_contrast"] == [], scheme
        assert seen["errors"] == [], scheme
    assert found["light"]["background"] == "rgb(255, 255, 255)"
    red, green, blue = map(int, re.findall(r"\d+", found["dark"]["background"])[:3])
    assert max(red, green, blue) < 64, found["dark"]["background"]


# -- the detectors above are live -----------------------------------------------------------


def _provoke(server_url: str) -> dict[str, Any]:
    with browser_page(server_url) as (page, seen):
        open_reference(page, server_url)
        # An image from elsewhere: the policy refuses it (the 10 s are only a deadline).
        page.evaluate(
            """() => new Promise((done) => {
              document.addEventListener("securitypolicyviolation", done, {once: true});
              setTimeout(done, 10000);
              document.body.append(Object.assign(new Image(), {src: "https://example.invalid/x"}));
            })"""
        )
        reported, console_errors = violations(page), list(seen.console_errors)
        # A navigation is outside the page's policy: only the route stops it.
        with pytest.raises(PlaywrightError):
            page.goto("http://192.0.2.1/elsewhere")
        return {
            "violations": reported,
            "console_errors": console_errors,
            "elsewhere": list(seen.elsewhere),
        }


async def test_a_violation_and_a_request_elsewhere_are_caught(server: Server) -> None:
    found = await in_thread(_provoke, server.url)

    assert found["violations"] == ["img-src https://example.invalid/x"]
    assert any("Content Security Policy" in error for error in found["console_errors"])
    assert found["elsewhere"] == ["http://192.0.2.1/elsewhere"]


# -- the screenshot in docs/api.md ----------------------------------------------------------


def _screenshot(server_url: str) -> bytes:
    with browser_page(server_url, width=1280, height=1200) as (page, seen):
        open_reference(page, server_url)
        image = page.screenshot()
        assert seen.console_errors == []
    return image


async def test_screenshot_of_the_page(server: Server, tmp_path: Path) -> None:
    image = await in_thread(_screenshot, server.url)

    assert png_size(image) == (1280, 1200)
    (tmp_path / SCREENSHOT.name).write_bytes(image)
    if os.environ.get("SPECTRAL_SCREENSHOT") == "1":
        SCREENSHOT.write_bytes(image)
