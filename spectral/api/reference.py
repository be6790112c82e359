"""``GET /api-reference`` and its script: the API described, readable offline.

The page is Scalar's API reference (``@scalar/api-reference`` 1.76.0 from npm, MIT,
``spectral/static/vendor/LICENSE-scalar-api-reference``): its one-file browser bundle
is vendored as ``spectral/static/vendor/scalar-api-reference-1.76.0.js`` and served by
``GET /api-reference/{file}``; it fetches ``/openapi.json`` from this server. To update
it, see docs/operations.md ("The API reference page").

Its Content-Security-Policy admits scripts from this server and the page's two inline
scripts by hash (no ``'unsafe-eval'``); Scalar's styles are ``<style>`` elements and
``style`` attributes it writes at run time, hence ``style-src 'self' 'unsafe-inline'``.
Nothing may be loaded from elsewhere: no CDN, no font, no proxy, no telemetry.
"""

from __future__ import annotations

import base64
import gzip
import hashlib
import json
from dataclasses import dataclass
from functools import cache
from importlib import resources

#: The vendored bundle (``spectral/static/vendor``), named with its version.
SCALAR = "scalar-api-reference-1.76.0.js"
#: socket.io-client's browser bundle (``LICENSE-socket.io-client``), served at
#: ``/socket.io/socket.io.js`` and ``.min.js`` as a Socket.IO server does.
SOCKETIO_CLIENT = "socket.io-4.8.4.min.js"
#: Where the page loads it from.
SCALAR_PATH = f"/api-reference/{SCALAR}"

#: Before the bundle: zod (inside it) probes ``Function("")`` to pick a faster path; the
#: policy refuses it (and reports a violation). Without the probe it takes the other path.
BEFORE = "globalThis.__zod_globalConfig = { jitless: true };"

#: Scalar's configuration: nothing that reaches scalar.com (fonts, its request proxy,
#: telemetry, the AI agent, MCP and developer tools), the document of this server.
CONFIGURATION = {
    "url": "/openapi.json",
    "withDefaultFonts": False,
    "telemetry": False,
    "proxyUrl": "",
    "agent": {"disabled": True},
    "mcp": {"disabled": True},
    "showDeveloperTools": "never",
    "hideClientButton": True,
    "documentDownloadType": "direct",
    "defaultOpenAllTags": True,
    "customCss": " ".join(
        [
            # Text and method colours at 4.5:1 or more (WCAG AA) on every background.
            ".light-mode { --scalar-color-1: #1b1b1b; --scalar-color-2: #3d3d3d;",
            "--scalar-color-3: #555; --scalar-color-accent: #0a58ca;",
            "--scalar-color-green: #0a6b45; --scalar-color-blue: #0a58ca;",
            "--scalar-color-orange: #9a4a00; --scalar-color-yellow: #7a5c00;",
            "--scalar-color-red: #b3261e; --scalar-color-purple: #6f42c1;",
            "--scalar-background-1: #fff; }",
            ".dark-mode { --scalar-color-1: #f0f0f0; --scalar-color-2: #d0d0d0;",
            "--scalar-color-3: #b0b0b0; --scalar-color-accent: #8ab4ff;",
            "--scalar-color-green: #5fd08f; --scalar-color-blue: #8ab4ff;",
            "--scalar-color-orange: #ffa657; --scalar-color-yellow: #e3c04f;",
            "--scalar-color-red: #ff8a80; --scalar-color-purple: #c8a2ff;",
            "--scalar-background-1: #0f0f0f; }",
        ]
    ),
}

#: Mounts the reference once the bundle has defined ``Scalar``.
MOUNT = f"Scalar.createApiReference('#app', {json.dumps(CONFIGURATION)});"

PAGE = f"""<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>spectral API reference</title>
</head>
<body>
<div id="app"></div>
<script>{BEFORE}</script>
<script src="{SCALAR_PATH}"></script>
<script>{MOUNT}</script>
</body>
</html>
"""


@dataclass(frozen=True, slots=True)
class Page:
    """The reference page and the Content-Security-Policy that admits only its own code."""

    html: str
    policy: str


def reference_page() -> Page:
    """The page and its policy."""
    policy = (
        "default-src 'none'; connect-src 'self'; img-src 'self' data:; font-src 'self' data:; "
        "base-uri 'none'; form-action 'none'; frame-ancestors 'none'; "
        "style-src 'self' 'unsafe-inline'; "
        f"script-src 'self' '{_digest(BEFORE)}' '{_digest(MOUNT)}'"
    )
    return Page(PAGE, policy)


@cache
def asset(name: str) -> bytes | None:
    """A vendored file the page loads, by name (None: no such file)."""
    if name != SCALAR:
        return None
    return vendored(name)


def vendored(name: str) -> bytes:
    """A file of ``spectral/static/vendor`` (the page's bundle, socket.io-client's)."""
    return (resources.files("spectral") / "static" / "vendor" / name).read_bytes()


def accepts_gzip(accept_encoding: str | None) -> bool:
    """True if an ``Accept-Encoding`` value admits gzip (or ``*``) with a q above 0."""
    for item in (accept_encoding or "").split(","):
        name, _, params = item.strip().partition(";")
        if name.strip().lower() not in ("gzip", "*"):
            continue
        quality = 1.0
        for param in params.split(";"):
            key, _, value = param.strip().partition("=")
            if key.strip().lower() == "q":
                try:
                    quality = float(value)
                except ValueError:
                    quality = 0.0
        if quality > 0:
            return True
    return False


def compress(body: bytes) -> bytes:
    """The gzip form of a vendored file (deterministic: no name, no time)."""
    return gzip.compress(body, compresslevel=9, mtime=0)


def _digest(text: str) -> str:
    return "sha256-" + base64.b64encode(hashlib.sha256(text.encode()).digest()).decode()
