"""The same worker in an asyncio program (the most common host of such workers).

``AsyncClient.track()`` runs its progress sender as a task of the block; a cancelled
block cancels the task on the server. Run a server (``make run``), then::

    SPECTRAL_API_KEY=... python examples/asyncio_worker.py [TASK_ID]
"""

from __future__ import annotations

import asyncio
import sys

from spectral.client import AsyncClient


async def process(item: int) -> None:
    """Stand-in for real, awaiting work."""
    await asyncio.sleep(0)


async def main() -> None:
    """Process 1,000 items as one tracked task; print its id and final status."""
    items = list(range(1_000))
    task_id = sys.argv[1] if len(sys.argv) > 1 else None
    async with AsyncClient() as client:
        async with client.track(task_id, metadata={"items": len(items)}) as task:
            for done, item in enumerate(items, start=1):
                await process(item)
                task.progress(100 * done / len(items), f"{done}/{len(items)} items")
            await task.log("all items processed")
        print(task.task_id, (await client.get_task(task.task_id)).status)


if __name__ == "__main__":
    asyncio.run(main())
