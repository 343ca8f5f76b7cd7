"""The agent's ComfyUI commands (`gpuhost-agent wait-ready`): the CLI's functions, JSON only."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any, Callable

from gpuhost.model import SourceError

Handler = Callable[[argparse.Namespace], int]


def _print(payload: Any) -> None:
    sys.stdout.write(json.dumps(payload, indent=2) + "\n")


def cmd_wait_ready(args: argparse.Namespace) -> int:
    """`gpuhost wait-ready` on the host: the same driver and readiness machine, JSON only."""
    from gpuhost.comfyui.wait import WaitOptions, wait_ready
    from gpuhost.ebs.plan import parse_duration
    from gpuhost.engine import EngineClient, EngineError, EnginePermissionDenied, EngineUnavailable

    options = WaitOptions(
        timeout=parse_duration(args.timeout), stall_timeout=parse_duration(args.stall_timeout), url=args.url
    )
    try:
        result = wait_ready(EngineClient(args.docker_host, timeout=10.0), args.container, options)
    except (EngineUnavailable, EnginePermissionDenied, EngineError) as exc:
        raise SourceError("Docker", str(exc), "Start Docker, or run as root / a member of the docker group.") from exc
    _print(result.to_dict())
    return result.exit_code


def add_comfyui_commands(sub: Any, handlers: dict[str, Handler]) -> None:
    wait = sub.add_parser("wait-ready", help="wait until ComfyUI in a container really serves (see gpuhost wait-ready)")
    wait.add_argument("container")
    wait.add_argument("--timeout", default="10m")
    wait.add_argument("--stall-timeout", default="3m")
    wait.add_argument("--url", default=None)
    wait.add_argument("--docker-host", default=None)
    wait.add_argument("--json", action="store_true", help="accepted for symmetry: output is always JSON")
    handlers["wait-ready"] = cmd_wait_ready
