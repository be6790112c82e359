"""The seeds' jobs vocabulary (spectral/seed_jobs.py): states, names, REST views, events."""

from __future__ import annotations

from typing import Any

import pytest

from spectral import seed_jobs
from spectral.tasks import state as sm
from spectral.tasks.events import TaskEvent
from spectral.wire import event_json, task_json

T0 = 1_780_000_000.0


def run(*commands: sm.Command) -> tuple[sm.TaskState, sm.Event]:
    """Apply commands to a new task, a second apart; the last state and event."""
    state, event = sm.apply(None, sm.Create(task_id="job-1", owner="u1", epoch="e"), T0)
    for i, command in enumerate(commands, 1):
        state, event = sm.apply(state, command, T0 + i)
    return state, event


def task_event(event_type: str, state: sm.TaskState, event: sm.Event) -> TaskEvent:
    return TaskEvent(
        "u1", "job-1", state.seq, event_type, event.timestamp, task_json(state), event_json(event)
    )


@pytest.mark.parametrize(
    ("status", "state"),
    [
        ("pending", "waiting"),
        ("in-progress", "active"),
        ("success", "completed"),
        ("failed", "failed"),
        ("canceled", "failed"),
    ],
)
def test_every_status_has_a_seed_state(status: str, state: str) -> None:
    assert seed_jobs.STATES[status] == state
    assert status in seed_jobs.STATUSES_OF[state]


def test_delayed_matches_no_status() -> None:
    assert seed_jobs.STATUSES_OF["delayed"] == ()


def test_view_of_a_pending_task_has_null_times_and_no_result() -> None:
    state, _ = run()
    view = seed_jobs.job_view(task_json(state))
    assert view == {
        "id": "job-1",
        "name": "job-1",
        "state": "waiting",
        "progress": 0,
        "timestamp": {"created": T0 * 1000, "started": None, "finished": None},
    }


def test_view_of_a_completed_task_carries_its_name_result_and_times() -> None:
    state, _ = run(
        sm.Progress(progress=40, metadata={"name": "export"}),
        sm.Complete(metadata={"result": {"rows": 3}}),
    )
    view = seed_jobs.job_view(task_json(state))
    assert view["name"] == "export"
    assert view["state"] == "completed"
    assert view["progress"] == 100
    assert view["result"] == {"rows": 3}
    assert "failedReason" not in view
    assert view["timestamp"] == {
        "created": T0 * 1000,
        "started": (T0 + 1) * 1000,
        "finished": (T0 + 2) * 1000,
    }


def test_a_name_that_is_not_a_string_is_not_the_name() -> None:
    state, _ = run(sm.Progress(progress=1, metadata={"name": 7}))
    assert seed_jobs.job_view(task_json(state))["name"] == "job-1"


@pytest.mark.parametrize(
    ("command", "reason"),
    [
        (sm.Fail(error="disk full"), "disk full"),
        (sm.Cancel(), "canceled"),
        (sm.TimeOut(), "timed out"),
    ],
)
def test_failed_canceled_and_timed_out_jobs_are_failed_with_a_reason(
    command: sm.Command, reason: str
) -> None:
    state, _ = run(command)
    view = seed_jobs.job_view(task_json(state))
    assert (view["state"], view["failedReason"]) == ("failed", reason)
    assert view["timestamp"]["finished"] == (T0 + 1) * 1000


def test_progress_event() -> None:
    state, event = run(sm.Progress(progress=40))
    assert seed_jobs.job_event(task_event("progress", state, event)) == (
        "progress",
        {"jobId": "job-1", "state": "active", "progress": 40, "timestamp": (T0 + 1) * 1000},
    )


def test_completed_event_carries_the_result_and_failed_the_error() -> None:
    state, event = run(sm.Complete(metadata={"result": "ok"}))
    kind, payload = seed_jobs.job_event(task_event("completed", state, event)) or ("", {})
    assert (kind, payload["state"], payload["result"]) == ("completed", "completed", "ok")
    state, event = run(sm.Cancel())
    kind, payload = seed_jobs.job_event(task_event("canceled", state, event)) or ("", {})
    assert (kind, payload["state"], payload["error"]) == ("failed", "failed", "canceled")


def test_created_deleted_and_plain_log_events_have_no_seed_event() -> None:
    state, event = run()
    assert seed_jobs.job_event(task_event("created", state, event)) is None
    state, event = run(sm.Log(message="hello"))
    assert seed_jobs.job_event(task_event("event", state, event)) is None
    gone = TaskEvent("u1", "job-1", 3, "deleted", T0, None, None)
    assert seed_jobs.job_event(gone) is None
    assert seed_jobs.webhook_payload(gone) is None


def test_a_log_event_that_moves_progress_is_progress() -> None:
    state, event = run(sm.Log(message="half", progress=50))
    seen = seed_jobs.job_event(task_event("event", state, event))
    assert seen is not None and seen[0] == "progress" and seen[1]["progress"] == 50


@pytest.mark.parametrize(
    ("command", "event_type", "expected"),
    [
        (sm.Progress(progress=40), "progress", {"progress": 40, "eventType": "progress"}),
        (
            sm.Complete(metadata={"result": [1]}),
            "completed",
            {"result": [1], "eventType": "completed"},
        ),
        (sm.Complete(), "completed", {"result": None, "eventType": "completed"}),
        (sm.Fail(error="boom"), "failed", {"error": "boom", "eventType": "failed"}),
        (sm.Cancel(), "canceled", {"error": "canceled", "eventType": "failed"}),
    ],
)
def test_webhook_payload(command: sm.Command, event_type: str, expected: dict[str, Any]) -> None:
    state, event = run(command)
    body = seed_jobs.webhook_payload(task_event(event_type, state, event))
    assert body == {"id": "job-1", "jobname": "job-1", "userId": "u1", **expected}
    assert list(body)[-1] == "eventType"


@pytest.mark.parametrize(
    ("command", "event_type", "kind"),
    [
        (None, "created", None),
        (sm.Progress(progress=40), "progress", "progress"),
        (sm.Log(message="half", progress=50), "event", "progress"),
        (sm.Log(message="hello"), "event", None),
        (sm.Complete(), "completed", "completed"),
        (sm.Fail(error="boom"), "failed", "failed"),
        (sm.TimeOut(), "failed", "failed"),
        (sm.Cancel(), "canceled", "failed"),
    ],
)
def test_event_kind_is_the_kind_job_event_answers(
    command: sm.Command | None, event_type: str, kind: str | None
) -> None:
    state, event = run() if command is None else run(command)
    seen = task_event(event_type, state, event)
    assert seed_jobs.event_kind(seen) == kind
    found = seed_jobs.job_event(seen)
    assert (None if found is None else found[0]) == kind
