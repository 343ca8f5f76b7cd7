"""ComfyUI instances, one container per GPU: which GPUs this host has (what `comfyui_instances: auto`
counts), and which GPUs each instance container is pinned to, read from its Docker settings.

Where the GPUs come from, first found wins:
  nvml          the driver's own list (what `nvidia-smi -L` prints): index, UUID, product name
  cdi           the nvidia.com/gpu CDI spec: its devices named by index ("0", "1", ...), each joined to
                the device named by its UUID through the device node both give (/dev/nvidia0)
  device-nodes  the /dev/nvidia[0-9]+ character devices the driver creates, one per GPU (no UUIDs)
NVML reads the real host whatever root a planted tree has, so it is not asked when one is given.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Optional

from gpuhost.comfyui.facts import ComfyUIFacts
from gpuhost.comfyui.readiness import Phase
from gpuhost.facts.cdi import CdiFacts
from gpuhost.facts.devices import DeviceFacts
from gpuhost.facts.docker import ContainerGpuAccess
from gpuhost.facts.gpu import GpuFacts
from gpuhost.facts.source import SourceStatus
from gpuhost.options import Command, Option, json_flag

# the labels roles/comfyui puts on each container of a multi-instance deployment (one instance keeps
# the container it always had: `gpuhost.comfyui` alone)
ROLE_LABEL = "gpuhost.comfyui"
INSTANCE_LABEL = "gpuhost.comfyui.instance"
GPU_LABEL = "gpuhost.comfyui.gpu"
GPU_UUID_LABEL = "gpuhost.comfyui.gpu-uuid"
CDI_KIND = "nvidia.com/gpu"
ALL = "all"
DEVICE_NODE_RE = re.compile(r"/dev/nvidia(\d+)")
NODE_NAME_RE = re.compile(r"nvidia(\d+)")
GPU_UUID_RE = re.compile(r"GPU-[0-9A-Fa-f]{8}(-[0-9A-Fa-f]{4}){3}-[0-9A-Fa-f]{12}")
INDEX_RE = re.compile(r"\d{1,4}")
LIVE_STATES = ("running", "created", "restarting", "paused")


@dataclass
class HostGpu:
    index: int
    uuid: str = ""
    node: str = ""
    name: str = ""


@dataclass
class GpuInventory:
    source: str = "none"  # nvml, cdi, device-nodes or none
    detail: str = ""
    gpus: list[HostGpu] = field(default_factory=list)
    # the nvidia.com/gpu device names the valid CDI specs define (what a cdi-mode pin may name)
    cdi_names: list[str] = field(default_factory=list)

    def find(self, ref: str) -> Optional[HostGpu]:
        """The GPU an index ("2") or a UUID names; None when this host has none such."""
        if INDEX_RE.fullmatch(ref):
            return next((gpu for gpu in self.gpus if gpu.index == int(ref)), None)
        return next((gpu for gpu in self.gpus if gpu.uuid and gpu.uuid.lower() == ref.lower()), None)


def _cdi_gpus(cdi: CdiFacts) -> tuple[list[HostGpu], list[str], str]:
    names: list[str] = []
    for spec in cdi.specs:
        if spec.valid and spec.kind == CDI_KIND:
            names.extend(spec.devices)
            by_node: dict[str, str] = {}
            for name, paths in spec.device_paths.items():
                if GPU_UUID_RE.fullmatch(name):
                    for path in paths:
                        by_node[path] = name
            gpus = []
            for name in spec.devices:
                if not INDEX_RE.fullmatch(name):
                    continue
                nodes = [p for p in spec.device_paths.get(name, []) if DEVICE_NODE_RE.fullmatch(p)]
                node = nodes[0] if nodes else ""
                gpus.append(HostGpu(index=int(name), uuid=by_node.get(node, ""), node=node))
            if gpus:
                return sorted(gpus, key=lambda g: g.index), sorted(set(names)), spec.path
    return [], sorted(set(names)), ""


def discover_gpus(gpu: GpuFacts, cdi: CdiFacts, devices: DeviceFacts, use_nvml: bool = True) -> GpuInventory:
    """This host's GPUs from the first source that has them (see the module's docstring)."""
    cdi_gpus, cdi_names, cdi_path = _cdi_gpus(cdi)
    if use_nvml and gpu.status is SourceStatus.OK and gpu.gpus:
        listed = [HostGpu(index=d.index, uuid=d.uuid,
                          node=f"/dev/nvidia{d.minor_number}" if d.minor_number is not None else "", name=d.name)
                  for d in gpu.gpus]
        return GpuInventory("nvml", f"NVML, driver {gpu.driver_version}", listed, cdi_names)
    if cdi_gpus:
        return GpuInventory("cdi", f"the CDI spec {cdi_path}", cdi_gpus, cdi_names)
    nodes = []
    for node in devices.nodes:
        match = NODE_NAME_RE.fullmatch(node.path.rsplit("/", 1)[-1])
        if match and node.is_char_device:
            nodes.append((int(match.group(1)), node.path))
    if nodes:
        listed = [HostGpu(index=position, node=f"/dev/nvidia{number}")
                  for position, (number, _) in enumerate(sorted(nodes))]
        return GpuInventory("device-nodes", f"{len(listed)} /dev/nvidia[0-9]+ device nodes", listed, cdi_names)
    why = gpu.error or "no NVIDIA GPU found"
    return GpuInventory("none", f"no GPU found: NVML: {why}; no nvidia.com/gpu CDI spec; no /dev/nvidia[0-9]+ node",
                        [], cdi_names)


def inventory_to_dict(inventory: GpuInventory) -> dict[str, Any]:
    return {
        "source": inventory.source,
        "detail": inventory.detail,
        "count": len(inventory.gpus),
        "gpus": [{"index": g.index, "uuid": g.uuid, "node": g.node, "name": g.name} for g in inventory.gpus],
        "cdi_names": inventory.cdi_names,
    }


def pinned_refs(container: ContainerGpuAccess) -> list[str]:
    """The GPUs a container is given, as Docker holds them: indices, UUIDs or "all" (its nvidia runtime's
    NVIDIA_VISIBLE_DEVICES, its nvidia.com/gpu CDI devices, its --gpus device requests)."""
    refs: list[str] = []
    if "nvidia-runtime" in container.gpu_paths and container.nvidia_visible_devices:
        refs.extend(part.strip() for part in container.nvidia_visible_devices.split(",") if part.strip())
    for name in container.cdi_devices:
        kind, _, device = name.partition("=")
        if kind == CDI_KIND and device:
            refs.append(device)
    for request in container.device_requests:
        ids = request.get("DeviceIDs") or []
        if isinstance(ids, list) and ids:
            refs.extend(str(i) for i in ids)
        elif request.get("Count") == -1:
            refs.append(ALL)
    return list(dict.fromkeys(refs))


@dataclass
class Instance:
    """A ComfyUI container of roles/comfyui: what it was given (its labels) and what it is pinned to."""

    name: str
    state: str
    instance: str  # its number in a multi-instance deployment, "" for the one-instance container
    given: str  # the GPU the role gave it (an index or a UUID), "" when none was recorded
    given_uuid: str  # that GPU's UUID when the role deployed it
    pinned: list[str]
    ports: list[str]

    @property
    def live(self) -> bool:
        return self.state in LIVE_STATES


def instances_of(containers: list[ContainerGpuAccess]) -> list[Instance]:
    """The containers roles/comfyui made (label gpuhost.comfyui), in instance order."""
    found = []
    for container in containers:
        if ROLE_LABEL not in container.labels:
            continue
        ports = [f"{b.get('HostIp') or '0.0.0.0'}:{b.get('HostPort')}"
                 for bindings in container.ports.values() for b in bindings if b.get("HostPort")]
        found.append(Instance(
            name=container.name, state=container.state, instance=container.labels.get(INSTANCE_LABEL, ""),
            given=container.labels.get(GPU_LABEL, ""), given_uuid=container.labels.get(GPU_UUID_LABEL, ""),
            pinned=pinned_refs(container), ports=ports,
        ))
    return sorted(found, key=lambda i: (int(i.instance) if i.instance.isdigit() else -1, i.name))


def instance_list(containers: list[ContainerGpuAccess], comfyui: ComfyUIFacts,
                  inventory: GpuInventory) -> list[dict[str, Any]]:
    """Each instance as `gpuhost check --json` lists it: what it was given, what it is pinned to (the host's
    GPUs it resolves to) and its readiness verdict."""
    verdicts = {c.name: c.verdict for c in comfyui.containers}
    listed = []
    for instance in instances_of(containers):
        gpus: list[dict[str, Any]] = []
        for ref in instance.pinned:
            found = inventory.gpus if ref == ALL else [g for g in [inventory.find(ref)] if g is not None]
            gpus.extend({"index": g.index, "uuid": g.uuid} for g in found)
        verdict = verdicts.get(instance.name)
        listed.append({
            "name": instance.name,
            "instance": instance.instance,
            "state": instance.state,
            "given": instance.given,
            "given_uuid": instance.given_uuid,
            "pinned": instance.pinned,
            "gpus": gpus,
            "ports": instance.ports,
            "ready": verdict.phase is Phase.READY if verdict is not None else None,
            "verdict": verdict.phase.value if verdict is not None else "",
            "reason": verdict.reason if verdict is not None else "",
        })
    return listed


GPUS = Command(
    cli="",
    agent="gpus",
    summary="list this host's GPUs (NVML, else the CDI spec, else /dev/nvidia[0-9]+)",
    options=(
        Option("--root", "Read /etc/cdi, /var/run/cdi (and /dev) under this directory.", kind="path", default="/"),
        Option("--dev-root", "Where the device nodes are (default: ROOT/dev).", kind="path"),
        json_flag("the GPUs"),
    ),
)
