"""The runtime's tunables: one frozen record, read by the router and by every cell."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class RouterConfig:
    """Tunables of the runtime (defaults are the server's)."""

    #: Seconds without a message before a live actor is evicted.
    idle_timeout: float = 60.0
    #: Live actors at most; each holds an SQLite connection (2 fds, ~70 KiB).
    max_live: int = 10_000
    #: Messages applied in one transaction at most.
    max_batch: int = 256
    #: Messages that may wait in one inbox (callers beyond it get ActorBrokenError).
    inbox_size: int = 100_000
    #: Consecutive crashing turns before an actor is marked broken.
    crash_limit: int = 5
    #: First back-off after a crashing turn (doubles each time, capped at 5 s).
    crash_backoff: float = 0.05
    #: Seconds a broken object is refused before activation is tried again.
    broken_cooldown: float = 30.0
    #: First retry delay of a failing alarm (doubles each time, capped at 300 s).
    alarm_retry_base: float = 1.0
    #: SQLite ``synchronous`` for object files (NORMAL survives kill -9; FULL power loss).
    synchronous: str = "NORMAL"
    #: Longest time a non-durable registry change stays unwritten.
    registry_flush_interval: float = 0.2
    #: Kinds with ``pooled = True``: refill their pool of pre-created files when fewer
    #: than ``pool_low`` are ready, up to ``pool_high`` (0 turns the pools off). A task
    #: file is 24 KiB: 1,024 ready files are 24 MiB on disk, half a second of creations
    #: at 2,000/s; the refill thread makes ~15,000 files/s here.
    pool_low: int = 256
    pool_high: int = 1024
