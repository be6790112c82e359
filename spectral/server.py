"""``spectral serve``: the router and the HTTP server in one trio run.

Start-up: lock the data directory, make sure the admin key exists, open the
router (which reconciles nothing yet and schedules persisted alarms), then serve
HTTP (:mod:`spectral.front` with :class:`~spectral.api.app.Application`). Shutdown
on SIGINT/SIGTERM: the front stops accepting, closes idle connections and gives
in-flight requests ``graceful_timeout`` seconds; watchers are closed with 1001;
then the router finishes in-flight turns, commits and closes every file.
"""

from __future__ import annotations

import fcntl
import gc
import logging
import os
import resource
import signal
import socket
import sys
from collections.abc import AsyncIterator, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

import trio

from actors import (
    CLOSE_GOING_AWAY,
    Actor,
    CloseReason,
    ObjectNotFoundError,
    Router,
    RouterConfig,
    open_router,
)
from spectral.access import keys
from spectral.access import secret as server_secret
from spectral.access.adminkey import ensure_admin_key
from spectral.access.auth import Authenticator
from spectral.access.ratelimit import RateLimiter
from spectral.api import idempotency
from spectral.api.app import Application
from spectral.front import Limits, Server
from spectral.integrations import store as integration_store
from spectral.integrations.service import IntegrationService
from spectral.ops import metrics
from spectral.ops.logs import RequestLog
from spectral.rooms.actor import room_kind
from spectral.rooms.feed import RoomFeed
from spectral.settings import Settings
from spectral.socketio.http import SocketIO
from spectral.socketio.sessions import EngineConfig
from spectral.sql import Sql, SqliteSql
from spectral.state import ServerState
from spectral.tasks import index as task_index
from spectral.tasks.actor import Read, Task
from spectral.tasks.events import EventBus
from spectral.webhooks import store as webhook_store
from spectral.webhooks.service import WebhookService

if TYPE_CHECKING:
    from spectral.cluster.serving import Cluster

log = logging.getLogger("spectral")


def kinds(settings: Settings) -> Sequence[type[Actor]]:
    """The object kinds the server runs."""
    return (Task, room_kind(settings.room_history))


class DataDirLockedError(RuntimeError):
    """Another process serves this data directory."""


@contextmanager
def lock_data_dir(data_dir: Path) -> Iterator[None]:
    """Hold an exclusive lock on ``<data-dir>/spectral.lock`` for the block's duration."""
    data_dir.mkdir(parents=True, exist_ok=True)
    fd = os.open(data_dir / "spectral.lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise DataDirLockedError(f"{data_dir} is in use by another spectral process") from None
        yield
    finally:
        os.close(fd)


def front_limits(settings: Settings) -> Limits:
    """What one connection may cost."""
    return Limits(keep_alive_timeout=settings.keep_alive_timeout)


def raise_fd_limit() -> int:
    """Raise the soft limit of open files to the hard one; return the soft limit now."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY:
        hard = 1 << 20
    if soft != resource.RLIM_INFINITY and soft < hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            soft = hard
        except (ValueError, OSError):
            pass
    return soft


def live_actor_cap(fd_limit: int) -> int:
    """Live actors to allow: half the file descriptors, 2 per actor, at most 10,000.

    The other half is for client connections (each watcher holds a socket).
    """
    return max(64, min(10_000, (fd_limit // 2 - 256) // 2))


def product_sql(router: Router) -> Sql:
    """The product's database: the one place where it is chosen (the registry's SQLite)."""
    return SqliteSql(router.registry.conn)


def build_authenticator(
    settings: Settings, sql: Sql, admin_secret: str, secret: bytes
) -> Authenticator:
    """The request authenticator over the product's key table."""
    store = keys.KeyStore(sql, server_secret.derive(secret, "api-keys"))
    return Authenticator(
        keys=store,
        admin_secret=admin_secret,
        token_key=server_secret.derive(secret, "watch-tokens"),
        limiter=RateLimiter(settings.rate_limit, settings.rate_burst),
        watchers_per_key=settings.watchers_per_key,
        jwt=settings.jwt_verifier(),
    )


def build_socketio(settings: Settings, auth: Authenticator) -> SocketIO:
    """The Socket.IO endpoint (docs/api.md, "Socket.IO (the seeds' jobs system)")."""
    config = EngineConfig(
        ping_interval=settings.socketio_ping_interval,
        ping_timeout=settings.socketio_ping_timeout,
        max_pending=settings.socketio_max_pending,
        queue_size=settings.watcher_queue,
        send_timeout=settings.ws_send_timeout,
    )
    return SocketIO(auth, config, settings.cors_origins)


def tune_gc() -> None:
    """Freeze start-up objects and raise thresholds: the collector dominated fan-out CPU."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(100_000, 50, 100)


async def serve(settings: Settings, out: TextIO = sys.stdout) -> None:
    """Run the server until SIGINT or SIGTERM, then shut down gracefully."""
    with lock_data_dir(settings.data_dir):
        if settings.cluster is None:
            await _serve(settings, out, None)
            return
        # Cluster mode only: its engines' clients are imported here, not otherwise.
        from spectral.cluster.serving import open_cluster

        async with open_cluster(settings) as cluster:
            await _serve(settings, out, cluster)


async def _serve(settings: Settings, out: TextIO, cluster: Cluster | None) -> None:
    """Serve with or without a cluster (its parts are already running)."""
    if cluster is None:
        admin = ensure_admin_key(settings.admin_key_path, settings.admin_key)
        secret = server_secret.load_or_create(settings.data_dir)
    else:
        admin, secret = cluster.secrets.admin, cluster.secrets.server
    if admin.source == "created":
        print(
            f"spectral created an admin key (shown once, saved to {settings.admin_key_path}):"
            f"\n  {admin.secret}",
            file=out,
            flush=True,
        )
    fd_limit = raise_fd_limit()
    config = RouterConfig(max_live=live_actor_cap(fd_limit))
    log.info("limits", extra={"openFiles": fd_limit, "maxLiveActors": config.max_live})
    migrations = {
        keys.STREAM: keys.MIGRATIONS,
        idempotency.STREAM: idempotency.MIGRATIONS,
        webhook_store.STREAM: webhook_store.MIGRATIONS,
        task_index.STREAM: task_index.MIGRATIONS,
        integration_store.STREAM: integration_store.MIGRATIONS,
    }
    events = EventBus()
    async with open_router(
        settings.data_dir,
        kinds(settings),
        config,
        registry_migrations=migrations,
        context=events,
    ) as router:
        sql = product_sql(router) if cluster is None else cluster.sql
        auth = build_authenticator(settings, sql, admin.secret, secret)
        store = idempotency.IdempotencyStore(sql)
        state = ServerState(router, settings, auth, store, events, sql)
        state.cluster = cluster
        summary_of = _summary_reader(router) if cluster is None else _task_summary(router)
        state.external_ids = task_index.ExternalIds(sql, summary_of)
        state.keepalive.interval = settings.ws_ping_interval
        node_id = None if cluster is None else cluster.node.node_id
        webhooks = state.webhooks = WebhookService(sql, router, events, settings, node_id=node_id)
        state.integrations = IntegrationService(integration_store.IntegrationStore(sql))
        metrics.install(router)
        requests = state.requests = RequestLog(settings.log_level)
        socketio = state.socketio = build_socketio(settings, auth)
        app = Application(state)
        feed = RoomFeed(router)
        events.subscribe(feed.listener)
        events.subscribe(state.admin_feed.listener)
        events.subscribe(socketio.feed.listener)
        # Product services live as long as HTTP serving, inside the router's lifetime.
        async with trio.open_nursery() as services:
            if cluster is not None:
                from spectral.cluster.serving import attach

                await attach(cluster, router, events, services, state.admin_feed, socketio.feed)
            await services.start(requests.serve)
            await services.start(feed.serve)
            await services.start(webhooks.serve)
            await services.start(socketio.serve)
            with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
                await _serve_http(app, state, signals, out)
            services.cancel_scope.cancel()
    log.info("stopped")


async def _serve_http(
    app: Application, state: ServerState, signals: AsyncIterator[int], out: TextIO
) -> None:
    settings = state.settings
    # Cluster nodes on one machine may share the public port (the kernel spreads
    # connections over them); a single server keeps the port to itself.
    sock = listen_socket(settings.host, settings.port, reuse_port=settings.cluster is not None)
    sock.listen(settings.backlog)
    listener = trio.SocketListener(trio.socket.from_stdlib_socket(sock))
    url = f"http://{_address(sock)}"
    front = Server(app, front_limits(settings))
    async with trio.open_nursery() as connections:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(_watch_signals, state, signals)
            await nursery.start(state.keepalive.serve)
            await nursery.start(front.serve, [listener], connections)
            tune_gc()
            print(f"spectral listening on {url}", file=out, flush=True)
            log.info("serving", extra={"url": url, "dataDir": str(settings.data_dir)})
            await state.shutting_down.wait()
            nursery.cancel_scope.cancel()  # stop accepting, pinging and watching signals
        await listener.aclose()
        going_away = CloseReason(CLOSE_GOING_AWAY, "server shutting down")
        closed = state.router.close_watchers(going_away) + state.admin_feed.close(going_away)
        if state.socketio is not None:
            closed += state.socketio.close(going_away)
        front.close()
        log.info("shutting down", extra={"watchersClosed": closed, "open": front.connections})
        connections.cancel_scope.deadline = trio.current_time() + settings.graceful_timeout


def _address(sock: socket.socket) -> str:
    host, port = sock.getsockname()[:2]
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def listen_socket(host: str, port: int, *, reuse_port: bool = False) -> socket.socket:
    """A bound (not yet listening) TCP socket; port 0 picks a free one."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if reuse_port:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.bind((host, port))
    except OSError:
        sock.close()
        raise
    sock.setblocking(False)
    return sock


async def _watch_signals(state: ServerState, signals: AsyncIterator[int]) -> None:
    async for signum in signals:
        log.info("signal received", extra={"signal": signal.Signals(signum).name})
        state.shutting_down.set()
        return


def _task_summary(router: Router) -> task_index.SummaryOf:
    """A task's summary from its actor, wherever it lives (cluster mode: exact, not the
    mirrored listing, which may lag a flush behind)."""

    async def summary_of(task_id: str) -> dict[str, Any] | None:
        try:
            task: dict[str, Any] = await router.call(task_index.KIND, task_id, Read(None))
        except ObjectNotFoundError:
            return None
        return task

    return summary_of


def _summary_reader(router: Router) -> task_index.SummaryOf:
    """A task's registry summary (staged or committed) by id, or None."""
    registry = router.registry

    async def summary_of(task_id: str) -> dict[str, Any] | None:
        row = registry.get(task_index.KIND, task_id)
        return None if row is None or row.summary is None else dict(row.summary)

    return summary_of
