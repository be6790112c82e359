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
from typing import Any

from quart import Quart, Response

from spectral import __version__
from spectral.api.openapi import build_document

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


def register(app: Quart) -> None:
    """Serve the document and the page (both need no key: see ``PUBLIC_PATHS``)."""
    document = build_document(__version__)
    page = reference_page()

    @app.get("/openapi.json")
    async def openapi_document() -> dict[str, Any]:
        """The OpenAPI 3.1 document of every route."""
        return document

    @app.get("/api-reference")
    async def api_reference() -> Response:
        """The document as a readable page, rendered without internet access."""
        response = Response(page.html, content_type="text/html; charset=utf-8")
        response.headers["Content-Security-Policy"] = page.policy
        return response
