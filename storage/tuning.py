"""Process-wide SQLite memory tuning, applied once before the first connection opens.

Each connection's page cache normally starts with a bulk allocation of 20 pages
(~86 KiB at 4 KiB pages) whatever ``cache_size`` says, because the bulk is taken
when the schema is first read, before any pragma can run. Measured here with
locking_mode=EXCLUSIVE: 144 KiB of SQLite memory per open connection with the
default, 68 KiB with the initial bulk turned off (SQLITE_CONFIG_PAGECACHE with
no buffer and N=0). Python's ``sqlite3`` module has no call for it, so it is set
through the shared library with ctypes. Where that is impossible (SQLite linked
statically into Python, connections already open), nothing changes but memory.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import sqlite3

log = logging.getLogger(__name__)

_SQLITE_CONFIG_PAGECACHE = 7
_applied: bool | None = None


def tune_sqlite_memory() -> bool:
    """Turn off the per-connection page-cache bulk allocation; True if it took effect."""
    global _applied
    if _applied is not None:
        return _applied
    _applied = False
    name = ctypes.util.find_library("sqlite3") or "libsqlite3.so.0"
    try:
        lib = ctypes.CDLL(name)
        lib.sqlite3_libversion.restype = ctypes.c_char_p
        version = lib.sqlite3_libversion() or b""
    except (OSError, AttributeError):
        log.info("sqlite memory tuning unavailable: no shared libsqlite3")
        return False
    if version.decode() != sqlite3.sqlite_version:
        # Not the library Python's sqlite3 module uses: configuring it would do nothing.
        log.info("sqlite memory tuning skipped: library version differs")
        return False
    if lib.sqlite3_shutdown() != 0:
        return False
    ok = lib.sqlite3_config(_SQLITE_CONFIG_PAGECACHE, None, ctypes.c_int(0), ctypes.c_int(0)) == 0
    lib.sqlite3_initialize()
    _applied = ok
    return ok


def sqlite_memory_used() -> int | None:
    """Bytes of memory SQLite holds now (all connections), or None if unavailable."""
    name = ctypes.util.find_library("sqlite3") or "libsqlite3.so.0"
    try:
        lib = ctypes.CDLL(name)
    except OSError:
        return None
    lib.sqlite3_memory_used.restype = ctypes.c_int64
    return int(lib.sqlite3_memory_used())
