"""``GET /``: the dashboard, a single page that works without internet access.

The page is one HTML answer with its stylesheet and script inlined from the package's
``static/`` folder (``dashboard.html``, ``.css``, ``.js``); its script talks only to
this server: the HTTP API with the key in ``X-API-Key``, and the WebSockets of rooms,
the admin feed and tasks with watch tokens. Its Content-Security-Policy admits its own
style and script by hash and lets it connect only to this server (docs/dashboard.md).
"""

from __future__ import annotations

import base64
import hashlib
import re
from dataclasses import dataclass
from functools import cache
from importlib import resources

from spectral.api.call import Call
from spectral.front import Response

#: Files of the page, in ``spectral/static``.
PAGE, STYLE, SCRIPT = "dashboard.html", "dashboard.css", "dashboard.js"
#: A ``Host`` header that may be named in the policy: a name or address, and a port.
_HOST = re.compile(r"(?:[A-Za-z0-9](?:[A-Za-z0-9.-]{0,252})|\[[0-9A-Fa-f:.]{2,45}\])(?::\d{1,5})?")


@dataclass(frozen=True, slots=True)
class Page:
    """The dashboard and the hashes of its inlined style and script."""

    html: str
    style_hash: str
    script_hash: str

    def policy(self, host: str | None = None) -> str:
        """The Content-Security-Policy of the page served under ``host``.

        ``connect-src 'self'`` covers the same host's ``ws:``/``wss:`` in CSP Level 3
        browsers; the host's WebSocket origins are named too when ``Host`` is well-formed,
        for browsers that predate that rule.
        """
        connect = "'self'"
        if host and _HOST.fullmatch(host):
            connect += f" ws://{host} wss://{host}"
        return (
            f"default-src 'none'; connect-src {connect}; img-src 'self' data:; "
            f"style-src '{self.style_hash}'; script-src '{self.script_hash}'; "
            "base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
        )


@cache
def dashboard_page() -> Page:
    """The page with its stylesheet and script inlined."""
    static = resources.files("spectral") / "static"
    style = (static / STYLE).read_text(encoding="utf-8")
    script = (static / SCRIPT).read_text(encoding="utf-8")
    html = (
        (static / PAGE)
        .read_text(encoding="utf-8")
        .replace("/*STYLE*/", style)
        .replace("/*SCRIPT*/", script)
    )
    return Page(html, _digest(style), _digest(script))


async def dashboard(call: Call, _: None) -> Response:
    """The dashboard page (public: the page itself holds no data; the API asks for a key)."""
    page = dashboard_page()
    headers = [
        ("content-type", "text/html; charset=utf-8"),
        ("content-security-policy", page.policy(call.request.headers.get("host"))),
        ("cache-control", "no-cache"),
        ("referrer-policy", "no-referrer"),
        ("x-content-type-options", "nosniff"),
    ]
    return Response(200, page.html.encode(), headers)


def _digest(text: str) -> str:
    return "sha256-" + base64.b64encode(hashlib.sha256(text.encode()).digest()).decode()
