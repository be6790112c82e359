"""``GET /openapi.json`` and ``GET /api-reference``: the API described, readable offline.

The page is one HTML answer with its stylesheet and script inlined from the package's
``static/`` folder; its script fetches ``openapi.json`` from this server and renders
it. Its Content-Security-Policy lets it load nothing else: no CDN, no font.
"""

from __future__ import annotations

import base64
import hashlib
from dataclasses import dataclass
from importlib import resources

#: Files of the page, in ``spectral/static``.
PAGE, STYLE, SCRIPT = "reference.html", "reference.css", "reference.js"


@dataclass(frozen=True, slots=True)
class Page:
    """The reference page and the Content-Security-Policy that admits only its own code."""

    html: str
    policy: str


def reference_page() -> Page:
    """The page with its stylesheet and script inlined, and its policy."""
    static = resources.files("spectral") / "static"
    style = (static / STYLE).read_text(encoding="utf-8")
    script = (static / SCRIPT).read_text(encoding="utf-8")
    html = (
        (static / PAGE)
        .read_text(encoding="utf-8")
        .replace("/*STYLE*/", style)
        .replace("/*SCRIPT*/", script)
    )
    policy = (
        "default-src 'none'; connect-src 'self'; img-src 'self' data:; base-uri 'none'; "
        f"form-action 'none'; style-src '{_digest(style)}'; script-src '{_digest(script)}'"
    )
    return Page(html, policy)


def _digest(text: str) -> str:
    return "sha256-" + base64.b64encode(hashlib.sha256(text.encode()).digest()).decode()
