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
import hashlib
import json
from dataclasses import dataclass
from functools import cache
from importlib import resources

#: The vendored bundle (``spectral/static/vendor``), named with its version.
SCALAR = "scalar-api-reference-1.76.0.js"
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
    # The "Powered by Scalar" link of the sidebar leads away from the server.
    "customCss": ".darklight-reference-promo { display: none !important; }",
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
    return (resources.files("spectral") / "static" / "vendor" / name).read_bytes()


def _digest(text: str) -> str:
    return "sha256-" + base64.b64encode(hashlib.sha256(text.encode()).digest()).decode()
