"""`gpuhost-agent facts` and `gpuhost-agent check`: what roles and fleet checks read from a host."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from gpuhost import userfile
from gpuhost.agent.common import Handlers, add_collect_arguments, add_json_flag, print_json
from gpuhost.check import CheckOptions, run_check
from gpuhost.engine import EngineClient, EngineError, EnginePermissionDenied, EngineUnavailable
from gpuhost.facts.boot import collect_boot
from gpuhost.facts.cdi import collect_cdi
from gpuhost.facts.docker import collect_docker
from gpuhost.facts.gpu import collect_gpu, parse_proc_driver_version
from gpuhost.facts.kernel import collect_kernel
from gpuhost.facts.toolkit import collect_toolkit
from gpuhost.hostfacts import collect_host_facts
from gpuhost.metrics.report import render_report
from gpuhost.metrics.textfile import (
    CHECK_FILE,
    check_directory_option,
    require_writable_directory,
    write_atomically,
    write_run,
)
from gpuhost.model import ExitCode, SourceError, UsageError, for_humans, to_jsonable

FACT_AREAS = ("gpu", "docker", "toolkit", "cdi", "boot")


def _check_options(args: argparse.Namespace, **rules: Any) -> CheckOptions:
    return CheckOptions.parse(
        root=args.root, dev_root=args.dev_root, docker_host=args.docker_host, daemon_json=args.daemon_json, **rules
    )


def _collect_area(area: str, args: argparse.Namespace) -> Any:
    """One collector alone: what a role needs without the cost of the whole host."""
    if area == "gpu":
        gpu = collect_gpu(args.root)
        if args.proc_driver_version:
            try:
                text = userfile.read_text(args.proc_driver_version, "--proc-driver-version", userfile.PROC_MAX,
                                          errors="replace")
            except userfile.UserFileError as exc:
                if not exc.missing:  # a FIFO, a device, a directory, a huge file: exit 2, named
                    raise
                gpu.proc_driver = None  # no such file: no module loaded
            else:
                gpu.proc_driver = parse_proc_driver_version(text)
        return gpu
    if area == "docker":
        return collect_docker(EngineClient(args.docker_host, timeout=5.0), args.daemon_json, args.root)
    if area == "toolkit":
        return collect_toolkit(args.root)
    if area == "boot":
        return collect_boot(args.root, collect_kernel(args.root).release)
    return collect_cdi(args.root)


def cmd_facts(args: argparse.Namespace) -> int:
    options = _check_options(args)
    if args.area:
        print_json({area: to_jsonable(_collect_area(area, args)) for area in args.area})
    else:
        print_json(to_jsonable(collect_host_facts(options.collect)))
    return int(ExitCode.OK)


def cmd_check(args: argparse.Namespace) -> int:
    if args.json and args.format != "json":
        raise UsageError(f"--json and --format {args.format} ask for two outputs: give one")
    if args.textfile_directory is not None:
        if args.format != "prometheus":
            raise UsageError("--textfile-directory writes Prometheus metrics: add --format prometheus")
        return write_textfile(args)
    options = _check_options(args, min_free_gb=args.min_free_gb, run_as=args.run_as, strict=args.strict)
    report = run_check(options.collect, options.rules, strict=options.strict)
    if args.format == "prometheus":
        sys.stdout.write(render_report(report))
    else:
        print_json(report.to_dict())
    return int(report.exit_code)


def _failure_code(exc: Exception) -> ExitCode:
    if isinstance(exc, (UsageError, ValueError)):
        return ExitCode.USAGE
    if isinstance(exc, (SourceError, EngineUnavailable, EnginePermissionDenied, EngineError)):
        return ExitCode.SOURCE_UNREADABLE
    return ExitCode.FAILING


def write_textfile(args: argparse.Namespace) -> int:
    """The metrics timer's run: the check into gpuhost.prom, the run's outcome into gpuhost-run.prom.

    Exit 0 when the check ran, whatever it found (the findings are the metrics); a check that fails to run
    keeps the previous gpuhost.prom, exports its failure and exits 1, 2 or 3 as the check would."""
    directory = check_directory_option(args.textfile_directory)
    require_writable_directory(directory)
    try:
        options = _check_options(args, min_free_gb=args.min_free_gb, run_as=args.run_as, strict=args.strict)
        report = run_check(options.collect, options.rules, strict=options.strict)
        text = render_report(report)
    except Exception as exc:  # whatever stopped the check, the textfile says it failed
        code = _failure_code(exc)
        write_run(directory, success=False, exit_code=int(code))
        remedy = getattr(exc, "remedy", "") or "The previous check's metrics stay in place; see the message."
        print_json({
            "error": for_humans(f"gpuhost check did not run: {type(exc).__name__}: {exc}"),
            "remedy": for_humans(remedy),
            "exit_code": int(code),
            "kept": CHECK_FILE,
        })
        return int(code)
    path = write_atomically(directory, CHECK_FILE, text)
    write_run(directory, success=True, exit_code=int(report.exit_code))
    print_json({
        "written": path,
        "host": report.host,
        "verdict": report.verdict.value,
        "check_exit_code": int(report.exit_code),
        "duration_ms": report.duration_ms,
    })
    return int(ExitCode.OK)


def add_commands(sub: Any, handlers: Handlers) -> None:
    facts = sub.add_parser("facts", help="collect this host's facts as JSON")
    add_collect_arguments(facts)
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

    check = sub.add_parser(
        "check", help="facts + rules: the gpuhost.check/v1 report (JSON), or Prometheus metrics (--format prometheus)"
    )
    add_collect_arguments(check)
    check.add_argument("--strict", action="store_true")
    check.add_argument("--min-free-gb", type=float, default=20.0)
    check.add_argument("--run-as", default=None)
    add_json_flag(check)
    check.add_argument(
        "--format",
        choices=("json", "prometheus"),
        default="json",
        help="json: the report (default); prometheus: the text exposition format (docs/monitoring.md)",
    )
    check.add_argument(
        "--textfile-directory",
        default=None,
        metavar="DIR",
        help="with --format prometheus: write gpuhost.prom and gpuhost-run.prom atomically into node_exporter's "
        "textfile directory DIR and print a JSON summary; exit 0 when the check ran",
    )
    handlers["check"] = cmd_check
