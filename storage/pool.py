"""A pool of object files created ahead of demand, so that creating an object costs a rename.

Theory of operation
-------------------
Creating an object's file means writing the kind's template (24 KiB for a task)
to a temporary file and renaming it into place, and then SQLite creates its WAL
at the first access: two file creations, ~300-700 µs each on this machine, the
bulk of a creation's cost. A :class:`FilePool` does that work ahead of time, in a
worker thread, into its own directory ``root/pool/<kind>/``: the database and an
empty ``-wal`` beside it. A creation then takes one ready file and renames both
into its shard of the named layout (``objects/<kind>/<na>/<name>.sqlite``, see
:mod:`storage.paths`). The file keeps its random name: the registry's ``file``
column maps the object's id to it.

Connections are not pooled: SQLite derives the WAL's name from the database's
path when it opens it, so an open database can never be renamed into place, and
each open connection holds two descriptors (the live-actor cap needs them).

:meth:`FilePool.serve` keeps between ``low`` and ``high`` files ready: when a
take leaves fewer than ``low``, it creates files in batches until ``high``.
When the pool is empty :meth:`FilePool.take` returns None and the caller creates
the file itself, synchronously (the old cost, never a failure).

Crash safety: a pool file is complete before it gets its ``.sqlite`` name (written
under a ``.tmp`` name, then renamed); it is handed out by one rename, which either
happened or not. Files still in the pool directory belong to nobody: the pool
removes them when it starts (:meth:`FilePool.clear`), so a schema change can never
hand out a stale template. A handed-out file whose creation never committed holds
no record; start-up recovery and ``spectral doctor`` reclaim it.
"""

from __future__ import annotations

import contextlib
import logging
import os
from dataclasses import dataclass

import trio

from storage.objects import ObjectFile, ObjectStore, write_atomically
from storage.paths import new_file_name, pool_dir

log = logging.getLogger(__name__)

#: Files created per trip to the worker thread: ~50 µs each here, so a batch holds
#: the thread ~3 ms, and a cancelled pool waits at most that long for it.
BATCH = 64


@dataclass(frozen=True, slots=True)
class PoolStatistics:
    """A snapshot of one pool, for /health and /metrics."""

    kind: str
    ready: int
    #: Files handed out since start.
    taken: int
    #: Creations that found the pool empty and made their file synchronously.
    misses: int
    #: Files the refill job created since start.
    created: int


class FilePool:
    """Ready-made files of one kind; see the module docstring.

    Args:
        store: the object store (it knows the kind's template and the layout).
        kind: a kind registered with ``store``.
        low: refill when a take leaves fewer ready files than this.
        high: refill up to this many ready files.
    """

    def __init__(self, store: ObjectStore, kind: str, *, low: int, high: int) -> None:
        if not 0 <= low <= high:
            raise ValueError(f"pool water marks must satisfy 0 <= low <= high; got {low}, {high}")
        self.store = store
        self.kind = kind
        self.low = low
        self.high = high
        self.directory = pool_dir(store.root, kind)
        self._ready: list[str] = []
        self._wanted = trio.Event()
        self._changed = trio.Event()
        self.taken = 0
        self.misses = 0
        self.created = 0

    def __len__(self) -> int:
        return len(self._ready)

    def statistics(self) -> PoolStatistics:
        """Counters and the number of ready files."""
        return PoolStatistics(self.kind, len(self._ready), self.taken, self.misses, self.created)

    def clear(self) -> int:
        """Remove every file left in the pool directory (by an earlier run); returns how many.

        Call before :meth:`serve`; nothing in the directory was ever handed out.
        """
        self.directory.mkdir(parents=True, exist_ok=True)
        self._ready.clear()
        removed = 0
        for entry in os.scandir(self.directory):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(entry.path)
                removed += 1
        return removed

    def take(self) -> ObjectFile | None:
        """Hand out one ready file, renamed into its final place; None if the pool is empty.

        Never blocks (one rename, ~10 µs); the caller creates the file itself on None.
        """
        while self._ready:
            name = self._ready.pop()
            if len(self._ready) < self.low:
                self._wanted.set()
            file = self.store.named(self.kind, name)
            source = self.directory / f"{name}.sqlite"
            try:
                os.rename(source, file.path)
            except FileNotFoundError:
                log.warning("pool file %s of %s vanished", name, self.kind)
                continue
            # The database first: a crash between the two leaves a database without
            # its (empty) WAL, which SQLite creates again, and a stray in the pool.
            with contextlib.suppress(FileNotFoundError):
                os.rename(f"{source}-wal", f"{file.path}-wal")
            self.taken += 1
            return file
        self._wanted.set()
        self.misses += 1
        return None

    async def wait_ready(self, count: int) -> None:
        """Wait until at least ``count`` files are ready (for tests and benchmarks)."""
        while len(self._ready) < count:
            await self._changed.wait()

    async def serve(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Keep the pool between its water marks until cancelled.

        Files are written in a worker thread, ``BATCH`` at a time; a cancellation waits
        for the batch in flight (a few ms), so every file the pool lists is complete.
        """
        self.directory.mkdir(parents=True, exist_ok=True)
        task_status.started()
        template = self.store.template(self.kind)
        while True:
            while len(self._ready) < self.high:
                count = min(BATCH, self.high - len(self._ready))
                names = await trio.to_thread.run_sync(self._make, template, count)
                self._ready.extend(names)
                self.created += len(names)
                self._changed.set()
                self._changed = trio.Event()
            self._wanted = trio.Event()
            if len(self._ready) < self.low:
                continue
            await self._wanted.wait()

    def _make(self, template: bytes, count: int) -> list[str]:
        names = []
        for _ in range(count):
            name = new_file_name()
            path = self.directory / f"{name}.sqlite"
            # An empty WAL beside it: SQLite would otherwise create one at the first
            # access, on the request path (a file creation: ~300-500 µs here).
            os.close(os.open(f"{path}-wal", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644))
            write_atomically(path, template)  # the .sqlite name comes last: complete
            names.append(name)
        return names
