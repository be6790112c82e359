"""The router: finds or activates the one live actor of each (kind, id).

Theory of operation
-------------------
``open_router`` owns two nurseries. The *services* nursery runs the registry's
batching writer, the idle reaper and the alarm scheduler; the *actors* nursery
runs one :class:`~actors.mailbox.Cell` loop per live object. On exit the router
stops taking calls, closes every inbox, waits for the cells to finish their
turns, flushes the registry, and only then cancels the services.

Activation: the first :meth:`Router.call` for a cold id opens the object's file
(creating it from the kind's template if allowed), loads the kind's state and
registers the cell — all before ``task_status.started``. Concurrent callers for
the same cold id wait on one pending activation, so exactly one cell exists per
(kind, id). A file that cannot be opened makes only that id unavailable, for a
cool-down period.

Hibernation: a cell idle for ``idle_timeout`` is evicted (connection closed,
instance dropped). ``max_live`` caps live cells; activating past it evicts the
least recently used idle ones. Socket sets live here, not in the cells, so
watchers stay connected through eviction and re-activation.
"""

from __future__ import annotations

import logging
import sqlite3
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import trio
import trio.lowlevel

from actors.actor import Actor
from actors.alarms import AlarmScheduler
from actors.config import RouterConfig
from actors.errors import (
    ActorBrokenError,
    ActorClosedError,
    ObjectMovedError,
    ObjectNotFoundError,
    RouterClosedError,
)
from actors.host import Key
from actors.mailbox import ALARM_DUE, Cell, Envelope
from actors.messaging import Courier, Delivered, Incoming, Outgoing
from actors.remote import Remote
from actors.sockets import CLOSE_GOING_AWAY, CloseReason, SocketSet
from storage import (
    FilePool,
    ObjectFile,
    ObjectMissingError,
    ObjectRow,
    ObjectStore,
    PoolStatistics,
    Registry,
    StorageError,
    refresh_changed,
)

__all__ = ["Router", "RouterConfig", "RouterStatistics", "open_router"]

log = logging.getLogger("actors")

_DEFAULT_CONFIG = RouterConfig()


@dataclass
class _Counters:
    activations: int = 0
    evicted: int = 0
    restarts: int = 0
    turns: int = 0
    messages: int = 0
    commit_seconds: float = 0.0


@dataclass(frozen=True, slots=True)
class RouterStatistics:
    """A snapshot of the runtime, for /health and /metrics."""

    live: int
    evicted: int
    activations: int
    restarts: int
    turns: int
    messages: int
    broken: int
    socket_sets: int
    watchers: int
    alarms: int
    #: Seconds spent in COMMIT since start (with ``turns``: mean commit latency).
    commit_seconds: float = 0.0
    #: Evicted actors still finishing their last turn and closing their file.
    closing: int = 0
    #: One entry per kind with a pool of pre-created files.
    pools: tuple[PoolStatistics, ...] = ()


class _Pending:
    __slots__ = ("done",)

    def __init__(self) -> None:
        self.done = trio.Event()


class Router:
    """Routes messages to live actors; see the module docstring. Build with :func:`open_router`.

    It is also every cell's :class:`~actors.host.CellHost` (the "cell host" section).
    """

    def __init__(
        self,
        store: ObjectStore,
        registry: Registry,
        kinds: Sequence[type[Actor]],
        config: RouterConfig,
        clock: Callable[[], float],
        context: Any = None,
    ) -> None:
        self.store = store
        #: Whatever the product handed to :func:`open_router` for its kinds (see Actor.context).
        self.context = context
        self.registry = registry
        self.config = config
        self.clock = clock
        self.kinds: dict[str, type[Actor]] = {}
        #: The pools of pre-created files, by kind (pooled kinds only).
        self.pools: dict[str, FilePool] = {}
        self._services: trio.Nursery | None = None
        self.stats = _Counters()
        self.alarms = AlarmScheduler(self._fire_alarm, clock)
        #: Delivers the objects' durable messages (actors/messaging.py).
        self.courier = Courier(self._deliver_message, self._acknowledge_messages)
        self._live: OrderedDict[Key, Cell] = OrderedDict()
        self._pending: dict[Key, _Pending] = {}
        self._closing: dict[Key, Cell] = {}
        self._broken: dict[Key, float] = {}
        self._sockets: dict[Key, SocketSet] = {}
        self._nursery: trio.Nursery | None = None
        self._closed = False
        #: Set by a product that spreads objects over several routers (actors/remote.py).
        self.remote: Remote | None = None
        for kind_class in kinds:
            self.add_kind(kind_class)

    def add_kind(self, kind_class: type[Actor]) -> None:
        """Register an object kind (its template is built now; its pool starts, if any)."""
        if kind_class.kind in self.kinds:
            raise ValueError(f"kind {kind_class.kind!r} registered twice")
        self.store.register_kind(kind_class.kind, kind_class.migrations)
        self.kinds[kind_class.kind] = kind_class
        if kind_class.pooled and self.config.pool_high > 0:
            pool = FilePool(
                self.store, kind_class.kind, low=self.config.pool_low, high=self.config.pool_high
            )
            pool.clear()  # files an earlier run left unused: maybe of an older schema
            self.pools[kind_class.kind] = pool
            if self._services is not None:
                self._services.start_soon(pool.serve)

    # -- calling ---------------------------------------------------------------

    async def call(
        self, kind: str, object_id: str, message: Any, *, create: bool = False, here: bool = False
    ) -> Any:
        """Deliver ``message`` to the object's actor and return its answer.

        Args:
            kind: a registered kind.
            object_id: the object's id (any string; it never becomes a path).
            message: passed to the kind's ``handle``.
            create: activate even if the object has no file yet.
            here: the caller knows the object lives here (a call forwarded to this
                router): do not ask :attr:`remote`.

        Raises:
            ObjectNotFoundError: no such object and ``create`` is false.
            ActorBrokenError: the object is unavailable (unreadable file, crash loop).
            ActorCrashedError: the handler crashed on this message (rolled back).
            RouterClosedError: the router is shutting down.
            Rejected: whatever the kind's handler refused the message with.
        """
        remote = self.remote
        if remote is not None and not here:
            if not await remote.route(kind, object_id, create=create):
                return await remote.forward(kind, object_id, message, create=create)
            try:
                return await self._call_here(kind, object_id, message, create)
            except ObjectMovedError:  # placed elsewhere meanwhile: that node answers
                return await remote.forward(kind, object_id, message, create=create)
        return await self._call_here(kind, object_id, message, create)

    async def _call_here(self, kind: str, object_id: str, message: Any, create: bool) -> Any:
        for _ in range(10):
            cell = await self._activate(kind, object_id, create)
            if not create and not cell.created:
                # Live only for a creation that has not committed (or wrote nothing).
                cell.reserved = False
                raise ObjectNotFoundError(f"{kind} {object_id!r} does not exist")
            envelope = Envelope(message)
            try:
                try:
                    cell.send(envelope)
                finally:
                    cell.reserved = False
                return await envelope.wait()
            except RouterClosedError:
                raise
            except ActorClosedError:
                continue  # evicted before it took the message: not applied, try again
            except trio.WouldBlock:
                raise ActorBrokenError(f"{kind} {object_id!r} is overloaded") from None
        raise ActorBrokenError(f"{kind} {object_id!r} keeps closing")

    async def delivered(self, kind: str, object_id: str) -> None:
        """Wait until the messages the object has sent so far reached their targets.

        Delivered means applied by the target (or dropped: no such target, or it
        refused). Waits across retries of a failing target; bound it with a timeout.
        """
        await self.courier.flushed((kind, object_id))

    def is_live(self, kind: str, object_id: str) -> bool:
        """True if the object currently has a live actor."""
        return (kind, object_id) in self._live

    def sockets(self, kind: str, object_id: str) -> SocketSet:
        """The socket set of an object, created on first use (watchers survive eviction)."""
        key = (kind, object_id)
        socket_set = self._sockets.get(key)
        if socket_set is None:
            socket_set = self._sockets[key] = SocketSet()
        return socket_set

    def release_sockets(self, kind: str, object_id: str) -> None:
        """Drop an object's socket set if it has no watchers left."""
        key = (kind, object_id)
        socket_set = self._sockets.get(key)
        if socket_set is not None and not len(socket_set):
            del self._sockets[key]

    def close_watchers(self, reason: CloseReason) -> int:
        """Close every watcher of every object (after its queue drains); returns how many."""
        closed = 0
        for socket_set in list(self._sockets.values()):
            closed += len(socket_set)
            socket_set.close_all(reason)
        self._sockets.clear()
        return closed

    def statistics(self) -> RouterStatistics:
        """A snapshot of counters and sizes."""
        now = trio.current_time()
        return RouterStatistics(
            live=len(self._live),
            evicted=self.stats.evicted,
            activations=self.stats.activations,
            restarts=self.stats.restarts,
            turns=self.stats.turns,
            messages=self.stats.messages,
            broken=sum(1 for until in self._broken.values() if until > now),
            socket_sets=len(self._sockets),
            watchers=sum(len(s) for s in self._sockets.values()),
            alarms=len(self.alarms),
            commit_seconds=self.stats.commit_seconds,
            closing=len(self._closing),
            pools=tuple(pool.statistics() for pool in self.pools.values()),
        )

    async def evict(self, kind: str, object_id: str) -> bool:
        """Evict one live actor now (after its current turn); False if it was not live."""
        cell = self._live.get((kind, object_id))
        if cell is None:
            return False
        self._evict(cell)
        return True

    def evict_all(self) -> int:
        """Evict every live actor (after its current turn); returns how many."""
        cells = [cell for cell in self._live.values() if not cell.closing]
        for cell in cells:
            self._evict(cell)
        return len(cells)

    # -- activation --------------------------------------------------------------

    async def _activate(self, kind: str, object_id: str, create: bool) -> Cell:
        if kind not in self.kinds:
            raise ValueError(f"unknown kind {kind!r}")
        key = (kind, object_id)
        while True:
            if self._closed:
                raise RouterClosedError("the router is shutting down")
            cell = self._live.get(key)
            if cell is not None and not cell.closing:
                self._live.move_to_end(key)
                return cell
            cell = cell or self._closing.get(key)
            pending = self._pending.get(key)
            if pending is not None:
                await pending.done.wait()
                continue
            if self.is_broken(key):
                raise ActorBrokenError(f"{kind} {object_id!r} is unavailable")
            if cell is not None:
                # Still closing (finishing its last turn): wait for it to go.
                await trio.lowlevel.checkpoint()
                continue
            pending = self._pending[key] = _Pending()
            try:
                return await self._start_cell(kind, object_id, create)
            finally:
                del self._pending[key]
                pending.done.set()

    async def _start_cell(self, kind: str, object_id: str, create: bool) -> Cell:
        assert self._nursery is not None
        if self.remote is not None:
            await self.remote.activating(kind, object_id)
        try:
            cell: Cell = await self._nursery.start(self._run_cell, kind, object_id, create)
        except ObjectMissingError:
            raise ObjectNotFoundError(f"{kind} {object_id!r} does not exist") from None
        except StorageError as exc:
            log.error("%s %r unavailable: %s", kind, object_id, exc)
            self.mark_broken((kind, object_id))
            raise ActorBrokenError(f"{kind} {object_id!r} is unavailable: {exc}") from exc
        self.stats.activations += 1
        self._enforce_cap()
        return cell

    async def _run_cell(
        self, kind: str, object_id: str, create: bool, *, task_status: trio.TaskStatus[Cell]
    ) -> None:
        file, fresh = self._find_file(kind, object_id, create)
        try:
            conn = self.store.open_file(file, fresh=fresh, label=f"{kind} {object_id!r}")
        except StorageError:
            if fresh:
                self.store.delete_file(file)
            raise
        cell = Cell(self, self.kinds[kind], object_id, file, conn)
        try:
            cell.load()
        except Exception as exc:
            conn.close()
            if fresh:  # our own template copy: leave no file behind
                self.store.delete_file(file)
            raise StorageError(f"{kind} {object_id!r}: cannot load: {exc}") from exc
        self._live[cell.key] = cell
        task_status.started(cell)
        await cell.run()

    def _find_file(self, kind: str, object_id: str, create: bool) -> tuple[ObjectFile, bool]:
        """The object's file and whether it is fresh (created now, for this activation).

        The registry maps (kind, id) to a named file; a row without a name, or no row
        at all (an old data directory), means the hashed layout. A new object of a
        pooled kind takes a pre-created file, or makes a named one if the pool is empty.

        Raises:
            ObjectMissingError: no file and ``create`` is false.
        """
        listed, name = self.registry.file_of(kind, object_id)
        file = self.store.named(kind, name) if name else self.store.hashed(kind, object_id)
        if file.path.exists():
            return file, False
        if listed:
            # A row whose file is gone: left by a kill -9 between a deletion's two steps
            # (file, then row) or by hand; a live deletion's window is covered by its
            # closing cell, which activation waits for. The doctor's repair, done here.
            log.warning("%s %r: its file %s is gone; unlisting it", kind, object_id, file.path)
            self.registry.stage_delete(kind, object_id)
        if not create:
            raise ObjectMissingError(f"{kind} {object_id!r} does not exist")
        pool = self.pools.get(kind)
        if pool is not None:
            taken = pool.take()
            return (taken or self.store.create_named(kind)), True
        file = self.store.hashed(kind, object_id)
        self.store.create(file)
        return file, True

    def file_of(self, kind: str, object_id: str) -> Path | None:
        """The path of an object's file if it exists (for tools and tests)."""
        _, name = self.registry.file_of(kind, object_id)
        file = self.store.named(kind, name) if name else self.store.hashed(kind, object_id)
        return file.path if file.path.exists() else None

    def _enforce_cap(self) -> None:
        excess = len(self._live) - self.config.max_live
        if excess <= 0:
            return
        victims: list[Cell] = []
        for cell in self._live.values():  # least recently used first; stops early
            if cell.idle and not cell.closing:
                victims.append(cell)
                if len(victims) == excess:
                    break
        for cell in victims:
            self._evict(cell)

    def _evict(self, cell: Cell) -> None:
        # Until its loop has closed the file, the cell waits in _closing (see _activate).
        if self._live.get(cell.key) is cell:
            del self._live[cell.key]
        self._closing[cell.key] = cell
        cell.close()
        self.stats.evicted += 1

    # -- cell host (actors.host.CellHost): what a cell asks of the runtime ----------

    def open_file(self, file: ObjectFile) -> sqlite3.Connection:
        """Reopen an object's existing file (after a failed commit)."""
        return self.store.open_file(file, fresh=False)

    def settle_file(self, conn: sqlite3.Connection) -> None:
        """Restore the durable ``synchronous`` setting after a fresh file's first commit."""
        self.store.settle(conn)

    def delete_file(self, file: ObjectFile) -> None:
        """Remove an object's file (deleted, or created but never committed)."""
        self.store.delete_file(file)

    async def write_row(self, row: ObjectRow) -> None:
        """Write an object's registry row and wait until it is committed."""
        await self.registry.write(row)

    def stage_row(self, row: ObjectRow) -> None:
        """Queue an object's registry row for the next group commit."""
        self.registry.stage(row)

    async def delete_row(self, kind: str, object_id: str) -> None:
        """Delete an object's registry row and wait until that is committed."""
        await self.registry.delete(kind, object_id)

    def schedule_alarm(self, kind: str, object_id: str, when: float | None) -> None:
        """Wake the object at ``when`` (wall-clock seconds); None clears its alarm."""
        self.alarms.schedule(kind, object_id, when)

    def sockets_of(self, kind: str, object_id: str) -> SocketSet:
        """The object's socket set (same as :meth:`sockets`)."""
        return self.sockets(kind, object_id)

    def post_messages(self, sender: Key, messages: list[Outgoing]) -> None:
        """Hand committed outbox rows to the courier."""
        self.courier.post(sender, messages)

    def may_commit(self) -> bool:
        """False while this router must not commit (see actors/remote.py)."""
        return self.remote is None or self.remote.may_commit()

    def record_commit(self, seconds: float) -> None:
        """Count the time one COMMIT took."""
        self.stats.commit_seconds += seconds

    def record_turn(self, messages: int) -> None:
        """Count one committed turn of ``messages`` messages."""
        self.stats.turns += 1
        self.stats.messages += messages

    def record_restart(self) -> None:
        """Count one reload of an instance after a crash or a failed commit."""
        self.stats.restarts += 1

    def forget(self, key: Key, cell: object) -> None:
        """Called by a cell as its loop ends (its file is closed)."""
        if self._live.get(key) is cell:
            del self._live[key]
        if self._closing.get(key) is cell:
            del self._closing[key]
        self.release_sockets(*key)

    def leftover_error(self, key: Key) -> Exception:
        """The error for messages still queued when a cell ends."""
        if self._closed:
            return RouterClosedError("the router is shutting down")
        if self.is_broken(key):
            return ActorBrokenError(f"{key[0]} {key[1]!r} is unavailable")
        return ActorClosedError(f"{key[0]} {key[1]!r} closed")

    def mark_broken(self, key: Key) -> None:
        """Refuse an object for ``broken_cooldown`` seconds."""
        self._broken[key] = trio.current_time() + self.config.broken_cooldown

    def is_broken(self, key: Key) -> bool:
        """True while an object is in its broken cool-down."""
        until = self._broken.get(key)
        if until is None:
            return False
        if until <= trio.current_time():
            del self._broken[key]
            return False
        return True

    # -- services ------------------------------------------------------------------

    async def _fire_alarm(self, kind: str, object_id: str) -> Any:
        return await self.call(kind, object_id, ALARM_DUE)

    async def _deliver_message(
        self, kind: str, object_id: str, message: Incoming, create: bool
    ) -> Any:
        return await self.call(kind, object_id, message, create=create)

    async def _acknowledge_messages(self, sender: Key, message: Delivered) -> Any:
        return await self.call(sender[0], sender[1], message)

    async def _serve_reaper(self, *, task_status: trio.TaskStatus[None]) -> None:
        task_status.started()
        interval = max(min(self.config.idle_timeout / 4, 5.0), 0.01)
        while True:
            await trio.sleep(interval)
            self._enforce_cap()  # cells that were busy at their activation may be idle now
            now = trio.current_time()
            deadline = now - self.config.idle_timeout
            for cell in list(self._live.values()):
                if not cell.idle or cell.closing:
                    continue
                if cell.last_used <= deadline:
                    self._evict(cell)
                elif cell.last_used <= now - interval:
                    cell.shrink()  # idle for a while: give back its page cache

    def _begin_close(self) -> None:
        self._closed = True
        self.close_watchers(CloseReason(CLOSE_GOING_AWAY, "server shutting down"))
        for cell in list(self._live.values()):
            cell.close()


@asynccontextmanager
async def open_router(
    root: Path,
    kinds: Sequence[type[Actor]] = (),
    config: RouterConfig = _DEFAULT_CONFIG,
    *,
    registry_migrations: dict[str, Sequence[Any]] | None = None,
    clock: Callable[[], float] = time.time,
    context: Any = None,
) -> AsyncIterator[Router]:
    """Run a router over the data directory ``root`` for the block's duration.

    Args:
        root: data directory (object files under ``root/objects``, the registry at
            ``root/registry.sqlite``).
        kinds: object kinds to serve.
        config: runtime tunables.
        registry_migrations: extra migration streams for the registry database.
        clock: wall-clock seconds; tests pass ``trio.current_time``.
        context: any object the kinds may use (``Actor.context``), e.g. the product's
            event sink; the runtime never looks inside it.
    """
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    store = ObjectStore(root, synchronous=config.synchronous)
    registry = Registry(
        root / "registry.sqlite",
        migrations=registry_migrations,
        flush_interval=config.registry_flush_interval,
    )
    router = Router(store, registry, kinds, config, clock, context)
    try:
        _recover_registry(router)
        async with trio.open_nursery() as services:
            router._services = services
            await services.start(registry.serve)
            await services.start(router._serve_reaper)
            await services.start(router.courier.serve)
            for pool in router.pools.values():
                await services.start(pool.serve)
            async with trio.open_nursery() as actors:
                router._nursery = actors
                await services.start(router.alarms.serve, services)
                for kind, object_id, when in registry.alarms():
                    if kind in router.kinds:
                        router.alarms.schedule(kind, object_id, when)
                try:
                    yield router
                finally:
                    router._begin_close()
            registry.end_run()
            services.cancel_scope.cancel()
    except BaseExceptionGroup as group:
        # Keep nursery plumbing out of callers' code: re-raise a lone error as itself.
        leaves = list(_leaves(group))
        if len(leaves) == 1:
            raise leaves[0] from None
        raise
    finally:
        registry.conn.close()


def _recover_registry(router: Router) -> None:
    """After an unclean stop, bring staged-but-lost registry fields back from the files."""
    unclean_since = router.registry.begin_run()
    if unclean_since is None:
        return
    started = time.time()
    for kind in router.kinds:
        refreshed = refresh_changed(router.store, router.registry, kind, unclean_since)
        log.warning(
            "registry refreshed after an unclean stop",
            extra={"kind": kind, "objects": len(refreshed)},
        )
    router.registry.mark_consistent(started)


def _leaves(group: BaseExceptionGroup) -> list[BaseException]:
    out: list[BaseException] = []
    for exc in group.exceptions:
        if isinstance(exc, BaseExceptionGroup):
            out.extend(_leaves(exc))
        else:
            out.append(exc)
    return out
