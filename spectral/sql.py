"""The product's database: one unit of work at a time, run inline (SQLite) or in a thread.

The product's stores (API keys, idempotency answers, webhooks, integrations, the task
index) hand :meth:`Sql.run` a synchronous function that does a whole unit of work on
the connection it is given. Single-process mode runs it inline on the registry's SQLite
connection (:class:`SqliteSql`): no checkpoint inside, so no other coroutine interleaves
with it, exactly as when the stores called SQLite directly. Cluster mode runs it in a
worker thread on a PostgreSQL connection (``spectral/cluster/sql.py``): one thread hop
per transaction, and a check-then-insert must be made safe by the SQL itself (unique
constraints, ``INSERT ... ON CONFLICT``, ``RETURNING``) since other nodes write too.

SQL text uses ``?`` placeholders on both; the PostgreSQL side turns them into ``%s``, so
no ``?`` or ``%`` may appear inside a string literal (patterns go in as parameters).

Errors: whatever the engine, a database error leaves :meth:`Sql.run` as a
:class:`SqlError` with the engine's own exception chained (``__cause__``):
:class:`SqlUnavailableError` when the database cannot serve now (unreachable, locked,
out of space, a broken connection: try again later), :class:`SqlConstraintError` when
a statement broke a constraint (unique, not null, check). Exceptions ``fn`` raises by
itself pass unchanged.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any, Protocol, TypeVar

T = TypeVar("T")


class SqlError(Exception):
    """A database error raised by :meth:`Sql.run` (the engine's exception is the cause)."""


class SqlUnavailableError(SqlError):
    """The database cannot serve now (unreachable, busy or locked, full, broken connection)."""


class SqlConstraintError(SqlError):
    """A statement broke a constraint (unique, primary key, not null, check)."""


#: SQLite's primary result codes meaning "cannot serve now", not "bad statement".
_SQLITE_UNAVAILABLE = frozenset(
    {
        5,  # SQLITE_BUSY
        6,  # SQLITE_LOCKED
        7,  # SQLITE_NOMEM
        8,  # SQLITE_READONLY
        10,  # SQLITE_IOERR
        11,  # SQLITE_CORRUPT
        13,  # SQLITE_FULL
        14,  # SQLITE_CANTOPEN
        15,  # SQLITE_PROTOCOL
        26,  # SQLITE_NOTADB
    }
)


def sqlite_error(exc: sqlite3.Error) -> SqlError:
    """The :class:`SqlError` for an error of the ``sqlite3`` module (not yet chained)."""
    if isinstance(exc, sqlite3.IntegrityError):
        return SqlConstraintError(str(exc))
    code = getattr(exc, "sqlite_errorcode", None)  # absent on errors not from SQLite itself
    if code is not None and code & 0xFF in _SQLITE_UNAVAILABLE:
        return SqlUnavailableError(str(exc))
    return SqlError(str(exc))


class Rows(Protocol):
    """What :meth:`Conn.execute` returns (``sqlite3.Cursor`` and ``psycopg.Cursor`` fit)."""

    rowcount: int

    def fetchone(self) -> Any:
        """The next row, or None."""
        ...

    def fetchall(self) -> list[Any]:
        """The remaining rows."""
        ...

    def __iter__(self) -> Iterator[Any]:
        """The remaining rows, one at a time."""
        ...


class Conn(Protocol):
    """One connection inside one unit of work; SQL uses ``?`` placeholders."""

    def execute(self, sql: str, params: Sequence[Any] = ..., /) -> Rows:
        """Run one statement."""
        ...

    def executemany(self, sql: str, params: Iterable[Sequence[Any]], /) -> Any:
        """Run one statement once per parameter row."""
        ...


class Sql(Protocol):
    """The product's database."""

    #: ``"sqlite"`` or ``"postgresql"``: where SQL must differ, callers branch on it.
    dialect: str

    async def run(self, fn: Callable[[Conn], T], *, write: bool = False) -> T:
        """Run ``fn(conn)``, the whole unit of work; returns what it returns.

        Args:
            fn: synchronous; it must not touch trio (it may run in a worker thread).
            write: run it in one write transaction, committed when ``fn`` returns and
                rolled back when it raises. False: a read, perhaps without a transaction.

        Raises:
            SqlUnavailableError: the database cannot serve now; try again later.
            SqlConstraintError: a statement broke a constraint.
            SqlError: any other database error. Nothing was committed in each case.
        """
        ...


class SqliteSql:
    """:class:`Sql` over one SQLite connection, run inline on the calling thread.

    ``run`` never yields to trio, so a unit of work is atomic with respect to every
    other coroutine of the process (and, with ``write``, to other processes, by
    ``BEGIN IMMEDIATE``). The connection should be in autocommit mode
    (``isolation_level=None``), as the registry's is.

    Args:
        conn: the database connection (the registry's, migrated with the stores' streams).
    """

    dialect = "sqlite"

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn

    async def run(self, fn: Callable[[Conn], T], *, write: bool = False) -> T:
        """Run ``fn(conn)`` inline; with ``write``, inside ``BEGIN IMMEDIATE``/``COMMIT``.

        Raises:
            SqlError: a database error (see the module docstring), rolled back.
            RuntimeError: ``write`` while the connection is already in a transaction
                (units of work do not nest).
        """
        try:
            return self._run(fn, write)
        except sqlite3.Error as exc:
            raise sqlite_error(exc) from exc

    def _run(self, fn: Callable[[Conn], T], write: bool) -> T:
        conn: Any = self.conn
        if not write:
            return fn(conn)
        if self.conn.in_transaction:
            raise RuntimeError("Sql.run(write=True) inside another transaction")
        self.conn.execute("BEGIN IMMEDIATE")
        try:
            result = fn(conn)
            self.conn.execute("COMMIT")
        except BaseException:
            if self.conn.in_transaction:
                self.conn.execute("ROLLBACK")
            raise
        return result
