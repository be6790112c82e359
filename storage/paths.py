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

    One level of 256-way sharding, ``root/objects/<kind>/ab/<sha256>.sqlite``: the
    256 directories are created with the kind, so creating an object never pays a
    mkdir; a million objects is ~4,000 files (plus WALs) per directory, which ext4's
    hashed directories handle without slowing down.
    """
    digest = object_digest(check_kind(kind), object_id)
    return root / "objects" / kind / digest[:2] / f"{digest}.sqlite"


def shard_dirs(root: Path, kind: str) -> list[Path]:
    """The 256 shard directories of a kind."""
    base = kind_dir(root, kind)
    return [base / f"{i:02x}" for i in range(256)]


def kind_dir(root: Path, kind: str) -> Path:
    """Directory holding every file of one object kind."""
    return root / "objects" / check_kind(kind)
