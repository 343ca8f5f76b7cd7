"""gpuhost's host-side entry point (`gpuhost-agent`): argparse, standard library only, JSON out.

This is what runs inside the zipapp on managed hosts (Ansible roles, fleet checks), on their own
python3 >= 3.9. Each command is built from the same table as the typer CLI's (gpuhost.options) and
parses its options through the same feature constructors, so a verdict here equals `gpuhost check` on
the host. Exit codes, and the JSON error of a command that stops, are the CLI's (gpuhost.model.failure_of).
"""

from __future__ import annotations

import argparse
from typing import NoReturn, Optional

from gpuhost import __version__
from gpuhost.agent import check, comfyui, ebs, models, storage
from gpuhost.agent.common import Handlers, print_json
from gpuhost.model import ExitCode, UsageError, failure_of


class _Parser(argparse.ArgumentParser):
    """argparse that reports bad usage as gpuhost's JSON error (exit 2) instead of text on stderr."""

    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{self.prog}: {message}", f"Run {self.prog} --help for the options.")


def build_parser() -> tuple[argparse.ArgumentParser, Handlers]:
    parser = _Parser(
        prog="gpuhost-agent",
        description="gpuhost's host-side commands, JSON output only (see `gpuhost --help` for the full CLI).",
        allow_abbrev=False,
    )
    parser.add_argument("--version", action="version", version=f"gpuhost-agent {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    handlers: Handlers = {}
    for group in (check, ebs, storage, comfyui, models):
        group.add_commands(sub, handlers)
    return parser, handlers


def main(argv: Optional[list[str]] = None) -> int:
    try:
        parser, handlers = build_parser()
        try:
            args = parser.parse_args(argv)
        except SystemExit as exc:  # --help and --version
            return int(ExitCode.USAGE) if exc.code else int(ExitCode.OK)
        return handlers[args.command](args)
    except Exception as exc:  # the one way from an error to its exit code, as the CLI's
        failure = failure_of(exc)
        print_json(failure.to_dict())
        return failure.exit_code
