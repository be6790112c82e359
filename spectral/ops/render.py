"""What the client commands print: rich tables for people, JSON for scripts, errors on
stderr."""

from __future__ import annotations

import sys
from typing import Any

import orjson
from pydantic_core import to_jsonable_python
from rich.console import Console
from rich.markup import escape
from rich.progress_bar import ProgressBar
from rich.table import Table
from rich.text import Text

from spectral.client import SpectralError

#: Colours of the statuses (docs/api.md, "Tasks").
STATUS_STYLES = {
    "pending": "yellow",
    "in-progress": "cyan",
    "success": "green",
    "failed": "red",
    "canceled": "magenta",
}


def console() -> Console:
    """A console on the current stdout (rich decides colours and width from it)."""
    return Console(file=sys.stdout, highlight=False)


def jsonable(value: Any) -> Any:
    """``value`` (answer models included) as JSON types, with the wire's field names."""
    return to_jsonable_python(value, by_alias=True)


def json_out(value: Any) -> None:
    """One JSON document (one line) on stdout."""
    sys.stdout.write(orjson.dumps(jsonable(value)).decode() + "\n")
    sys.stdout.flush()


def line(text: str) -> None:
    """One plain line on stdout."""
    print(text, flush=True)


def error(text: str) -> None:
    """``spectral: text`` on stderr."""
    print(f"spectral: {text}", file=sys.stderr, flush=True)


def failure(exc: SpectralError) -> None:
    """The server's code and message (and every offending field, when several) on stderr."""
    error(f"{exc.code}: {exc.message}")
    details = exc.details if isinstance(exc.details, list) and len(exc.details) > 1 else []
    for problem in details:
        if isinstance(problem, dict):
            print(
                f"  {problem.get('field', '?')}: {problem.get('message', '')}",
                file=sys.stderr,
                flush=True,
            )


def status_text(status: str) -> Text:
    """A status, coloured."""
    return Text(status, style=STATUS_STYLES.get(status, ""))


def status_markup(status: str) -> str:
    """A status as rich markup, coloured (for progress columns, which format strings)."""
    style = STATUS_STYLES.get(status)
    return f"[{style}]{status}[/]" if style else escape(status)


def percent(progress: float) -> str:
    """``42%`` (one decimal only when it is not whole)."""
    return f"{progress:.0f}%" if progress == int(progress) else f"{progress:.1f}%"


def task_table(page: Any) -> None:
    """A page of tasks: id, status, progress with a bar, owner, updated."""
    table = Table(box=None, pad_edge=False, header_style="bold")
    table.add_column("ID", no_wrap=True, overflow="fold")
    table.add_column("STATUS", no_wrap=True)
    table.add_column("PROGRESS", justify="right", no_wrap=True)
    table.add_column("", no_wrap=True, width=12)
    table.add_column("OWNER", no_wrap=True)
    table.add_column("UPDATED", no_wrap=True)
    for task in page.tasks:
        table.add_row(
            task.task_id,
            status_text(task.status),
            percent(task.progress),
            ProgressBar(total=100, completed=task.progress, width=12),
            task.owner,
            task.updated_at,
        )
    out = console()
    if page.tasks:
        out.print(table)
    pagination = page.pagination
    out.print(
        f"{pagination.total} task(s); page {pagination.page} of {max(pagination.pages, 1)}",
        style="dim",
    )


def task(value: Any, as_json: bool) -> None:
    """One task, as field/value lines (or JSON)."""
    if as_json:
        json_out(value)
        return
    table = Table(box=None, show_header=False, pad_edge=False)
    table.add_column(style="bold", no_wrap=True)
    table.add_column(overflow="fold")
    table.add_row("id", value.task_id)
    table.add_row("status", status_text(value.status))
    table.add_row("progress", percent(value.progress))
    table.add_row("owner", value.owner)
    table.add_row("seq", str(value.seq))
    if value.tags:
        table.add_row("tags", ", ".join(value.tags))
    if value.external_id is not None:
        table.add_row("external id", value.external_id)
    if value.parent_id is not None:
        table.add_row("parent", f"{value.parent_id} (weight {value.weight:g})")
    if value.child_count:
        table.add_row("children", str(value.child_count))
    for label, stamp in (
        ("created", value.created_at),
        ("updated", value.updated_at),
        ("started", value.started_at),
        ("completed", value.completed_at),
        ("failed", value.failed_at),
        ("canceled", value.canceled_at),
    ):
        if stamp:
            table.add_row(label, stamp)
    if value.error:
        table.add_row("error", Text(value.error, style="red"))
    if value.metadata:
        table.add_row("metadata", orjson.dumps(value.metadata).decode())
    console().print(table)


def history_table(task_id: str, events: list[Any]) -> None:
    """A task's events, oldest first."""
    table = Table(box=None, pad_edge=False, header_style="bold")
    table.add_column("SEQ", justify="right", no_wrap=True)
    table.add_column("TIME", no_wrap=True)
    table.add_column("TYPE", no_wrap=True)
    table.add_column("PROGRESS", justify="right", no_wrap=True)
    table.add_column("MESSAGE", overflow="fold")
    for event in events:
        table.add_row(
            str(event.seq),
            event.timestamp,
            event.event_type,
            "" if event.progress is None else percent(event.progress),
            event.message,
        )
    out = console()
    if events:
        out.print(table)
    out.print(f"{len(events)} event(s) of {task_id}", style="dim")


def webhook_table(hooks: list[Any]) -> None:
    """Webhooks: id, url, event type, filter, active."""
    table = Table(box=None, pad_edge=False, header_style="bold")
    table.add_column("ID", no_wrap=True)
    table.add_column("URL", overflow="fold")
    table.add_column("EVENTS", no_wrap=True)
    table.add_column("TASKS", no_wrap=True)
    table.add_column("ACTIVE", no_wrap=True)
    for hook in hooks:
        table.add_row(
            hook.id,
            hook.url,
            hook.event_type,
            f"{hook.task_id_prefix}*" if hook.task_id_prefix else "all",
            "yes" if hook.active else "no",
        )
    out = console()
    if hooks:
        out.print(table)
    out.print(f"{len(hooks)} webhook(s)", style="dim")
