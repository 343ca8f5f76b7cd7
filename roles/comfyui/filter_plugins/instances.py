"""comfyui_instances read against the host's GPUs: which containers the comfyui role runs, each pinned to
which GPU, on which port, with which directories. Pure: the role calls it before it changes anything,
and refuses the value with the reason when it cannot be honoured.

    {{ comfyui_instances | comfyui_instance_plan(gpus, settings) }}

`gpus` is `gpuhost-agent gpus` (source, gpus: [{index, uuid}], cdi_names); `settings` holds the role's
name, host_port, gpu_mode, gpu_devices and cpu_mode. The answer: {valid, why, single, count,
instances: [{name, number, host_port, gpu, gpu_uuid, labels, visible_devices, cdi_devices,
device_ids}]}.

One instance keeps the container the role always made: its name, port and directories, and its GPUs
(comfyui_gpu_devices) unless a list names one GPU. More than one: `<name>-<n>` on host_port + n, each
pinned to one GPU, labelled with its number and the GPU it was given (and that GPU's UUID).
"""

from __future__ import annotations

import re
from typing import Any

MAX_INSTANCES = 64
INDEX_RE = re.compile(r"[0-9]{1,4}")
GPU_UUID_RE = re.compile(r"GPU-[0-9A-Fa-f]{8}(-[0-9A-Fa-f]{4}){3}-[0-9A-Fa-f]{12}")
CDI_KIND = "nvidia.com/gpu"
FORMS = ("comfyui_instances is `auto` (one per GPU), a whole number from 1 to "
         f"{MAX_INSTANCES}, or a list of GPU indices (0, 1, ...) or UUIDs (GPU-...)")


class Refused(ValueError):
    pass


def _count(value: Any) -> int:
    if isinstance(value, bool):
        raise Refused(f"{value!r} is a boolean")
    if isinstance(value, float):
        raise Refused(f"{value!r} is not a whole number")
    if isinstance(value, str):
        if not INDEX_RE.fullmatch(value):
            raise Refused(f"{value!r} is neither `auto` nor a whole number (no spaces, signs or decimals)")
        value = int(value)
    if not isinstance(value, int):
        raise Refused(f"{value!r} is a {type(value).__name__}")
    if not 1 <= value <= MAX_INSTANCES:
        raise Refused(f"{value} is outside 1 to {MAX_INSTANCES}")
    return value


def _ref(item: Any) -> str:
    """One list entry as a GPU reference: an index ("2") or a UUID."""
    if isinstance(item, bool) or not isinstance(item, (int, str)):
        raise Refused(f"the list entry {item!r} is not a GPU index or UUID")
    text = str(item)
    if isinstance(item, int) and item < 0:
        raise Refused(f"the list entry {item} is negative")
    if not (INDEX_RE.fullmatch(text) or GPU_UUID_RE.fullmatch(text)):
        raise Refused(f"the list entry {text!r} is not a GPU index (0, 1, ...) or UUID (GPU-xxxxxxxx-xxxx-xxxx-xxxx-"
                      "xxxxxxxxxxxx), with no spaces")
    return str(int(text)) if INDEX_RE.fullmatch(text) else text


def _find(gpus: list[dict[str, Any]], ref: str) -> dict[str, Any] | None:
    if INDEX_RE.fullmatch(ref):
        return next((g for g in gpus if str(g.get("index")) == ref), None)
    return next((g for g in gpus if str(g.get("uuid") or "").lower() == ref.lower()), None)


def _found(inventory: dict[str, Any]) -> str:
    gpus = inventory.get("gpus") or []
    if not gpus:
        return f"no GPU found ({inventory.get('detail') or 'no source'})"
    listed = ", ".join(str(g.get("index")) for g in gpus)
    return f"{len(gpus)} GPUs found ({listed}; from {inventory.get('detail') or inventory.get('source')})"


def _targets(spec: Any, inventory: dict[str, Any], cpu_mode: bool) -> tuple[list[dict[str, Any] | None], bool]:
    """One entry per instance: the GPU it gets (None: no pin), and whether a list named them."""
    gpus = list(inventory.get("gpus") or [])
    if isinstance(spec, str) and spec == "auto":
        return ([None] if cpu_mode or len(gpus) <= 1 else list(gpus)), False
    if isinstance(spec, (list, tuple)):
        if not spec:
            raise Refused("the list is empty")
        if len(spec) > MAX_INSTANCES:
            raise Refused(f"the list has {len(spec)} entries, more than {MAX_INSTANCES}")
        refs = [_ref(item) for item in spec]
        if cpu_mode:
            if len(set(refs)) != len(refs):
                raise Refused(f"the list {refs} names a GPU twice")
            return [None] * len(refs), False
        chosen: list[dict[str, Any] | None] = []
        for ref in refs:
            gpu = _find(gpus, ref)
            if gpu is None:
                raise Refused(f"GPU {ref} is not on this host: {_found(inventory)}")
            if any(other is not None and other.get("index") == gpu.get("index") for other in chosen):
                raise Refused(f"GPU {ref} is named twice (GPU {gpu.get('index')}): one instance per GPU")
            chosen.append(dict(gpu, ref=ref))
        return chosen, True
    count = _count(spec)
    if cpu_mode or count == 1:
        return [None] * count, False
    if count > len(gpus):
        raise Refused(f"{count} instances need {count} GPUs, one each: {_found(inventory)}")
    return list(gpus[:count]), False


def _pin(gpu: dict[str, Any], mode: str, cdi_names: list[str]) -> dict[str, Any]:
    """How an instance is pinned to its GPU on the BPF-safe path of its mode."""
    index, uuid, ref = str(gpu.get("index")), str(gpu.get("uuid") or ""), str(gpu.get("ref") or "")
    if mode == "cdi":
        name = ref if ref and not INDEX_RE.fullmatch(ref) else index
        if cdi_names and name not in cdi_names:
            raise Refused(
                f"comfyui_gpu_mode: cdi pins an instance to {CDI_KIND}={name}, which no CDI spec on the host defines "
                f"(it defines {', '.join(cdi_names)}): regenerate it (`nvidia-ctk cdi generate`, or the "
                "nvidia_container_toolkit role) or use comfyui_gpu_mode: runtime")
        return {"gpu": name, "cdi_devices": [f"{CDI_KIND}={name}"], "visible_devices": None, "device_ids": None}
    chosen = ref if ref and not INDEX_RE.fullmatch(ref) else (uuid or index)
    if mode == "gpus":
        return {"gpu": chosen, "cdi_devices": None, "visible_devices": None, "device_ids": [chosen]}
    return {"gpu": chosen, "cdi_devices": None, "visible_devices": chosen, "device_ids": None}


def plan(spec: Any, inventory: Any, settings: dict[str, Any]) -> dict[str, Any]:
    inventory = inventory if isinstance(inventory, dict) else {}
    cpu_mode = bool(settings.get("cpu_mode"))
    mode = str(settings.get("gpu_mode") or "runtime")
    name = str(settings["name"])
    host_port = int(settings["host_port"])
    devices = str(settings.get("gpu_devices") or "all")
    cdi_names = [str(n) for n in inventory.get("cdi_names") or []]
    try:
        targets, listed = _targets(spec, inventory, cpu_mode)
        if host_port + len(targets) - 1 > 65535:
            raise Refused(f"{len(targets)} instances need ports {host_port} to {host_port + len(targets) - 1}, "
                          "past 65535: lower comfyui_host_port")
        single = len(targets) == 1
        instances = []
        for number, gpu in enumerate(targets):
            labels = {"gpuhost.comfyui": "1"}
            if not single:
                labels["gpuhost.comfyui.instance"] = str(number)
            if gpu is not None:
                pin = _pin(gpu, mode, cdi_names)
                labels["gpuhost.comfyui.gpu"] = pin["gpu"]
                labels["gpuhost.comfyui.gpu-uuid"] = str(gpu.get("uuid") or "")
            elif cpu_mode:
                pin = {"gpu": "", "cdi_devices": None, "visible_devices": None, "device_ids": None}
            else:  # the one instance the role always ran: comfyui_gpu_devices, as before
                pin = {"gpu": "", "cdi_devices": [f"{CDI_KIND}={devices}"], "visible_devices": devices,
                       "device_ids": None}
            instances.append({
                "name": name if single else f"{name}-{number}",
                "number": number,
                "host_port": host_port + number,
                "gpu": pin["gpu"],
                "gpu_uuid": str(gpu.get("uuid") or "") if gpu is not None else "",
                "labels": labels,
                "visible_devices": pin["visible_devices"],
                "cdi_devices": pin["cdi_devices"],
                "device_ids": pin["device_ids"],
            })
    except Refused as exc:
        return {"valid": False, "why": f"{FORMS}: {exc}.", "single": True, "count": 0, "instances": [],
                "listed": False}
    return {"valid": True, "why": "", "single": single, "count": len(instances), "instances": instances,
            "listed": listed}


def volumes(instance: dict[str, Any], single: bool, data_dir: str, container_paths: dict[str, Any],
            private_keys: list[str]) -> list[str]:
    """An instance's data mounts, host:container[:ro]: one instance has every folder under data_dir, as it
    always had; each of several has its private folders (user, output, ...) under data_dir/instances/<name>/
    and shares the rest, the models read-only."""
    mounts = []
    for key, target in container_paths.items():
        if not target:
            continue
        if single:
            mounts.append(f"{data_dir}/{key}:{target}")
        elif key in private_keys:
            mounts.append(f"{data_dir}/instances/{instance['name']}/{key}:{target}")
        else:
            mounts.append(f"{data_dir}/{key}:{target}" + (":ro" if key == "models" else ""))
    return mounts


def wait_report(failed: list[dict[str, Any]]) -> list[str]:
    """The lines the play fails with: for each instance that is not ready, its verdict, the failing line,
    what to do and the log's last lines."""
    lines: list[str] = []
    for result in failed:
        verdict = result.get("json") or {}
        tail = list(verdict.get("tail") or [])
        lines += [
            f"ComfyUI in container {result.get('instance')} is not ready: {verdict.get('verdict')} "
            f"({verdict.get('reason')}) after {verdict.get('elapsed_s')} s: {verdict.get('message')}",
            f"failing line: {verdict.get('failing_line') or '(none)'}",
            f"what to do: {verdict.get('remedy')}",
            f"last {len(tail)} log lines:",
            *tail,
        ]
    return lines


class FilterModule:
    def filters(self) -> dict[str, Any]:
        return {"comfyui_instance_plan": plan, "comfyui_instance_volumes": volumes, "comfyui_wait_report": wait_report}
