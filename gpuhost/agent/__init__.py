"""gpuhost's host-side entry point (`gpuhost-agent`): argparse, standard library only, JSON out.

This is what runs inside the zipapp on managed hosts (Ansible roles, fleet checks), on their own
python3 >= 3.9. Each command parses its options through the same feature constructors as the typer
CLI, so a verdict here equals `gpuhost check` on the host. Exit codes are the CLI's.
"""

from __future__ import annotations

import argparse
from typing import NoReturn, Optional

from gpuhost import __version__
from gpuhost.agent import check, comfyui, ebs, models, storage
from gpuhost.agent.common import Handlers, print_json
from gpuhost.ebs.aws import AwsError
from gpuhost.engine import EngineError, EnginePermissionDenied, EngineUnavailable
from gpuhost.model import ExitCode, SourceError, UsageError, for_humans

DOCKER_REMEDY = "Start Docker, or run as root / a member of the docker group."


class _Parser(argparse.ArgumentParser):
    """argparse that reports bad usage as gpuhost's JSON error (exit 2) instead of text on stderr."""

    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{self.prog}: {message}", f"Run {self.prog} --help for the options.")


def build_parser() -> tuple[argparse.ArgumentParser, Handlers]:
    parser = _Parser(
        prog="gpuhost-agent",
        description="gpuhost's host-side commands, JSON output only (see `gpuhost --help` for the full CLI).",
    )
    parser.add_argument("--version", action="version", version=f"gpuhost-agent {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    handlers: Handlers = {}
    for group in (check, ebs, storage, comfyui, models):
        group.add_commands(sub, handlers)
    return parser, handlers


def _error(code: ExitCode, message: str, remedy: str) -> int:
    print_json({"error": for_humans(message), "remedy": for_humans(remedy), "exit_code": int(code)})
    return int(code)


def main(argv: Optional[list[str]] = None) -> int:
    parser, handlers = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help and --version
        return int(ExitCode.USAGE) if exc.code else int(ExitCode.OK)
    except UsageError as exc:
        return _error(ExitCode.USAGE, str(exc), exc.remedy)
    try:
        return handlers[args.command](args)
    except UsageError as exc:
        return _error(ExitCode.USAGE, str(exc), exc.remedy)
    except ValueError as exc:  # a Docker address or option value the standard library refused
        return _error(ExitCode.USAGE, str(exc), getattr(exc, "remedy", ""))
    except AwsError as exc:
        return _error(exc.exit_code, str(exc), exc.remedy)
    except SourceError as exc:
        return _error(ExitCode.SOURCE_UNREADABLE, str(exc), exc.remedy)
    except (EngineUnavailable, EnginePermissionDenied, EngineError) as exc:
        return _error(ExitCode.SOURCE_UNREADABLE, str(exc), DOCKER_REMEDY)
