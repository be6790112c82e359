"""A worker that processes a list of items and reports its progress to spectral.

The seeds' broker scenario in a dozen lines: ``track()`` creates the task, coalesces
the progress calls, completes the task at the end, and fails it with the error's text
if processing raises. Run a server (``make run``), then::

    SPECTRAL_API_KEY=... python examples/report_progress.py [TASK_ID]
"""

from __future__ import annotations

import sys

from spectral.client import Client


def process(item: int) -> int:
    """Stand-in for real work."""
    return sum(range(item))


def main() -> None:
    """Process 1,000 items as one tracked task; print its id and final status."""
    items = list(range(1_000))
    task_id = sys.argv[1] if len(sys.argv) > 1 else None
    with Client() as client:
        with client.track(task_id, metadata={"items": len(items)}) as task:
            for done, item in enumerate(items, start=1):
                process(item)
                task.progress(100 * done / len(items), f"{done}/{len(items)} items")
        print(task.task_id, client.get_task(task.task_id).status)


if __name__ == "__main__":
    main()
