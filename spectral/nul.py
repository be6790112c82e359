"""U+0000 (NUL) in strings: refused everywhere a client sends text, in every mode.

PostgreSQL's ``text`` cannot store NUL at all, and ``jsonb`` refuses the ``\\u0000``
escape, so on a cluster such a string would fail deep inside (a listing filter, a
webhook description, a task summary mirrored into ``objects``, whose triggers cast it
to ``jsonb``). The rule is the same without a cluster, so that a request valid on one
server is valid on every one. The API checks the validated input of every operation
(:func:`spectral.api.failures.refuse_nul`), object keys (metadata) included; the task
state machine checks metadata and errors again, whatever path a command came by
(integrations map providers' payloads into them).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

NUL = "\x00"
MESSAGE = "must not contain NUL (U+0000) characters"
#: How NUL appears in a JSON text: escaped (raw control characters are invalid JSON).
JSON_NUL = "\\u0000"


def may_hold_nul(json_text: str | bytes) -> bool:
    """Whether a string decoded from this JSON text may hold NUL (a quick pre-check)."""
    if isinstance(json_text, bytes):
        return JSON_NUL.encode() in json_text or b"\x00" in json_text
    return JSON_NUL in json_text or NUL in json_text


def nul_path(value: Any) -> tuple[str, ...] | None:
    """Where the first NUL is in ``value`` (strings, lists, dicts and their keys, pydantic
    models by field alias): the path's steps, ``()`` for ``value`` itself; None if nowhere."""
    for path in _nul_paths(value, ()):
        return path
    return None


def _nul_paths(value: Any, path: tuple[str, ...]) -> Iterator[tuple[str, ...]]:
    if isinstance(value, str):
        if NUL in value:
            yield path
    elif isinstance(value, dict):
        for key, item in value.items():
            step = (*path, str(key).replace(NUL, JSON_NUL))
            if isinstance(key, str) and NUL in key:
                yield step
            yield from _nul_paths(item, step)
    elif isinstance(value, list | tuple):
        for index, item in enumerate(value):
            yield from _nul_paths(item, (*path, str(index)))
    else:
        # A pydantic model (not imported: the task state machine uses this module too).
        fields = getattr(type(value), "model_fields", None)
        if isinstance(fields, dict):
            for name, info in fields.items():
                yield from _nul_paths(getattr(value, name), (*path, info.alias or name))
