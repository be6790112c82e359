"""The ``spectral`` command line: ``serve``, ``keys`` and ``doctor`` on this machine's data
directory; ``tasks``, ``watch``, ``rooms`` and ``webhooks`` on a running server
(:mod:`spectral.ops.remote`, docs/cli.md)."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING

from spectral import __version__
from spectral.access.roles import ROLES
from spectral.ops import remote

if TYPE_CHECKING:
    from spectral.access.keys import KeyStore
    from spectral.settings import Settings


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of every subcommand."""
    parser = argparse.ArgumentParser(prog="spectral", description=__doc__)
    parser.add_argument("--version", action="version", version=f"spectral {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)
    serve_parser = commands.add_parser(
        "serve", help="run the server (embedded defaults: ./data, 127.0.0.1:8094)"
    )
    serve_parser.add_argument(
        "--data-dir", help="data directory (default ./data, env SPECTRAL_DATA_DIR)"
    )
    serve_parser.add_argument("--host", help="listen address (default 127.0.0.1)")
    serve_parser.add_argument("--port", type=int, help="listen port (default 8094; 0 = any free)")
    serve_parser.add_argument("--log-level", help="DEBUG, INFO (default), WARNING or ERROR")
    cluster = serve_parser.add_argument_group("cluster mode (docs/cluster.md)")
    cluster.add_argument("--cluster", metavar="URL", help="postgresql://... (env SPECTRAL_CLUSTER)")
    cluster.add_argument("--redis", metavar="URL", help="redis://... (env SPECTRAL_REDIS)")
    cluster.add_argument("--node-id", help="this node's name (default: kept in <data-dir>/node.id)")
    cluster.add_argument("--internal-host", help="address other nodes reach this one at")
    cluster.add_argument(
        "--internal-port", type=int, help="port of the node-to-node transport (0 = any free)"
    )
    keys_parser = commands.add_parser(
        "keys", help="manage API keys (works whether or not the server runs)"
    )
    keys_commands = keys_parser.add_subparsers(dest="keys_command", required=True)
    create = keys_commands.add_parser("create", help="create a key; its secret is printed once")
    create.add_argument("--owner", required=True, help="the owner (user or tenant) it acts for")
    create.add_argument("--role", required=True, choices=ROLES)
    create.add_argument("--name", help="a label to recognise the key by")
    listing = keys_commands.add_parser("list", help="list keys (never their secrets)")
    listing.add_argument("--json", action="store_true", help="one JSON object per line")
    revoke = keys_commands.add_parser("revoke", help="revoke a key at once")
    revoke.add_argument("key_id", help="the key's id (see keys list)")
    checkup = commands.add_parser(
        "doctor",
        help="check object files against the registry, with the server stopped",
        description="Check every object file against the registry (server stopped)."
        " Exit status: 0 healthy (or repaired), 1 problems found or left,"
        " 2 nothing checked (usage, no data directory, a server runs on it).",
    )
    checkup.add_argument(
        "--repair",
        action="store_true",
        help="make the registry match the files; move corrupt files to <data-dir>/quarantine",
    )
    checkup.add_argument("--json", action="store_true", help="one JSON object on stdout")
    for sub in (create, listing, revoke, checkup):
        sub.add_argument(
            "--data-dir", help="data directory (default ./data, env SPECTRAL_DATA_DIR)"
        )
    remote.add_commands(commands)
    return parser


def run_keys(args: argparse.Namespace, settings: Settings) -> int:
    """``spectral keys ...`` on the data directory's registry."""
    import trio

    from spectral.access import keys

    store, close = keys.open_store(settings.data_dir)
    try:
        return trio.run(_keys_command, args, store)
    finally:
        close()


async def _keys_command(args: argparse.Namespace, store: KeyStore) -> int:
    from spectral.access import keys

    if args.keys_command == "create":
        try:
            api_key, secret = await store.create(args.owner, args.role, args.name)
        except keys.KeyRequestError as exc:
            print(f"spectral: {exc}", file=sys.stderr)
            return 2
        print(f"created key {api_key.id} (owner {api_key.owner}, role {api_key.role})")
        print(f"secret (shown once): {secret}")
    elif args.keys_command == "list":
        for api_key in await store.list():
            row = api_key.public()
            if args.json:
                print(json.dumps(row))
            else:
                state = "revoked" if api_key.revoked_at else "active"
                print(
                    f"{row['id']}  {row['owner']:<20} {row['role']:<8} {state:<8}"
                    f" created {row['createdAt']}  last used {row['lastUsedAt'] or '-'}"
                    f"  {row['name'] or ''}".rstrip()
                )
    elif args.keys_command == "revoke":
        if await store.revoke(args.key_id) is None:
            print(f"spectral: no API key with id {args.key_id!r}", file=sys.stderr)
            return 1
        print(f"revoked key {args.key_id}")
    return 0


def settings_from(args: argparse.Namespace) -> Settings:
    """Settings from the environment and the parsed flags."""
    from spectral.settings import Settings

    return Settings.load(
        {
            "data_dir": args.data_dir,
            "host": getattr(args, "host", None),
            "port": getattr(args, "port", None),
            "log_level": getattr(args, "log_level", None),
            "cluster": getattr(args, "cluster", None),
            "redis": getattr(args, "redis", None),
            "node_id": getattr(args, "node_id", None),
            "internal_host": getattr(args, "internal_host", None),
            "internal_port": getattr(args, "internal_port", None),
        }
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the process exit code."""
    args = build_parser().parse_args(argv)
    if hasattr(args, "remote"):
        return remote.run(args)
    # The commands on this machine's data directory import the server's modules.
    from pydantic import ValidationError

    from spectral.ops import doctor, logs

    try:
        settings = settings_from(args)
    except ValidationError as exc:
        for error in exc.errors():
            field = ".".join(str(part) for part in error["loc"])
            print(f"spectral: invalid setting {field}: {error['msg']}", file=sys.stderr)
        return 2
    logs.configure(settings.log_level)
    if args.command == "keys":
        return run_keys(args, settings)
    if args.command == "doctor":
        return doctor.run(settings, repair=args.repair, json_output=args.json)
    if args.command == "serve":
        import trio

        from spectral.server import DataDirLockedError, serve

        try:
            trio.run(serve, settings)
        except DataDirLockedError as exc:
            print(f"spectral: {exc}", file=sys.stderr)
            return 1
        except OSError as exc:
            print(f"spectral: cannot serve: {exc}", file=sys.stderr)
            return 1
    return 0
