"""Cross-origin requests from browsers: the allowlist of ``SPECTRAL_CORS_ORIGINS``.

An allowed origin gets ``Access-Control-Allow-Origin`` on every answer and its
preflights (``OPTIONS`` with ``Access-Control-Request-Method``) answered 204 with
the methods and headers a client of the API sends; any other origin gets no CORS
header at all, so the browser refuses the answer to the page. A credentialed
variant (the Socket.IO endpoint's, whose long-polls a browser may send with
cookies, as engine.io's CORS option allows) names the caller's own origin, never
``*``, and adds ``Access-Control-Allow-Credentials``.
"""

from __future__ import annotations

from spectral.front import Answer, Request, Response

#: Request headers a browser may send cross-origin, and response headers it may read.
ALLOW_HEADERS = "X-API-Key, Authorization, Content-Type, Idempotency-Key, Last-Event-ID"
EXPOSE_HEADERS = "Retry-After, Idempotent-Replayed"
ALLOW_METHODS = "GET, POST, PUT, DELETE"
#: Seconds a browser may cache a preflight's answer.
MAX_AGE = "600"


class Cors:
    """The allowlist (``*`` allows every origin).

    Args:
        origins: the allowed origins.
        methods: what a preflight allows.
        expose: the response headers a page may read (None: none named).
        credentials: answer for credentialed requests (the exact origin, never ``*``).
    """

    def __init__(
        self,
        origins: tuple[str, ...],
        *,
        methods: str = ALLOW_METHODS,
        expose: str | None = EXPOSE_HEADERS,
        credentials: bool = False,
    ) -> None:
        self.any = "*" in origins
        self.origins = frozenset(origins)
        self.methods = methods
        self.expose = expose
        self.credentials = credentials

    def allowed(self, request: Request) -> str | None:
        """The value of ``Access-Control-Allow-Origin`` for this request, if any."""
        origin = request.headers.get("origin")
        if origin is None:
            return None
        if self.any:
            return origin if self.credentials else "*"
        return origin if origin in self.origins else None

    def is_preflight(self, request: Request) -> bool:
        """An ``OPTIONS`` request asking whether a cross-origin request may be sent."""
        return (
            request.method == "OPTIONS"
            and "origin" in request.headers
            and "access-control-request-method" in request.headers
        )

    def preflight(self, request: Request) -> Response:
        """The preflight's answer (no CORS header for an origin not allowed)."""
        allowed = self.allowed(request)
        if allowed is None:
            return Response(204, b"", [("vary", "Origin")])
        headers = [("access-control-allow-origin", allowed)]
        if self.credentials:
            headers.append(("access-control-allow-credentials", "true"))
        headers += [
            ("access-control-allow-methods", self.methods),
            ("access-control-allow-headers", ALLOW_HEADERS),
            ("access-control-max-age", MAX_AGE),
            ("vary", "Origin"),
        ]
        return Response(204, b"", headers)

    def decorate(self, request: Request, answer: Answer) -> None:
        """Add the CORS headers of an actual request's answer."""
        if request.method == "OPTIONS":
            return
        allowed = self.allowed(request)
        if allowed is not None:
            answer.headers.append(("access-control-allow-origin", allowed))
            if self.credentials:
                answer.headers.append(("access-control-allow-credentials", "true"))
            if self.expose is not None:
                answer.headers.append(("access-control-expose-headers", self.expose))
            answer.headers.append(("vary", "Origin"))
