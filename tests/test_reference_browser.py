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
import struct
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

from tests.procs import ROOT, Server

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
#: Text that means the renderer printed a value it did not understand, or an internal reference.
# The last: a reference to the design spec, which users do not have (built so that this
# file does not itself cite it).
FORBIDDEN = ("undefined", "[object Object]", "NaN", "SPEC" + " \u00a7")
SCREENSHOT = ROOT / "docs" / "api-reference.png"
NARROW = 360

T = TypeVar("T")

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
    """Load the page and wait until it has rendered the document."""
    page.goto(f"{server_url}/api-reference{fragment}")
    page.wait_for_selector("section.op")


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


def op_anchor(operation_id: str) -> str:
    """The id the page gives an operation's section."""
    return "op-" + re.sub(r"[^A-Za-z0-9_.-]", "_", operation_id)


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
            "visible": page.inner_text("body"),
            "all_text": page.evaluate("document.getElementById('reference').textContent"),
            "sections": page.eval_on_selector_all(
                "section.op",
                "els => els.map(s => [s.id, s.querySelector('h3').innerText, "
                "s.getClientRects().length > 0])",
            ),
            "nav": page.eval_on_selector_all(
                'nav a[href^="#op-"]',
                "els => els.map(a => [a.getAttribute('href'), a.innerText])",
            ),
            "ids": page.eval_on_selector_all("[id]", "els => els.map(e => e.id)"),
            "hrefs": page.eval_on_selector_all(
                'a[href^="#"]', "els => els.map(a => a.getAttribute('href'))"
            ),
        }
        # A link in the contents brings its operation to the top of the window.
        page.click('nav a[href="#op-tasks.history"]')
        seen_page["clicked_top"] = page.evaluate(
            "document.getElementById('op-tasks.history').getBoundingClientRect().top"
        )
        seen_page["violations"] = violations(page)
        seen_page["requested"] = list(seen.requested)
        seen_page["elsewhere"] = list(seen.elsewhere)
        seen_page["console_errors"] = list(seen.console_errors)
    # A shared link to a schema near the end of the page lands on it once rendered.
    with browser_page(server_url) as (page, seen):
        open_reference(page, server_url, "#schema-Task")
        box = page.evaluate("document.getElementById('schema-Task').getBoundingClientRect().top")
        seen_page["deep_link_top"] = box
        seen_page["deep_link_errors"] = seen.console_errors + violations(page)
    return seen_page


async def test_the_page_lists_every_operation_and_shows_nothing_broken(server: Server) -> None:
    document = await the_document(server)
    seen = await in_thread(_look, server.url)

    assert seen["title"] == "spectral API reference"
    assert seen["heading"].split() == ["spectral", document["info"]["version"]]
    for text in (seen["visible"], seen["all_text"]):
        for word in FORBIDDEN:
            at = text.find(word)
            assert at < 0, f"{word!r} shown: …{text[max(at - 80, 0) : at + 40]}…"
    expected = {
        op_anchor(op["operationId"]): f"{method} {path}"
        for method, path, op in operations(document)
    }
    sections = {anchor: (" ".join(h3.split()), shown) for anchor, h3, shown in seen["sections"]}
    assert sections == {anchor: (title, True) for anchor, title in expected.items()}
    assert {href.removeprefix("#"): " ".join(text.split()) for href, text in seen["nav"]} == (
        expected
    )
    # Every in-page link leads somewhere, and no two elements share an id.
    ids = seen["ids"]
    assert len(ids) == len(set(ids))
    assert sorted({href for href in seen["hrefs"] if href[1:] not in ids}) == []
    assert abs(seen["clicked_top"]) <= 1
    assert abs(seen["deep_link_top"]) <= 1 and seen["deep_link_errors"] == []
    # Nothing but the page and its document was asked for, and all of it from the server.
    assert seen["elsewhere"] == []
    assert set(seen["requested"]) == {"/api-reference", "/openapi.json"}
    assert seen["console_errors"] == [] and seen["violations"] == []


def _create_body(server_url: str) -> dict[str, Any]:
    with browser_page(server_url) as (page, seen):
        open_reference(page, server_url)
        body = "#op-tasks\\.create .request"
        return {
            "create_type": page.inner_text(f"{body} .type"),
            "create_rows": page.eval_on_selector_all(
                f"{body} table.props tbody tr",
                "rows => rows.map(r => [...r.cells].map(c => c.innerText))",
            ),
            "create_alternatives": page.inner_text(f"{body} .schema > p.rules"),
            "errors": seen.console_errors + violations(page),
        }


async def test_the_create_body_shows_its_fields_with_their_real_defaults(server: Server) -> None:
    document = await the_document(server)
    schema = document["components"]["schemas"]["CreateTask"]
    seen = await in_thread(_create_body, server.url)

    assert seen["create_type"] == "CreateTask: object"
    rows = {row[0].split()[0]: row[1:] for row in seen["create_rows"]}
    assert sorted(rows) == sorted(schema["properties"])
    defaults = 0
    for name, prop in schema["properties"].items():
        kind, rules, meaning = rows[name]
        options = [o for o in prop.get("anyOf", [prop]) if o != {"type": "null"}]
        if "default" in prop:
            defaults += 1
            assert rules.endswith(f"default {json.dumps(prop['default'])}"), (name, rules)
        else:
            assert "default" not in rules, (name, rules)
        for key, label in (("exclusiveMinimum", "> "), ("maximum", "≤ "), ("minimum", "≥ ")):
            for option in options:
                if key in option:
                    assert f"{label}{option[key]}" in rules, (name, rules)
        if "anyOf" in prop:
            assert kind.endswith(" | null"), (name, kind)
        described = prop.get("description") or options[0].get("description", "")
        assert meaning == described.replace("`", ""), (name, meaning)
    assert defaults >= 3
    assert rows["timeoutSeconds"][0] == "number | null"
    assert rows["status"][1] == 'default "pending"'
    names = [alternative["required"] for alternative in schema["anyOf"]]
    assert seen["create_alternatives"] == "send one of: " + " or ".join(
        " and ".join(group) for group in names
    )
    assert seen["errors"] == []


#: A schema with every construct the renderer knows, and how each property should read:
#: (type, rules, meaning).
EVERYTHING = {
    "type": "object",
    "description": "every kind of property",
    "required": ["withDefault"],
    "properties": {
        "withDefault": {"type": "integer", "minimum": 1, "default": 5},
        "flag": {"type": "boolean", "default": False},
        "empty": {"type": "string", "default": ""},
        "nullable": {
            "anyOf": [{"type": "string", "maxLength": 3, "description": "inner"}, {"type": "null"}],
            "default": None,
        },
        "legacy": {"type": "string", "nullable": True},
        "choice": {"oneOf": [{"$ref": "#/components/schemas/Task"}, {"type": "integer"}]},
        "both": {"allOf": [{"$ref": "#/components/schemas/Task"}, {"type": "object"}]},
        "ref": {"$ref": "#/components/schemas/Task", "description": "a task"},
        "kind": {"enum": ["a", "b"], "default": "a"},
        "list": {"type": "array", "items": {"$ref": "#/components/schemas/Task"}, "maxItems": 2},
        "map": {"type": "object", "additionalProperties": {"type": "integer"}},
        "tuple": {
            "type": "array",
            "prefixItems": [{"type": "integer"}],
            "items": {"type": "string"},
        },
        "objectDefault": {"type": "object", "default": {"a": [1]}},
        "closed": {
            "type": "object",
            "properties": {"x": {"type": "string"}},
            "additionalProperties": False,
        },
        "anything": {},
    },
}
EVERYTHING_ROWS = {
    "withDefault required": ["integer", "≥ 1, default 5", ""],
    "flag": ["boolean", "default false", ""],
    "empty": ["string", 'default ""', ""],
    "nullable": ["string | null", "max length 3, default null", "inner"],
    "legacy": ["string | null", "", ""],
    "choice": ["Task | integer", "", ""],
    "both": ["Task & object", "", ""],
    "ref": ["Task", "", "a task"],
    "kind": ['"a" | "b"', 'default "a"', ""],
    "list": ["array of Task", "max items 2", ""],
    "map": ["object of integer", "", ""],
    "tuple": ["[integer, …string]", "", ""],
    "objectDefault": ["object", 'default {"a":[1]}', ""],
    "closed": ["object", "no other fields", ""],
    "anything": ["any", "", ""],
}


def _everything(server_url: str, document: dict[str, Any]) -> dict[str, Any]:
    with browser_page(server_url) as (page, seen):
        # The server's document, with one more component (the last route added wins).
        page.context.route("**/openapi.json", lambda route: route.fulfill(json=document))
        open_reference(page, server_url, "#schema-Everything")
        section = "#schema-Everything"
        found = {
            "rows": page.eval_on_selector_all(
                f"{section} table.props tbody tr",
                "rows => rows.map(r => [...r.cells].map(c => c.innerText.trim()))",
            ),
            "text": page.inner_text(section),
        }
        page.click(f'{section} a.ref[href="#schema-Task"] >> nth=0')
        found["task_top"] = page.evaluate(
            "document.getElementById('schema-Task').getBoundingClientRect().top"
        )
        found["errors"] = seen.console_errors + violations(page)
        found["elsewhere"] = list(seen.elsewhere)
    return found


async def test_every_kind_of_schema_reads_as_it_means(server: Server) -> None:
    document = await the_document(server)
    document["components"]["schemas"]["Everything"] = EVERYTHING
    found = await in_thread(_everything, server.url, document)

    rows = {" ".join(cells[0].split()): cells[1:] for cells in found["rows"]}
    assert rows == EVERYTHING_ROWS
    for word in FORBIDDEN:
        assert word not in found["text"]
    assert abs(found["task_top"]) <= 1
    assert found["errors"] == [] and found["elsewhere"] == []


# -- narrow, dark, keyboard ------------------------------------------------------------------


def _narrow_and_dark(server_url: str) -> dict[str, Any]:
    found: dict[str, Any] = {}
    for scheme in ("light", "dark"):
        with browser_page(server_url, width=NARROW, height=740, scheme=scheme) as (page, seen):
            open_reference(page, server_url)
            found[scheme] = {
                "contents_open": page.evaluate("document.getElementById('contents').open"),
                "overflow": page.evaluate(OVERFLOW),
                "low_contrast": page.evaluate(LOW_CONTRAST),
                "background": page.evaluate("getComputedStyle(document.body).backgroundColor"),
            }
            page.click("#contents > summary")
            found[scheme]["overflow_open"] = page.evaluate(OVERFLOW)
            found[scheme]["errors"] = seen.console_errors + violations(page)
    return found


async def test_the_page_reads_at_360px_in_light_and_dark(server: Server) -> None:
    found = await in_thread(_narrow_and_dark, server.url)

    for scheme in ("light", "dark"):
        seen = found[scheme]
        # The body never scrolls sideways, with the contents folded (as they start) or open.
        assert seen["contents_open"] is False, scheme
        assert seen["overflow"] == [NARROW, NARROW, NARROW], scheme
        assert seen["overflow_open"] == [NARROW, NARROW, NARROW], scheme
        assert seen["low_contrast"] == [], scheme
        assert seen["errors"] == [], scheme
    assert found["light"]["background"] == "rgb(255, 255, 255)"
    red, green, blue = map(int, re.findall(r"\d+", found["dark"]["background"])[:3])
    assert max(red, green, blue) < 64, found["dark"]["background"]


def _keyboard(server_url: str) -> dict[str, Any]:
    with browser_page(server_url) as (page, seen):
        open_reference(page, server_url)
        focused = []
        for _ in range(5):
            page.keyboard.press("Tab")
            focused.append(
                page.evaluate(
                    """() => {
                  const el = document.activeElement, style = getComputedStyle(el);
                  const box = el.getBoundingClientRect();
                  return [el.tagName.toLowerCase() + (el.id ? "#" + el.id : "") +
                          (el.className ? "." + el.className : ""),
                          style.outlineStyle !== "none" && parseFloat(style.outlineWidth) > 0,
                          box.top >= 0 && box.bottom <= innerHeight && box.width > 0];
                }"""
                )
            )
        # The skip link (the first stop) goes to the operations.
        page.focus("a.skip")
        page.keyboard.press("Enter")
        after_skip = page.evaluate("[location.hash, document.activeElement.id]")
        page.focus("#filter")
        page.keyboard.type("history")
        shown = page.eval_on_selector_all(
            "section.op:not([hidden])", "els => els.map(e => e.id).sort()"
        )
        listed = page.eval_on_selector_all(
            "nav li[data-op]:not([hidden])", "els => els.map(e => e.dataset.op).sort()"
        )
        no_match_before = page.is_visible("#no-match")
        page.fill("#filter", "no-such-operation")
        no_match_after = page.is_visible("#no-match")
        errors = seen.console_errors + violations(page)
    return {
        "focused": focused,
        "after_skip": after_skip,
        "shown": shown,
        "listed": listed,
        "no_match": (no_match_before, no_match_after),
        "errors": errors,
    }


async def test_the_keyboard_reaches_everything_with_a_visible_focus(server: Server) -> None:
    document = await the_document(server)
    found = await in_thread(_keyboard, server.url)

    names = [name for name, _, _ in found["focused"]]
    assert names[:3] == ["a.skip", "a", "input#filter"], names
    for name, ring, in_view in found["focused"]:
        assert ring and in_view, (name, ring, in_view)
    assert found["after_skip"] == ["#content", "content"]
    history = sorted(
        op_anchor(op["operationId"])
        for method, path, op in operations(document)
        if "history" in f"{method} {path} {op.get('summary', '')}".lower()
    )
    assert history and found["shown"] == history and found["listed"] == history
    assert found["no_match"] == (False, True)
    assert found["errors"] == []


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


def png_size(image: bytes) -> tuple[int, int]:
    """Width and height of a PNG."""
    assert image[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = struct.unpack(">II", image[16:24])
    return width, height


async def test_screenshot_of_the_page(server: Server, tmp_path: Path) -> None:
    image = await in_thread(_screenshot, server.url)

    assert png_size(image) == (1280, 1200)
    (tmp_path / SCREENSHOT.name).write_bytes(image)
    if os.environ.get("SPECTRAL_SCREENSHOT") == "1":
        SCREENSHOT.write_bytes(image)
