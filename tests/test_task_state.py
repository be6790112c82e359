"""The pure task state machine, h11-style: plain functions, no I/O, no event loop."""

from __future__ import annotations

import ast
import math
from dataclasses import replace
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from spectral.tasks import state as ts
from spectral.tasks.state import (
    TERMINAL,
    Cancel,
    Complete,
    Create,
    EventType,
    Fail,
    InvalidCommandError,
    Log,
    Progress,
    Status,
    TaskExistsError,
    TaskNotFoundError,
    TaskTerminalError,
    TimeOut,
    apply,
)

T0 = 1_700_000_000.0


def created(status: Status = Status.PENDING, **kw: object) -> ts.TaskState:
    state, _ = apply(None, Create(task_id="t1", owner="o", epoch="e", status=status, **kw), T0)
    return state


def in_status(status: Status) -> ts.TaskState:
    """A task brought to ``status`` through the machine itself."""
    state = created()
    steps = {
        Status.PENDING: [],
        Status.IN_PROGRESS: [Progress(progress=10)],
        Status.SUCCESS: [Complete()],
        Status.FAILED: [Fail(error="boom")],
        Status.CANCELED: [Cancel()],
    }[status]
    for i, command in enumerate(steps, start=1):
        state, _ = apply(state, command, T0 + i)
    assert state.status is status
    return state


# Expected status after each command, from each non-terminal status.
EXPECTED = {
    "progress": Status.IN_PROGRESS,
    "log": Status.IN_PROGRESS,
    "complete": Status.SUCCESS,
    "fail": Status.FAILED,
    "cancel": Status.CANCELED,
    "timeout": Status.FAILED,
}
COMMANDS = {
    "progress": Progress(progress=42),
    "log": Log(message="hello"),
    "complete": Complete(),
    "fail": Fail(error="boom"),
    "cancel": Cancel(),
    "timeout": TimeOut(),
}
EVENT_TYPES = {
    "progress": EventType.PROGRESS,
    "log": EventType.LOG,
    "complete": EventType.SUCCESS,
    "fail": EventType.ERROR,
    "cancel": EventType.CANCELED,
    "timeout": EventType.TIMEOUT,
}


@pytest.mark.parametrize("status", list(Status))
@pytest.mark.parametrize("name", list(COMMANDS))
def test_every_status_times_every_command(status: Status, name: str) -> None:
    state = in_status(status)
    command = COMMANDS[name]
    if status in TERMINAL:
        with pytest.raises(TaskTerminalError):
            apply(state, command, T0 + 100)
        return
    new, event = apply(state, command, T0 + 100)
    assert new.status is EXPECTED[name]
    assert new.seq == state.seq + 1 == event.seq
    assert event.event_type is EVENT_TYPES[name]
    assert event.timestamp == new.updated_at == T0 + 100
    assert new.created_at == state.created_at
    if status is Status.PENDING and new.status is Status.IN_PROGRESS:
        assert new.started_at == T0 + 100
    if name == "complete":
        assert new.progress == 100 and new.completed_at == T0 + 100
    if name == "fail":
        assert new.error == "boom" and new.failed_at == T0 + 100
    if name == "timeout":
        assert new.error == "timed out" and new.failed_at == T0 + 100
    if name == "cancel":
        assert new.canceled_at == T0 + 100


@pytest.mark.parametrize("status", list(Status))
def test_create_on_existing_task_is_refused(status: Status) -> None:
    state = in_status(status)
    with pytest.raises(TaskExistsError):
        apply(state, Create(task_id="t1", owner="o", epoch="x"), T0)


@pytest.mark.parametrize("name", list(COMMANDS))
def test_commands_on_missing_task_are_not_found(name: str) -> None:
    with pytest.raises(TaskNotFoundError):
        apply(None, COMMANDS[name], T0)


def test_create_defaults_and_first_event() -> None:
    state, event = apply(None, Create(task_id="t1", owner="o", epoch="e"), T0)
    assert state.status is Status.PENDING and state.progress == 0 and state.seq == 1
    assert state.started_at is None and state.error is None
    assert event.seq == 1 and event.event_type is EventType.CREATED


def test_create_in_progress_sets_started() -> None:
    assert created(Status.IN_PROGRESS).started_at == T0


@pytest.mark.parametrize("status", [Status.SUCCESS, Status.FAILED, Status.CANCELED])
def test_create_in_terminal_status_is_invalid(status: Status) -> None:
    with pytest.raises(InvalidCommandError) as info:
        created(status)
    assert info.value.field == "status"


@pytest.mark.parametrize("bad", [-0.1, 100.5, math.nan, math.inf, -math.inf, True, "50"])
def test_progress_out_of_range_is_invalid_and_changes_nothing(bad: object) -> None:
    state = in_status(Status.IN_PROGRESS)
    with pytest.raises(InvalidCommandError) as info:
        apply(state, Progress(progress=bad), T0 + 5)  # type: ignore[arg-type]
    assert info.value.field == "progress"
    with pytest.raises(InvalidCommandError):
        created(progress=bad)  # type: ignore[arg-type]


@pytest.mark.parametrize("edge", [0, 100, 0.5, 99.99])
def test_progress_bounds_are_inclusive(edge: float) -> None:
    new, event = apply(in_status(Status.PENDING), Progress(progress=edge), T0 + 1)
    assert new.progress == edge == event.progress


def test_log_with_terminal_event_type_is_invalid() -> None:
    with pytest.raises(InvalidCommandError):
        apply(created(), Log(message="x", event_type=EventType.SUCCESS), T0)


def test_log_without_progress_keeps_progress() -> None:
    state, _ = apply(created(), Progress(progress=30), T0 + 1)
    new, event = apply(state, Log(message="note"), T0 + 2)
    assert new.progress == 30 and event.progress is None and event.message == "note"


def test_metadata_merges_shallowly_and_is_bounded() -> None:
    state = created(metadata={"a": 1, "b": 2})
    new, _ = apply(state, Complete(metadata={"b": 3, "c": 4}), T0 + 1)
    assert new.metadata == {"a": 1, "b": 3, "c": 4}
    with pytest.raises(InvalidCommandError) as info:
        apply(state, Progress(progress=1, metadata={"x": "y" * 70_000}), T0 + 1)
    assert info.value.field == "metadata"
    with pytest.raises(InvalidCommandError):
        created(metadata={"x": math.nan})


@pytest.mark.parametrize("field", ["timeout_seconds", "ttl_seconds"])
@pytest.mark.parametrize("bad", [0, -1, math.inf, math.nan])
def test_timeouts_must_be_positive(field: str, bad: float) -> None:
    with pytest.raises(InvalidCommandError):
        created(**{field: bad})


def test_fail_needs_an_error() -> None:
    with pytest.raises(InvalidCommandError):
        apply(created(), Fail(error=""), T0)


@pytest.mark.parametrize(
    ("metadata", "field"),
    [
        ({"k": "a\x00b"}, "metadata.k"),
        ({"a\x00": 1}, "metadata.a\\u0000"),
        ({"k": [1, {"deep": "\x00"}]}, "metadata.k.1.deep"),
    ],
)
def test_nul_in_new_metadata_is_invalid(metadata: dict[str, object], field: str) -> None:
    """PostgreSQL's jsonb cannot hold it (a cluster mirrors the summary): refused everywhere."""
    with pytest.raises(InvalidCommandError) as info:
        created(metadata=metadata)
    assert info.value.field == field
    for command in (Progress(progress=1, metadata=metadata), Complete(metadata=metadata)):
        with pytest.raises(InvalidCommandError) as info:
            apply(created(), command, T0 + 1)
        assert info.value.field == field
    with pytest.raises(InvalidCommandError) as info:
        apply(created(), Fail(error="bad\x00"), T0 + 1)
    assert info.value.field == "error"


def test_a_task_stored_with_nul_metadata_still_takes_updates() -> None:
    old = replace(created(), metadata={"old": "a\x00"})  # written before the rule
    new, _ = apply(old, Progress(progress=5, metadata={"fine": 1}), T0 + 1)
    assert new.metadata == {"old": "a\x00", "fine": 1}
    # "\\u0000" spelled out (a backslash and five characters) is no NUL.
    assert created(metadata={"k": "\\u0000"}).metadata == {"k": "\\u0000"}


def test_deadlines() -> None:
    state = created(timeout_seconds=30, ttl_seconds=60)
    assert state.heartbeat_deadline() == T0 + 30 and state.retention_deadline() is None
    done, _ = apply(state, Complete(), T0 + 10)
    assert done.heartbeat_deadline() is None and done.retention_deadline() == T0 + 70


def test_refusal_leaves_state_untouched() -> None:
    state = in_status(Status.SUCCESS)
    before = replace(state)
    with pytest.raises(TaskTerminalError):
        apply(state, Progress(progress=1), T0 + 9)
    assert state == before


@given(st.lists(st.sampled_from(list(COMMANDS)), max_size=12))
def test_any_command_sequence_keeps_invariants(names: list[str]) -> None:
    state = created()
    for i, name in enumerate(names, start=1):
        try:
            new, event = apply(state, COMMANDS[name], T0 + i)
        except TaskTerminalError:
            assert state.terminal
            continue
        assert not state.terminal
        assert new.seq == state.seq + 1 == event.seq
        assert 0 <= new.progress <= 100
        state = new
    # Once terminal, always terminal; the seq counts the accepted commands.
    assert state.seq >= 1


def test_module_imports_neither_trio_nor_sqlite() -> None:
    tree = ast.parse(Path(ts.__file__).read_text())
    imported: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imported.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            imported.add(node.module.split(".")[0])
    assert "json" in imported  # the walk sees the imports at all
    assert not imported & {"trio", "sqlite3", "actors", "storage"}


def test_tags_and_external_id_are_set_at_create_and_kept() -> None:
    state = created(tags=["b", "a", "b"], external_id="order 42")
    assert state.tags == ("b", "a") and state.external_id == "order 42"
    for i, command in enumerate([Progress(progress=5), Log(message="x"), Complete()], start=1):
        state, _ = apply(state, command, T0 + i)
        assert state.tags == ("b", "a") and state.external_id == "order 42"
    plain = created()
    assert plain.tags == () and plain.external_id is None


@pytest.mark.parametrize(
    ("kw", "field"),
    [
        ({"tags": [f"t{i}" for i in range(17)]}, "tags"),
        ({"tags": ["ok", "no space"]}, "tags.1"),
        ({"tags": [""]}, "tags.0"),
        ({"tags": ["x" * 65]}, "tags.0"),
        ({"tags": ["a\n"]}, "tags.0"),
        ({"tags": "ab"}, "tags"),
        ({"external_id": "x" * 256}, "externalId"),
        ({"external_id": ""}, "externalId"),
        ({"external_id": "a\x00b"}, "externalId"),
        ({"external_id": "a\u2028b"}, "externalId"),
    ],
)
def test_bad_tags_and_external_ids_are_invalid(kw: dict[str, object], field: str) -> None:
    with pytest.raises(InvalidCommandError) as info:
        created(**kw)
    assert info.value.field == field


def test_sixteen_tags_with_repeats_are_fine() -> None:
    tags = [f"t{i}" for i in range(16)]
    assert created(tags=tags + tags).tags == tuple(tags)
    assert created(tags=["A-z.0_9:-" * 7 + "x"]).tags == ("A-z.0_9:-" * 7 + "x",)
    assert created(external_id="é " * 127 + "!").external_id == "é " * 127 + "!"
