"""Dotted paths into a JSON payload: ``data.object.id``, ``items.0.id``.

Pure. A path is parsed once, when the integration is registered (a syntax error
names the field), and resolved against each callback's JSON. A segment of digits is
a list index when the value there is a list, and a key otherwise (``{"0": ...}``).
"""

from __future__ import annotations

import re
from typing import Any

#: Longest path accepted (characters) and most segments: deeper payloads are unheard of.
MAX_LENGTH = 256
MAX_SEGMENTS = 16
_SEGMENT_TEXT = r"[A-Za-z0-9_$@-]{1,64}"
_SEGMENT = re.compile(f"^{_SEGMENT_TEXT}$")
#: The whole rule as one regular expression (with :data:`MAX_LENGTH`), for documents.
PATTERN = rf"^{_SEGMENT_TEXT}(\.{_SEGMENT_TEXT}){{0,{MAX_SEGMENTS - 1}}}$"

Path = tuple[str, ...]


class PathSyntaxError(ValueError):
    """A path that cannot be parsed (its message says why)."""


class MissingPathError(LookupError):
    """The payload has no value at the path (its message says where it stopped)."""


def parse(text: str) -> Path:
    """The segments of ``text``.

    Raises:
        PathSyntaxError: empty, too long, an empty segment, or a character outside
            ``A-Z a-z 0-9 _ $ @ -``.
    """
    if not text:
        raise PathSyntaxError("must not be empty")
    if len(text) > MAX_LENGTH:
        raise PathSyntaxError(f"at most {MAX_LENGTH} characters")
    segments = tuple(text.split("."))
    if len(segments) > MAX_SEGMENTS:
        raise PathSyntaxError(f"at most {MAX_SEGMENTS} segments")
    for segment in segments:
        if not _SEGMENT.match(segment):
            raise PathSyntaxError(
                "segments are 1-64 characters of A-Z a-z 0-9 _ $ @ - separated by dots"
                f" (got {segment!r})"
            )
    return segments


def resolve(document: Any, path: Path) -> Any:
    """The value of ``document`` at ``path`` (``null`` counts as missing).

    Raises:
        MissingPathError: a segment is absent, an index is out of range, or a value on
            the way is neither an object nor a list.
    """
    value = document
    for depth, segment in enumerate(path):
        if isinstance(value, dict) and segment in value:
            value = value[segment]
        elif isinstance(value, list) and segment.isdigit() and int(segment) < len(value):
            value = value[int(segment)]
        else:
            where = ".".join(path[: depth + 1])
            raise MissingPathError(f"no value at {where}")
    if value is None:
        raise MissingPathError(f"no value at {'.'.join(path)} (null)")
    return value
