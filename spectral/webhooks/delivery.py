"""Delivery workers: attempt due deliveries over HTTP, record every attempt, schedule retries.

A dispatcher reads due rows from the outbox table and hands each to one of a
bounded pool of worker tasks (never a task's turn: the actors only queue
events). Each attempt is one signed POST with a timeout; a 2xx delivers, and
anything else (a non-2xx answer, a network error, a timeout, a forbidden
address) is recorded and retried on the schedule until the delivery is dead.
An attempt cut short by shutdown or ``kill -9`` is not recorded: the row is
still pending and is tried again after the restart (at least once).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import httpx
import trio

from spectral import __version__
from spectral.ops import metrics
from spectral.sql import SqlError
from spectral.webhooks import guard, signing
from spectral.webhooks.schedule import next_delay
from spectral.webhooks.store import DEAD, DELIVERED, PENDING, AttemptResult, Due, WebhookStore

log = logging.getLogger("spectral.webhooks")

#: Concurrent attempts (each holds one connection to a receiver).
WORKERS = 8
#: Seconds one attempt may take, connect to last byte of the answer's head.
TIMEOUT = 10.0
#: Longest sleep of the dispatcher with nothing due (redeliveries and new rows wake it).
IDLE_SECONDS = 60.0
#: Longest sleep on a cluster: another node may make a delivery homed here due (a
#: redelivery, a webhook activated there) without a way to wake this node.
CLUSTER_POLL_SECONDS = 1.0
#: Finished deliveries are kept this long for ``GET .../deliveries``.
RETENTION_SECONDS = 7 * 24 * 3600
#: Bounds of a failing webhook's pause (its failed delivery's next delay, clamped).
MIN_PAUSE = 0.2
MAX_PAUSE = 60.0
USER_AGENT = f"spectral-webhooks/{__version__}"


@dataclass(frozen=True, slots=True)
class Target:
    """Where one attempt connects, and what it says it is talking to."""

    url: str
    headers: dict[str, str]
    extensions: dict[str, Any]


def target(url: str, address: guard.IPAddress | None) -> Target:
    """The request to make: to ``address`` itself (vetted) with the URL's Host and SNI."""
    if address is None:
        return Target(url, {}, {})
    parsed = httpx.URL(url)
    pinned = parsed.copy_with(host=str(address))
    extensions: dict[str, Any] = {}
    if parsed.scheme == "https":
        extensions["sni_hostname"] = parsed.host
    return Target(str(pinned), {"Host": parsed.netloc.decode("ascii")}, extensions)


class Deliverer:
    """The dispatcher and its worker pool.

    Args:
        store: the webhook tables.
        schedule: seconds before each attempt (the first included).
        allow_private: skip the SSRF guard (tests, trusted networks).
        workers: concurrent attempts.
        timeout: seconds per attempt.
        poll: longest sleep between two looks for due deliveries (None: only the next
            due time, :data:`IDLE_SECONDS` at most, or a :meth:`wake`).
    """

    def __init__(
        self,
        store: WebhookStore,
        schedule: Sequence[float],
        *,
        allow_private: bool = False,
        workers: int = WORKERS,
        timeout: float = TIMEOUT,
        poll: float | None = None,
    ) -> None:
        self.store = store
        self.poll = poll
        self.schedule = tuple(schedule)
        self.allow_private = allow_private
        self.workers = workers
        self.timeout = timeout
        self._wake = trio.Event()
        self._inflight: set[str] = set()
        #: Failing webhooks: id → (wall time until which none of its deliveries start,
        #: whether its probe is in flight). One failure pauses the whole webhook, so a
        #: receiver that is down costs one attempt per pause, not one per delivery
        #: (hammering it cost the mutations' p99 3-4x here).
        self._paused: dict[str, float] = {}
        self._probing: set[str] = set()
        self.attempts = 0

    def wake(self) -> None:
        """Look for due deliveries now (new rows, a redelivery)."""
        self._wake.set()

    async def serve(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Dispatch due deliveries to the workers until cancelled."""
        limits = httpx.Limits(max_connections=self.workers * 2, max_keepalive_connections=64)
        async with (
            httpx.AsyncClient(
                timeout=self.timeout,
                limits=limits,
                follow_redirects=False,
                trust_env=False,  # never through an environment's proxy
                headers={"User-Agent": USER_AGENT},
            ) as client,
            trio.open_nursery() as nursery,
        ):
            send, receive = trio.open_memory_channel[Due](0)
            for _ in range(self.workers):
                nursery.start_soon(self._work, client, receive.clone())
            receive.close()
            task_status.started()
            pruned_at = 0.0
            while True:
                try:
                    now = time.time()
                    if now - pruned_at > 3600:
                        await self.store.prune(now - RETENTION_SECONDS)
                        pruned_at = now
                    free = self.workers - len(self._inflight)
                    held = self._held(now)
                    due = await self.store.due(now, free, self._inflight, held) if free > 0 else []
                    for delivery in due:
                        if delivery.webhook_id in self._paused:
                            # The pause is over: one probe, the rest wait for its outcome.
                            if delivery.webhook_id in self._probing:
                                continue
                            self._probing.add(delivery.webhook_id)
                        self._inflight.add(delivery.id)
                        await send.send(delivery)
                    if due and len(due) == free:
                        # Every worker busy: wait for one to finish (it wakes us).
                        await self._sleep(None)
                        continue
                    following = await self.store.next_due_at(now) if free > len(due) else None
                    resumes = [until for until in self._paused.values() if until > now]
                    wake = [following, *resumes] if following else resumes or [None]
                    await self._sleep(min(wake))
                except SqlError:
                    # The database is busy (the CLI holds the registry) or unreachable:
                    # try again shortly.
                    log.exception("webhook dispatcher: database unavailable; retrying in 1 s")
                    await trio.sleep(1.0)

    def _held(self, now: float) -> list[str]:
        """Webhooks none of whose deliveries may start now (paused, or probing)."""
        return [w for w, until in self._paused.items() if until > now or w in self._probing]

    def _note(self, webhook_id: str, result: AttemptResult) -> None:
        self._probing.discard(webhook_id)
        if result.status == DELIVERED:
            self._paused.pop(webhook_id, None)
            return
        delay = 0.0 if result.next_attempt_at is None else result.next_attempt_at - result.at
        self._paused[webhook_id] = time.time() + min(MAX_PAUSE, max(MIN_PAUSE, delay))

    async def _sleep(self, until: float | None) -> None:
        delay = IDLE_SECONDS if until is None else max(0.0, until - time.time())
        if self.poll is not None:
            delay = min(delay, self.poll)
        if delay > 0:
            with trio.move_on_after(delay):
                await self._wake.wait()
        self._wake = trio.Event()

    async def _work(
        self, client: httpx.AsyncClient, receive: trio.MemoryReceiveChannel[Due]
    ) -> None:
        async with receive:
            async for delivery in receive:
                try:
                    result = await self.attempt(client, delivery)
                    await self.store.record_attempts([result])
                    self._note(delivery.webhook_id, result)
                    metrics.WEBHOOK_DELIVERIES.labels(_outcome(result)).inc()
                except SqlError:
                    # Not recorded: the row stays pending and is tried again.
                    log.exception("could not record a webhook attempt")
                finally:
                    self._inflight.discard(delivery.id)
                    self._probing.discard(delivery.webhook_id)
                    self.wake()

    async def attempt(self, client: httpx.AsyncClient, delivery: Due) -> AttemptResult:
        """Make one attempt of ``delivery`` and say what happened (never raises for I/O)."""
        started = time.time()
        clock = time.perf_counter()
        timestamp = int(started)
        code: int | None = None
        error: str | None = None
        try:
            with trio.fail_after(self.timeout + 1):
                addresses = await guard.vet(delivery.url, allow_private=self.allow_private)
                # Pin the vetted address: a second lookup could answer differently.
                pinned = target(delivery.url, None if self.allow_private else addresses[0])
                headers = {
                    **pinned.headers,
                    **signing.headers(delivery.secret, delivery.id, timestamp, delivery.body),
                    "Content-Type": "application/json",
                }
                request = client.build_request(
                    "POST",
                    pinned.url,
                    content=delivery.body,
                    headers=headers,
                    extensions=pinned.extensions,
                )
                response = await client.send(request, stream=True)
                await response.aclose()  # the answer's body is not needed (nor trusted)
                code = response.status_code
                if not 200 <= code < 300:
                    error = f"HTTP {code}"
        except guard.ForbiddenUrlError as exc:
            error = f"forbidden address: {exc}"
        except (guard.UnresolvableUrlError, ValueError) as exc:
            error = str(exc)
        except (httpx.TimeoutException, trio.TooSlowError):
            error = f"timed out after {self.timeout:g} s"
        except httpx.HTTPError as exc:
            error = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
        except OSError as exc:
            error = f"{type(exc).__name__}: {exc}"
        self.attempts += 1
        attempt = delivery.attempts + 1
        duration_ms = (time.perf_counter() - clock) * 1000
        if error is None:
            return AttemptResult(
                delivery.id, attempt, started, code, None, duration_ms, DELIVERED, None
            )
        delay = next_delay(attempt, self.schedule)
        if delay is None:
            log.warning("webhook delivery dead", extra={"deliveryId": delivery.id, "error": error})
            return AttemptResult(
                delivery.id, attempt, started, code, error, duration_ms, DEAD, None
            )
        return AttemptResult(
            delivery.id, attempt, started, code, error, duration_ms, PENDING, time.time() + delay
        )


def _outcome(result: AttemptResult) -> str:
    if result.status == DELIVERED:
        return "delivered"
    return "dead" if result.status == DEAD else "failed"
