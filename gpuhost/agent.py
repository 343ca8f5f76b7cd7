"""gpuhost's host-side entry point: JSON in, JSON out, standard library argparse.

This is what runs inside the zipapp on managed hosts (Ansible roles, fleet checks). It calls
the same functions as the typer CLI, so a verdict here equals `gpuhost check` on the host.
Exit codes are the CLI's (gpuhost.model.ExitCode).
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any, Callable

from gpuhost.model import ExitCode, SourceError, UsageError, to_jsonable

Handler = Callable[[argparse.Namespace], int]


def _print(payload: Any) -> None:
    sys.stdout.write(json.dumps(payload, indent=2) + "\n")


def _collect_options(args: argparse.Namespace) -> Any:
    from gpuhost.facts import CollectOptions

    return CollectOptions(
        root=args.root, dev_root=args.dev_root, docker_host=args.docker_host, daemon_json=args.daemon_json
    )


def _add_collect_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--root", default="/", help="read /proc, /sys and /etc under this directory")
    parser.add_argument("--dev-root", default="/dev")
    parser.add_argument("--docker-host", default=None)
    parser.add_argument("--daemon-json", default="/etc/docker/daemon.json")


FACT_AREAS = ("gpu", "docker", "toolkit", "cdi")


def _collect_area(area: str, args: argparse.Namespace) -> Any:
    """One collector alone: what a role needs without the cost of the whole host."""
    if area == "gpu":
        from gpuhost.facts.gpu import collect_gpu, parse_proc_driver_version

        gpu = collect_gpu(args.root)
        if args.proc_driver_version:
            try:
                with open(args.proc_driver_version, encoding="utf-8") as fh:
                    gpu.proc_driver = parse_proc_driver_version(fh.read())
            except OSError:
                gpu.proc_driver = None
        return gpu
    if area == "docker":
        from gpuhost.engine import EngineClient
        from gpuhost.facts.docker import collect_docker

        return collect_docker(EngineClient(args.docker_host, timeout=5.0), args.daemon_json, args.root)
    if area == "toolkit":
        from gpuhost.facts.toolkit import collect_toolkit

        return collect_toolkit(args.root)
    from gpuhost.facts.cdi import collect_cdi

    return collect_cdi(args.root)


def cmd_facts(args: argparse.Namespace) -> int:
    if args.area:
        _print({area: to_jsonable(_collect_area(area, args)) for area in args.area})
        return int(ExitCode.OK)
    from gpuhost.facts import collect_host_facts

    _print(to_jsonable(collect_host_facts(_collect_options(args))))
    return int(ExitCode.OK)


def cmd_check(args: argparse.Namespace) -> int:
    from gpuhost.check import run_check
    from gpuhost.rules import RuleOptions, RunAs

    run_as = RunAs.parse(args.run_as) if args.run_as else None
    report = run_check(
        _collect_options(args), RuleOptions(min_free_gib=args.min_free_gb, run_as=run_as), strict=args.strict
    )
    _print(report.to_dict())
    return int(report.exit_code)


def build_parser() -> tuple[argparse.ArgumentParser, dict[str, Handler]]:
    parser = argparse.ArgumentParser(
        prog="gpuhost-agent",
        description="gpuhost's host-side commands, JSON output only (see `gpuhost --help` for the full CLI).",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    handlers: dict[str, Handler] = {}

    facts = sub.add_parser("facts", help="collect this host's facts as JSON")
    _add_collect_arguments(facts)
    facts.add_argument(
        "--area",
        action="append",
        choices=FACT_AREAS,
        help="collect only these areas (repeatable); the output is then {area: facts}",
    )
    facts.add_argument(
        "--proc-driver-version",
        default=None,
        metavar="FILE",
        help="read the loaded driver's version from FILE instead of /proc/driver/nvidia/version (--area gpu)",
    )
    handlers["facts"] = cmd_facts

    check = sub.add_parser("check", help="facts + rules: the gpuhost.check/v1 report")
    _add_collect_arguments(check)
    check.add_argument("--strict", action="store_true")
    check.add_argument("--min-free-gb", type=float, default=20.0)
    check.add_argument("--run-as", default=None)
    check.add_argument("--json", action="store_true", help="accepted for symmetry: output is always JSON")
    handlers["check"] = cmd_check
    return parser, handlers


def main(argv: list[str] | None = None) -> int:
    parser, handlers = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:
        return int(ExitCode.USAGE) if exc.code else int(ExitCode.OK)
    try:
        return handlers[args.command](args)
    except (UsageError, ValueError) as exc:
        _print({"error": str(exc), "remedy": getattr(exc, "remedy", ""), "exit_code": int(ExitCode.USAGE)})
        return int(ExitCode.USAGE)
    except SourceError as exc:
        _print({"error": str(exc), "remedy": exc.remedy, "exit_code": int(ExitCode.SOURCE_UNREADABLE)})
        return int(ExitCode.SOURCE_UNREADABLE)
