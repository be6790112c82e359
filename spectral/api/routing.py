"""Matching a request's method and path to an operation's REST route.

Routes come from the operation table. A path without parameters is one dict
lookup; the others are matched segment by segment (``{name}`` takes one segment).
A path that matches with another method is a 405 (with ``Allow``), not a 404.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from urllib.parse import unquote

from spectral.api.operations import Operation, Rest


@dataclass(slots=True)
class Match:
    """The operation a request reaches (None: no route for its method), its path
    parameters, the methods its path allows, and whether that path is public."""

    operation: Operation | None = None
    rest: Rest | None = None
    params: dict[str, str] = field(default_factory=dict)
    allowed: set[str] = field(default_factory=set)
    public: bool = False


@dataclass(frozen=True, slots=True)
class _Pattern:
    segments: tuple[str, ...]
    method: str
    operation: Operation
    rest: Rest

    def params(self, parts: list[str]) -> dict[str, str] | None:
        if len(parts) != len(self.segments):
            return None
        found: dict[str, str] = {}
        for pattern, part in zip(self.segments, parts, strict=True):
            if pattern.startswith("{"):
                if not part:
                    return None
                found[pattern[1:-1]] = part
            elif pattern != part:
                return None
        return found


class Routes:
    """Every REST route of the table."""

    def __init__(self) -> None:
        self._static: dict[str, dict[str, tuple[Operation, Rest]]] = {}
        self._patterns: list[_Pattern] = []

    @classmethod
    def from_operations(cls, operations: Iterable[Operation]) -> Routes:
        """The routes of every operation's REST bindings."""
        routes = cls()
        for operation in operations:
            for rest in operation.rest:
                routes.add(operation, rest)
        return routes

    def add(self, operation: Operation, rest: Rest) -> None:
        """Serve ``rest.method rest.path`` with ``operation``."""
        if "{" not in rest.path:
            methods = self._static.setdefault(rest.path, {})
            if rest.method in methods:
                raise ValueError(f"two routes for {rest.method} {rest.path}")
            methods[rest.method] = (operation, rest)
        else:
            segments = tuple(rest.path.split("/"))
            self._patterns.append(_Pattern(segments, rest.method, operation, rest))

    def match(self, method: str, path: str, raw_path: str | None = None) -> Match:
        """The route of ``method path`` (static routes win over parameterised ones).

        ``raw_path`` (as sent): for a route that says so (``Rest.encoded_slash``), an
        encoded slash (``%2F``) stays inside its segment, so that its parameter may
        hold one (an external id); every other route splits the decoded ``path``.
        """
        match = Match()
        methods = self._static.get(path)
        if methods is not None:
            found = methods.get(method)
            if found is not None:
                match.operation, match.rest = found
                return match
            match.allowed.update(methods)
            match.public = any(o.access == "public" for o, _ in methods.values())
        parts = path.split("/")
        raw_parts = parts
        if raw_path is not None and ("%2F" in raw_path or "%2f" in raw_path):
            raw_parts = [unquote(part) for part in raw_path.split("/")]
        for pattern in self._patterns:
            params = pattern.params(raw_parts if pattern.rest.encoded_slash else parts)
            if params is None:
                continue
            if pattern.method == method and match.operation is None:
                match.operation, match.rest, match.params = pattern.operation, pattern.rest, params
            match.allowed.add(pattern.method)
        return match

    def __iter__(self):
        for path, methods in self._static.items():
            for method, (operation, _) in methods.items():
                yield method, path, operation
        for pattern in self._patterns:
            yield pattern.method, "/".join(pattern.segments), pattern.operation
