"""Where an object's file lives: a sharded path that never contains a raw id.

Two layouts share the shard directories. The *hashed* layout names a file after
sha256(kind, id) (:func:`object_path`): the id alone finds it. The *named* layout
gives a file a random name (:func:`new_file_name`, :func:`named_path`) when it is
pre-created in the kind's pool, before any id is known; the registry's ``file``
column then maps (kind, id) to it.
"""

from __future__ import annotations

import hashlib
import re
import secrets
from pathlib import Path

_KIND = re.compile(r"^[a-z][a-z0-9_]{0,31}$")
_HEX = re.compile(r"^[0-9a-f]+$")


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


def new_file_name() -> str:
    """A fresh random file name (32 hex digits) for an object file of the id -> file map."""
    return secrets.token_hex(16)


def is_file_name(name: str) -> bool:
    """True if ``name`` is one of :func:`new_file_name`'s (not a 64-digit hashed name)."""
    return len(name) == 32 and _HEX.match(name) is not None


def named_path(root: Path, kind: str, name: str) -> Path:
    """Path of the object file called ``name``: ``root/objects/<kind>/<na>/<name>.sqlite``.

    The same 256 shards as the hashed layout; the name is random, so it spreads evenly.
    A name that is not 32 hex digits is refused (ValueError): it never becomes a path.
    """
    if not is_file_name(name):
        raise ValueError(f"invalid object file name {name!r}")
    return root / "objects" / check_kind(kind) / name[:2] / f"{name}.sqlite"


def pool_dir(root: Path, kind: str) -> Path:
    """Directory of a kind's pre-created files, not yet handed out: ``root/pool/<kind>``."""
    return root / "pool" / check_kind(kind)
