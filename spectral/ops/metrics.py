"""Prometheus metrics: runtime figures read at scrape time, plus counters.

Everything lives in :data:`REGISTRY` (not the global default one), so tests and
several apps in one process never collide.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

if TYPE_CHECKING:
    from actors import Router

REGISTRY = CollectorRegistry(auto_describe=True)

WS_CONNECTIONS = Gauge(
    "spectral_websocket_connections", "Open WebSocket connections", registry=REGISTRY
)
WS_MESSAGES_SENT = Counter(
    "spectral_websocket_messages_sent", "Messages written to WebSocket watchers", registry=REGISTRY
)
WATCHERS_DROPPED = Counter(
    "spectral_watchers_dropped",
    "Watchers closed with 4008 because they fell behind",
    registry=REGISTRY,
)
ROOM_EVENTS_DROPPED = Counter(
    "spectral_room_events_dropped",
    "Task events not published to user_{owner} rooms because the room feed was full",
    registry=REGISTRY,
)
SSE_STREAMS = Gauge("spectral_sse_streams", "Open Server-Sent Events streams", registry=REGISTRY)
WEBHOOK_DELIVERIES = Counter(
    "spectral_webhook_deliveries",
    "Webhook delivery attempts by result (delivered, failed: retried later, dead: given up)",
    ["result"],
    registry=REGISTRY,
)
REQUEST_SECONDS = Histogram(
    "spectral_request_duration_seconds",
    "HTTP request latency by route",
    ["method", "route", "status"],
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5),
    registry=REGISTRY,
)


class RuntimeCollector(Collector):
    """Reads the router's statistics at scrape time."""

    def __init__(self, router: Router) -> None:
        self.router = router

    def collect(self) -> Iterator[Metric]:
        """The runtime's gauges and counters."""
        stats = self.router.statistics()
        yield GaugeMetricFamily("spectral_actors_live", "Live actors", value=stats.live)
        yield GaugeMetricFamily(
            "spectral_actors_broken", "Objects refused as unavailable", value=stats.broken
        )
        yield GaugeMetricFamily(
            "spectral_watchers", "Watchers attached to objects", value=stats.watchers
        )
        yield GaugeMetricFamily("spectral_alarms", "Scheduled alarms", value=stats.alarms)
        for name, help_text, value in (
            ("spectral_actors_evicted", "Actors hibernated", stats.evicted),
            ("spectral_actor_activations", "Actor activations", stats.activations),
            ("spectral_actor_restarts", "Actor restarts after a crash", stats.restarts),
            ("spectral_turns", "Committed turns", stats.turns),
            ("spectral_messages", "Messages applied", stats.messages),
        ):
            yield CounterMetricFamily(name, help_text, value=value)
        yield CounterMetricFamily(
            "spectral_commit_seconds", "Time spent committing turns", value=stats.commit_seconds
        )
        ready = GaugeMetricFamily(
            "spectral_pool_files_ready", "Pre-created object files ready, by kind", labels=["kind"]
        )
        taken = CounterMetricFamily(
            "spectral_pool_files_taken", "Creations served from the pool, by kind", labels=["kind"]
        )
        misses = CounterMetricFamily(
            "spectral_pool_misses",
            "Creations that found the pool empty and made their file themselves, by kind",
            labels=["kind"],
        )
        for pool in stats.pools:
            ready.add_metric([pool.kind], pool.ready)
            taken.add_metric([pool.kind], pool.taken)
            misses.add_metric([pool.kind], pool.misses)
        yield from (ready, taken, misses)


def install(router: Router) -> RuntimeCollector:
    """Register the runtime collector for ``router`` (replacing an earlier one)."""
    for collector in list(REGISTRY._collector_to_names):
        if isinstance(collector, RuntimeCollector):
            REGISTRY.unregister(collector)
    collector = RuntimeCollector(router)
    REGISTRY.register(collector)
    return collector


def render() -> bytes:
    """The Prometheus text exposition of every metric."""
    return generate_latest(REGISTRY)
