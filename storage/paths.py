"""Where an object's file lives: a sharded, hashed path that never contains a raw id."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

_KIND = re.compile(r"^[a-z][a-z0-9_]{0,31}$")


def check_kind(kind: str) -> str:
    """Return ``kind`` if it is a valid object kind name, else raise ValueError."""
    if not _KIND.match(kind):
        raise ValueError(f"invalid object kind {kind!r}: use [a-z][a-z0-9_]{{0,31}}")
    return kind


def object_digest(kind: str, object_id: str) -> str:
    """Hex SHA-256 of (kind, id): the file name of the object, stable forever."""
    return hashlib.sha256(f"{kind}\x00{object_id}".encode()).hexdigest()


def object_path(root: Path, kind: str, object_id: str) -> Path:
    """Path of the SQLite file for ``(kind, object_id)`` under ``root``.

    Two levels of 256-way sharding keep directories small at millions of objects:
    ``root/objects/<kind>/ab/cd/<sha256>.sqlite``.
    """
    digest = object_digest(check_kind(kind), object_id)
    return root / "objects" / kind / digest[:2] / digest[2:4] / f"{digest}.sqlite"


def kind_dir(root: Path, kind: str) -> Path:
    """Directory holding every file of one object kind."""
    return root / "objects" / check_kind(kind)
