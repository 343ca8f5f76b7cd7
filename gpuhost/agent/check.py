"""`gpuhost-agent facts` and `gpuhost-agent check`: what roles and fleet checks read from a host."""

from __future__ import annotations

import argparse
from typing import Any

from gpuhost import userfile
from gpuhost.agent.common import Handlers, add_collect_arguments, add_json_flag, print_json
from gpuhost.check import CheckOptions, run_check
from gpuhost.engine import EngineClient
from gpuhost.facts.boot import collect_boot
from gpuhost.facts.cdi import collect_cdi
from gpuhost.facts.docker import collect_docker
from gpuhost.facts.gpu import collect_gpu, parse_proc_driver_version
from gpuhost.facts.kernel import collect_kernel
from gpuhost.facts.toolkit import collect_toolkit
from gpuhost.hostfacts import collect_host_facts
from gpuhost.model import ExitCode, to_jsonable

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
    options = _check_options(args, min_free_gb=args.min_free_gb, run_as=args.run_as, strict=args.strict)
    report = run_check(options.collect, options.rules, strict=options.strict)
    print_json(report.to_dict())
    return int(report.exit_code)


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

    check = sub.add_parser("check", help="facts + rules: the gpuhost.check/v1 report")
    add_collect_arguments(check)
    check.add_argument("--strict", action="store_true")
    check.add_argument("--min-free-gb", type=float, default=20.0)
    check.add_argument("--run-as", default=None)
    add_json_flag(check)
    handlers["check"] = cmd_check
