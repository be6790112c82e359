"""The command line's client commands: ``spectral tasks|watch|rooms|webhooks``.

They talk to a running server over HTTP through the SDK (:mod:`spectral.client`) and
never import the server. Tables for people, ``--json`` for scripts; the exit status
says what happened (docs/cli.md): 0 ok, 1 a watched task did not succeed (or the
server refused for another reason), 2 usage, 3 not found, 4 unauthenticated or
forbidden, 5 server unreachable or unavailable.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from spectral.client import (
    AuthError,
    CircuitBreaker,
    Client,
    NotFoundError,
    RateLimitedError,
    RetryPolicy,
    SpectralError,
    UnavailableError,
    ValidationError,
)
from spectral.ops import render

OK, NOT_SUCCEEDED, USAGE, NOT_FOUND, AUTH, UNAVAILABLE = 0, 1, 2, 3, 4, 5
DEFAULT_URL = "http://127.0.0.1:8094"
#: Seconds a command keeps retrying an unreachable or busy server before exit status 5.
DEFAULT_DEADLINE = 5.0

Handler = Callable[[Client, argparse.Namespace], int]


class UsageError(Exception):
    """A flag's value that the command cannot use (exit status 2)."""


def exit_status(error: SpectralError) -> int:
    """The exit status for an error the server (or the lack of one) gave."""
    if isinstance(error, NotFoundError):
        return NOT_FOUND
    if isinstance(error, AuthError):
        return AUTH
    if isinstance(error, UnavailableError | RateLimitedError):
        return UNAVAILABLE
    if isinstance(error, ValidationError):
        return USAGE
    return NOT_SUCCEEDED


def api_key_from(args: argparse.Namespace) -> str | None:
    """``--api-key``, else ``$SPECTRAL_API_KEY``, else a readable local ``admin.key``."""
    if args.api_key:
        return str(args.api_key)
    if os.environ.get("SPECTRAL_API_KEY"):
        return os.environ["SPECTRAL_API_KEY"]
    path = Path(os.environ.get("SPECTRAL_DATA_DIR") or "data") / "admin.key"
    try:
        return path.read_text(encoding="utf-8").strip() or None
    except OSError:
        return None


def json_object(text: str, flag: str) -> dict[str, Any]:
    """``text`` parsed as a JSON object, or a :class:`UsageError` naming ``flag``."""
    try:
        value = json.loads(text)
    except ValueError as exc:
        raise UsageError(f"{flag}: not valid JSON ({exc})") from None
    if not isinstance(value, dict):
        raise UsageError(f'{flag}: must be a JSON object, e.g. \'{{"kind": "export"}}\'')
    return value


# -- tasks -------------------------------------------------------------------------------


def tasks_list(client: Client, args: argparse.Namespace) -> int:
    """``spectral tasks list``: one page of tasks, newest first."""
    page = client.list_tasks(
        status=args.status,
        q=args.q,
        owner=args.owner,
        page=args.page,
        limit=args.limit,
        tag=args.tag or None,
        created_after=args.created_after,
        created_before=args.created_before,
        parent_id=args.parent,
    )
    if args.json:
        render.json_out(page)
    else:
        render.task_table(page)
    return OK


def tasks_get(client: Client, args: argparse.Namespace) -> int:
    """``spectral tasks get ID``."""
    render.task(client.get_task(args.task_id), args.json)
    return OK


def tasks_create(client: Client, args: argparse.Namespace) -> int:
    """``spectral tasks create [ID]``."""
    metadata = json_object(args.metadata, "--metadata") if args.metadata is not None else None
    task = client.create_task(
        args.task_id,
        status=args.status,
        progress=args.progress,
        metadata=metadata,
        timeout_seconds=args.timeout_seconds,
        ttl_seconds=args.ttl_seconds,
        tags=args.tag or None,
        external_id=args.external_id,
        parent_id=args.parent,
        weight=args.weight,
        on_child_failure=args.on_child_failure,
        complete_with_children=args.complete_with_children or None,
    )
    render.task(task, args.json)
    return OK


def tasks_update(client: Client, args: argparse.Namespace) -> int:
    """``spectral tasks update ID PROGRESS``."""
    metadata = json_object(args.metadata, "--metadata") if args.metadata is not None else None
    task = client.update_progress(args.task_id, args.progress, args.message, metadata)
    render.task(task, args.json)
    return OK


def tasks_complete(client: Client, args: argparse.Namespace) -> int:
    """``spectral tasks complete ID``."""
    metadata = json_object(args.metadata, "--metadata") if args.metadata is not None else None
    render.task(client.complete(args.task_id, metadata), args.json)
    return OK


def tasks_fail(client: Client, args: argparse.Namespace) -> int:
    """``spectral tasks fail ID ERROR``."""
    render.task(client.fail(args.task_id, args.error), args.json)
    return OK


def tasks_cancel(client: Client, args: argparse.Namespace) -> int:
    """``spectral tasks cancel ID``."""
    render.task(client.cancel(args.task_id), args.json)
    return OK


def tasks_delete(client: Client, args: argparse.Namespace) -> int:
    """``spectral tasks delete ID``."""
    client.delete_task(args.task_id)
    if args.json:
        render.json_out({"success": True, "taskId": args.task_id})
    else:
        render.line(f"deleted {args.task_id}")
    return OK


def tasks_history(client: Client, args: argparse.Namespace) -> int:
    """``spectral tasks history ID``: every event (or ``--limit`` of them), oldest first."""
    events: list[Any] = []
    after = args.after
    while args.limit is None or len(events) < args.limit:
        want = 1000 if args.limit is None else min(1000, args.limit - len(events))
        page = client.history(args.task_id, after=after, limit=want)
        events.extend(page.events)
        if page.next_after is None or not page.events:
            break
        after = page.next_after
    if args.json:
        render.json_out({"taskId": args.task_id, "events": events})
    else:
        render.history_table(args.task_id, events)
    return OK


# -- rooms and webhooks ------------------------------------------------------------------


def rooms_broadcast(client: Client, args: argparse.Namespace) -> int:
    """``spectral rooms broadcast ROOM JSON``."""
    answer = client.broadcast(args.room, json_object(args.data, "JSON"))
    if args.json:
        render.json_out(answer)
    else:
        render.line(
            f"broadcast to {args.room}: room seq {answer.room_seq},"
            f" queued for {answer.delivered} subscriber(s)"
        )
    return OK


def webhooks_list(client: Client, args: argparse.Namespace) -> int:
    """``spectral webhooks list``: every page."""
    hooks: list[Any] = []
    page = 1
    while True:
        answer = client.list_webhooks(page=page, limit=100)
        hooks.extend(answer.webhooks)
        if len(answer.webhooks) < 100:
            break
        page += 1
    if args.json:
        render.json_out({"webhooks": hooks})
    else:
        render.webhook_table(hooks)
    return OK


def webhooks_create(client: Client, args: argparse.Namespace) -> int:
    """``spectral webhooks create URL``: the signing secret is printed once."""
    fields = {"description": args.description, "taskIdPrefix": args.task_id_prefix}
    hook = client.create_webhook(
        args.hook_url, args.event_type, **{k: v for k, v in fields.items() if v is not None}
    )
    if args.json:
        render.json_out(hook)
    else:
        render.line(f"created webhook {hook.id} → {hook.url} ({hook.event_type})")
        render.line(f"signing secret (shown once): {hook.secret}")
    return OK


def webhooks_delete(client: Client, args: argparse.Namespace) -> int:
    """``spectral webhooks delete ID``."""
    client.delete_webhook(args.webhook_id)
    if args.json:
        render.json_out({"success": True, "id": args.webhook_id})
    else:
        render.line(f"deleted webhook {args.webhook_id}")
    return OK


def watch(client: Client, args: argparse.Namespace) -> int:
    """``spectral watch ID``: a live bar on a terminal, else one JSON line per message."""
    from spectral.ops import live

    lines = args.json or not sys.stdout.isatty()
    messages = client.watch(args.task_id, args.since, reconnect_deadline=args.reconnect_deadline)
    last = live.json_lines(messages) if lines else live.progress_bar(args.task_id, messages)
    return OK if live.succeeded(last) else NOT_SUCCEEDED


# -- the parser --------------------------------------------------------------------------


def add_commands(commands: Any) -> None:
    """Add ``tasks``, ``watch``, ``rooms`` and ``webhooks`` to the ``spectral`` parser."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--url", help=f"the server (default $SPECTRAL_URL, else {DEFAULT_URL})")
    common.add_argument(
        "--api-key",
        help="the key (default $SPECTRAL_API_KEY, else a readable ./data/admin.key)",
    )
    common.add_argument("--json", action="store_true", help="JSON for scripts")
    common.add_argument(
        "--timeout",
        type=float,
        default=DEFAULT_DEADLINE,
        metavar="SECONDS",
        help="give up on an unreachable or busy server after this long"
        f" (default {DEFAULT_DEADLINE:g})",
    )

    def command(group: Any, name: str, handler: Handler, summary: str) -> argparse.ArgumentParser:
        parser: argparse.ArgumentParser = group.add_parser(
            name, parents=[common], help=summary, description=summary
        )
        parser.set_defaults(remote=handler)
        return parser

    tasks = commands.add_parser("tasks", help="list, read and change tasks on a running server")
    group = tasks.add_subparsers(dest="tasks_command", required=True, metavar="COMMAND")
    listing = command(group, "list", tasks_list, "list tasks, newest first")
    listing.add_argument("--status", help="pending, in-progress, success, failed or canceled")
    listing.add_argument("--q", metavar="PREFIX", help="task ids starting with PREFIX")
    listing.add_argument("--owner", help="one owner's tasks (admins)")
    listing.add_argument("--page", type=int, default=1)
    listing.add_argument("--limit", type=int, default=20, help="tasks per page (default 20)")
    listing.add_argument(
        "--tag",
        action="append",
        metavar="TAG",
        help="tasks with this tag (repeatable: all of them)",
    )
    listing.add_argument(
        "--created-after", metavar="ISO", help="created after, e.g. 2026-12-01T00:00:00Z"
    )
    listing.add_argument("--created-before", metavar="ISO", help="created before this time")
    listing.add_argument("--parent", metavar="ID", help="the children of task ID")
    command(group, "get", tasks_get, "show one task").add_argument("task_id", metavar="ID")
    create = command(group, "create", tasks_create, "create a task (an id is generated if none)")
    create.add_argument("task_id", metavar="ID", nargs="?")
    create.add_argument("--metadata", metavar="JSON", help="a JSON object")
    create.add_argument("--status", help="pending (default) or in-progress")
    create.add_argument("--progress", type=float)
    create.add_argument("--timeout-seconds", type=float, help="fail it if not finished by then")
    create.add_argument("--ttl-seconds", type=float, help="delete it this long after it ends")
    create.add_argument("--tag", action="append", metavar="TAG", help="a tag (repeatable)")
    create.add_argument("--external-id", metavar="ID", help="your own id for it, unique per owner")
    create.add_argument("--parent", metavar="ID", help="make it a child of task ID")
    create.add_argument("--weight", type=float, help="its share of its parent's progress (1)")
    create.add_argument(
        "--on-child-failure",
        choices=("fail", "ignore"),
        help="what a failed child does to it (fail: default)",
    )
    create.add_argument(
        "--complete-with-children",
        action="store_true",
        help="succeed when every child has succeeded",
    )
    update = command(group, "update", tasks_update, "report progress (0-100)")
    update.add_argument("task_id", metavar="ID")
    update.add_argument("progress", metavar="PROGRESS", type=float)
    update.add_argument("--message", "-m")
    update.add_argument("--metadata", metavar="JSON", help="a JSON object merged into it")
    complete = command(group, "complete", tasks_complete, "mark a task successful")
    complete.add_argument("task_id", metavar="ID")
    complete.add_argument("--metadata", metavar="JSON", help="a JSON object merged into it")
    fail = command(group, "fail", tasks_fail, "mark a task failed")
    fail.add_argument("task_id", metavar="ID")
    fail.add_argument("error", metavar="ERROR", help="what went wrong")
    command(group, "cancel", tasks_cancel, "cancel a task").add_argument("task_id", metavar="ID")
    command(group, "delete", tasks_delete, "delete a task and its history").add_argument(
        "task_id", metavar="ID"
    )
    history = command(group, "history", tasks_history, "a task's events, oldest first")
    history.add_argument("task_id", metavar="ID")
    history.add_argument("--after", type=int, metavar="SEQ", help="only events after SEQ")
    history.add_argument("--limit", type=int, help="at most this many events (default all)")

    watching = command(
        commands,
        "watch",
        watch,
        "follow a task live until it ends (exit 0 if it succeeded, 1 if not)",
    )
    watching.add_argument("task_id", metavar="ID")
    watching.add_argument("--since", type=int, metavar="SEQ", help="replay events after SEQ")
    watching.add_argument(
        "--reconnect-deadline",
        type=float,
        default=120.0,
        metavar="SECONDS",
        help="give up after the server has been unreachable this long (default 120)",
    )

    rooms = commands.add_parser("rooms", help="notification rooms")
    group = rooms.add_subparsers(dest="rooms_command", required=True, metavar="COMMAND")
    broadcast = command(group, "broadcast", rooms_broadcast, "send a JSON object to a room")
    broadcast.add_argument("room", metavar="ROOM")
    broadcast.add_argument("data", metavar="JSON", help="a JSON object")

    webhooks = commands.add_parser("webhooks", help="webhook subscriptions")
    group = webhooks.add_subparsers(dest="webhooks_command", required=True, metavar="COMMAND")
    command(group, "list", webhooks_list, "list webhooks")
    hook = command(group, "create", webhooks_create, "subscribe a URL to task events")
    hook.add_argument("hook_url", metavar="URL", help="where deliveries are POSTed")
    hook.add_argument(
        "--event-type",
        default="all",
        choices=("progress", "completed", "failed", "canceled", "all"),
    )
    hook.add_argument("--description")
    hook.add_argument("--task-id-prefix", metavar="PREFIX", help="only tasks whose id starts so")
    command(group, "delete", webhooks_delete, "delete a webhook").add_argument(
        "webhook_id", metavar="ID"
    )


def run(args: argparse.Namespace) -> int:
    """Run a client command; print the server's code and message on errors."""
    handler: Handler = args.remote
    if args.timeout <= 0:
        render.error("--timeout: must be greater than 0")
        return USAGE
    client = Client(
        args.url,
        api_key_from(args),
        timeout=args.timeout,
        retry=RetryPolicy(deadline=args.timeout),
        # One command, one deadline: the breaker would only end it early with a vaguer error.
        breaker=CircuitBreaker(threshold=sys.maxsize),
    )
    try:
        with client:
            return handler(client, args)
    except UsageError as exc:
        render.error(str(exc))
        return USAGE
    except SpectralError as exc:
        render.failure(exc)
        if isinstance(exc, AuthError) and client.api_key is None:
            render.error(
                "no API key: pass --api-key, set SPECTRAL_API_KEY, or run where"
                " ./data/admin.key of a local server is readable"
            )
        return exit_status(exc)
    except KeyboardInterrupt:
        return 130
