"""What the front hands the application, and what the application answers.

Plain slotted objects, built once per request: no framework object in between.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import dataclass, field
from urllib.parse import parse_qsl, unquote


class Request:
    """One parsed HTTP/1.1 request with its whole body.

    ``headers`` maps lower-case names to values (repeated headers joined by ``", "``).
    """

    __slots__ = ("_query", "body", "headers", "keep_alive", "method", "path", "target", "version")

    def __init__(
        self,
        method: str,
        target: str,
        headers: dict[str, str],
        body: bytes = b"",
        *,
        keep_alive: bool = True,
        version: str = "1.1",
    ) -> None:
        self.method = method
        self.target = target
        self.headers = headers
        self.body = body
        self.keep_alive = keep_alive
        self.version = version
        raw_path, _, _ = target.partition("?")
        self.path = unquote(raw_path) if "%" in raw_path else raw_path
        self._query: list[tuple[str, str]] | None = None

    @property
    def raw_path(self) -> str:
        """The path as sent (percent-encoded), without the query."""
        return self.target.partition("?")[0]

    @property
    def query_string(self) -> str:
        """The query as sent, without ``?``."""
        return self.target.partition("?")[2]

    def query_items(self) -> list[tuple[str, str]]:
        """Every ``(name, value)`` of the query, in order."""
        if self._query is None:
            query = self.query_string
            self._query = parse_qsl(query, keep_blank_values=True) if query else []
        return self._query

    def query(self) -> dict[str, str]:
        """The query as a dict (the first value of a repeated name)."""
        values: dict[str, str] = {}
        for name, value in self.query_items():
            values.setdefault(name, value)
        return values

    def query_list(self, name: str) -> list[str]:
        """Every value of ``name`` in the query."""
        return [value for key, value in self.query_items() if key == name]

    def header(self, name: str) -> str | None:
        """A header by lower-case name."""
        return self.headers.get(name)

    @property
    def content_type(self) -> str:
        """The media type of the body, lower-case, without parameters ("" if none)."""
        value = self.headers.get("content-type", "")
        return value.partition(";")[0].strip().lower()


@dataclass(slots=True)
class Response:
    """A whole answer: status, headers (content type included) and body."""

    status: int
    body: bytes = b""
    headers: list[tuple[str, str]] = field(default_factory=list)
    #: Close the connection after this answer (e.g. a body that was never read).
    close: bool = False


@dataclass(slots=True)
class StreamingResponse:
    """An answer sent in chunks as ``chunks`` yields them (``Transfer-Encoding: chunked``).

    The stream ends when ``chunks`` does, or when the client goes away (the front
    watches the connection for end of file meanwhile). ``on_close`` is called once
    the stream is over, whatever ended it, even if it never started.
    """

    status: int
    chunks: AsyncIterator[bytes]
    headers: list[tuple[str, str]] = field(default_factory=list)
    on_close: Callable[[], None] | None = None


Answer = Response | StreamingResponse


def header_lines(headers: Iterable[tuple[str, str]]) -> bytes:
    """``Name: value\\r\\n`` lines (values must already be safe: no CR or LF)."""
    return b"".join(f"{name}: {value}\r\n".encode("latin-1") for name, value in headers)
