"""The bootstrap admin key: created on first start, kept in ``<data-dir>/admin.key`` (0600)."""

from __future__ import annotations

import os
import secrets
from dataclasses import dataclass
from pathlib import Path

#: Prefix of every admin key spectral generates (makes leaked keys easy to grep for).
PREFIX = "spk_admin_"


@dataclass(frozen=True, slots=True)
class AdminKey:
    """The admin key in force and where it came from."""

    secret: str
    #: "created" (new file, print it once), "file" (read back) or "environment".
    source: str


def generate() -> str:
    """A new random admin key (256 bits)."""
    return PREFIX + secrets.token_urlsafe(32)


def ensure_admin_key(path: Path, override: str | None = None) -> AdminKey:
    """Return the admin key: ``override`` if given, else the file's, else a new one saved to it.

    The file is created with mode 0600 and never rewritten. Raises ``ValueError`` if it
    exists but is empty.
    """
    if override:
        return AdminKey(override, "environment")
    try:
        secret = path.read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        pass
    else:
        if not secret:
            raise ValueError(f"{path} is empty: delete it to generate a new admin key")
        return AdminKey(secret, "file")
    secret = generate()
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:  # another process won the race: use its key
        return ensure_admin_key(path)
    with os.fdopen(fd, "w", encoding="utf-8") as file:
        file.write(secret + "\n")
        file.flush()
        os.fsync(file.fileno())
    return AdminKey(secret, "created")
