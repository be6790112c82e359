"""The server secret: 32 random bytes in ``<data-dir>/server.secret`` (mode 0600).

Keys for different jobs are derived from it (HMAC-SHA256 with the job's name), so one
file serves the API-key pepper and the watch-token signing key. Created on first use
by whichever process (server or CLI) comes first; never rewritten. Deleting it
invalidates every API key and watch token (the bootstrap admin key still works).
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
from pathlib import Path

FILE_NAME = "server.secret"
_SIZE = 32


def load_or_create(data_dir: Path) -> bytes:
    """The data directory's secret, created if missing.

    Raises:
        ValueError: the file exists but does not hold a valid secret.
    """
    path = Path(data_dir) / FILE_NAME
    try:
        text = path.read_text(encoding="ascii").strip()
    except FileNotFoundError:
        pass
    else:
        try:
            value = bytes.fromhex(text)
        except ValueError:
            value = b""
        if len(value) != _SIZE:
            raise ValueError(f"{path} is not a valid server secret")
        return value
    path.parent.mkdir(parents=True, exist_ok=True)
    value = secrets.token_bytes(_SIZE)
    # Written whole under a temporary name, then linked into place: a concurrent
    # reader never sees a half-written file, and exactly one creator wins.
    tmp = path.with_name(f".{FILE_NAME}.{os.getpid()}.{secrets.token_hex(4)}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "w", encoding="ascii") as file:
            file.write(value.hex() + "\n")
            file.flush()
            os.fsync(file.fileno())
        try:
            os.link(tmp, path)
        except FileExistsError:  # another process won the race: use its secret
            return load_or_create(data_dir)
    finally:
        tmp.unlink(missing_ok=True)
    return value


def derive(secret: bytes, purpose: str) -> bytes:
    """A key for one purpose (``"api-keys"``, ``"watch-tokens"``) derived from the secret."""
    return hmac.new(secret, purpose.encode(), hashlib.sha256).digest()
