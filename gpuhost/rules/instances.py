"""ComfyUI instances and their GPUs: one GPU each, a GPU the host still has, the GPU they were given.

The GPUs the containers are pinned to come from Docker (their nvidia runtime's NVIDIA_VISIBLE_DEVICES,
their CDI devices, their --gpus requests); the host's GPUs from NVML, else its CDI spec, else its
/dev/nvidia[0-9]+ nodes (gpuhost.comfyui.instances); what each was given from the labels roles/comfyui
put on it. Only the containers of roles/comfyui (label gpuhost.comfyui) that can run are judged.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from gpuhost.comfyui.instances import ALL, GpuInventory, Instance, discover_gpus, instances_of
from gpuhost.model import Finding, Severity

if TYPE_CHECKING:
    from gpuhost.hostfacts import HostFacts
    from gpuhost.rules.options import RuleOptions

AREA = "comfyui"
RERUN = "Run the comfyui role again (comfyui_instances: auto pins one instance per GPU the host has now)"


def inventory_of(facts: HostFacts) -> GpuInventory:
    return discover_gpus(facts.gpu, facts.cdi, facts.devices)


def _gpu_keys(instance: Instance, inventory: GpuInventory) -> set[str]:
    """The host's GPUs (by index) an instance is pinned to; "all" stands for every one."""
    keys: set[str] = set()
    for ref in instance.pinned:
        if ref == ALL:
            keys |= {str(g.index) for g in inventory.gpus} or {ALL}
            continue
        gpu = inventory.find(ref)
        keys.add(str(gpu.index) if gpu is not None else f"?{ref}")
    return keys


def _live_gpu_instances(facts: HostFacts) -> list[Instance]:
    return [i for i in instances_of(facts.docker.containers) if i.live and i.pinned]


def shared(facts: HostFacts, options: RuleOptions) -> list[Finding]:
    """Two instances on one GPU: they share its memory, and the second model load fails with out-of-memory."""
    inventory = inventory_of(facts)
    instances = _live_gpu_instances(facts)
    if len(instances) < 2:
        return []
    holders: dict[str, list[str]] = {}
    for instance in instances:
        for key in _gpu_keys(instance, inventory):
            holders.setdefault(key, []).append(instance.name)
    if ALL in holders:  # "all" on a host whose GPUs are unknown overlaps every other instance
        for key in list(holders):
            if key != ALL:
                holders[ALL] = sorted(set(holders[ALL]) | set(holders[key]))
    crowded = {key: names for key, names in holders.items() if len(names) > 1 and not key.startswith("?")}
    evidence: dict[str, Any] = {"instances": {i.name: i.pinned for i in instances}, "gpu_source": inventory.source}
    if not crowded:
        return [Finding("comfyui.gpu-shared", AREA, Severity.OK,
                        f"{len(instances)} ComfyUI instances, each on a GPU of its own", "", evidence)]
    findings = []
    for key, names in sorted(crowded.items()):
        gpu = inventory.find(key) if key != ALL else None
        shown = "every GPU" if key == ALL else f"GPU {key}" + (f" ({gpu.uuid})" if gpu and gpu.uuid else "")
        findings.append(Finding(
            "comfyui.gpu-shared", AREA, Severity.FAIL,
            f"{shown} is given to {len(names)} ComfyUI instances ({', '.join(sorted(names))}): they share its memory, "
            "and a second model load fails with out-of-memory",
            f"One instance per GPU. {RERUN}, and remove containers started by hand with a GPU another already has "
            "(`docker inspect -f '{{.Config.Env}} {{.HostConfig.DeviceRequests}}' NAME` shows what each has).",
            {**evidence, "gpu": key, "holders": sorted(names)}))
    return findings


def gone(facts: HostFacts, options: RuleOptions) -> list[Finding]:
    """An instance pinned to a GPU the host does not have (a GPU that fell off the bus, another instance type)."""
    inventory = inventory_of(facts)
    if not inventory.gpus:
        return []  # no GPU list to judge by: gpu.driver says why
    findings = []
    for instance in _live_gpu_instances(facts):
        missing = [ref for ref in instance.pinned if ref != ALL and inventory.find(ref) is None]
        if not missing:
            continue
        listed = ", ".join(str(g.index) for g in inventory.gpus)
        findings.append(Finding(
            "comfyui.gpu-gone", AREA, Severity.FAIL,
            f"ComfyUI instance {instance.name} is pinned to GPU {', '.join(missing)}, which this host does not have "
            f"(it has {len(inventory.gpus)}: {listed}, from {inventory.detail}): it cannot start or restart",
            f"Check the GPUs (`nvidia-smi -L`; `gpuhost check` gpu rules: a GPU that fell off the bus needs a reboot "
            f"or a new instance). {RERUN}.",
            {"container": instance.name, "pinned": instance.pinned, "missing": missing,
             "gpus": [g.index for g in inventory.gpus], "gpu_source": inventory.source}))
    return findings


def mismatch(facts: HostFacts, options: RuleOptions) -> list[Finding]:
    """An instance whose GPU is not the one it was given: pinned elsewhere since (a container made again by
    hand), or pinned by index to a slot that now holds another GPU (the order changed)."""
    inventory = inventory_of(facts)
    findings = []
    for instance in _live_gpu_instances(facts):
        if not instance.given:
            continue
        evidence = {"container": instance.name, "given": instance.given, "given_uuid": instance.given_uuid,
                    "pinned": instance.pinned, "gpu_source": inventory.source}
        if instance.pinned != [instance.given]:
            findings.append(Finding(
                "comfyui.gpu-mismatch", AREA, Severity.FAIL,
                f"ComfyUI instance {instance.name} was given GPU {instance.given} but is pinned to "
                f"{', '.join(instance.pinned)}: it was made again by hand, or another tool changed it",
                f"{RERUN}: it makes the container again with the GPU it was given.", evidence))
            continue
        gpu = inventory.find(instance.given)
        if gpu is not None and instance.given_uuid and gpu.uuid and gpu.uuid.lower() != instance.given_uuid.lower():
            findings.append(Finding(
                "comfyui.gpu-mismatch", AREA, Severity.FAIL,
                f"ComfyUI instance {instance.name} was given GPU {instance.given} ({instance.given_uuid}), but GPU "
                f"{instance.given} is now {gpu.uuid}: the GPUs' order changed (one gone, replaced or reset), so it "
                "runs on another GPU than it was given, perhaps one another instance has",
                f"{RERUN}: it pins each instance to a GPU by UUID where it can (comfyui_gpu_mode: runtime).",
                {**evidence, "now_uuid": gpu.uuid}))
    return findings
