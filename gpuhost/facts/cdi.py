"""CDI spec files under /etc/cdi and /var/run/cdi: validity, devices, driver version."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from typing import Any

from gpuhost import userfile

SPEC_DIRS = ("/etc/cdi", "/var/run/cdi")
_DRIVER_LIB = re.compile(r"/lib(?:cuda|nvidia-ml|nvidia-ptxjitcompiler)\.so\.(\d+\.\d+(?:\.\d+)?)$")


@dataclass
class CdiSpec:
    path: str
    valid: bool = False
    error: str = ""
    cdi_version: str = ""
    kind: str = ""
    devices: list[str] = field(default_factory=list)
    # the driver the spec was generated for, read from the library paths it mounts
    driver_version: str = ""
    mtime: float = 0.0
    # every deviceNodes path and hooks[].path the spec names (common edits and per device); None: not read
    device_nodes: list[str] | None = None
    hook_paths: list[str] = field(default_factory=list)
    # hook binaries that do not exist on this host
    missing_hooks: list[str] = field(default_factory=list)

    @property
    def qualified_devices(self) -> list[str]:
        return [f"{self.kind}={name}" for name in self.devices]


@dataclass
class CdiFacts:
    spec_dirs: list[str] = field(default_factory=list)
    specs: list[CdiSpec] = field(default_factory=list)


def _walk_host_paths(edits: Any) -> list[str]:
    paths: list[str] = []
    if not isinstance(edits, dict):
        return paths
    for mount in edits.get("mounts") or []:
        if isinstance(mount, dict) and mount.get("hostPath"):
            paths.append(str(mount["hostPath"]))
    for node in edits.get("deviceNodes") or []:
        if isinstance(node, dict):
            paths.append(str(node.get("hostPath") or node.get("path") or ""))
    for hook in edits.get("hooks") or []:
        if isinstance(hook, dict):
            paths.extend(str(a) for a in hook.get("args") or [])
    return paths


def driver_version_of(spec: dict[str, Any]) -> str:
    paths = _walk_host_paths(spec.get("containerEdits"))
    for device in spec.get("devices") or []:
        if isinstance(device, dict):
            paths.extend(_walk_host_paths(device.get("containerEdits")))
    for path in paths:
        match = _DRIVER_LIB.search(path)
        if match:
            return match.group(1)
    return ""


def nodes_and_hooks(spec: dict[str, Any]) -> tuple[list[str], list[str]]:
    edits = [spec.get("containerEdits")] + [
        d.get("containerEdits") for d in spec.get("devices") or [] if isinstance(d, dict)
    ]
    nodes: set[str] = set()
    hooks: set[str] = set()
    for edit in edits:
        if not isinstance(edit, dict):
            continue
        for node in edit.get("deviceNodes") or []:
            if isinstance(node, dict) and node.get("path"):
                nodes.add(str(node["path"]))
        for hook in edit.get("hooks") or []:
            if isinstance(hook, dict) and hook.get("path"):
                hooks.add(str(hook["path"]))
    return sorted(nodes), sorted(hooks)


_EDIT_LISTS = ("env", "deviceNodes", "mounts", "hooks")


def _edits_shape_error(edits: Any, where: str) -> str:
    if edits is None:
        return ""
    if not isinstance(edits, dict):
        return f"{where} is not a mapping"
    for key in _EDIT_LISTS:
        items = edits.get(key)
        if items is not None and not isinstance(items, list):
            return f"{where}.{key} is not a list"
        for item in items or []:
            if key != "env" and not isinstance(item, dict):
                return f"{where}.{key} holds {type(item).__name__} entries, not mappings"
            if key == "hooks" and not isinstance(item.get("args") or [], list):
                return f"{where}.hooks[].args is not a list"
    return ""


def shape_error(data: dict[str, Any]) -> str:
    """What in a spec's structure is of the wrong type ("" when none): `devices: 5` and the like
    are an invalid spec, not a crash of the collector."""
    for key in ("cdiVersion", "kind"):
        if data.get(key) is not None and not isinstance(data[key], str):
            return f"{key} is not a string"
    devices = data.get("devices")
    if devices is not None and not isinstance(devices, list):
        return "devices is not a list"
    for device in devices or []:
        if not isinstance(device, dict):
            return f"devices holds a {type(device).__name__}, not a mapping"
        error = _edits_shape_error(device.get("containerEdits"), "devices[].containerEdits")
        if error:
            return error
    return _edits_shape_error(data.get("containerEdits"), "containerEdits")


def parse_spec(path: str, text: str) -> CdiSpec:

    spec = CdiSpec(path=path)
    try:
        data = userfile.parse_yaml(text, path)
    except userfile.UserFileError as exc:
        detail = str(exc).replace(f"{path} ", "", 1).replace("is not valid YAML: ", "invalid YAML: ", 1)
        spec.error = detail.splitlines()[0]
        return spec
    if not isinstance(data, dict):
        spec.error = "not a CDI spec: top level is not a mapping"
        return spec
    shape = shape_error(data)
    if shape:
        spec.error = f"not a CDI spec: {shape}"
        return spec
    spec.cdi_version = str(data.get("cdiVersion", ""))
    spec.kind = str(data.get("kind", ""))
    for device in data.get("devices") or []:
        if isinstance(device, dict) and device.get("name") is not None:
            spec.devices.append(str(device["name"]))
    spec.driver_version = driver_version_of(data)
    spec.device_nodes, spec.hook_paths = nodes_and_hooks(data)
    missing = [key for key in ("cdiVersion", "kind") if not data.get(key)]
    if missing:
        spec.error = f"not a CDI spec: missing {', '.join(missing)}"
        return spec
    if "/" not in spec.kind:
        spec.error = f"kind {spec.kind!r} is not of the form vendor/class"
        return spec
    spec.valid = True
    return spec


def collect_cdi(root: str = "/", spec_dirs: tuple[str, ...] = SPEC_DIRS) -> CdiFacts:
    facts = CdiFacts()
    seen: set[str] = set()
    for spec_dir in spec_dirs:
        directory = os.path.join(root, spec_dir.lstrip("/"))
        facts.spec_dirs.append(spec_dir)
        try:
            names = sorted(os.listdir(directory))
        except OSError:
            continue
        for name in names:
            if not name.endswith((".yaml", ".yml", ".json")):
                continue
            path = os.path.join(directory, name)
            real = os.path.realpath(path)
            if real in seen:  # /var/run is usually a link to /run
                continue
            seen.add(real)
            try:
                fd = userfile.open_regular(path)
                try:
                    mtime = os.fstat(fd).st_mtime
                    text = userfile.decode_text(userfile.read_fd(fd, path, "", userfile.HOST_CONFIG_MAX), path, "",
                                                errors="replace")
                finally:
                    os.close(fd)
            except userfile.UserFileError as exc:
                facts.specs.append(CdiSpec(path=path, error=str(exc).replace(f"{path} ", "", 1)))
                continue
            spec = parse_spec(os.path.join(spec_dir, name), text)
            spec.mtime = mtime
            spec.missing_hooks = [h for h in spec.hook_paths if not os.path.exists(os.path.join(root, h.lstrip("/")))]
            facts.specs.append(spec)
    return facts
