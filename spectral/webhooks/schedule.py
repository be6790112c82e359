"""When a failed delivery is tried again (docs/api.md, "Webhooks")."""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence

#: Seconds before each attempt, the first one included: about 67 minutes in all.
DEFAULT_SCHEDULE: tuple[float, ...] = (0, 5, 30, 120, 300, 600, 1200, 1800)
#: Up to this share of a delay is added at random, so that retries of many
#: deliveries that failed together (a receiver's outage) do not arrive together.
JITTER = 0.1


def parse_schedule(text: str) -> tuple[float, ...]:
    """``"0,1,2"`` → ``(0.0, 1.0, 2.0)``; raises ValueError unless 1+ finite delays ≥ 0."""
    parts = [part.strip() for part in text.split(",") if part.strip()]
    if not parts:
        raise ValueError("give at least one delay, e.g. 0,5,30")
    delays = tuple(float(part) for part in parts)
    if any(not (0 <= delay < float("inf")) for delay in delays):
        raise ValueError("delays are seconds, finite and not negative")
    return delays


def next_delay(
    attempts_made: int,
    schedule: Sequence[float],
    rand: Callable[[], float] = random.random,
) -> float | None:
    """Seconds until the next attempt after ``attempts_made`` attempts, or None: dead."""
    if attempts_made >= len(schedule):
        return None
    delay = schedule[attempts_made]
    return delay + delay * JITTER * rand()
