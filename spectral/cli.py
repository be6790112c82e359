"""The ``spectral`` command line: ``spectral serve`` (more subcommands join later)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

import trio
from pydantic import ValidationError

from spectral import __version__, logs
from spectral.server import DataDirLockedError, serve
from spectral.settings import Settings


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of every subcommand."""
    parser = argparse.ArgumentParser(prog="spectral", description=__doc__)
    parser.add_argument("--version", action="version", version=f"spectral {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)
    serve_parser = commands.add_parser("serve", help="run the server (SPEC §1 defaults)")
    serve_parser.add_argument(
        "--data-dir", help="data directory (default ./data, env SPECTRAL_DATA_DIR)"
    )
    serve_parser.add_argument("--host", help="listen address (default 127.0.0.1)")
    serve_parser.add_argument("--port", type=int, help="listen port (default 8094; 0 = any free)")
    serve_parser.add_argument("--log-level", help="DEBUG, INFO (default), WARNING or ERROR")
    return parser


def settings_from(args: argparse.Namespace) -> Settings:
    """Settings from the environment and the parsed flags."""
    return Settings.load(
        {
            "data_dir": args.data_dir,
            "host": args.host,
            "port": args.port,
            "log_level": args.log_level,
        }
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the process exit code."""
    args = build_parser().parse_args(argv)
    try:
        settings = settings_from(args)
    except ValidationError as exc:
        for error in exc.errors():
            field = ".".join(str(part) for part in error["loc"])
            print(f"spectral: invalid setting {field}: {error['msg']}", file=sys.stderr)
        return 2
    logs.configure(settings.log_level)
    if args.command == "serve":
        try:
            trio.run(serve, settings)
        except DataDirLockedError as exc:
            print(f"spectral: {exc}", file=sys.stderr)
            return 1
        except OSError as exc:
            print(f"spectral: cannot serve: {exc}", file=sys.stderr)
            return 1
    return 0
