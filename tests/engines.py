"""Session fixtures that run our own PostgreSQL and Redis on free loopback ports.

Cluster mode (docs/cluster.md) needs both engines; the tests never touch a system instance.
Each fixture starts a private server in a fresh temporary directory and stops it at the
end of the session. ``make test`` installs Debian's ``postgresql`` and ``redis-server``
when they are missing; a missing tool fails the tests (it never skips them).

PostgreSQL refuses to run as root, so under root ``initdb`` and ``pg_ctl`` run as an
unprivileged user (``postgres`` if it exists, else one created here) who owns the data
directory. Authentication is ``trust``: the server listens on 127.0.0.1 only.

Tests that stop or restart an engine use :meth:`Engine.stopped` / :meth:`Engine.restart`,
which always leave it running again for the next test.
"""

from __future__ import annotations

import contextlib
import glob
import itertools
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import TypeVar

import pytest
import trio

#: Seconds a start or a stop may take before the fixture gives up (pg_ctl's own -t as well).
START_TIMEOUT = 60
#: The unprivileged user PostgreSQL runs as when the tests run as root.
PG_USER = "postgres"
PG_FALLBACK_USER = "spectral-pg"


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def pg_bin_dir() -> Path:
    """The directory holding ``initdb`` and ``pg_ctl`` (newest Debian version first)."""
    found = sorted(
        glob.glob("/usr/lib/postgresql/*/bin/initdb"),
        key=lambda p: (
            int(Path(p).parent.parent.name) if Path(p).parent.parent.name.isdigit() else 0
        ),
    )
    if found:
        return Path(found[-1]).parent
    initdb = shutil.which("initdb")
    if initdb is None:
        raise RuntimeError("PostgreSQL's initdb was not found: install Debian's postgresql")
    return Path(os.path.realpath(initdb)).parent


def _pg_user() -> pwd.struct_passwd | None:
    """The user PostgreSQL runs as: None when we are not root (run as ourselves)."""
    if os.geteuid() != 0:
        return None
    for name in (PG_USER, PG_FALLBACK_USER):
        with contextlib.suppress(KeyError):
            return pwd.getpwnam(name)
    subprocess.run(
        ["useradd", "--system", "--no-create-home", PG_FALLBACK_USER],
        check=True,
        capture_output=True,
    )
    return pwd.getpwnam(PG_FALLBACK_USER)


class Engine:
    """A server process we own: started, stopped and restarted on the same port."""

    name = "engine"

    def __init__(self, root: Path, port: int) -> None:
        self.root = root
        self.port = port
        self.running = False

    @property
    def url(self) -> str:
        """The connection string clients use."""
        raise NotImplementedError

    def start(self) -> None:
        """Start the server and return once it accepts connections."""
        raise NotImplementedError

    def stop(self) -> None:
        """Stop the server and return once it is gone."""
        raise NotImplementedError

    def restart(self) -> None:
        """Stop, then start again on the same port (its data survives for PostgreSQL)."""
        self.stop()
        self.start()

    async def arestart(self) -> None:
        """:meth:`restart` in a worker thread, so trio tasks keep running meanwhile."""
        await trio.to_thread.run_sync(self.restart)

    @contextlib.asynccontextmanager
    async def stopped(self) -> AsyncIterator[None]:
        """Stopped inside the block, running again after it (even if the block fails)."""
        await trio.to_thread.run_sync(self.stop)
        try:
            yield
        finally:
            with trio.CancelScope(shield=True):
                await trio.to_thread.run_sync(self.start)

    def close(self) -> None:
        """Stop the server (if running) and delete its directory."""
        try:
            if self.running:
                self.stop()
        finally:
            shutil.rmtree(self.root, ignore_errors=True)


E = TypeVar("E", bound=Engine)


class Postgres(Engine):
    """A private PostgreSQL cluster: ``initdb`` into a temporary directory, ``pg_ctl``."""

    name = "postgresql"

    def __init__(self, root: Path, port: int) -> None:
        super().__init__(root, port)
        self.bin = pg_bin_dir()
        self.user = _pg_user()
        self.data = root / "data"
        self.log = root / "server.log"
        self._databases = itertools.count(1)

    @property
    def url(self) -> str:
        """``postgresql://postgres@127.0.0.1:PORT/postgres`` (trust auth)."""
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def _run(self, *argv: str) -> None:
        kwargs = {}
        if self.user is not None:
            kwargs = {"user": self.user.pw_uid, "group": self.user.pw_gid, "extra_groups": []}
        done = subprocess.run(
            [str(self.bin / argv[0]), *argv[1:]],
            capture_output=True,
            text=True,
            cwd=self.root,
            timeout=START_TIMEOUT + 10,
            **kwargs,  # type: ignore[arg-type]
        )
        if done.returncode != 0:
            log = self.log.read_text(errors="replace") if self.log.exists() else ""
            raise RuntimeError(f"{argv[0]} failed ({done.returncode}): {done.stderr}\n{log}")

    def init(self) -> None:
        """Create the cluster (trust auth, superuser ``postgres``) listening on loopback only."""
        if self.user is not None:
            os.chown(self.root, self.user.pw_uid, self.user.pw_gid)
        self._run("initdb", "-D", str(self.data), "-A", "trust", "-U", "postgres", "-E", "UTF8")
        with (self.data / "postgresql.conf").open("a") as conf:
            conf.write(
                f"\nlisten_addresses = '127.0.0.1'\nport = {self.port}\n"
                f"unix_socket_directories = '{self.root}'\nmax_connections = 100\n"
            )

    def create_database(self) -> str:
        """A new empty database on this server; returns its DSN."""
        import psycopg

        name = f"t{next(self._databases)}"
        with psycopg.connect(self.url, autocommit=True) as conn:
            conn.execute(f"CREATE DATABASE {name}")
        return self.url.rsplit("/", 1)[0] + "/" + name

    def start(self) -> None:
        """``pg_ctl start -w``: returns once the server accepts connections."""
        self._run(
            "pg_ctl",
            "-D",
            str(self.data),
            "-l",
            str(self.log),
            "-w",
            "-t",
            str(START_TIMEOUT),
            "start",
        )
        self.running = True

    def stop(self) -> None:
        """``pg_ctl stop -m fast -w``: connections are closed, the data stays."""
        self._run(
            "pg_ctl", "-D", str(self.data), "-m", "fast", "-w", "-t", str(START_TIMEOUT), "stop"
        )
        self.running = False


class Redis(Engine):
    """A private ``redis-server`` (no persistence) as a child process."""

    name = "redis"

    def __init__(self, root: Path, port: int) -> None:
        super().__init__(root, port)
        self.process: subprocess.Popen[bytes] | None = None
        binary = shutil.which("redis-server")
        if binary is None:
            raise RuntimeError("redis-server was not found: install Debian's redis-server")
        self.binary = binary

    @property
    def url(self) -> str:
        """``redis://127.0.0.1:PORT/0``."""
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        """Start ``redis-server`` and return once it answers PING."""
        argv = [self.binary, "--port", str(self.port), "--bind", "127.0.0.1"]
        argv += ["--save", "", "--appendonly", "no", "--dir", str(self.root)]
        log = (self.root / "server.log").open("ab")
        self.process = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT)
        log.close()
        self.running = True
        deadline = time.monotonic() + START_TIMEOUT
        while not self._pong():
            if self.process.poll() is not None:
                raise RuntimeError(f"redis-server exited ({self.process.returncode})")
            if time.monotonic() > deadline:
                raise RuntimeError("redis-server did not answer PING")
            time.sleep(0.02)

    def _pong(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=1) as sock:
                sock.sendall(b"PING\r\n")
                return sock.recv(16).startswith(b"+PONG")
        except OSError:
            return False

    def stop(self) -> None:
        """SIGTERM and wait for the process to exit (nothing is saved)."""
        if self.process is not None:
            self.process.terminate()
            self.process.wait(timeout=START_TIMEOUT)
            self.process = None
        self.running = False


def start_postgres() -> Postgres:
    """A new private PostgreSQL, started (callers :meth:`Engine.close` it)."""
    return _started(Postgres, "spectral-pg-")


def start_redis() -> Redis:
    """A new private Redis, started (callers :meth:`Engine.close` it)."""
    return _started(Redis, "spectral-redis-")


def _started(cls: type[E], prefix: str) -> E:
    root = Path(tempfile.mkdtemp(prefix=prefix))
    try:
        engine = cls(root, free_port())
    except BaseException:
        shutil.rmtree(root, ignore_errors=True)
        raise
    try:
        if isinstance(engine, Postgres):
            engine.init()
        engine.start()
    except BaseException:
        engine.close()
        raise
    return engine


@contextlib.contextmanager
def _session_engine(start: Callable[[], E]) -> Iterator[E]:
    try:
        engine = start()
    except (OSError, RuntimeError, subprocess.SubprocessError) as exc:
        pytest.fail(f"cannot start the engine: {exc}", pytrace=False)
    try:
        yield engine
    finally:
        engine.close()


@pytest.fixture(scope="session")
def postgres() -> Iterator[Postgres]:
    """A private PostgreSQL for the session; ``.url`` is its DSN."""
    with _session_engine(start_postgres) as engine:
        yield engine


@pytest.fixture(scope="session")
def redis() -> Iterator[Redis]:
    """A private Redis for the session; ``.url`` is its URL."""
    with _session_engine(start_redis) as engine:
        yield engine


@pytest.fixture
def pg_url(postgres: Postgres) -> str:
    """A fresh database on the session's PostgreSQL, for one test."""
    return postgres.create_database()
