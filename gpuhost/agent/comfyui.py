"""`gpuhost-agent wait-ready`: the CLI's readiness driver on the host, JSON only."""

from __future__ import annotations

import argparse
from typing import Any

from gpuhost.agent.common import Handlers, add_docker_host, add_json_flag, print_json
from gpuhost.comfyui.wait import WaitOptions, wait_ready
from gpuhost.engine import EngineClient


def cmd_wait_ready(args: argparse.Namespace) -> int:
    options = WaitOptions.parse(args.timeout, args.stall_timeout, args.url)
    result = wait_ready(EngineClient(args.docker_host, timeout=10.0), args.container, options)
    print_json(result.to_dict())
    return result.exit_code


def add_commands(sub: Any, handlers: Handlers) -> None:
    wait = sub.add_parser("wait-ready", help="wait until ComfyUI in a container really serves (see gpuhost wait-ready)")
    wait.add_argument("container")
    wait.add_argument("--timeout", default="10m")
    wait.add_argument("--stall-timeout", default="3m")
    wait.add_argument("--url", default=None)
    add_docker_host(wait)
    add_json_flag(wait)
    handlers["wait-ready"] = cmd_wait_ready
