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


def cmd_tune_ebs(args: argparse.Namespace) -> int:
    """`gpuhost tune-ebs` on the host (instance profile credentials, the distribution's boto3)."""
    from gpuhost.ebs import aws
    from gpuhost.ebs.plan import Settings, parse_duration, parse_size
    from gpuhost.ebs.tune import TuneOptions, run

    options = TuneOptions(
        settings=Settings(
            preset=args.preset,
            iops=args.iops,
            throughput_mibs=args.throughput,
            image_bytes=parse_size(args.for_image_size) if args.for_image_size is not None else None,
            within_s=parse_duration(args.within) if args.within is not None else None,
            to_gp3=args.to_gp3,
        ),
        volume_id=args.volume_id,
        target=args.target,
        instance_id=args.instance_id,
        data_root=args.data_root,
        aws=aws.AwsOptions(region=args.region, profile=args.profile, endpoint_url=args.endpoint_url),
        dry_run=args.dry_run,
        wait=args.wait or args.wait_until is not None,
        wait_until=args.wait_until or "optimizing",
        timeout_s=parse_duration(args.timeout),
        poll_s=args.poll_interval,
        when_image_present=args.when_image_present,
    )
    try:
        result = run(options)
    except aws.AwsError as exc:
        _print({"error": str(exc), "remedy": exc.remedy, "exit_code": int(exc.exit_code)})
        return int(exc.exit_code)
    _print(result.to_dict())
    return int(result.exit_code)


def _add_tune_ebs_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--volume-id", default=None)
    parser.add_argument("--target", default="root", help="root or data-root")
    parser.add_argument("--instance-id", default=None)
    parser.add_argument("--data-root", default=None)
    parser.add_argument("--region", default=None)
    parser.add_argument("--profile", default=None)
    parser.add_argument("--endpoint-url", default=None)
    parser.add_argument("--throughput", type=int, default=None, help="MiB/s")
    parser.add_argument("--iops", type=int, default=None)
    parser.add_argument("--preset", default=None, help="baseline, pull or max")
    parser.add_argument("--for-image-size", default=None, help="e.g. 140GB")
    parser.add_argument("--within", default=None, help="e.g. 5m")
    parser.add_argument("--to-gp3", action="store_true")
    parser.add_argument("--dry-run", action="store_true")
    parser.add_argument("--wait", action="store_true")
    parser.add_argument("--wait-until", default=None, help="optimizing or completed")
    parser.add_argument("--timeout", default="30m")
    parser.add_argument("--poll-interval", type=float, default=15.0)
    parser.add_argument("--when-image-present", default=None)
    parser.add_argument("--json", action="store_true", help="accepted for symmetry: output is always JSON")


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

    tune = sub.add_parser("tune-ebs", help="tune an EBS gp3 volume (needs boto3 on the host; see gpuhost tune-ebs)")
    _add_tune_ebs_arguments(tune)
    handlers["tune-ebs"] = cmd_tune_ebs

    from gpuhost.agent_storage import add_storage_commands

    add_storage_commands(sub, handlers)

    from gpuhost.agent_comfyui import add_comfyui_commands

    add_comfyui_commands(sub, handlers)
    return parser, handlers


def main(argv: list[str] | None = None) -> int:
    parser, handlers = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:
        return int(ExitCode.USAGE) if exc.code else int(ExitCode.OK)
    try:
        return handlers[args.command](args)
    except (UsageError, ValueError) as exc:  # includes bad storage requests
        _print({"error": str(exc), "remedy": getattr(exc, "remedy", ""), "exit_code": int(ExitCode.USAGE)})
        return int(ExitCode.USAGE)
    except SourceError as exc:
        _print({"error": str(exc), "remedy": exc.remedy, "exit_code": int(ExitCode.SOURCE_UNREADABLE)})
        return int(ExitCode.SOURCE_UNREADABLE)
