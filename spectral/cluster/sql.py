"""SQLite-dialect statements on the cluster's PostgreSQL: the ``Sql`` protocol over a Database.

The product's stores speak SQLite's SQL with ``?`` placeholders. :class:`PgSql` runs the
same unit of work on PostgreSQL: ``await sql.run(fn)`` calls ``fn(conn)`` in one worker
thread inside one transaction (:meth:`Database.run`), rolled back if ``fn`` raises. The
connection it hands over rewrites each statement for psycopg: ``?`` becomes ``%s`` (not
inside quoted literals, quoted identifiers or comments) and a literal ``%`` becomes ``%%``.
Rows are tuples; ``bytea`` reads back as ``bytes`` (psycopg 3's default). Parameters that
are ``bool`` are sent as 0/1, as SQLite stores them (the shared tables have no boolean
columns).

Not translated: the functions and clauses themselves (``json_extract``, ``INSERT OR
IGNORE``...), which callers write in the common subset or per :attr:`PgSql.dialect`.
A bare ``? IS NULL`` fails on PostgreSQL (the type of a NULL parameter cannot be
inferred): cast it, e.g. ``CAST(? AS text) IS NULL``.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Sequence
from typing import Any, TypeVar

import psycopg

from spectral.cluster.pg import Database, DatabaseUnavailableError
from spectral.sql import SqlConstraintError, SqlError, SqlUnavailableError

T = TypeVar("T")

#: Translations kept; past this many distinct statements the cache starts over.
CACHE_SIZE = 4096

# A quoted literal, a quoted identifier, a comment, or one character that needs rewriting.
_TOKEN = re.compile(r"'(?:[^']|'')*'|\"(?:[^\"]|\"\")*\"|--[^\n]*|/\*.*?\*/|\?\d*|%", re.S)
_cache: dict[str, str] = {}


def translate(sql: str) -> str:
    """``sql`` with SQLite's ``?`` placeholders as psycopg's ``%s`` and ``%`` escaped as ``%%``."""
    done = _cache.get(sql)
    if done is None:
        done = _TOKEN.sub(_rewrite, sql)
        if len(_cache) >= CACHE_SIZE:
            _cache.clear()
        _cache[sql] = done
    return done


def _rewrite(match: re.Match[str]) -> str:
    token = match.group()
    if token == "?":
        return "%s"
    if token.startswith("?"):
        raise ValueError(f"numbered placeholders are not supported: {token}")
    return token.replace("%", "%%")


def _params(params: Sequence[Any]) -> tuple[Any, ...]:
    return tuple(int(p) if p is True or p is False else p for p in params)


class _PgConn:
    """A psycopg connection that takes SQLite-style statements (see the module docstring)."""

    __slots__ = ("_conn",)

    def __init__(self, conn: psycopg.Connection) -> None:
        self._conn = conn

    def execute(self, sql: str, params: Sequence[Any] = ()) -> psycopg.Cursor[Any]:
        """Run one statement; the cursor has ``rowcount``, ``fetchone``, ``fetchall``, iteration."""
        return self._conn.execute(translate(sql), _params(params))

    def executemany(self, sql: str, seq_of_params: Iterable[Sequence[Any]]) -> psycopg.Cursor[Any]:
        """Run one statement per parameter tuple; ``rowcount`` is their total."""
        cursor = self._conn.cursor()
        cursor.executemany(translate(sql), [_params(p) for p in seq_of_params])
        return cursor


class PgSql:
    """The ``Sql`` protocol on PostgreSQL: each :meth:`run` is one transaction on the pool."""

    dialect = "postgresql"

    def __init__(self, db: Database) -> None:
        self.db = db

    async def run(self, fn: Callable[[_PgConn], T], *, write: bool = False) -> T:
        """``fn(conn)`` in a worker thread, in one transaction (``write`` changes nothing here).

        Raises:
            SqlUnavailableError: PostgreSQL could not be reached, the connection broke, or
                the server cannot serve now (shutting down, too many connections, a
                deadlock or serialization failure, a cancelled statement).
            SqlConstraintError: a statement broke a constraint.
            SqlError: any other database error. The transaction was rolled back in each
                case; the psycopg exception is the cause.
        """
        try:
            return await self.db.run(lambda conn: fn(_PgConn(conn)), transaction=True)
        except (DatabaseUnavailableError, psycopg.Error) as exc:
            raise pg_error(exc) from exc


def pg_error(exc: DatabaseUnavailableError | psycopg.Error) -> SqlError:
    """The :class:`~spectral.sql.SqlError` for a psycopg error (not yet chained)."""
    if isinstance(exc, psycopg.errors.IntegrityError):
        return SqlConstraintError(str(exc))
    if isinstance(exc, DatabaseUnavailableError | psycopg.OperationalError):
        return SqlUnavailableError(str(exc) or type(exc).__name__)
    return SqlError(str(exc) or type(exc).__name__)
