"""One cluster node: where objects live, forwarding to their home, and the lease that fences.

Theory of operation
-------------------
:class:`ClusterNode` is the router's :class:`~actors.remote.Remote`. Every call the
router gets asks :meth:`ClusterNode.route` where the object lives:

- a placement cached here (homes never move by themselves, so a cached home stays
  true until a forwarded call is answered ``NOT_HOME``);
- else PostgreSQL's ``placements`` row (one statement);
- else, for a call that may create, this node places the object on itself: the
  ``placements`` primary key is the race arbiter, so when two nodes create one id
  at once, one becomes its home and the other forwards its create there (which the
  home's actor then answers as a single server would: exists, or an idempotent
  replay).

A call for an object homed elsewhere is forwarded over the internal transport as the
actor message itself (:mod:`spectral.cluster.codec`); the home runs it with
``Router.call(here=True)`` and sends back the answer or the error, which the caller
re-raises, so the API layer cannot tell a forwarded call from a local one. A home that
cannot be reached is :class:`~spectral.cluster.errors.HomeUnavailableError` (503
``TASK_UNAVAILABLE``).

Activation here takes the next fencing token (``placements.token``, checked against
this node's epoch and lease in the same statement), and every COMMIT first checks the
local lease (:meth:`may_commit`): a node whose lease lapsed — PostgreSQL unreachable,
or the process paused past its TTL — rolls its turns back and answers 503, and closes
its objects' files so that whoever adopts them can open them.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from typing import Any

import psycopg
import trio

from actors import (
    ActorBrokenError,
    ActorCrashedError,
    ObjectMovedError,
    ObjectNotFoundError,
    Router,
)
from spectral.cluster.codec import Codec
from spectral.cluster.errors import HomeUnavailableError, NodeFencedError
from spectral.cluster.membership import Membership, MemberStatus
from spectral.cluster.peers import Peers
from spectral.cluster.pg import Database, DatabaseUnavailableError
from spectral.cluster.placement import (
    NodeNotCurrentError,
    NotHomeError,
    Placements,
)
from spectral.cluster.transport import RemoteError, TransportError, serve_transport
from spectral.cluster.watching import RemoteWatching
from spectral.errors import ApiError

log = logging.getLogger("spectral.cluster")

Key = tuple[str, str]

#: Homes remembered per node (an entry is ~150 bytes).
HOME_CACHE = 200_000


class ClusterNode:
    """This node's view of the cluster; see the module docstring."""

    def __init__(
        self,
        db: Database,
        node_id: str,
        *,
        internal_host: str = "127.0.0.1",
        internal_port: int = 0,
        advertise: str | None = None,
        membership_ttl: float | None = None,
    ) -> None:
        self.db = db
        self.node_id = node_id
        self.internal_host = internal_host
        self.internal_port = internal_port
        self.advertise = advertise
        self.membership_ttl = membership_ttl
        self.codec = Codec()
        self.placements = Placements(db)
        self.membership: Membership | None = None
        self.router: Router | None = None
        #: More internal operations, by name (e.g. the admin feed's position).
        self.operations: dict[str, Callable[[Any], Awaitable[Any]]] = {}
        #: Serves watchers of objects homed elsewhere (set when the bus runs).
        self.watching: RemoteWatching | None = None
        self._homes: OrderedDict[Key, str] = OrderedDict()
        #: The other nodes: clients, addresses, which are down.
        self.peers = Peers(db)
        #: The fencing token of each object activated here.
        self.tokens: dict[Key, int] = {}
        self.forwarded = 0
        self.served = 0

    # -- running ---------------------------------------------------------------------

    async def serve(self, *, task_status: trio.TaskStatus[ClusterNode]) -> None:
        """Serve the internal transport, join the cluster and keep the lease, until cancelled."""
        async with trio.open_nursery() as nursery:
            server = await nursery.start(
                serve_transport, self._handle, self.internal_host, self.internal_port
            )
            host = self.advertise or self.internal_host
            address = f"[{host}]:{server.port}" if ":" in host else f"{host}:{server.port}"
            options = {} if self.membership_ttl is None else _lease_options(self.membership_ttl)
            self.membership = Membership(self.db, self.node_id, address, **options)
            node = await nursery.start(self.membership.serve)
            log.info(
                "joined the cluster",
                extra={"node": self.node_id, "epoch": node.epoch, "internal": address},
            )
            await nursery.start(self.peers.serve, self.membership.interval)
            nursery.start_soon(self._fence_on_lapse)
            task_status.started(self)
            try:
                await trio.sleep_forever()
            finally:
                server.shutdown()
                nursery.cancel_scope.cancel()

    async def _fence_on_lapse(self) -> None:
        """When the lease lapses, close every live object so no file stays held."""
        assert self.membership is not None
        while True:
            await self.membership.wait_status(MemberStatus.FENCED, MemberStatus.SUPERSEDED)
            log.error("node %s lost its lease: refusing work until it is renewed", self.node_id)
            if self.router is not None:
                self.router.evict_all()
            self.tokens.clear()
            await self.membership.wait_status(MemberStatus.CURRENT)
            log.warning("node %s renewed its lease: serving again", self.node_id)

    # -- actors.remote.Remote -----------------------------------------------------------

    async def route(self, kind: str, object_id: str, *, create: bool) -> bool:
        """True if the object lives here (placing it here if it is new and ``create``)."""
        home = await self._resolve(kind, object_id, create=create)
        return home is None or home == self.node_id

    async def forward(self, kind: str, object_id: str, message: Any, *, create: bool) -> Any:
        """Run the call on the object's home; its answer, or raise its error.

        A message carrying a live watcher (``Watch``, ``Subscribe``) cannot travel: the
        watcher is served here, fed by the bus (spectral/cluster/watching.py).
        """
        if getattr(message, "watcher", None) is not None:
            if self.watching is None:
                raise ActorBrokenError(f"{kind} {object_id!r}: no bus to watch it from here")
            return await self.watching.watch(kind, object_id, message, self._forward_plain)
        return await self._forward(kind, object_id, message, create=create)

    async def _forward_plain(self, kind: str, object_id: str, message: Any) -> Any:
        return await self._forward(kind, object_id, message, create=False)

    async def _forward(self, kind: str, object_id: str, message: Any, *, create: bool) -> Any:
        body = {"k": kind, "i": object_id, "c": create, "m": self.codec.encode(message)}
        for attempt in (0, 1):
            home = await self._resolve(kind, object_id, create=create)
            if home is None or home == self.node_id:
                assert self.router is not None
                try:
                    return await self.router.call(
                        kind, object_id, message, create=create, here=True
                    )
                except ObjectMovedError:
                    if attempt:
                        raise
                    continue  # placed on another node meanwhile: activating() cached it
            self.peers.check(home, f"{kind} {object_id!r}")
            try:
                with self.peers.calling(home) as scope:
                    reply = await self.peers.call(home, "call", body)
                if scope.cancelled_caught:
                    raise HomeUnavailableError(
                        f"{kind} {object_id!r}: its node {home} went down during the call",
                        node_id=home,
                    )
            except RemoteError as exc:
                if exc.code == "NOT_HOME" and not attempt:
                    self._homes.pop((kind, object_id), None)
                    continue
                raise ActorCrashedError(f"{kind} {object_id!r}: node {home}: {exc}") from None
            except TransportError as exc:
                if exc.unprocessed and not attempt:
                    continue  # maybe restarted at another address: look it up once more
                raise HomeUnavailableError(
                    f"{kind} {object_id!r}: its node {home} cannot be reached", node_id=home
                ) from None
            self.forwarded += 1
            if "e" in reply:
                error = self.codec.decode(reply["e"])
                if isinstance(error, ObjectMovedError) and not attempt:
                    self._homes.pop((kind, object_id), None)
                    continue
                raise error
            return self.codec.decode(reply["v"])
        raise HomeUnavailableError(f"{kind} {object_id!r}: its home keeps moving", node_id="?")

    async def activating(self, kind: str, object_id: str) -> None:
        """Take the next fencing token for an object about to open here."""
        membership = self._membership()
        if membership.fenced or membership.node is None:
            raise NodeFencedError(f"node {self.node_id} has no lease: {kind} {object_id!r}")
        try:
            token = await self.placements.activate(kind, object_id, membership.node)
        except NotHomeError as exc:
            if exc.home is None:
                raise ObjectNotFoundError(f"{kind} {object_id!r} does not exist") from None
            self._homes[(kind, object_id)] = exc.home
            raise ObjectMovedError(f"{kind} {object_id!r} lives on node {exc.home}") from None
        except NodeNotCurrentError:
            raise NodeFencedError(f"node {self.node_id} is not current") from None
        except (DatabaseUnavailableError, psycopg.Error) as exc:
            raise NodeFencedError(f"{kind} {object_id!r}: placement unavailable: {exc}") from None
        self.tokens[(kind, object_id)] = token

    def may_commit(self) -> bool:
        """False once the lease lapsed (checked right before every COMMIT)."""
        return self.membership is not None and not self.membership.fenced

    # -- placement ----------------------------------------------------------------------

    async def _resolve(self, kind: str, object_id: str, *, create: bool) -> str | None:
        """The home node's id, or None if the object was never placed (and not ``create``)."""
        key = (kind, object_id)
        home = self._homes.get(key)
        if home is not None:
            self._homes.move_to_end(key)
            return home
        try:
            found = await self.placements.home_of(kind, object_id)
            if found is not None:
                home = found.node_id
                self.peers.learn(home, found.rpc_addr)
            elif create:
                membership = self._membership()
                if membership.node is None or membership.fenced:
                    raise NodeFencedError(f"node {self.node_id} has no lease")
                placed = await self.placements.place(kind, object_id, membership.node)
                home = placed.home
        except NodeNotCurrentError:
            raise NodeFencedError(f"node {self.node_id} is not current") from None
        except (DatabaseUnavailableError, psycopg.Error) as exc:
            raise NodeFencedError(f"placement of {kind} {object_id!r} unavailable: {exc}") from None
        if home is None:
            return None
        self._homes[key] = home
        if len(self._homes) > HOME_CACHE:
            self._homes.popitem(last=False)
        return home

    def forget(self, kind: str, object_id: str) -> None:
        """Drop a cached home (the object was deleted)."""
        self._homes.pop((kind, object_id), None)

    def _membership(self) -> Membership:
        if self.membership is None:
            raise NodeFencedError(f"node {self.node_id} has not joined the cluster yet")
        return self.membership

    async def ask(self, node_id: str, op: str, body: Any = None) -> Any:
        """Run one of :attr:`operations` on another node (TransportError, RemoteError)."""
        return await self.peers.call(node_id, op, body)

    # -- serving forwarded calls ----------------------------------------------------------

    async def _handle(self, op: str, body: Any) -> Any:
        if op in self.operations:
            return await self.operations[op](body)
        if op != "call":
            raise ApiError(400, "UNKNOWN_OPERATION", f"no internal operation {op!r}")
        kind, object_id, create = body["k"], body["i"], bool(body["c"])
        home = await self._resolve(kind, object_id, create=False)
        if home is not None and home != self.node_id:
            raise ApiError(421, "NOT_HOME", f"{kind} {object_id!r} lives on node {home}")
        try:
            message = self.codec.decode(body["m"])
        except (ValueError, TypeError, KeyError) as exc:
            raise ApiError(400, "BAD_MESSAGE", f"cannot decode the message: {exc}") from None
        assert self.router is not None
        self.served += 1
        try:
            value = await self.router.call(kind, object_id, message, create=create, here=True)
        except Exception as exc:
            return {"e": self._error(exc)}
        return {"v": self.codec.encode(value)}

    def _error(self, exc: Exception) -> Any:
        try:
            return self.codec.encode(exc)
        except TypeError:
            log.exception("forwarded call failed with an error that cannot cross nodes")
            return self.codec.encode(ActorCrashedError(f"{type(exc).__name__}: {exc}"))


def _lease_options(ttl: float) -> dict[str, float]:
    """Renewal interval and margin for a lease of ``ttl`` seconds (tests use short ones)."""
    return {"ttl": ttl, "interval": ttl / 5, "margin": ttl / 5}
