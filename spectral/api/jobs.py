"""The seeds' jobs over REST: ``GET /jobs/{jobId}`` and ``GET /jobs`` (docs/api.md,
"The seeds' jobs system").

A job is a task in the seed's shape (:mod:`spectral.seed_jobs`): the same task, the
same owner rules as ``GET /tasks/{taskId}`` and ``GET /tasks`` (another owner's job
is 404; admins list every owner's, ``owner`` narrows), the same listing, newest first.
"""

from __future__ import annotations

from typing import Any

from spectral import seed_jobs
from spectral.api import models
from spectral.api.call import Call
from spectral.api.procedures import call_task, pagination, task_page
from spectral.tasks.actor import Read


async def get_job(call: Call, body: models.JobRef) -> dict[str, Any]:
    """The job: the caller's task (an admin's: any) in the seed's shape."""
    task = await call_task(call, body.job_id, Read(call.who.owner_filter))
    return seed_jobs.job_view(task)


async def list_jobs(call: Call, query: models.JobsQuery) -> dict[str, Any]:
    """A page of jobs, newest first; ``status`` is a seed state (``failed`` takes failed
    and canceled tasks, ``delayed`` none)."""
    status = seed_jobs.STATUSES_OF[query.status] if query.status else None
    tasks, total = await task_page(
        call, owner=query.owner, status=status, page=query.page, limit=query.limit
    )
    return {
        "jobs": [seed_jobs.job_view(task) for task in tasks],
        "pagination": pagination(total, query.page, query.limit),
    }
