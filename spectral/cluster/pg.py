"""PostgreSQL from trio: psycopg 3 sync connections in worker threads, a small pool.

psycopg's AsyncConnection is asyncio-only; its sync connections are supported and run
fine in ``trio.to_thread`` (measured while planning: 256 µs per round trip here, against 149 µs
for an AsyncConnection behind a trio shim that patches psycopg internals — a later
option, not this module). To pay the thread hop once per transaction rather than once
per statement, callers hand :meth:`Database.run` a sync function that does the whole
transaction on the connection it is given.

Pool: at most ``size`` connections, one per worker thread; a ``CapacityLimiter`` caps the
threads, and a thread takes an idle connection (or opens one) and puts it back when the
transaction ended cleanly. A connection that raised a connection-level error, or that is
not idle afterwards, is closed, never reused.

Cancellation: a trio-cancelled :meth:`Database.run` returns at once (the thread is
abandoned). The query is cancelled on the server from a helper thread, and the connection
is closed when its thread ends; it never goes back to the pool, so no later call finds it
"busy". The limiter token is held until the abandoned thread really ends, so the number
of connections stays bounded.
"""

from __future__ import annotations

import collections
import contextlib
import threading
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import TypeVar

import psycopg
import trio
from psycopg import pq

T = TypeVar("T")

#: Connections per process. Membership renewals, placement and activations are short
#: transactions; 4 threads reached 5.3k lease ops/s in the planning measurements' to_thread runs.
DEFAULT_POOL_SIZE = 4
#: Seconds to wait for a TCP connect: an unreachable server must fail fast, not hang a
#: renewal (which then times out anyway under the caller's fail_after).
CONNECT_TIMEOUT = 3
#: libpq TCP settings: a peer that vanished (host down, partition) breaks the connection
#: in about 10 s instead of the kernel's 2 hours, so abandoned threads end and free their
#: pool slot. A stopped-but-connected server (SIGSTOP) is not detected by these.
TCP_OPTIONS = {
    "keepalives": 1,
    "keepalives_idle": 5,
    "keepalives_interval": 2,
    "keepalives_count": 3,
    "tcp_user_timeout": 10_000,
}
#: Seconds the server-side cancel request of an abandoned query may take.
CANCEL_TIMEOUT = 5.0


class DatabaseUnavailableError(Exception):
    """PostgreSQL could not be reached, or the connection broke during the call."""


@dataclass
class _Call:
    """Shared between the trio task and its worker thread (under ``lock``)."""

    lock: threading.Lock
    conn: psycopg.Connection | None = None
    done: bool = False
    abandoned: bool = False


class Database:
    """A pool of psycopg connections to one PostgreSQL, used from trio."""

    def __init__(self, url: str, *, size: int = DEFAULT_POOL_SIZE) -> None:
        self.url = url
        self.size = size
        self._limiter = trio.CapacityLimiter(size)
        self._idle: collections.deque[psycopg.Connection] = collections.deque()
        self._closed = False

    async def run(self, fn: Callable[[psycopg.Connection], T], *, transaction: bool = True) -> T:
        """Run ``fn(conn)`` in one worker thread, inside one transaction unless told otherwise.

        Args:
            fn: a sync function doing the whole unit of work on ``conn``; its return value
                is returned. It runs in a worker thread: it must not touch trio.
            transaction: ``False`` runs ``fn`` in autocommit (one statement, no BEGIN).

        Raises:
            DatabaseUnavailableError: the server could not be reached or the connection broke.
            psycopg.Error: any other database error raised by ``fn`` (rolled back).
        """
        if self._closed:
            raise RuntimeError("database pool is closed")
        call = _Call(threading.Lock())
        try:
            return await trio.to_thread.run_sync(
                self._work, call, fn, transaction, limiter=self._limiter, abandon_on_cancel=True
            )
        except trio.Cancelled:
            self._abandon(call)
            raise

    def _work(self, call: _Call, fn: Callable[[psycopg.Connection], T], transaction: bool) -> T:
        conn = self._take()
        with call.lock:
            call.conn = conn
            abandoned = call.abandoned
        if abandoned:  # cancelled while connecting: do nothing, keep the connection
            self._idle.append(conn)
            raise RuntimeError("call abandoned")  # never seen: trio drops an abandoned result
        try:
            if not transaction:
                return fn(conn)
            with conn.transaction():
                return fn(conn)
        except psycopg.OperationalError as exc:
            if conn.broken or conn.closed:
                raise DatabaseUnavailableError(str(exc)) from exc
            raise
        finally:
            with call.lock:
                call.done = True
                abandoned = call.abandoned
            healthy = (
                not conn.closed
                and not conn.broken
                and conn.info.transaction_status == pq.TransactionStatus.IDLE
            )
            if healthy and not abandoned and not self._closed:
                self._idle.append(conn)
            else:
                conn.close()

    def _take(self) -> psycopg.Connection:
        while self._idle:
            conn = self._idle.pop()
            if not conn.closed and not conn.broken:
                return conn
        try:
            return psycopg.connect(
                self.url, autocommit=True, connect_timeout=CONNECT_TIMEOUT, **TCP_OPTIONS
            )
        except psycopg.OperationalError as exc:
            raise DatabaseUnavailableError(str(exc)) from exc

    def _abandon(self, call: _Call) -> None:
        with call.lock:
            call.abandoned = True
            conn, done = call.conn, call.done
        if conn is None or done:
            return  # the thread sees `abandoned` and closes it, or it ended cleanly (pooled)
        threading.Thread(target=_cancel_quietly, args=(conn,), daemon=True).start()

    async def aclose(self) -> None:
        """Close the idle connections; busy ones close when their call ends."""
        self._closed = True
        while self._idle:
            conn = self._idle.pop()
            await trio.to_thread.run_sync(conn.close)

    def statistics(self) -> PoolStatistics:
        """Idle connections and threads in use, for tests and /health."""
        return PoolStatistics(idle=len(self._idle), busy=int(self._limiter.borrowed_tokens))


@dataclass(frozen=True)
class PoolStatistics:
    """A snapshot of the pool."""

    idle: int
    busy: int


def _cancel_quietly(conn: psycopg.Connection) -> None:
    # Best effort: its own thread closes the connection anyway.
    with contextlib.suppress(Exception):
        conn.cancel_safe(timeout=CANCEL_TIMEOUT)


@asynccontextmanager
async def open_database(url: str, *, size: int = DEFAULT_POOL_SIZE) -> AsyncIterator[Database]:
    """A :class:`Database` closed on exit."""
    db = Database(url, size=size)
    try:
        yield db
    finally:
        with trio.CancelScope(shield=True):
            await db.aclose()
