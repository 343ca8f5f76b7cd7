"""`gpuhost-agent wait-ready`, `gpus` and `door-health`: the CLI's readiness driver on the host, the GPUs
the comfyui role counts, and the front door's health; JSON only."""

from __future__ import annotations

import os
from typing import Any

from gpuhost.agent.common import Handlers, add_command, print_json
from gpuhost.comfyui.health import DOOR_HEALTH, HealthOptions, run_health
from gpuhost.comfyui.instances import GPUS, discover_gpus, inventory_to_dict
from gpuhost.comfyui.wait import WAIT_READY, WaitOptions, many_to_dict, wait_ready, wait_ready_many
from gpuhost.engine import EngineClient
from gpuhost.facts.cdi import collect_cdi
from gpuhost.facts.devices import collect_devices
from gpuhost.facts.gpu import GpuFacts, collect_gpu
from gpuhost.facts.source import SourceStatus
from gpuhost.model import UsageError
from gpuhost.options import Values


def cmd_wait_ready(values: Values) -> int:
    options = WaitOptions.parse(**values.for_call(WaitOptions.parse))
    if len(values.containers) == 1:
        result = wait_ready(EngineClient(values.docker_host, timeout=10.0), values.containers[0], options)
        print_json(result.to_dict())
        return result.exit_code
    results = wait_ready_many(lambda: EngineClient(values.docker_host, timeout=10.0), values.containers, options)
    summary = many_to_dict(results)
    print_json(summary)
    return int(summary["exit_code"])


def cmd_gpus(values: Values) -> int:
    """This host's GPUs and where the list comes from (gpuhost.comfyui.instances): what the comfyui role
    counts for `comfyui_instances: auto` and pins each instance to."""
    for option, path in (("--root", values.root), ("--dev-root", values.dev_root)):
        if path is not None and not os.path.isdir(path):
            raise UsageError(f"{option}: {path!r} is not a directory", f"Give an existing directory to {option}.")
    planted = os.path.realpath(values.root) != "/"
    dev_root = values.dev_root if values.dev_root is not None else os.path.join(values.root, "dev")
    gpu = (GpuFacts(status=SourceStatus.ABSENT, error="not asked under a planted --root (NVML reads the real host)")
           if planted else collect_gpu(values.root))
    inventory = discover_gpus(gpu, collect_cdi(values.root), collect_devices(dev_root), use_nvml=not planted)
    print_json(inventory_to_dict(inventory))
    return 0


def cmd_door_health(values: Values) -> int:
    """Judge the instances behind the front door every --every seconds (until stopped, or --once) and
    write the health document and the ready marker where nginx serves them."""
    options = HealthOptions.parse(**values.for_call(HealthOptions.parse, instances=values.instances or []))
    EngineClient(values.docker_host, timeout=10.0)  # a bad --docker-host is bad usage, before anything is written
    document = run_health(options, lambda: EngineClient(values.docker_host, timeout=10.0))
    print_json(document)
    return 0 if document["ready"] else 1


def add_commands(sub: Any, handlers: Handlers) -> None:
    add_command(sub, DOOR_HEALTH, cmd_door_health, handlers)
    add_command(sub, GPUS, cmd_gpus, handlers)
    add_command(sub, WAIT_READY, cmd_wait_ready, handlers)
