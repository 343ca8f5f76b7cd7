"""`gpuhost-agent wait-ready`: the CLI's readiness driver on the host, JSON only."""

from __future__ import annotations

import argparse
import os
from typing import Any

from gpuhost.agent.common import Handlers, add_docker_host, add_json_flag, print_json
from gpuhost.comfyui.health import HealthOptions, run_health
from gpuhost.comfyui.instances import discover_gpus, inventory_to_dict
from gpuhost.comfyui.wait import WaitOptions, many_to_dict, wait_ready, wait_ready_many
from gpuhost.engine import EngineClient
from gpuhost.facts.cdi import collect_cdi
from gpuhost.facts.devices import collect_devices
from gpuhost.facts.gpu import GpuFacts, collect_gpu
from gpuhost.facts.source import SourceStatus
from gpuhost.model import UsageError


def cmd_wait_ready(args: argparse.Namespace) -> int:
    options = WaitOptions.parse(args.timeout, args.stall_timeout, args.url)
    if len(args.container) == 1:
        result = wait_ready(EngineClient(args.docker_host, timeout=10.0), args.container[0], options)
        print_json(result.to_dict())
        return result.exit_code
    results = wait_ready_many(lambda: EngineClient(args.docker_host, timeout=10.0), args.container, options)
    summary = many_to_dict(results)
    print_json(summary)
    return int(summary["exit_code"])


def cmd_gpus(args: argparse.Namespace) -> int:
    """This host's GPUs and where the list comes from (gpuhost.comfyui.instances): what the comfyui role
    counts for `comfyui_instances: auto` and pins each instance to."""
    for option, path in (("--root", args.root), ("--dev-root", args.dev_root)):
        if path is not None and not os.path.isdir(path):
            raise UsageError(f"{option}: {path!r} is not a directory", f"Give an existing directory to {option}.")
    planted = os.path.realpath(args.root) != "/"
    dev_root = args.dev_root if args.dev_root is not None else os.path.join(args.root, "dev")
    gpu = (GpuFacts(status=SourceStatus.ABSENT, error="not asked under a planted --root (NVML reads the real host)")
           if planted else collect_gpu(args.root))
    inventory = discover_gpus(gpu, collect_cdi(args.root), collect_devices(dev_root), use_nvml=not planted)
    print_json(inventory_to_dict(inventory))
    return 0


def cmd_door_health(args: argparse.Namespace) -> int:
    """Judge the instances behind the front door every --every seconds (until stopped, or --once) and
    write the health document and the ready marker where nginx serves them."""
    options = HealthOptions.parse(args.write, args.instance or [], args.every, args.once)
    EngineClient(args.docker_host, timeout=10.0)  # a bad --docker-host is bad usage, before anything is written
    document = run_health(options, lambda: EngineClient(args.docker_host, timeout=10.0))
    print_json(document)
    return 0 if document["ready"] else 1


def add_commands(sub: Any, handlers: Handlers) -> None:
    health = sub.add_parser("door-health", help="judge the front door's ComfyUI instances and write its health JSON")
    health.add_argument("--write", required=True, metavar="DIR", help="where health.json and the ready marker go")
    health.add_argument("--instance", action="append", metavar="NUMBER:CONTAINER",
                        help="an instance behind the door (repeat for each), e.g. 0:comfyui-0")
    health.add_argument("--every", default="10s", help="how often (default 10s)")
    health.add_argument("--once", action="store_true", help="judge and write once, then exit (0: some instance ready)")
    add_docker_host(health)
    add_json_flag(health)
    handlers["door-health"] = cmd_door_health

    gpus = sub.add_parser("gpus", help="list this host's GPUs (NVML, else the CDI spec, else /dev/nvidia[0-9]+)")
    gpus.add_argument("--root", default="/", help="read /etc/cdi, /var/run/cdi (and /dev) under this directory")
    gpus.add_argument("--dev-root", default=None, help="where the device nodes are (default: ROOT/dev)")
    add_json_flag(gpus)
    handlers["gpus"] = cmd_gpus


    wait = sub.add_parser("wait-ready", help="wait until ComfyUI in a container really serves (see gpuhost wait-ready)")
    wait.add_argument("container", nargs="+", help="one container, or several (the instances) judged at once")
    wait.add_argument("--timeout", default="10m")
    wait.add_argument("--stall-timeout", default="3m")
    wait.add_argument("--url", default=None)
    add_docker_host(wait)
    add_json_flag(wait)
    handlers["wait-ready"] = cmd_wait_ready
