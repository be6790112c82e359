"""When to retry a call and when to stop trying: backoff with full jitter under one
deadline, and a circuit breaker. Pure: no I/O, the clock and the random source injected.

A call is retried only when retrying cannot apply it twice: every mutating call carries
one ``Idempotency-Key`` for all its attempts (``calls.Call``), so the server answers a
repeat from its record. Retried: connection errors, 429 (after ``Retry-After``), 502,
503 and 504. Never retried: any other 4xx (the request itself is wrong).
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from spectral.client.errors import CircuitOpenError

#: Statuses worth another attempt (with the same Idempotency-Key).
RETRY_STATUSES = frozenset({429, 502, 503, 504})


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """Exponential backoff with full jitter, all attempts within ``deadline`` seconds.

    Attempt n (0-based) waits ``uniform(0, min(cap, base * 2**n))`` before the next one
    (AWS's "full jitter"), or what the server's ``Retry-After`` asks if that is longer.
    """

    deadline: float = 30.0
    base: float = 0.1
    cap: float = 5.0
    #: Attempts at most (None: as many as the deadline allows).
    attempts: int | None = None

    def delay(self, attempt: int, rng: random.Random, retry_after: float | None = None) -> float:
        """Seconds to wait after failed attempt number ``attempt`` (0-based)."""
        backoff = rng.uniform(0.0, min(self.cap, self.base * 2**attempt))
        return max(backoff, retry_after or 0.0)

    def next_delay(
        self,
        attempt: int,
        started: float,
        now: float,
        rng: random.Random,
        retry_after: float | None = None,
    ) -> float | None:
        """The wait before another attempt, or None if the budget is spent."""
        if self.attempts is not None and attempt + 1 >= self.attempts:
            return None
        wait = self.delay(attempt, rng, retry_after)
        if now + wait - started > self.deadline:
            return None
        return wait


NO_RETRY = RetryPolicy(deadline=0.0, attempts=1)


@dataclass
class CircuitBreaker:
    """Closed -> open after ``threshold`` consecutive failures -> half-open after
    ``reset_after`` seconds (one probe call) -> closed on its success, open again on
    its failure. While open, calls fail at once with :class:`CircuitOpenError`.
    """

    threshold: int = 5
    reset_after: float = 10.0
    clock: Callable[[], float] = time.monotonic
    failures: int = 0
    opened_at: float | None = None
    _probing: bool = field(default=False, repr=False)

    @property
    def state(self) -> str:
        """``closed``, ``open`` or ``half-open``."""
        if self.opened_at is None:
            return "closed"
        if self.clock() - self.opened_at >= self.reset_after:
            return "half-open"
        return "open"

    def before(self) -> None:
        """Call before an attempt: raises CircuitOpenError if the circuit refuses it."""
        state = self.state
        if state == "open" or (state == "half-open" and self._probing):
            raise CircuitOpenError(
                0, "CIRCUIT_OPEN", f"{self.failures} calls in a row failed; not trying now"
            )
        if state == "half-open":
            self._probing = True

    def success(self) -> None:
        """The attempt reached the server and got an answer (any non-5xx)."""
        self.failures = 0
        self.opened_at = None
        self._probing = False

    def failure(self) -> None:
        """The attempt failed: no connection, or 502/503/504."""
        self.failures += 1
        self._probing = False
        if self.opened_at is not None or self.failures >= self.threshold:
            self.opened_at = self.clock()
