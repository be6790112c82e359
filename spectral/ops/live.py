"""``spectral watch``'s two outputs: a live progress bar on a terminal, JSON lines
otherwise."""

from __future__ import annotations

import sys
from collections.abc import Iterable, Mapping
from typing import Any

import orjson
from rich.markup import escape
from rich.progress import BarColumn, Progress, TaskProgressColumn, TextColumn, TimeElapsedColumn

from spectral.ops import render

#: The status a message's type implies when it carries no task (a replayed event).
STATUS_OF_TYPE = {
    "complete": "success",
    "fail": "failed",
    "cancel": "canceled",
    "timeout": "failed",
}


def succeeded(last: Mapping[str, Any] | None) -> bool:
    """Whether the watch ended with the task successful (not failed, canceled or deleted)."""
    if last is None:
        return False
    if last.get("type") == "complete":
        return True
    task = last.get("task")
    snapshot = last.get("type") == "snapshot" and isinstance(task, dict)
    return snapshot and task.get("status") == "success"


def json_lines(messages: Iterable[Mapping[str, Any]]) -> Mapping[str, Any] | None:
    """Write each message as one JSON line, flushed at once; return the last one."""
    last = None
    out = sys.stdout
    for message in messages:
        out.write(orjson.dumps(message).decode() + "\n")
        out.flush()
        last = message
    return last


def progress_of(message: Mapping[str, Any]) -> float | None:
    """The task's progress after the message, if it says."""
    task = message.get("task")
    if isinstance(task, dict) and isinstance(task.get("progress"), int | float):
        return float(task["progress"])
    event = message.get("event")
    if isinstance(event, dict) and isinstance(event.get("progress"), int | float):
        return float(event["progress"])
    return None


def status_of(message: Mapping[str, Any], previous: str) -> str:
    """The task's status after the message."""
    task = message.get("task")
    if isinstance(task, dict) and isinstance(task.get("status"), str):
        return str(task["status"])
    if message.get("type") == "deleted":
        return "deleted"
    return STATUS_OF_TYPE.get(str(message.get("type")), previous)


def text_of(message: Mapping[str, Any], previous: str) -> str:
    """The latest human-readable line: the event's message, or the task's error."""
    task = message.get("task")
    if isinstance(task, dict) and task.get("error"):
        return str(task["error"])
    event = message.get("event")
    if isinstance(event, dict) and event.get("message"):
        return str(event["message"])
    return previous


def progress_bar(task_id: str, messages: Iterable[Mapping[str, Any]]) -> Mapping[str, Any] | None:
    """A live bar with the status and the latest message until the watch ends; then one
    summary line. Returns the last message."""
    status, text, last = "connecting", "", None
    columns = (
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        TaskProgressColumn(),
        TextColumn("{task.fields[status]}"),
        TimeElapsedColumn(),
        TextColumn("{task.fields[text]}"),
    )
    with Progress(*columns, console=render.console(), transient=False) as bar:
        row = bar.add_task(task_id, total=100, status=status, text=text)
        for message in messages:
            last = message
            status, text = status_of(message, status), text_of(message, text)
            progress = progress_of(message)
            bar.update(row, status=render.status_markup(status), text=escape(text))
            if progress is not None:
                bar.update(row, completed=progress)
    summary = f"{task_id}: {status}"
    if last is not None and status in ("failed", "canceled") and text:
        summary += f" ({text})"
    render.console().print(summary, style=render.STATUS_STYLES.get(status, ""))
    return last
